package ike

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/roam-vpn/roam/ike/wire"
)

// Configuration attribute types (RFC 7296 3.15.1).
const (
	cfgIP4Address = 1
	cfgIP4Netmask = 2
	cfgIP4DNS     = 3
	cfgIP6Address = 8
	cfgIP6DNS     = 10
	// cfgDNSDomain is RFC 8598 INTERNAL_DNS_DOMAIN: a domain whose names
	// the peer's DNS servers answer (split DNS).
	cfgDNSDomain = 25
)

// maxDNSDomainLen bounds one INTERNAL_DNS_DOMAIN value: a DNS name is at
// most 253 characters in presentation form.
const maxDNSDomainLen = 253

// parseDNSDomain checks an INTERNAL_DNS_DOMAIN value (RFC 8598 4: an FQDN
// without the trailing dot, no NUL, no wildcard) and returns it in
// lower case; ok is false for a value to skip.
func parseDNSDomain(v []byte) (string, bool) {
	if len(v) == 0 || len(v) > maxDNSDomainLen {
		return "", false
	}
	for _, label := range strings.Split(strings.TrimSuffix(string(v), "."), ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return "", false
			}
		}
	}
	return strings.ToLower(strings.TrimSuffix(string(v), ".")), true
}

// parseCPReply extracts the assigned addresses, DNS servers and DNS
// domains; malformed attributes are skipped.
func parseCPReply(c *wire.Config) (vips, dns []netip.Addr, domains []string) {
	for _, a := range c.Attributes {
		switch a.Type {
		case cfgIP4Address:
			if len(a.Value) == 4 {
				vips = append(vips, netip.AddrFrom4([4]byte(a.Value)))
			}
		case cfgIP6Address:
			if len(a.Value) == 17 {
				vips = append(vips, netip.AddrFrom16([16]byte(a.Value[:16])))
			}
		case cfgIP4DNS:
			if len(a.Value) == 4 {
				dns = append(dns, netip.AddrFrom4([4]byte(a.Value)))
			}
		case cfgIP6DNS:
			if len(a.Value) == 16 {
				dns = append(dns, netip.AddrFrom16([16]byte(a.Value)))
			}
		case cfgDNSDomain:
			if d, ok := parseDNSDomain(a.Value); ok && !slices.Contains(domains, d) {
				domains = append(domains, d)
			}
		}
	}
	return vips, dns, domains
}

// cpRequested reports which address families a CFG_REQUEST asks for.
func cpRequested(c *wire.Config) (v4, v6, dns4, dns6, domains bool) {
	for _, a := range c.Attributes {
		switch a.Type {
		case cfgIP4Address:
			v4 = true
		case cfgIP6Address:
			v6 = true
		case cfgIP4DNS:
			dns4 = true
		case cfgIP6DNS:
			dns6 = true
		case cfgDNSDomain:
			domains = true
		}
	}
	return
}

// cpReply answers a CFG_REQUEST. Domains go out only when asked for (RFC
// 8598 4: a responder sends INTERNAL_DNS_DOMAIN only in reply to a request
// that carries it).
func cpReply(vips []netip.Addr, dns []netip.Addr, domains []string, dns4, dns6, wantDomains bool) *wire.Config {
	c := &wire.Config{CfgType: wire.CfgReply}
	for _, a := range vips {
		if a.Is4() {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP4Address, Value: a.AsSlice()})
		} else {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP6Address, Value: append(a.AsSlice(), 128)})
		}
	}
	for _, d := range dns {
		if d.Is4() && dns4 {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP4DNS, Value: d.AsSlice()})
		}
		if d.Is6() && dns6 {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP6DNS, Value: d.AsSlice()})
		}
	}
	if wantDomains {
		for _, d := range domains {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgDNSDomain, Value: []byte(d)})
		}
	}
	return c
}

// identityString renders an identity for logs and events.
func identityString(id *wire.Identification) string { return formatIdentity(id) }

// poolKey identifies a client to the address pool: names compare
// case-insensitively, as identities do in authentication.
func poolKey(id *wire.Identification) string {
	switch id.IDType {
	case wire.IDFQDN, wire.IDRFC822Addr:
		return fmt.Sprintf("%d:%s", id.IDType, strings.ToLower(strings.TrimSuffix(string(id.Data), ".")))
	}
	return fmt.Sprintf("%d:%s", id.IDType, hex.EncodeToString(id.Data))
}
