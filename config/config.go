// Package config reads roam's profile and gateway files (TOML) into typed,
// validated values. Every error names the profile (or gateway) and the key so
// a user can fix the file from the message alone.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultIKE and DefaultESP are offered when a profile names no proposals.
var (
	// The hybrid first: a gateway without RFC 9370 (strongSwan 5.9) picks
	// a classical one of the others.
	DefaultIKE = []string{"aes256gcm16-prfsha384-x25519-ke1_mlkem768", "aes256gcm16-prfsha384-ecp384", "aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"}
	DefaultESP = []string{"aes256gcm16", "aes128gcm16"}
)

// Profile is one [profiles.NAME] table.
type Profile struct {
	Name        string
	Gateway     string // host name or address, as written
	GatewayPort uint16
	LocalID     string
	RemoteID    string
	Auth        string // "psk", "pubkey", "eap-mschapv2" or "eap-tls"
	PSK         []byte
	// EAP (config/eap.go): EAPIdentity is the EAP-Identity, for
	// EAP-MSCHAPv2 the username (default LocalID); Password comes from
	// password_file, or is nil and then asked for by `roam connect` (it
	// stays in memory only). EAPOnly asks the gateway for RFC 5998
	// EAP-only authentication.
	EAPIdentity string
	Password    []byte
	EAPOnly     bool
	Cert        string
	Key         string
	CA          string
	IKE         []Proposal
	ESP         []Proposal
	RemoteTS    []netip.Prefix
	// Children is ChildrenSingle (one Child SA for all of RemoteTS) or
	// ChildrenPerTS (one per entry; children.go).
	Children  string
	VirtualIP bool
	// DNS applies the gateway's DNS servers (default on; they are only
	// applied when the gateway sends some).
	DNS bool
	// DNSDomains are routed to the gateway's DNS servers (split DNS),
	// besides those the gateway sends (RFC 8598): lower case, no trailing
	// dot, no "~".
	DNSDomains []string
	MOBIKE     bool
	Interfaces []string
	// Fragmentation offers RFC 7383 IKE fragmentation (default on); off
	// only for a gateway that mishandles it.
	Fragmentation bool
	// DeadAfter: ESP going out with nothing coming back for this long makes
	// mobility test the current path (0: mobility.DefaultDeadAfter).
	DeadAfter time.Duration
	// OutageLimit: how long the connection waits without any usable path
	// (every uplink down, or suspended) before it ends.
	OutageLimit time.Duration
	// DPDDelay: after this long without anything from the gateway, a
	// liveness check tests it (0: dead peer detection off).
	DPDDelay time.Duration
	// Reconnect re-establishes a lost IKE SA (default on), waiting at most
	// ReconnectMaxDelay between attempts.
	Reconnect         bool
	ReconnectMaxDelay time.Duration
	Lifetimes
	// Transport: UDP, TCP or TLS to the gateway (transport.go).
	Transport Transport
	// AllowNAT false forbids any NAT on the path (RFC 4555 NO_NATS_ALLOWED).
	AllowNAT bool
	// Switch lets the gateway move us to another of its addresses
	// (SWITCH_TO_IP_ADDRESS, config/switch.go); AcceptSwitch and
	// SwitchNotify as there.
	Switch       bool
	AcceptSwitch string
	SwitchNotify uint16
	// SwitchRevision (switch_revision): "00" (default) or "03", the
	// draft revision whose rules an accepted switch follows.
	SwitchRevision string
	// ReauthTime (reauth_time): authenticate again, with a new IKE SA made
	// before the old one is deleted, this long after each authentication
	// (0: only when the gateway asks with RFC 4478 AUTH_LIFETIME).
	ReauthTime time.Duration
	// AllowSHA1RSA (allow_sha1_rsa): accept the gateway's RSA signature
	// over SHA-1 (AUTH method 1); off by default.
	AllowSHA1RSA bool
	// Lockdown: while the profile is connecting, connected or
	// reconnecting, nothing leaves the host except through the tunnel,
	// IKE to the gateway, DHCP, IPv6 ND and loopback (internal/lockdown).
	// LockdownLAN also lets the private and link-local ranges out;
	// LockdownIPv6 lets IPv6 out beside an IPv4-only tunnel.
	Lockdown     bool
	LockdownLAN  bool
	LockdownIPv6 bool
	// Captive: captive portal detection and what to do about one
	// (captive_probe, captive_portal).
	Captive Captive
}

