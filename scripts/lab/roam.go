package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RoamTags are the build tags of the roam that ships (the Makefile's
// TAGS): without urfave's Markdown output and the man page generator.
const RoamTags = "urfave_cli_no_docs"

// BuildRoam compiles ./cmd/roam of the module containing the working
// directory into dir and returns the binary's path.
func BuildRoam(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "roam")
	// -trimpath, the tags and CGO_ENABLED=0 as make build (and so the
	// .deb) has them: the lab runs the binary that ships, and a test that
	// runs make install or make deb then reuses the compiled packages and
	// only links anew.
	cmd := exec.Command("go", "build", "-trimpath", "-tags", RoamTags, "-o", bin, "./cmd/roam")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build roam: %w: %s", err, out)
	}
	return bin, nil
}

// ModuleRoot finds the directory of go.mod above the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// RoamProfile is a client profile for the lab, rendered as the profile file's TOML
// (docs/reference.md).
type RoamProfile struct {
	Name    string
	Gateway string
	Auth    string // psk | pubkey | eap-mschapv2 | eap-tls
	PSK     string
	PKI     *PKI
	IKE     []string
	ESP     []string
	DNS     bool
	MOBIKE  bool
	// ForbidNAT writes allow_nat = false.
	ForbidNAT bool
	// RemoteTS defaults to ProtectedNet; Children writes children
	// ("per_ts": one Child SA per entry).
	RemoteTS []string
	Children string
	// NoFragmentation writes fragmentation = false (RFC 7383 off).
	NoFragmentation bool
	// ChildRekey sets child_rekey_time, ChildLife child_life_time,
	// IKERekey rekey_time (0: defaults).
	ChildRekey, ChildLife, IKERekey time.Duration
	// DPDDelay sets dpd_delay (0: default); NoReconnect writes
	// reconnect = false.
	DPDDelay    time.Duration
	NoReconnect bool

	// EAP: EAPIdentity (empty: local_id) and, for EAP-MSCHAPv2, Password,
	// written to a password_file (mode 0600) unless empty: then roam
	// connect asks. EAPOnly writes eap_only = true (RFC 5998).
	EAPIdentity string
	Password    string
	EAPOnly     bool

	// ReauthTime writes reauth_time (0: none).
	ReauthTime time.Duration

	// Lockdown writes lockdown = true (the kill switch).
	Lockdown bool

	// SwitchRevision writes switch_revision ("": the default).
	SwitchRevision string
	// Transport writes transport (empty: the default, auto); TLSCA
	// writes tls_ca.
	Transport string
	TLSCA     string
	// CaptiveProbe writes captive_probe: a URL inside the lab. Empty
	// writes captive_probe = "" (detection off), so that no lab profile
	// ever probes the real Internet. CaptivePortal writes captive_portal.
	CaptiveProbe  string
	CaptivePortal string
}

// LabProfile is the usual profile: alice to the gateway's primary address,
// a tunnel to ProtectedNet with a virtual IP, both uplinks.
func LabProfile(auth, psk string, pki *PKI, ike []string) RoamProfile {
	return RoamProfile{
		Name: "corp", Gateway: GatewayAddr1.Addr().String(), Auth: auth, PSK: psk, PKI: pki,
		IKE: orDefault(ike, DefaultIKE), ESP: DefaultESP, DNS: true, MOBIKE: true,
	}
}

