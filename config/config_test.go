package config

import (
	"cmp"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

func writeFile(t *testing.T, dir, name, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// corpProfile starts a profile file: profile corp's gateway and
// identities, without auth.
const corpProfile = "[profiles.corp]\ngateway = \"198.51.100.1\"\nlocal_id = \"alice@example.com\"\nremote_id = \"vpn.example.com\"\n"

// secretInTests is in every PSK and password the tests write, so an error
// that quotes one is caught.
const secretInTests = "s3cret"

// mustLoadProfiles loads the profile file at path. With wantErr set the
// load must fail with one line containing it and no secret, and the
// result is nil: the case is done.
func mustLoadProfiles(t *testing.T, path, wantErr string) map[string]*Profile {
	t.Helper()
	ps, err := LoadProfiles(path)
	if checkErr(t, err, wantErr) {
		return nil
	}
	return ps
}

// loadCorp writes body as a profile file and returns its "corp" profile,
// or nil once it failed as wantErr expects.
func loadCorp(t *testing.T, body, wantErr string) *Profile {
	t.Helper()
	ps := mustLoadProfiles(t, writeFile(t, t.TempDir(), "roam.toml", body, 0o644), wantErr)
	if ps == nil {
		return nil
	}
	return ps["corp"]
}

// loadGatewayText is loadCorp for a gateway file.
func loadGatewayText(t *testing.T, body, wantErr string) *Gateway {
	t.Helper()
	return mustLoadGateway(t, writeFile(t, t.TempDir(), "gw.toml", body, 0o644), wantErr)
}

// pskGateway is a gateway file with one PSK client (its key in pskFile) and
// extra keys in the [gateway] table.
func pskGateway(pskFile, extra string) string {
	return "[gateway]\nlisten = [\"203.0.113.10\"]\nlocal_id = \"vpn.example.com\"\npool = \"10.99.200.0/24\"\n" + extra +
		"\n[[gateway.clients]]\nid = \"alice@example.com\"\npsk_file = \"" + pskFile + "\"\n"
}

// mustLoadGateway is mustLoadProfiles for a gateway file.
func mustLoadGateway(t *testing.T, path, wantErr string) *Gateway {
	t.Helper()
	g, err := LoadGateway(path)
	if checkErr(t, err, wantErr) {
		return nil
	}
	return g
}

// checkErr fails the test unless err is what wantErr asks for, and
// says whether the load failed as it should.
func checkErr(t *testing.T, err error, wantErr string) bool {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	switch {
	case err == nil || !strings.Contains(err.Error(), wantErr):
		t.Fatalf("err = %v, want containing %q", err, wantErr)
	case strings.Contains(err.Error(), "\n"):
		t.Fatalf("error is not one line: %q", err)
	case strings.Contains(err.Error(), secretInTests):
		t.Fatalf("error leaks a secret: %v", err)
	}
	return true
}

func TestParseProposal(t *testing.T) {
	tests := []struct {
		in      string
		ike     bool
		want    []wire.Transform
		wantErr string
	}{
		{in: "aes256gcm16-prfsha384-ecp384", ike: true, want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 256},
			{Type: wire.TransformPRF, ID: 6},
			{Type: wire.TransformDH, ID: 20}}},
		{in: "aes256-sha256-modp2048", ike: true, want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 12, KeyLength: 256},
			{Type: wire.TransformPRF, ID: 5},
			{Type: wire.TransformInteg, ID: 12},
			{Type: wire.TransformDH, ID: 14}}},
		{in: "aes128gcm16-prfsha256-curve25519", ike: true, want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 128},
			{Type: wire.TransformPRF, ID: 5},
			{Type: wire.TransformDH, ID: 31}}},
		{in: "chacha20poly1305-prfsha256-curve25519", ike: true, want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 28},
			{Type: wire.TransformPRF, ID: 5},
			{Type: wire.TransformDH, ID: 31}}},
		{in: "chacha20poly1305-esn", want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 28},
			{Type: wire.TransformESN, ID: 1}}},
		{in: "chacha20poly1305-sha256-prfsha256-ecp256", ike: true, wantErr: "integrity algorithm given with AEAD"},
		{in: "aes256gcm16", want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 256},
			{Type: wire.TransformESN, ID: 0}}},
		{in: "aes128gcm16-esn", want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 128},
			{Type: wire.TransformESN, ID: 1}}},
		{in: "aes128-sha256-ecp256-esn-noesn", want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 12, KeyLength: 128},
			{Type: wire.TransformInteg, ID: 12},
			{Type: wire.TransformDH, ID: 19},
			{Type: wire.TransformESN, ID: 1},
			{Type: wire.TransformESN, ID: 0}}},
		{in: "aes999-prfsha256-ecp256", ike: true, wantErr: `unknown algorithm "aes999"`},
		{in: "aes256gcm16-ecp256", ike: true, wantErr: "needs a PRF"},
		{in: "aes256-prfsha256-ecp256", ike: true, wantErr: "needs an integrity"},
		{in: "aes256gcm16-sha256-prfsha256-ecp256", ike: true, wantErr: "integrity algorithm given with AEAD"},
		{in: "aes256gcm16-prfsha256", ike: true, wantErr: "no key exchange group"},
		{in: "sha256", wantErr: "no encryption"},
		{in: "", wantErr: "empty proposal"},
		{in: "aes256gcm16-esn", ike: true, wantErr: `unknown algorithm "esn"`},
		// RFC 9370 additional key exchanges, strongSwan 6 spelling.
		{in: "aes256gcm16-prfsha384-x25519-ke1_mlkem768", ike: true, want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 256},
			{Type: wire.TransformPRF, ID: 6},
			{Type: wire.TransformDH, ID: 31},
			{Type: wire.TransformADDKE1, ID: 36}}},
		{in: "aes256gcm16-prfsha384-ecp384-ke2_mlkem1024-ke1_mlkem768-ke1_none", ike: true, want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 256},
			{Type: wire.TransformPRF, ID: 6},
			{Type: wire.TransformDH, ID: 20},
			{Type: wire.TransformADDKE1, ID: 36},
			{Type: wire.TransformADDKE1, ID: 0},
			{Type: wire.TransformADDKE1 + 1, ID: 37}}},
		{in: "aes256gcm16-x25519-ke1_mlkem768", want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 256},
			{Type: wire.TransformDH, ID: 31},
			{Type: wire.TransformESN, ID: 0},
			{Type: wire.TransformADDKE1, ID: 36}}},
		{in: "aes256gcm16-x25519-ke7_ecp256", want: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 256},
			{Type: wire.TransformDH, ID: 31},
			{Type: wire.TransformESN, ID: 0},
			{Type: wire.TransformADDKE7, ID: 19}}},
		{in: "aes256gcm16-prfsha384-mlkem768", ike: true, wantErr: "goes in an additional key exchange"},
		{in: "aes256gcm16-prfsha384-ke1_mlkem768", ike: true, wantErr: "no key exchange group"},
		{in: "aes256gcm16-ke1_mlkem768", wantErr: "need a key exchange group first"},
		{in: "aes256gcm16-prfsha384-x25519-ke1_mlkem512", ike: true, wantErr: "ML-KEM-768 and ML-KEM-1024 only"},
		{in: "aes256gcm16-prfsha384-x25519-ke8_mlkem768", ike: true, wantErr: `unknown algorithm "ke8_mlkem768"`},
		{in: "aes256gcm16-prfsha384-x25519-ke1_kyber", ike: true, wantErr: `unknown key exchange method "kyber"`},
		{in: "aes256gcm16-prfsha384-x25519-ke1_modp1024", ike: true, wantErr: "modp1024 is refused"},
	}
	for _, tt := range tests {
		parse := ParseESPProposal
		if tt.ike {
			parse = ParseIKEProposal
		}
		got, err := parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if len(got.Transforms) != len(tt.want) {
			t.Errorf("%q: got %+v, want %+v", tt.in, got.Transforms, tt.want)
			continue
		}
		for i := range tt.want {
			if got.Transforms[i] != tt.want[i] {
				t.Errorf("%q: transform %d = %+v, want %+v", tt.in, i, got.Transforms[i], tt.want[i])
			}
		}
	}
}

