package lab

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// SwanConn is one strongSwan connection (a swanctl.conf "connections" entry
// with one child) in either role.
type SwanConn struct {
	Name  string // connection name; the child is named Name too
	Role  string // "gateway" (responder) or "client" (initiator)
	Auth  string // "psk" or "pubkey"
	PSK   string // for Auth psk
	Local []netip.Addr
	// Remote is the gateway address for the client role; empty on the
	// gateway, which accepts any peer.
	Remote   []netip.Addr
	LocalID  string
	RemoteID string
	IKE      []string // IKE proposals, strongSwan spelling
	ESP      []string // ESP proposals
	// Gateway role; LocalTS also for a client that offers its own side
	// instead of asking for a virtual IP.
	Pool netip.Prefix
	DNS  []netip.Addr
	// DNSDomains go out as RFC 8598 INTERNAL_DNS_DOMAIN (attribute 25).
	DNSDomains []string
	LocalTS    []netip.Prefix
	// ChildTS (gateway role), when set, writes one child per entry with
	// that local_ts (named Name, Name-2, ...) instead of one with LocalTS.
	ChildTS [][]netip.Prefix
	// Client role.
	RemoteTS  []netip.Prefix
	VirtualIP bool
	MOBIKE    bool
	// DPD interval in seconds, 0 = strongSwan's default (off).
	DPD int
	// ChildRekey is the CHILD_SA rekey_time, IKERekey the IKE_SA's (0:
	// strongSwan's defaults).
	ChildRekey, IKERekey time.Duration
	// RemoteAuth, when set, replaces Auth for the remote side: a gateway
	// with "eap-mschapv2" or "eap-tls" signs with its certificate (Auth
	// pubkey) and makes clients log in with EAP, asking their
	// EAP-Identity first.
	// EAPSecrets are the users' passwords by EAP identity.
	RemoteAuth string
	EAPSecrets map[string]string
	// ReauthTime is the IKE_SA's reauth_time; a gateway sends it as
	// AUTH_LIFETIME (RFC 4478) to clients with a virtual IP or EAP, as it
	// cannot reauthenticate them itself. ReauthOver is its over_time
	// (how long past it the SA lives), and the random part taken off.
	ReauthTime, ReauthOver time.Duration
}

// Default proposals: what roam implements first.
var (
	DefaultIKE = []string{"aes128gcm16-prfsha256-ecp256"}
	DefaultESP = []string{"aes256gcm16", "aes128gcm16"}
)

// GatewayConn is the lab gateway's connection for auth "psk" or "pubkey":
// listens on all four gateway addresses (IPv4 and IPv6), hands out VirtualIPPool, offers
// ProtectedNet, MOBIKE on. Empty proposal lists take the defaults.
func GatewayConn(auth, psk string, ike, esp []string) SwanConn {
	return SwanConn{
		Name: "gw", Role: "gateway", Auth: auth, PSK: psk,
		Local:   []netip.Addr{GatewayAddr1.Addr(), GatewayAddr2.Addr(), GatewayAddr1V6.Addr(), GatewayAddr2V6.Addr()},
		LocalID: GatewayID, RemoteID: ClientID,
		IKE: orDefault(ike, DefaultIKE), ESP: orDefault(esp, DefaultESP),
		Pool: VirtualIPPool, DNS: []netip.Addr{netip.MustParseAddr("10.99.0.53")},
		LocalTS: []netip.Prefix{ProtectedNet}, MOBIKE: true,
	}
}

// ClientConn is a strongSwan client to the lab gateway at gw, asking for a
// virtual IP and a tunnel to ProtectedNet.
func ClientConn(auth, psk string, gw netip.Addr, ike, esp []string) SwanConn {
	return SwanConn{
		Name: "home", Role: "client", Auth: auth, PSK: psk,
		Remote:  []netip.Addr{gw},
		LocalID: ClientID, RemoteID: GatewayID,
		IKE: orDefault(ike, DefaultIKE), ESP: orDefault(esp, DefaultESP),
		RemoteTS: []netip.Prefix{ProtectedNet}, VirtualIP: true, MOBIKE: true,
	}
}

func orDefault(v, d []string) []string {
	if len(v) == 0 {
		return d
	}
	return v
}