// Dead peer detection and reconnect defaults. A DPD delay below a second
// would probe a quiet gateway all the time; a reconnect cap below a second
// would hammer a gateway that is down.
const (
	DefaultDPDDelay          = 30 * time.Second
	DefaultReconnectMaxDelay = time.Minute
	minDPDDelay              = time.Second
	minReconnectMaxDelay     = time.Second
)

// DefaultOutageLimit is how long a connection survives with no usable
// network: long enough for a lunch break with the lid closed. It equals
// mobility.DefaultOutageLimit (config does not import the engine).
const DefaultOutageLimit = 30 * time.Minute

// Lower bounds of the mobility windows: a dead_after within a few RTTs of
// jitter would test healthy paths all the time, and an outage_limit below
// a second would end a connection on a link flap.
const (
	minDeadAfter   = 100 * time.Millisecond
	minOutageLimit = time.Second
)

// Lifetimes are the Child SA lifetimes (child_rekey_time, child_life_time).
type Lifetimes struct {
	// ChildRekey: a Child SA is replaced this long after it was made,
	// less a random part of ChildLife-ChildRekey so both ends rarely rekey
	// at the same moment; ChildLife: it expires if rekeying failed.
	ChildRekey, ChildLife time.Duration
	// IKERekey (rekey_time): the IKE SA gets new keys this long after it
	// was made, less the same random part; IKELife (life_time): it is
	// deleted this long after its last keys if no rekey succeeded.
	IKERekey, IKELife time.Duration
	// ChildRekeyPackets (child_rekey_packets): a Child SA is also
	// replaced once it has sent this many packets, well before its
	// sequence numbers run out (2^32 without ESN).
	ChildRekeyPackets uint64
}

// Child SA lifetime defaults and bounds: strongSwan's one hour, with 10 %
// of it as the random margin; rekeying more often than every 10 s would
// spend the tunnel on key exchanges.
const (
	DefaultChildRekey = time.Hour
	minChildRekey     = 10 * time.Second
	DefaultIKERekey   = 4 * time.Hour
)

// Packet-count soft lifetime: by default three quarters of the 32-bit
// sequence space; below 100 packets an SA would do little but rekey.
const (
	DefaultChildRekeyPackets = 3 << 30
	minChildRekeyPackets     = 100
	maxChildRekeyPackets     = 1<<32 - 1
)

func rekeyPacketsKey(v *int64) (uint64, error) {
	if v == nil {
		return DefaultChildRekeyPackets, nil
	}
	if *v < minChildRekeyPackets || *v > maxChildRekeyPackets {
		return 0, fmt.Errorf("child_rekey_packets: %d is outside %d-%d", *v, minChildRekeyPackets, maxChildRekeyPackets)
	}
	return uint64(*v), nil
}

func parseLifetimes(ike, ikeLife, rekey, life string) (Lifetimes, error) {
	var l Lifetimes
	var err error
	if l.IKERekey, err = durationKey("rekey_time", ike, DefaultIKERekey, minChildRekey); err != nil {
		return l, err
	}
	// The default margin leaves a short rekey_time (a lab's) room for a
	// few retries after a refused or colliding rekey.
	if l.IKELife, err = durationKey("life_time", ikeLife, l.IKERekey+max(l.IKERekey/10, time.Minute), minChildRekey); err != nil {
		return l, err
	}
	if l.IKELife <= l.IKERekey {
		return l, fmt.Errorf("life_time: %v must be longer than rekey_time %v", l.IKELife, l.IKERekey)
	}
	if l.ChildRekey, err = durationKey("child_rekey_time", rekey, DefaultChildRekey, minChildRekey); err != nil {
		return l, err
	}
	if l.ChildLife, err = durationKey("child_life_time", life, l.ChildRekey+l.ChildRekey/10, minChildRekey); err != nil {
		return l, err
	}
	if l.ChildLife <= l.ChildRekey {
		return l, fmt.Errorf("child_life_time: %v must be longer than child_rekey_time %v", l.ChildLife, l.ChildRekey)
	}
	return l, nil
}