// WriteRoamConfig writes the profiles (and PSK files, mode 0600) into dir
// and returns the config path.
func WriteRoamConfig(dir string, profiles ...RoamProfile) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var b tomlText
	for _, p := range profiles {
		fmt.Fprintf(&b, "[profiles.%s]\n", p.Name)
		fmt.Fprintf(&b, "gateway = %q\nlocal_id = %q\nremote_id = %q\nauth = %q\n", p.Gateway, ClientID, GatewayID, p.Auth)
		switch p.Auth {
		case "psk":
			if err := b.secretFile("psk_file", dir, p.Name+".psk", p.PSK); err != nil {
				return "", err
			}
		case "pubkey":
			if p.PKI == nil {
				return "", errors.New("pubkey profile without PKI")
			}
			fmt.Fprintf(&b, "cert = %q\nkey = %q\nca = %q\n", p.PKI.ClientCrt, p.PKI.ClientKey, p.PKI.CACert)
		case "eap-mschapv2", "eap-tls":
			if p.PKI == nil {
				return "", errors.New("EAP profile without PKI (the gateway's CA)")
			}
			fmt.Fprintf(&b, "ca = %q\n", p.PKI.CACert)
			if p.Auth == "eap-tls" {
				fmt.Fprintf(&b, "cert = %q\nkey = %q\n", p.PKI.ClientCrt, p.PKI.ClientKey)
			}
			b.str("eap_identity", p.EAPIdentity)
			if p.Password != "" {
				if err := b.secretFile("password_file", dir, p.Name+".password", p.Password); err != nil {
					return "", err
				}
			}
			b.flag(p.EAPOnly, "eap_only = true")
		}
		fmt.Fprintf(&b, "ike = %s\nesp = %s\n", tomlList(p.IKE), tomlList(p.ESP))
		ts := p.RemoteTS
		if len(ts) == 0 {
			ts = []string{ProtectedNet.String()}
		}
		fmt.Fprintf(&b, "remote_ts = %s\nvirtual_ip = true\ndns = %t\nmobike = %t\n", tomlList(ts), p.DNS, p.MOBIKE)
		b.flag(p.NoFragmentation, "fragmentation = false")
		b.str("children", p.Children)
		b.duration("child_rekey_time", p.ChildRekey)
		b.duration("child_life_time", p.ChildLife)
		b.duration("dpd_delay", p.DPDDelay)
		b.flag(p.NoReconnect, "reconnect = false")
		b.duration("rekey_time", p.IKERekey)
		b.flag(p.ForbidNAT, "allow_nat = false")
		b.duration("reauth_time", p.ReauthTime)
		b.str("switch_revision", p.SwitchRevision)
		b.flag(p.Lockdown, "lockdown = true")
		b.str("transport", p.Transport)
		b.str("tls_ca", p.TLSCA)
		fmt.Fprintf(&b, "captive_probe = %q\n", p.CaptiveProbe)
		b.str("captive_portal", p.CaptivePortal)
		fmt.Fprintf(&b, "interfaces = [%q, %q]\n\n", WLAN, WWAN)
	}
	path := filepath.Join(dir, "roam.toml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// RoamGatewayConfig is `roam gateway`'s file for the lab gateway.
type RoamGatewayConfig struct {
	Auth string // psk | pubkey
	PSK  string // alice's PSK
	// DNSDomains writes dns_domains (RFC 8598 INTERNAL_DNS_DOMAIN).
	DNSDomains []string
	PKI        *PKI
	IKE        []string
	ESP        []string

	// EAPPassword, with Auth pubkey: alice logs in with EAP-MSCHAPv2
	// (user ClientID) instead of a certificate.
	EAPPassword string
	// ReauthTime writes reauth_time: clients are told to authenticate
	// again within it (RFC 4478).
	ReauthTime time.Duration
	// SwitchRevision writes switch_revision ("": the default).
	SwitchRevision string

	// Listen replaces the gateway's four addresses (an HA node has one).
	Listen []netip.Addr
	// LocalTS replaces local_ts (default ProtectedNet), e.g. 0.0.0.0/0 for
	// a full tunnel.
	LocalTS []string
	// Clients are PSK clients besides alice.
	Clients []RoamGatewayClient
	// HA writes a [gateway.ha] table (ha.go).
	HA *RoamHA
	// TCP writes tcp = true (RFC 9329 streams on TCP 4500); TLSPort
	// writes tls_port (the gateway's IKE certificate for TLS).
	TCP     bool
	TLSPort int
}

// RoamGatewayClient is one more [[gateway.clients]] entry.
type RoamGatewayClient struct {
	ID, PSK string
	TS      []string // ts: prefixes granted besides a pool address
}

// WriteRoamGateway writes the gateway file (and alice's PSK file) into dir.
func WriteRoamGateway(dir string, g RoamGatewayConfig) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var b tomlText
	b.WriteString("[gateway]\n")
	listen := g.Listen
	if len(listen) == 0 {
		listen = []netip.Addr{GatewayAddr1.Addr(), GatewayAddr2.Addr(), GatewayAddr1V6.Addr(), GatewayAddr2V6.Addr()}
	}
	ls := make([]string, len(listen))
	for i, a := range listen {
		ls[i] = a.String()
	}
	fmt.Fprintf(&b, "listen = %s\nlocal_id = %q\nauth = %q\n", tomlList(ls), GatewayID, g.Auth)
	if g.Auth == "pubkey" {
		if g.PKI == nil {
			return "", errors.New("pubkey gateway without PKI")
		}
		fmt.Fprintf(&b, "cert = %q\nkey = %q\nca = %q\n", g.PKI.GatewayCrt, g.PKI.GatewayKey, g.PKI.CACert)
	}
	fmt.Fprintf(&b, "ike = %s\nesp = %s\n", tomlList(orDefault(g.IKE, DefaultIKE)), tomlList(orDefault(g.ESP, DefaultESP)))
	localTS := g.LocalTS
	if len(localTS) == 0 {
		localTS = []string{ProtectedNet.String()}
	}
	fmt.Fprintf(&b, "pool = %q\ndns = [\"10.99.0.53\"]\nlocal_ts = %s\nmobike = true\n", VirtualIPPool.String(), tomlList(localTS))
	if len(g.DNSDomains) > 0 {
		fmt.Fprintf(&b, "dns_domains = %s\n", tomlList(g.DNSDomains))
	}
	b.duration("reauth_time", g.ReauthTime)
	b.str("switch_revision", g.SwitchRevision)
	b.flag(g.TCP, "tcp = true")
	if g.TLSPort != 0 {
		fmt.Fprintf(&b, "tls_port = %d\n", g.TLSPort)
	}
	b.WriteString("\n")
	b.WriteString("[[gateway.clients]]\n")
	fmt.Fprintf(&b, "id = %q\n", ClientID)
	if g.Auth == "psk" {
		if err := b.secretFile("psk_file", dir, "alice.psk", g.PSK); err != nil {
			return "", err
		}
	}
	if g.EAPPassword != "" {
		if err := b.secretFile("password_file", dir, "alice.password", g.EAPPassword); err != nil {
			return "", err
		}
	}
	for i, c := range g.Clients {
		fmt.Fprintf(&b, "\n[[gateway.clients]]\nid = %q\n", c.ID)
		if err := b.secretFile("psk_file", dir, fmt.Sprintf("client%d.psk", i), c.PSK); err != nil {
			return "", err
		}
		if len(c.TS) > 0 {
			fmt.Fprintf(&b, "ts = %s\n", tomlList(c.TS))
		}
	}
	if g.HA != nil {
		if err := writeHA(&b.Builder, dir, g.HA); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dir, "gateway.toml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// tomlText is a config file being written. Its setters write a key only
// when the lab chose a value, so that roam's defaults fill the rest.
type tomlText struct{ strings.Builder }

// str writes key = "v" unless v is empty.
func (b *tomlText) str(key, v string) {
	if v != "" {
		fmt.Fprintf(b, "%s = %q\n", key, v)
	}
}

// duration writes key = "d" unless d is 0.
func (b *tomlText) duration(key string, d time.Duration) {
	if d > 0 {
		fmt.Fprintf(b, "%s = %q\n", key, d.String())
	}
}

// flag writes the line set (a key away from its default) when on.
func (b *tomlText) flag(on bool, set string) {
	if on {
		b.WriteString(set + "\n")
	}
}

// secretFile writes secret into dir/name, mode 0600, and the key that
// names the file: the config never holds a secret itself.
func (b *tomlText) secretFile(key, dir, name, secret string) error {
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte(secret), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(b, "%s = %q\n", key, f)
	return nil
}

func tomlList(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// Roam runs the roam CLI in one lab namespace against one control socket.
type Roam struct {
	Lab    *Lab
	NS     string
	Bin    string
	Config string
	Socket string
	// Env is added to the environment of every command (and so of the
	// daemon that connect spawns), e.g. ROAM_CPUPROFILE=FILE.
	Env []string
}

// NewRoamClient writes the profiles into dir (WriteRoamConfig) and returns
// the roam CLI for them in the client namespace, its control socket
// dir/roam.sock; the daemon writes roam.log beside it.
func NewRoamClient(l *Lab, bin, dir string, profiles ...RoamProfile) (*Roam, error) {
	cfg, err := WriteRoamConfig(dir, profiles...)
	if err != nil {
		return nil, err
	}
	return &Roam{Lab: l, NS: Client, Bin: bin, Config: cfg, Socket: filepath.Join(dir, "roam.sock")}, nil
}

// NewRoamGateway writes g into dir (WriteRoamGateway) and returns the roam
// CLI for `roam gateway` in namespace ns (Gateway, or an HA node's), its
// control socket dir/gw.sock; StartGateway runs it.
func NewRoamGateway(l *Lab, ns, bin, dir string, g RoamGatewayConfig) (*Roam, error) {
	file, err := WriteRoamGateway(dir, g)
	if err != nil {
		return nil, err
	}
	return &Roam{Lab: l, NS: ns, Bin: bin, Config: file, Socket: filepath.Join(dir, "gw.sock")}, nil
}

// Run runs `roam <args...>` with --socket (and --config for connect) and
// returns the combined output, bounded by timeout.
func (r *Roam) Run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := []string{r.Bin, args[0], "--socket", r.Socket}
	switch {
	case args[0] == "gateway" && len(args) > 1 && args[1] == "switch":
		// A subcommand: the flags go after its name.
		argv = []string{r.Bin, "gateway", "switch", "--socket", r.Socket}
		args = args[1:]
	case args[0] == "connect" || args[0] == "gateway":
		argv = append(argv, "--config", r.Config)
	}
	argv = append(argv, args[1:]...)
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", r.Lab.NS(r.NS)}, argv...)...)
	if len(r.Env) > 0 {
		cmd.Env = append(os.Environ(), r.Env...)
	}
	// A daemon spawned by connect inherits stdout and stderr. A file, unlike
	// a pipe, does not keep us waiting for the daemon to exit.
	f, err := os.CreateTemp(r.Lab.Dir, "roam-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("roam %s: no result within %v: %s", strings.Join(args, " "), timeout, out)
	}
	if err != nil {
		return string(out), fmt.Errorf("roam %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Connect runs `roam connect PROFILE`.
func (r *Roam) Connect(profile string, timeout time.Duration) (string, error) {
	return r.Run(timeout, "connect", profile)
}

// ConnectRetry runs `roam connect PROFILE` up to five times, 300 ms
// apart: a gateway started just before may still be binding its sockets.
// The error names every attempt's failure: a later one may only say what
// the first left behind.
func (r *Roam) ConnectRetry(profile string) error {
	var errs []error
	for i := 0; i < 5; i++ {
		out, err := r.Connect(profile, 20*time.Second)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w: %s", i+1, err, strings.TrimSpace(out)))
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("roam connect: %w", errors.Join(errs...))
}

// Disconnect runs `roam disconnect PROFILE`.
func (r *Roam) Disconnect(profile string) (string, error) {
	return r.Run(15*time.Second, "disconnect", profile)
}

// Status is the part of `roam status --json` the lab checks.
type Status struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Gateway   string `json:"gateway"`
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	Interface string `json:"interface"`
	Transport string `json:"transport"`
	NAT       bool   `json:"nat"`
	VirtualIP string `json:"virtual_ip"`
	MOBIKE    bool   `json:"mobike"`
	IKESPIi   string `json:"ike_spi_i"`
	Proposal  string `json:"proposal"` // the IKE SA's
	Children  []struct {
		SPIIn      json.RawMessage `json:"spi_in"`
		SPIOut     json.RawMessage `json:"spi_out"`
		BytesIn    uint64          `json:"bytes_in"`
		BytesOut   uint64          `json:"bytes_out"`
		PacketsIn  uint64          `json:"packets_in"`
		PacketsOut uint64          `json:"packets_out"`
		Proposal   string          `json:"proposal"`
		RemoteTS   []string        `json:"remote_ts"`
		LocalTS    []string        `json:"local_ts"`
	} `json:"children"`
	PathChanges   int      `json:"path_changes"`
	PeerAddresses []string `json:"peer_addresses"`
	// Drops are the dataplane's drop counters, as printed.
	Drops json.RawMessage `json:"drops"`
	// Path MTU: the current path's inner MTU and what the dataplane did
	// to hold traffic to it.
	PathMTU    int    `json:"path_mtu"`
	ICMPTooBig uint64 `json:"icmp_too_big"`
	MSSClamped uint64 `json:"mss_clamped"`
	// Lockdown: the kill switch is in force, letting IKE and ESP out to
	// LockdownGateways.
	Lockdown         bool     `json:"lockdown"`
	LockdownGateways []string `json:"lockdown_gateways"`
	DNSServers       []string `json:"dns_servers"`
	DNSDomains       []string `json:"dns_domains"`
	DNSMethod        string   `json:"dns_method"`
	Health           string   `json:"health"`
	HealthReason     string   `json:"health_reason"`
	// A captive portal holds the uplink: its login page, and whether the
	// routes stepped aside for it.
	CaptivePortal    string `json:"captive_portal"`
	CaptiveStepAside bool   `json:"captive_step_aside"`
}

// Status runs `roam status --json` and decodes it: either a JSON array or a
// sequence of objects, one per connection.
func (r *Roam) Status() ([]Status, string, error) {
	out, err := r.Run(10*time.Second, "status", "--json")
	if err != nil {
		return nil, out, err
	}
	st, err := ParseStatus([]byte(out))
	return st, out, err
}

// ParseStatus decodes `roam status --json` output.
func ParseStatus(b []byte) ([]Status, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var st []Status
		if err := json.Unmarshal(trimmed, &st); err != nil {
			return nil, fmt.Errorf("status json: %w", err)
		}
		return st, nil
	}
	var st []Status
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	for {
		var s Status
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("status json: %w", err)
		}
		st = append(st, s)
	}
}

// GatewaySwitch runs `roam gateway switch --peer peer --to to` against
// this gateway's socket.
func (r *Roam) GatewaySwitch(peer string, to netip.Addr, timeout time.Duration) (string, error) {
	return r.Run(timeout, "gateway", "switch", "--peer", peer, "--to", to.String())
}

// StartGateway starts `roam gateway` in the background.
func (r *Roam) StartGateway() (*Proc, error) {
	cmd := r.Lab.Cmd(r.NS, r.Bin, "gateway", "--config", r.Config, "--socket", r.Socket)
	if len(r.Env) > 0 {
		cmd.Env = append(os.Environ(), r.Env...)
	}
	return r.Lab.StartCmd(cmd)
}

// Processes lists the PIDs of processes in the namespace whose executable
// is the roam binary (the daemon that connect spawned, for instance).
func (r *Roam) Processes() []int {
	var mine []int
	for _, pid := range r.Lab.PIDs(r.NS) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && exe == r.Bin {
			mine = append(mine, pid)
		}
	}
	return mine
}

// Event is the part of one `roam events --json` line the lab checks.
type Event struct {
	Profile   string `json:"profile"`
	Event     string `json:"event"`
	From      string `json:"from"`
	To        string `json:"to"`
	Interface string `json:"interface"`
	TookMS    int64  `json:"took_ms"`
	Reason    string `json:"reason"`
}

// StartEvents streams `roam events --json` in the background; its Output
// is the events so far (ParseEvents), Stop ends it.
func (r *Roam) StartEvents() (*Proc, error) {
	p, err := r.Lab.Start(r.NS, r.Bin, "events", "--socket", r.Socket, "--json")
	if err != nil {
		return nil, err
	}
	// The stream is live once the subscription is in place; a moment is
	// enough on a lab machine, and events before it are not what we test.
	time.Sleep(200 * time.Millisecond)
	return p, nil
}

// ParseEvents decodes `roam events --json` output, skipping lines that are
// not events (a half-written last line, a message on stderr).
func ParseEvents(out string) []Event {
	var evs []Event
	for _, line := range strings.Split(out, "\n") {
		var ev Event
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Event != "" {
			evs = append(evs, ev)
		}
	}
	return evs
}