func TestLoadProfiles(t *testing.T) {
	dir := t.TempDir()
	psk := writeFile(t, dir, "corp.psk", "s3cret\n", 0o600)
	loose := writeFile(t, dir, "loose.psk", "s3cret\n", 0o644)
	base := corpProfile + `psk_file = "` + psk + `"
`
	tests := []struct {
		name    string
		body    string
		wantErr string
		check   func(t *testing.T, p *Profile)
	}{
		{name: "defaults", body: base, check: func(t *testing.T, p *Profile) {
			if p.Gateway != "198.51.100.1" || p.GatewayPort != 500 || string(p.PSK) != "s3cret" || p.Auth != "psk" {
				t.Errorf("got %+v", p)
			}
			if len(p.RemoteTS) != 2 || p.RemoteTS[0] != netip.MustParsePrefix("0.0.0.0/0") || !p.MOBIKE || !p.VirtualIP || !p.DNS || !p.AllowNAT {
				t.Errorf("defaults wrong: %+v", p)
			}
			if len(p.IKE) != len(DefaultIKE) || len(p.ESP) != len(DefaultESP) {
				t.Errorf("default proposals: %d %d", len(p.IKE), len(p.ESP))
			}
			if !p.Fragmentation {
				t.Error("IKE fragmentation off by default")
			}
			if p.ChildRekey != time.Hour || p.ChildLife != 66*time.Minute {
				t.Errorf("default child lifetimes %v/%v", p.ChildRekey, p.ChildLife)
			}
			if p.DeadAfter != 0 || p.OutageLimit != DefaultOutageLimit {
				t.Errorf("default windows: dead_after %v outage_limit %v", p.DeadAfter, p.OutageLimit)
			}
			if p.DPDDelay != DefaultDPDDelay || !p.Reconnect || p.ReconnectMaxDelay != DefaultReconnectMaxDelay {
				t.Errorf("default liveness: dpd_delay %v reconnect %v reconnect_max_delay %v", p.DPDDelay, p.Reconnect, p.ReconnectMaxDelay)
			}
		}},
		{name: "liveness keys", body: base + "dpd_delay = \"10s\"\nreconnect = false\nreconnect_max_delay = \"5m\"\n", check: func(t *testing.T, p *Profile) {
			if p.DPDDelay != 10*time.Second || p.Reconnect || p.ReconnectMaxDelay != 5*time.Minute {
				t.Errorf("dpd_delay %v reconnect %v reconnect_max_delay %v", p.DPDDelay, p.Reconnect, p.ReconnectMaxDelay)
			}
		}},
		{name: "dpd off", body: base + "dpd_delay = \"0s\"\n", check: func(t *testing.T, p *Profile) {
			if p.DPDDelay != 0 {
				t.Errorf("dpd_delay %v, want off", p.DPDDelay)
			}
		}},
		{name: "dpd off bare zero", body: base + "dpd_delay = \"0\"\n", check: func(t *testing.T, p *Profile) {
			if p.DPDDelay != 0 {
				t.Errorf("dpd_delay %v, want off", p.DPDDelay)
			}
		}},
		{name: "tiny dpd_delay", body: base + "dpd_delay = \"200ms\"\n", wantErr: `dpd_delay: "200ms" is shorter than 1s (or "0" for off)`},
		{name: "bad dpd_delay", body: base + "dpd_delay = \"often\"\n", wantErr: `dpd_delay: "often" is not a duration`},
		{name: "tiny reconnect_max_delay", body: base + "reconnect_max_delay = \"10ms\"\n", wantErr: `reconnect_max_delay: "10ms" is shorter than 1s`},
		{name: "reconnect not a bool", body: base + "reconnect = \"yes\"\n", wantErr: "reconnect"},
		{name: "child lifetimes", body: base + "child_rekey_time = \"30s\"\n", check: func(t *testing.T, p *Profile) {
			if p.ChildRekey != 30*time.Second || p.ChildLife != 33*time.Second {
				t.Errorf("child_rekey_time 30s gives %v/%v, want 30s/33s", p.ChildRekey, p.ChildLife)
			}
		}},
		{name: "IKE lifetimes", body: base + "rekey_time = \"1h\"\n", check: func(t *testing.T, p *Profile) {
			if p.IKERekey != time.Hour || p.IKELife != 66*time.Minute {
				t.Errorf("rekey_time 1h gives %v/%v, want 1h/1h6m", p.IKERekey, p.IKELife)
			}
		}},
		{name: "IKE life at least a minute more", body: base + "rekey_time = \"20s\"\n", check: func(t *testing.T, p *Profile) {
			if p.IKELife != 80*time.Second {
				t.Errorf("rekey_time 20s gives life_time %v, want 1m20s", p.IKELife)
			}
		}},
		{name: "IKE life set", body: base + "rekey_time = \"20s\"\nlife_time = \"40s\"\n", check: func(t *testing.T, p *Profile) {
			if p.IKERekey != 20*time.Second || p.IKELife != 40*time.Second {
				t.Errorf("got %v/%v, want 20s/40s", p.IKERekey, p.IKELife)
			}
		}},
		{name: "IKE life not after rekey", body: base + "rekey_time = \"1m\"\nlife_time = \"1m\"\n", wantErr: "life_time: 1m0s must be longer than rekey_time 1m0s"},
		{name: "child life not after rekey", body: base + "child_rekey_time = \"1m\"\nchild_life_time = \"50s\"\n", wantErr: "child_life_time: 50s must be longer than child_rekey_time 1m0s"},
		{name: "child rekey packets default", body: base, check: func(t *testing.T, p *Profile) {
			if p.ChildRekeyPackets != 3<<30 {
				t.Errorf("child_rekey_packets %d, want 3<<30", p.ChildRekeyPackets)
			}
		}},
		{name: "child rekey packets set", body: base + "child_rekey_packets = 1000000\n", check: func(t *testing.T, p *Profile) {
			if p.ChildRekeyPackets != 1000000 {
				t.Errorf("child_rekey_packets %d, want 1000000", p.ChildRekeyPackets)
			}
		}},
		{name: "child rekey packets too few", body: base + "child_rekey_packets = 10\n", wantErr: "child_rekey_packets: 10 is outside 100-4294967295"},
		{name: "child rekey packets beyond the sequence space", body: base + "child_rekey_packets = 4294967296\n", wantErr: "child_rekey_packets: 4294967296 is outside"},
		{name: "child rekey packets not a number", body: base + "child_rekey_packets = \"many\"\n", wantErr: "child_rekey_packets"},
		{name: "child rekey too often", body: base + "child_rekey_time = \"2s\"\n", wantErr: `child_rekey_time: "2s" is shorter than 10s`},
		{name: "fragmentation off", body: base + "fragmentation = false\n", check: func(t *testing.T, p *Profile) {
			if p.Fragmentation {
				t.Error("fragmentation = false ignored")
			}
		}},
		{name: "dns off", body: base + "dns = false\n", check: func(t *testing.T, p *Profile) {
			if p.DNS {
				t.Error("dns = false ignored")
			}
		}},
		{name: "dns domains", body: base + "dns_domains = [\"Corp.Example.\", \"~lab.example\", \"corp.example\"]\n", check: func(t *testing.T, p *Profile) {
			if !slices.Equal(p.DNSDomains, []string{"corp.example", "lab.example"}) {
				t.Errorf("dns_domains %v", p.DNSDomains)
			}
		}},
		{name: "bad dns domain", body: base + "dns_domains = [\"corp example\"]\n", wantErr: `dns_domains[0]: "corp example" is not a DNS domain`},
		{name: "empty dns domain", body: base + "dns_domains = [\"~\"]\n", wantErr: `dns_domains[0]: "~" is not a DNS domain`},
		{name: "fragmentation not a bool", body: base + "fragmentation = \"no\"\n", wantErr: "fragmentation"},
		{name: "mobility windows", body: base + "dead_after = \"400ms\"\noutage_limit = \"2m\"\n", check: func(t *testing.T, p *Profile) {
			if p.DeadAfter != 400*time.Millisecond || p.OutageLimit != 2*time.Minute {
				t.Errorf("dead_after %v outage_limit %v", p.DeadAfter, p.OutageLimit)
			}
		}},
		{name: "bad outage_limit", body: base + "outage_limit = \"forever\"\n", wantErr: `outage_limit: "forever" is not a duration`},
		{name: "negative dead_after", body: base + "dead_after = \"-1s\"\n", wantErr: `dead_after: "-1s" is shorter than 100ms`},
		{name: "tiny dead_after", body: base + "dead_after = \"20ms\"\n", wantErr: `dead_after: "20ms" is shorter than 100ms`},
		{name: "tiny outage_limit", body: base + "outage_limit = \"500ms\"\n", wantErr: `outage_limit: "500ms" is shorter than 1s`},
		{name: "port and ts", body: strings.Replace(base, `"198.51.100.1"`, `"vpn.example.com:4501"`, 1) +
			"remote_ts = [\"10.99.0.0/24\", \"10.1.2.3\"]\ndns = true\ninterfaces = [\"wlan0\"]\n",
			check: func(t *testing.T, p *Profile) {
				if p.Gateway != "vpn.example.com" || p.GatewayPort != 4501 {
					t.Errorf("gateway %s:%d", p.Gateway, p.GatewayPort)
				}
				if p.RemoteTS[1] != netip.MustParsePrefix("10.1.2.3/32") || !p.DNS || p.Interfaces[0] != "wlan0" {
					t.Errorf("got %+v", p)
				}
			}},
		{name: "ipv6 gateway", body: strings.Replace(base, `"198.51.100.1"`, `"[2001:db8::1]:500"`, 1),
			check: func(t *testing.T, p *Profile) {
				if p.Gateway != "2001:db8::1" {
					t.Errorf("gateway %q", p.Gateway)
				}
			}},
		{name: "nat forbidden", body: base + "allow_nat = false\n", check: func(t *testing.T, p *Profile) {
			if p.AllowNAT {
				t.Error("allow_nat = false ignored")
			}
		}},
		{name: "lockdown off by default", body: base, check: func(t *testing.T, p *Profile) {
			if p.Lockdown || p.LockdownLAN || p.LockdownIPv6 {
				t.Errorf("lockdown %v lan %v ipv6 %v, want all off", p.Lockdown, p.LockdownLAN, p.LockdownIPv6)
			}
		}},
		{name: "lockdown", body: base + "lockdown = true\n", check: func(t *testing.T, p *Profile) {
			if !p.Lockdown || p.LockdownLAN || p.LockdownIPv6 {
				t.Errorf("lockdown %v lan %v ipv6 %v, want only lockdown", p.Lockdown, p.LockdownLAN, p.LockdownIPv6)
			}
		}},
		{name: "lockdown with lan and ipv6", body: base + "lockdown = true\nlockdown_lan = true\nlockdown_allow_ipv6 = true\n", check: func(t *testing.T, p *Profile) {
			if !p.Lockdown || !p.LockdownLAN || !p.LockdownIPv6 {
				t.Errorf("lockdown %v lan %v ipv6 %v, want all on", p.Lockdown, p.LockdownLAN, p.LockdownIPv6)
			}
		}},
		{name: "lockdown_lan without lockdown", body: base + "lockdown_lan = true\n", wantErr: "lockdown_lan: needs lockdown = true"},
		{name: "lockdown_allow_ipv6 without lockdown", body: base + "lockdown = false\nlockdown_allow_ipv6 = true\n", wantErr: "lockdown_allow_ipv6: needs lockdown = true"},
		{name: "lockdown not a bool", body: base + "lockdown = \"yes\"\n", wantErr: "lockdown"},
		{name: "bad allow_nat", body: base + "allow_nat = \"no\"\n", wantErr: "allow_nat"},
		{name: "sha1 rsa default", body: base, check: func(t *testing.T, p *Profile) {
			if p.AllowSHA1RSA {
				t.Error("allow_sha1_rsa on by default")
			}
		}},
		{name: "sha1 rsa allowed", body: base + "allow_sha1_rsa = true\n", check: func(t *testing.T, p *Profile) {
			if !p.AllowSHA1RSA {
				t.Error("allow_sha1_rsa = true ignored")
			}
		}},
		{name: "missing gateway", body: strings.Replace(base, `gateway = "198.51.100.1"`, "", 1), wantErr: `profile "corp": gateway: missing`},
		{name: "missing local_id", body: strings.Replace(base, `local_id = "alice@example.com"`, "", 1), wantErr: "local_id: missing"},
		{name: "unknown key", body: base + "colour = \"red\"\n", wantErr: `profile "corp": unknown key "colour"`},
		{name: "bad esp", body: base + "esp = [\"aes256gcm16\", \"aes999\"]\n", wantErr: `esp[1]: proposal "aes999": unknown algorithm "aes999"`},
		{name: "bad ts", body: base + "remote_ts = [\"10.0.0.0/33\"]\n", wantErr: "remote_ts[0]"},
		{name: "loose psk", body: strings.Replace(base, psk, loose, 1), wantErr: "readable by group or others"},
		{name: "bad auth", body: base + "auth = \"password\"\n", wantErr: `auth: "password" is not psk, pubkey, eap-mschapv2 or eap-tls`},
		{name: "pubkey missing cert", body: base + "auth = \"pubkey\"\n", wantErr: "cert: missing"},
		{name: "bad port", body: strings.Replace(base, `"198.51.100.1"`, `"gw:99999"`, 1), wantErr: "bad port"},
		{name: "no profiles", body: "", wantErr: "no [profiles.NAME] table"},
		{name: "toml syntax", body: "[profiles.corp\n", wantErr: "roam.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p := loadCorp(t, tt.body, tt.wantErr); p != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestLoadGateway(t *testing.T) {
	dir := t.TempDir()
	psk := writeFile(t, dir, "alice.psk", "s3cret", 0o600)
	base := `[gateway]
listen = ["203.0.113.10", "203.0.113.26"]
local_id = "vpn.example.com"
pool = "10.99.200.0/24"
dns = ["10.99.0.53"]
local_ts = ["10.99.0.0/24"]

[[gateway.clients]]
id = "alice@example.com"
psk_file = "` + psk + `"
`
	bob := "\n[[gateway.clients]]\nid = \"bob@example.com\"\npsk_file = \"" + psk + "\"\n"
	tests := []struct {
		name    string
		body    string
		wantErr string
		noRR    bool
		noEarly bool   // early_move = false
		packets uint64 // child_rekey_packets; 0: the default
		wantTS  int    // prefixes of clients[0]
		limits  GatewayLimits
	}{
		{name: "ok", body: base},
		{name: "child_rekey_packets", body: strings.Replace(base, "[gateway]\n", "[gateway]\nchild_rekey_packets = 500000\n", 1), packets: 500000},
		{name: "bad child_rekey_packets", body: strings.Replace(base, "[gateway]\n", "[gateway]\nchild_rekey_packets = 5\n", 1), wantErr: "child_rekey_packets: 5 is outside 100-4294967295"},
		{name: "no return routability", body: strings.Replace(base, "[gateway]\n", "[gateway]\nreturn_routability = false\n", 1), noRR: true},
		{name: "no early move", body: strings.Replace(base, "[gateway]\n", "[gateway]\nearly_move = false\n", 1), noEarly: true},
		{name: "early_move not a bool", body: strings.Replace(base, "[gateway]\n", "[gateway]\nearly_move = 3\n", 1), wantErr: "early_move"},
		{name: "no listen", body: strings.Replace(base, `listen = ["203.0.113.10", "203.0.113.26"]`, "", 1), wantErr: "listen: missing"},
		{name: "bad listen", body: strings.Replace(base, `"203.0.113.26"`, `"gw"`, 1), wantErr: `listen[1]: "gw" is not an IP address`},
		{name: "bad dns_domains", body: strings.Replace(base, "[gateway]\n", "[gateway]\ndns_domains = [\"a..b\"]\n", 1), wantErr: `dns_domains[0]: "a..b" is not a DNS domain`},
		{name: "bad pool", body: strings.Replace(base, `"10.99.200.0/24"`, `"pool"`, 1), wantErr: "pool:"},
		{name: "client without psk", body: strings.Replace(base, `psk_file = "`+psk+`"`, "", 1), wantErr: "clients[0].psk_file: missing"},
		{name: "no gateway table", body: "x = 1\n", wantErr: "unknown key"},
		{name: "limits", body: strings.Replace(base, "[gateway]\n", "[gateway]\nmax_ike_sas = 100\nmax_ike_sas_per_client = 2\nmax_child_sas = 3\nhalf_open_per_source = 7\n", 1),
			limits: GatewayLimits{MaxIKESAs: 100, MaxIKESAsPerClient: 2, MaxChildSAs: 3, HalfOpenPerSource: 7}},
		{name: "limit zero", body: strings.Replace(base, "[gateway]\n", "[gateway]\nmax_ike_sas = 0\n", 1), wantErr: "max_ike_sas: 0 is not between 1 and"},
		{name: "limit huge", body: strings.Replace(base, "[gateway]\n", "[gateway]\nhalf_open_per_source = 99999999999\n", 1), wantErr: "half_open_per_source: 99999999999 is not between"},
		{name: "one child", body: strings.Replace(base, "[gateway]\n", "[gateway]\nmax_child_sas = 1\n", 1), wantErr: "max_child_sas: 1 leaves no room"},
		{name: "clients_match with psk", body: strings.Replace(base, "[gateway]\n", "[gateway]\nclients_match = \"*@example.com\"\n", 1), wantErr: `clients_match: only for auth = "pubkey"`},
		{name: "client ts", body: base + `ts = ["10.99.201.0/24", "fd00:201::/64"]` + "\n", wantTS: 2},
		{name: "client ts address", body: base + `ts = ["10.99.201.7"]` + "\n", wantTS: 1},
		{name: "client ts bad", body: base + `ts = ["ten"]` + "\n", wantErr: `clients[0].ts[0]: "ten" is not a prefix`},
		{name: "client ts in pool", body: base + `ts = ["10.99.200.128/25"]` + "\n", wantErr: "clients[0].ts[0]: 10.99.200.128/25 overlaps the pool"},
		{name: "client ts twice", body: base + `ts = ["10.99.201.0/24", "10.99.201.0/25"]` + "\n", wantErr: "clients[0].ts[1]: 10.99.201.0/25 overlaps 10.99.201.0/24"},
		{name: "client ts of another", body: base + `ts = ["10.99.201.0/24"]` + "\n" + bob + `ts = ["10.99.201.128/25"]` + "\n",
			wantErr: `clients[1].ts[0]: 10.99.201.128/25 overlaps 10.99.201.0/24 of client "alice@example.com"`},
		{name: "client ts apart", body: base + `ts = ["10.99.201.0/24"]` + "\n" + bob + `ts = ["10.99.202.0/24"]` + "\n", wantTS: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := loadGatewayText(t, tt.body, tt.wantErr)
			if g == nil {
				return
			}
			if len(g.Listen) != 2 || g.Pool != netip.MustParsePrefix("10.99.200.0/24") || string(g.Clients[0].PSK) != "s3cret" || !g.MOBIKE {
				t.Errorf("got %+v", g)
			}
			if g.ReturnRoutability == tt.noRR {
				t.Errorf("return_routability = %v", g.ReturnRoutability)
			}
			if g.EarlyMove == tt.noEarly {
				t.Errorf("early_move = %v", g.EarlyMove)
			}
			if want := cmp.Or(tt.packets, DefaultChildRekeyPackets); g.ChildRekeyPackets != want {
				t.Errorf("child_rekey_packets %d, want %d", g.ChildRekeyPackets, want)
			}
			if g.GatewayLimits != tt.limits {
				t.Errorf("limits %+v, want %+v", g.GatewayLimits, tt.limits)
			}
			if len(g.Clients[0].TS) != tt.wantTS {
				t.Errorf("clients[0].ts = %v, want %d prefixes", g.Clients[0].TS, tt.wantTS)
			}
		})
	}
}

// TestGatewayDPD: a gateway reaps dead clients by default; "0" turns it off.
func TestGatewayDPD(t *testing.T) {
	psk := writeFile(t, t.TempDir(), "alice.psk", "s3cret", 0o600)
	tests := []struct {
		name, line string
		want       time.Duration
		wantErr    string
	}{
		{name: "default", want: DefaultDPDDelay},
		{name: "set", line: `dpd_delay = "2m"`, want: 2 * time.Minute},
		{name: "off", line: `dpd_delay = "0"`, want: 0},
		{name: "tiny", line: `dpd_delay = "1ms"`, wantErr: `gateway: dpd_delay: "1ms" is shorter than 1s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := loadGatewayText(t, pskGateway(psk, tt.line), tt.wantErr)
			if g == nil {
				return
			}
			if g.DPDDelay != tt.want {
				t.Fatalf("dpd_delay %v, want %v", g.DPDDelay, tt.want)
			}
		})
	}
}