// Gateway is the [gateway] table of a gateway file.
type Gateway struct {
	Listen  []netip.Addr
	LocalID string
	Auth    string
	Cert    string
	Key     string
	CA      string
	IKE     []Proposal
	ESP     []Proposal
	Pool    netip.Prefix
	DNS     []netip.Addr
	// DNSDomains go to clients as RFC 8598 INTERNAL_DNS_DOMAIN.
	DNSDomains []string
	LocalTS    []netip.Prefix
	MOBIKE     bool
	// Fragmentation accepts RFC 7383 IKE fragmentation (default on).
	Fragmentation bool
	// DPDDelay: a client silent for this long is tested, and its SAs are
	// reaped when it does not answer (0: off).
	DPDDelay time.Duration
	// ReturnRoutability: ESP follows a client's UPDATE_SA_ADDRESSES to an
	// address it has not used before only after a COOKIE2 check there.
	ReturnRoutability bool
	// EarlyMove (early_move): meanwhile ESP goes ahead to the new address
	// within an amplification limit of what the client sends from there
	// (docs/gateway.md).
	EarlyMove bool
	Lifetimes
	GatewaySwitch
	GatewayLimits
	GatewayTransport
	Clients []Client
	// ReauthTime (reauth_time): clients are told (RFC 4478 AUTH_LIFETIME)
	// to authenticate again within this long, and lose SAs they did not
	// replace in time (0: never).
	ReauthTime time.Duration
	// HA is the [gateway.ha] table; nil for a single node.
	HA *HA
	// AllowSHA1RSA (allow_sha1_rsa): accept clients' RSA signatures over
	// SHA-1 (AUTH method 1); off by default.
	AllowSHA1RSA bool
	// ClientsMatch (clients_match, auth = "pubkey"): a certificate
	// client's identity must match this pattern (path.Match syntax, names
	// compared case-insensitively) or be listed in clients; empty: any
	// identity the CA certified.
	ClientsMatch string
}

// Client is one [[gateway.clients]] entry.
type Client struct {
	ID  string
	PSK []byte
	// EAP-MSCHAPv2 login instead (gateway auth = "pubkey"): the username
	// the client's EAP-MSCHAPv2 gives (default ID) and its password.
	EAPIdentity string
	Password    []byte
	// TS (ts): prefixes this client may send from and be routed to
	// besides its pool address (a network behind it). No two clients'
	// prefixes overlap, nor do they overlap the pool.
	TS []netip.Prefix
}

type rawProfile struct {
	Gateway       string   `toml:"gateway"`
	LocalID       string   `toml:"local_id"`
	RemoteID      string   `toml:"remote_id"`
	Auth          string   `toml:"auth"`
	PSKFile       string   `toml:"psk_file"`
	EAPIdentity   string   `toml:"eap_identity"`
	PasswordFile  string   `toml:"password_file"`
	EAPOnly       *bool    `toml:"eap_only"`
	Cert          string   `toml:"cert"`
	Key           string   `toml:"key"`
	CA            string   `toml:"ca"`
	IKE           []string `toml:"ike"`
	ESP           []string `toml:"esp"`
	RemoteTS      []string `toml:"remote_ts"`
	VirtualIP     *bool    `toml:"virtual_ip"`
	DNS           *bool    `toml:"dns"`
	DNSDomains    []string `toml:"dns_domains"`
	MOBIKE        *bool    `toml:"mobike"`
	Interfaces    []string `toml:"interfaces"`
	Fragmentation *bool    `toml:"fragmentation"`
	DeadAfter     string   `toml:"dead_after"`
	OutageLimit   string   `toml:"outage_limit"`
	DPDDelay      string   `toml:"dpd_delay"`
	Reconnect     *bool    `toml:"reconnect"`
	ReconnectMax  string   `toml:"reconnect_max_delay"`
	IKERekey      string   `toml:"rekey_time"`
	IKELife       string   `toml:"life_time"`
	ChildRekey    string   `toml:"child_rekey_time"`
	ChildLife     string   `toml:"child_life_time"`
	ChildPackets  *int64   `toml:"child_rekey_packets"`
	AllowNAT      *bool    `toml:"allow_nat"`
	Switch        *bool    `toml:"switch"`
	AcceptSwitch  string   `toml:"accept_switch"`
	SwitchNotify  *int64   `toml:"switch_notify"`
	SwitchRev     string   `toml:"switch_revision"`
	ReauthTime    string   `toml:"reauth_time"`
	AllowSHA1RSA  *bool    `toml:"allow_sha1_rsa"`
	Lockdown      *bool    `toml:"lockdown"`
	LockdownLAN   *bool    `toml:"lockdown_lan"`
	LockdownIPv6  *bool    `toml:"lockdown_allow_ipv6"`
	rawTransport
	rawChildren
	rawCaptive
}

type rawProfileFile struct {
	Profiles map[string]rawProfile `toml:"profiles"`
}