// Swanctl renders a swanctl.conf for conns. Certificates are referenced by
// file name: Charon copies the PKI's files into x509ca/, x509/ and private/.
func Swanctl(conns ...SwanConn) string {
	var b strings.Builder
	var pools, secrets strings.Builder
	b.WriteString("connections {\n")
	for _, c := range conns {
		fmt.Fprintf(&b, "  %s {\n", c.Name)
		b.WriteString("    version = 2\n")
		if len(c.Local) > 0 {
			fmt.Fprintf(&b, "    local_addrs = %s\n", joinAddrs(c.Local))
		}
		if len(c.Remote) > 0 {
			fmt.Fprintf(&b, "    remote_addrs = %s\n", joinAddrs(c.Remote))
		}
		fmt.Fprintf(&b, "    proposals = %s\n", strings.Join(c.IKE, ","))
		fmt.Fprintf(&b, "    mobike = %s\n", yesNo(c.MOBIKE))
		// kernel-libipsec fakes NAT detection anyway; say so explicitly
		// so the config reads the way the lab behaves.
		b.WriteString("    encap = yes\n")
		if c.DPD > 0 {
			fmt.Fprintf(&b, "    dpd_delay = %ds\n", c.DPD)
		}
		if c.IKERekey > 0 {
			fmt.Fprintf(&b, "    rekey_time = %ds\n", int(c.IKERekey.Seconds()))
		}
		if c.ReauthTime > 0 {
			fmt.Fprintf(&b, "    reauth_time = %ds\n", int(c.ReauthTime.Seconds()))
		}
		if c.ReauthOver > 0 {
			fmt.Fprintf(&b, "    over_time = %ds\n    rand_time = %ds\n", int(c.ReauthOver.Seconds()), int(c.ReauthOver.Seconds()))
		}
		if c.Role == "client" && c.VirtualIP {
			b.WriteString("    vips = 0.0.0.0\n")
		}
		if c.Role == "gateway" && c.Pool.IsValid() {
			fmt.Fprintf(&b, "    pools = pool-%s\n", c.Name)
			fmt.Fprintf(&pools, "  pool-%s {\n    addrs = %s\n", c.Name, c.Pool)
			if len(c.DNS) > 0 {
				fmt.Fprintf(&pools, "    dns = %s\n", joinAddrs(c.DNS))
			}
			if len(c.DNSDomains) > 0 {
				// A numeric attribute type: strongSwan has no name for 25.
				fmt.Fprintf(&pools, "    25 = %s\n", strings.Join(c.DNSDomains, ", "))
			}
			pools.WriteString("  }\n")
		}
		myCert, peerCA := "client.pem", "ca.pem"
		if c.Role == "gateway" {
			myCert = "gateway.pem"
		}
		b.WriteString("    local {\n")
		fmt.Fprintf(&b, "      auth = %s\n      id = %s\n", c.Auth, c.LocalID)
		if c.Auth == "pubkey" {
			fmt.Fprintf(&b, "      certs = %s\n", myCert)
		}
		b.WriteString("    }\n    remote {\n")
		remoteAuth := c.Auth
		if c.RemoteAuth != "" {
			remoteAuth = c.RemoteAuth
		}
		fmt.Fprintf(&b, "      auth = %s\n      id = %s\n", remoteAuth, c.RemoteID)
		if remoteAuth == "pubkey" || remoteAuth == "eap-tls" {
			fmt.Fprintf(&b, "      cacerts = %s\n", peerCA)
		}
		if strings.HasPrefix(remoteAuth, "eap") {
			b.WriteString("      eap_id = %any\n")
		}
		b.WriteString("    }\n    children {\n")
		children := [][]netip.Prefix{c.LocalTS}
		if c.Role == "gateway" && len(c.ChildTS) > 0 {
			children = c.ChildTS
		}
		for i, ts := range children {
			name := c.Name
			if i > 0 {
				name = fmt.Sprintf("%s-%d", c.Name, i+1)
			}
			fmt.Fprintf(&b, "      %s {\n", name)
			if c.Role == "gateway" {
				fmt.Fprintf(&b, "        local_ts = %s\n", joinPrefixes(ts))
			} else {
				fmt.Fprintf(&b, "        remote_ts = %s\n", joinPrefixes(c.RemoteTS))
				if len(c.LocalTS) > 0 {
					// A client's own side (a site's subnet, or what it claims).
					fmt.Fprintf(&b, "        local_ts = %s\n", joinPrefixes(c.LocalTS))
				}
			}
			fmt.Fprintf(&b, "        esp_proposals = %s\n", strings.Join(c.ESP, ","))
			if c.ChildRekey > 0 {
				fmt.Fprintf(&b, "        rekey_time = %ds\n", int(c.ChildRekey.Seconds()))
			}
			b.WriteString("      }\n")
		}
		b.WriteString("    }\n  }\n")
		if c.Auth == "psk" {
			fmt.Fprintf(&secrets, "  ike-%s {\n    id-1 = %s\n    id-2 = %s\n    secret = 0x%x\n  }\n",
				c.Name, c.LocalID, c.RemoteID, c.PSK)
		}
		users := slices.Sorted(maps.Keys(c.EAPSecrets))
		for i, user := range users {
			fmt.Fprintf(&secrets, "  eap-%s-%d {\n    id = %q\n    secret = 0x%x\n  }\n", c.Name, i, user, c.EAPSecrets[user])
		}
	}
	b.WriteString("}\n")
	if pools.Len() > 0 {
		b.WriteString("pools {\n" + pools.String() + "}\n")
	}
	if secrets.Len() > 0 {
		b.WriteString("secrets {\n" + secrets.String() + "}\n")
	}
	return b.String()
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