type rawClient struct {
	ID           string   `toml:"id"`
	PSKFile      string   `toml:"psk_file"`
	EAPIdentity  string   `toml:"eap_identity"`
	PasswordFile string   `toml:"password_file"`
	TS           []string `toml:"ts"`
}

type rawGateway struct {
	Listen        []string    `toml:"listen"`
	LocalID       string      `toml:"local_id"`
	Auth          string      `toml:"auth"`
	Cert          string      `toml:"cert"`
	Key           string      `toml:"key"`
	CA            string      `toml:"ca"`
	IKE           []string    `toml:"ike"`
	ESP           []string    `toml:"esp"`
	Pool          string      `toml:"pool"`
	DNS           []string    `toml:"dns"`
	DNSDomains    []string    `toml:"dns_domains"`
	LocalTS       []string    `toml:"local_ts"`
	MOBIKE        *bool       `toml:"mobike"`
	Fragmentation *bool       `toml:"fragmentation"`
	DPDDelay      string      `toml:"dpd_delay"`
	RR            *bool       `toml:"return_routability"`
	EarlyMove     *bool       `toml:"early_move"`
	IKERekey      string      `toml:"rekey_time"`
	IKELife       string      `toml:"life_time"`
	ChildRekey    string      `toml:"child_rekey_time"`
	ChildLife     string      `toml:"child_life_time"`
	ChildPackets  *int64      `toml:"child_rekey_packets"`
	Clients       []rawClient `toml:"clients"`
	ClientsMatch  string      `toml:"clients_match"`
	AllowSHA1RSA  *bool       `toml:"allow_sha1_rsa"`
	ReauthTime    string      `toml:"reauth_time"`
	HA            *rawHA      `toml:"ha"`
	rawGatewaySwitch
	rawGatewayLimits
	rawGatewayTransport
}

type rawGatewayFile struct {
	Gateway *rawGateway `toml:"gateway"`
}

// ProfileFile is a profile file read profile by profile: one broken
// profile does not keep the others from connecting.
type ProfileFile struct {
	Path string
	// SocketGroup (top-level socket_group) is the group whose members may
	// read status and events from the daemon's control socket.
	SocketGroup string
	// LogLevel (top-level log_level): debug, info, warn or error; "" is
	// the default, info.
	LogLevel string
	Profiles map[string]*Profile
	// Broken holds, per profile name, why that profile cannot be used.
	Broken map[string]error
	raw    map[string]rawProfile
	// problems holds every problem found per profile, for `roam check`;
	// Broken has the first.
	problems map[string][]error
}

func (f *ProfileFile) addProblem(name string, err error) {
	if _, ok := f.Broken[name]; !ok {
		f.Broken[name] = err
	}
	f.problems[name] = append(f.problems[name], err)
}

// Names returns every profile's name, usable or broken, sorted.
func (f *ProfileFile) Names() []string {
	names := make([]string, 0, len(f.Profiles)+len(f.Broken))
	for n := range f.Profiles {
		names = append(names, n)
	}
	for n := range f.Broken {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Profile returns the named profile, or why it cannot be used.
func (f *ProfileFile) Profile(name string) (*Profile, error) {
	if p, ok := f.Profiles[name]; ok {
		return p, nil
	}
	if err, ok := f.Broken[name]; ok {
		return nil, fmt.Errorf("%s: profile %q: %w", f.Path, name, err)
	}
	return nil, fmt.Errorf("%s: no profile %q", f.Path, name)
}

// ReadProfiles reads the profile file at path. Its error is about the file
// as a whole (unreadable, not TOML, no profiles, an unknown top-level key);
// problems inside one profile are in Broken.
func ReadProfiles(path string) (*ProfileFile, error) {
	var raw struct {
		SocketGroup string                    `toml:"socket_group"`
		LogLevel    string                    `toml:"log_level"`
		Profiles    map[string]toml.Primitive `toml:"profiles"`
	}
	md, err := toml.DecodeFile(path, &raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(raw.Profiles) == 0 {
		if err := undecoded(path, md); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: no [profiles.NAME] table", path)
	}
	if !validGroupName(raw.SocketGroup) {
		return nil, fmt.Errorf("%s: socket_group: %q is not a group name", path, raw.SocketGroup)
	}
	switch raw.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("%s: log_level: %q is not debug, info, warn or error", path, raw.LogLevel)
	}
	f := &ProfileFile{
		Path:        path,
		SocketGroup: raw.SocketGroup,
		LogLevel:    raw.LogLevel,
		Profiles:    make(map[string]*Profile, len(raw.Profiles)),
		Broken:      map[string]error{},
		raw:         make(map[string]rawProfile, len(raw.Profiles)),
		problems:    map[string][]error{},
	}
	for name, prim := range raw.Profiles {
		var r rawProfile
		if err := md.PrimitiveDecode(prim, &r); err != nil {
			f.addProblem(name, err)
			continue
		}
		f.raw[name] = r
	}
	// Unknown keys are known only once every profile is decoded.
	for _, k := range md.Undecoded() {
		if len(k) < 2 || k[0] != "profiles" {
			return nil, fmt.Errorf("%s: unknown key %q", path, k.String())
		}
		if _, decoded := f.raw[k[1]]; decoded && len(k) > 2 {
			f.addProblem(k[1], fmt.Errorf("unknown key %q", strings.Join(k[2:], ".")))
		}
	}
	for name, r := range f.raw {
		p, err := r.validate(name)
		if err != nil {
			f.addProblem(name, err)
			continue
		}
		if _, broken := f.Broken[name]; !broken {
			f.Profiles[name] = p
		}
	}
	return f, nil
}

// validGroupName accepts what useradd/groupadd accept ("" is no group).
func validGroupName(s string) bool {
	if len(s) > 32 || strings.HasPrefix(s, "-") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// ProfileNames lists the profiles in the file, usable or not, for shell
// completion.
func ProfileNames(path string) ([]string, error) {
	f, err := ReadProfiles(path)
	if err != nil {
		return nil, err
	}
	return f.Names(), nil
}

// LoadProfiles reads every profile in the file at path; any broken profile
// is an error. ReadProfiles is the variant that keeps the usable ones.
func LoadProfiles(path string) (map[string]*Profile, error) {
	f, err := ReadProfiles(path)
	if err != nil {
		return nil, err
	}
	for _, name := range f.Names() {
		if _, err := f.Profile(name); err != nil {
			return nil, err
		}
	}
	return f.Profiles, nil
}

// LoadProfile reads the file and returns the named profile. Other profiles
// in the file being broken does not matter.
func LoadProfile(path, name string) (*Profile, error) {
	f, err := ReadProfiles(path)
	if err != nil {
		return nil, err
	}
	return f.Profile(name)
}

// LoadGateway reads a gateway file.
func LoadGateway(path string) (*Gateway, error) {
	var raw rawGatewayFile
	md, err := toml.DecodeFile(path, &raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := undecoded(path, md); err != nil {
		return nil, err
	}
	if raw.Gateway == nil {
		return nil, fmt.Errorf("%s: no [gateway] table", path)
	}
	g, err := raw.Gateway.validate()
	if err != nil {
		return nil, fmt.Errorf("%s: gateway: %w", path, err)
	}
	return g, nil
}

func undecoded(path string, md toml.MetaData) error {
	if keys := md.Undecoded(); len(keys) > 0 {
		return fmt.Errorf("%s: unknown key %q", path, keys[0].String())
	}
	return nil
}

func boolOr(v *bool, def bool) bool {
	if v == nil {
		return def
	}
	return *v
}

func (r rawProfile) validate(name string) (*Profile, error) {
	p := &Profile{
		Name:          name,
		LocalID:       r.LocalID,
		RemoteID:      r.RemoteID,
		Auth:          r.Auth,
		Cert:          r.Cert,
		Key:           r.Key,
		CA:            r.CA,
		VirtualIP:     boolOr(r.VirtualIP, true),
		DNS:           boolOr(r.DNS, true),
		MOBIKE:        boolOr(r.MOBIKE, true),
		Interfaces:    r.Interfaces,
		Fragmentation: boolOr(r.Fragmentation, true),
		Reconnect:     boolOr(r.Reconnect, true),
		AllowNAT:      boolOr(r.AllowNAT, true),
		Lockdown:      boolOr(r.Lockdown, false),
		LockdownLAN:   boolOr(r.LockdownLAN, false),
		LockdownIPv6:  boolOr(r.LockdownIPv6, false),
	}
	domains, err := parseDNSDomains(r.DNSDomains)
	if err != nil {
		return nil, err
	}
	p.DNSDomains = domains
	if !p.Lockdown && r.LockdownLAN != nil {
		return nil, errors.New("lockdown_lan: needs lockdown = true")
	}
	if !p.Lockdown && r.LockdownIPv6 != nil {
		return nil, errors.New("lockdown_allow_ipv6: needs lockdown = true")
	}
	if r.Gateway == "" {
		return nil, errors.New("gateway: missing")
	}
	host, port, err := splitHostPort(r.Gateway)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	p.Gateway, p.GatewayPort = host, port
	if p.LocalID == "" {
		return nil, errors.New("local_id: missing")
	}
	if p.RemoteID == "" {
		return nil, errors.New("remote_id: missing")
	}
	if p.Auth == "" {
		p.Auth = "psk"
	}
	switch p.Auth {
	case "psk":
		if r.PSKFile == "" {
			return nil, errors.New("psk_file: missing (auth = \"psk\")")
		}
		if p.PSK, err = ReadSecret(r.PSKFile); err != nil {
			return nil, fmt.Errorf("psk_file: %w", err)
		}
	case "pubkey":
		if err := checkPubkeyFiles(r.Cert, r.Key, r.CA); err != nil {
			return nil, err
		}
	case AuthEAPMSCHAPv2:
		if err := r.eapMSCHAPv2(p); err != nil {
			return nil, err
		}
	case AuthEAPTLS:
		if err := r.eapTLS(p); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("auth: %q is not psk, pubkey, %s or %s", p.Auth, AuthEAPMSCHAPv2, AuthEAPTLS)
	}
	if err := r.checkEAPKeys(p.Auth); err != nil {
		return nil, err
	}
	if p.IKE, err = proposals("ike", r.IKE, DefaultIKE, ParseIKEProposal); err != nil {
		return nil, err
	}
	if p.ESP, err = proposals("esp", r.ESP, DefaultESP, ParseESPProposal); err != nil {
		return nil, err
	}
	ts := r.RemoteTS
	if len(ts) == 0 {
		ts = []string{"0.0.0.0/0", "::/0"}
	}
	if p.RemoteTS, err = prefixes("remote_ts", ts); err != nil {
		return nil, err
	}
	if p.Children, err = r.rawChildren.validate(); err != nil {
		return nil, err
	}
	for i, ifname := range p.Interfaces {
		if ifname == "" || len(ifname) > 15 || strings.ContainsAny(ifname, "/ \t") {
			return nil, fmt.Errorf("interfaces[%d]: %q is not an interface name", i, ifname)
		}
	}
	if p.DeadAfter, err = durationKey("dead_after", r.DeadAfter, 0, minDeadAfter); err != nil {
		return nil, err
	}
	if p.Lifetimes, err = parseLifetimes(r.IKERekey, r.IKELife, r.ChildRekey, r.ChildLife); err != nil {
		return nil, err
	}
	if p.ChildRekeyPackets, err = rekeyPacketsKey(r.ChildPackets); err != nil {
		return nil, err
	}
	if p.OutageLimit, err = durationKey("outage_limit", r.OutageLimit, DefaultOutageLimit, minOutageLimit); err != nil {
		return nil, err
	}
	if p.DPDDelay, err = optionalDurationKey("dpd_delay", r.DPDDelay, DefaultDPDDelay, minDPDDelay); err != nil {
		return nil, err
	}
	if p.ReconnectMaxDelay, err = durationKey("reconnect_max_delay", r.ReconnectMax, DefaultReconnectMaxDelay, minReconnectMaxDelay); err != nil {
		return nil, err
	}
	if err := r.switchKeys(p); err != nil {
		return nil, err
	}
	if p.ReauthTime, err = optionalDurationKey("reauth_time", r.ReauthTime, 0, minChildRekey); err != nil {
		return nil, err
	}
	p.AllowSHA1RSA = boolOr(r.AllowSHA1RSA, false)
	if p.Captive, err = r.rawCaptive.validate(); err != nil {
		return nil, err
	}
	if p.Transport, err = r.rawTransport.validate(p.CA); err != nil {
		return nil, err
	}
	return p, nil
}

func (r *rawGateway) validate() (*Gateway, error) {
	g := &Gateway{
		LocalID:           r.LocalID,
		Auth:              r.Auth,
		Cert:              r.Cert,
		Key:               r.Key,
		CA:                r.CA,
		MOBIKE:            boolOr(r.MOBIKE, true),
		Fragmentation:     boolOr(r.Fragmentation, true),
		ReturnRoutability: boolOr(r.RR, true),
		EarlyMove:         boolOr(r.EarlyMove, true),
		AllowSHA1RSA:      boolOr(r.AllowSHA1RSA, false),
	}
	if len(r.Listen) == 0 {
		return nil, errors.New("listen: missing")
	}
	lt, err := parseLifetimes(r.IKERekey, r.IKELife, r.ChildRekey, r.ChildLife)
	if err != nil {
		return nil, err
	}
	g.Lifetimes = lt
	if g.ChildRekeyPackets, err = rekeyPacketsKey(r.ChildPackets); err != nil {
		return nil, err
	}
	if g.GatewaySwitch, err = r.rawGatewaySwitch.validate(); err != nil {
		return nil, err
	}
	if g.GatewayLimits, err = r.rawGatewayLimits.validate(); err != nil {
		return nil, err
	}
	if g.GatewayTransport, err = r.rawGatewayTransport.validate(g.Cert, g.Key); err != nil {
		return nil, err
	}
	for i, s := range r.Listen {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("listen[%d]: %q is not an IP address", i, s)
		}
		g.Listen = append(g.Listen, a.Unmap())
	}
	if g.LocalID == "" {
		return nil, errors.New("local_id: missing")
	}
	if g.Auth == "" {
		g.Auth = "psk"
	}
	switch g.Auth {
	case "psk":
	case "pubkey":
		if err := checkPubkeyFiles(r.Cert, r.Key, r.CA); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("auth: %q is not psk or pubkey", g.Auth)
	}
	if g.IKE, err = proposals("ike", r.IKE, DefaultIKE, ParseIKEProposal); err != nil {
		return nil, err
	}
	if g.ESP, err = proposals("esp", r.ESP, DefaultESP, ParseESPProposal); err != nil {
		return nil, err
	}
	if r.Pool == "" {
		return nil, errors.New("pool: missing")
	}
	if g.Pool, err = netip.ParsePrefix(r.Pool); err != nil {
		return nil, fmt.Errorf("pool: %q is not a prefix", r.Pool)
	}
	g.Pool = g.Pool.Masked()
	for i, s := range r.DNS {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("dns[%d]: %q is not an IP address", i, s)
		}
		g.DNS = append(g.DNS, a)
	}
	if g.DNSDomains, err = parseDNSDomains(r.DNSDomains); err != nil {
		return nil, err
	}
	ts := r.LocalTS
	if len(ts) == 0 {
		ts = []string{"0.0.0.0/0", "::/0"}
	}
	if g.LocalTS, err = prefixes("local_ts", ts); err != nil {
		return nil, err
	}
	if g.DPDDelay, err = optionalDurationKey("dpd_delay", r.DPDDelay, DefaultDPDDelay, minDPDDelay); err != nil {
		return nil, err
	}
	if g.ReauthTime, err = optionalDurationKey("reauth_time", r.ReauthTime, 0, minChildRekey); err != nil {
		return nil, err
	}
	if r.ClientsMatch != "" {
		if g.Auth != "pubkey" {
			return nil, errors.New(`clients_match: only for auth = "pubkey" (PSK clients are those listed)`)
		}
		if _, err := path.Match(r.ClientsMatch, ""); err != nil {
			return nil, fmt.Errorf("clients_match: %q is not a pattern: %w", r.ClientsMatch, err)
		}
		g.ClientsMatch = r.ClientsMatch
	}
	if len(r.Clients) == 0 && g.Auth == "psk" {
		return nil, errors.New("clients: none configured")
	}
	seen := map[string]bool{}
	for i, c := range r.Clients {
		if c.ID == "" {
			return nil, fmt.Errorf("clients[%d].id: missing", i)
		}
		if seen[c.ID] {
			return nil, fmt.Errorf("clients[%d].id: %q listed twice", i, c.ID)
		}
		seen[c.ID] = true
		cl := Client{ID: c.ID}
		if err := c.eap(g, &cl); err != nil {
			return nil, fmt.Errorf("clients[%d].%w", i, err)
		}
		if c.PSKFile != "" {
			if cl.PSK, err = ReadSecret(c.PSKFile); err != nil {
				return nil, fmt.Errorf("clients[%d].psk_file: %w", i, err)
			}
		} else if g.Auth == "psk" && cl.Password == nil {
			return nil, fmt.Errorf("clients[%d].psk_file: missing (auth = \"psk\")", i)
		}
		if cl.TS, err = prefixes(fmt.Sprintf("clients[%d].ts", i), c.TS); err != nil {
			return nil, err
		}
		g.Clients = append(g.Clients, cl)
	}
	if err := checkClientTS(g); err != nil {
		return nil, err
	}
	if r.HA != nil {
		if g.HA, err = r.HA.validate(g.Listen); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// proposals parses a proposal list. As in strongSwan, one string may hold
// several proposals separated by commas, and "default" stands for roam's
// default list.
func proposals(key string, given, def []string, parse func(string) (Proposal, error)) ([]Proposal, error) {
	if len(given) == 0 {
		given = def
	}
	var out []Proposal
	for i, s := range given {
		for _, one := range strings.Split(s, ",") {
			if strings.EqualFold(strings.TrimSpace(one), "default") {
				for _, d := range def {
					p, err := parse(d)
					if err != nil {
						return nil, fmt.Errorf("%s[%d]: default: %w", key, i, err)
					}
					out = append(out, p)
				}
				continue
			}
			p, err := parse(one)
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

func prefixes(key string, ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s[%d]: %q is not a prefix", key, i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// splitHostPort accepts "host", "host:port", "addr", "[v6]" and "[v6]:port";
// the port defaults to 500.
func splitHostPort(s string) (string, uint16, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String(), 500, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		if err != nil {
			return "", 0, fmt.Errorf("%q is not an IPv6 address", s)
		}
		return a.String(), 500, nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(s, ":") {
			return "", 0, fmt.Errorf("%q: %v", s, err)
		}
		host, portStr = s, "500"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: bad port %q", s, portStr)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q: empty host", s)
	}
	return host, uint16(port), nil
}

// ReadSecret reads a PSK file, refusing files that group or others may read:
// a leaked PSK lets anyone impersonate the gateway to this client.
func ReadSecret(path string) ([]byte, error) {
	if err := checkPrivate(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return b, nil
}

func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is readable by group or others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	return nil
}

// durationKey parses a duration key ("500ms", "30m"); empty gives def.
func durationKey(key, s string, def, least time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration like \"500ms\" or \"30m\"", key, s)
	}
	if d < least {
		return 0, fmt.Errorf("%s: %q is shorter than %v", key, s, least)
	}
	return d, nil
}

// optionalDurationKey is durationKey for a feature that "0" turns off.
func optionalDurationKey(key, s string, def, least time.Duration) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil && d == 0 {
		return 0, nil
	}
	d, err := durationKey(key, s, def, least)
	if err != nil {
		return 0, fmt.Errorf("%w (or \"0\" for off)", err)
	}
	return d, nil
}

// checkClientTS refuses a client prefix that overlaps the pool or another
// client's: the gateway routes an inner address to exactly one client, so
// an overlap would hand one client's traffic to the other.
func checkClientTS(g *Gateway) error {
	for i, c := range g.Clients {
		for k, p := range c.TS {
			if p.Overlaps(g.Pool) {
				return fmt.Errorf("clients[%d].ts[%d]: %s overlaps the pool %s", i, k, p, g.Pool)
			}
			for j := range i {
				for _, q := range g.Clients[j].TS {
					if p.Overlaps(q) {
						return fmt.Errorf("clients[%d].ts[%d]: %s overlaps %s of client %q", i, k, p, q, g.Clients[j].ID)
					}
				}
			}
			for _, q := range c.TS[:k] {
				if p.Overlaps(q) {
					return fmt.Errorf("clients[%d].ts[%d]: %s overlaps %s", i, k, p, q)
				}
			}
		}
	}
	return nil
}

// parseDNSDomains checks dns_domains: DNS names, a leading "~" (resolved's
// spelling of a routing domain) and a trailing dot tolerated; returns them
// in lower case without either.
func parseDNSDomains(in []string) ([]string, error) {
	var out []string
	for i, d := range in {
		name := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(d, "~"), "."))
		if !validDomain(name) {
			return nil, fmt.Errorf("dns_domains[%d]: %q is not a DNS domain", i, d)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

func validDomain(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// checkPubkeyFiles checks what auth = "pubkey" needs, in a profile and in a
// gateway file alike: the certificate, the private key and the CA are named
// and exist, and the key is readable by its owner only.
func checkPubkeyFiles(cert, key, ca string) error {
	for _, kv := range []struct{ key, val string }{{"cert", cert}, {"key", key}, {"ca", ca}} {
		if kv.val == "" {
			return fmt.Errorf("%s: missing (auth = \"pubkey\")", kv.key)
		}
		if _, err := os.Stat(kv.val); err != nil {
			return fmt.Errorf("%s: %w", kv.key, err)
		}
	}
	if err := checkPrivate(key); err != nil {
		return fmt.Errorf("key: %w", err)
	}
	return nil
}
