package lab

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestWriteRoamConfig(t *testing.T) {
	dir := t.TempDir()
	pki, err := NewPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	path, err := WriteRoamConfig(filepath.Join(dir, "c"),
		LabProfile("psk", "sekrit", nil, nil),
		RoamProfile{Name: "cert", Gateway: "203.0.113.26", Auth: "pubkey", PKI: pki, IKE: []string{"aes256-sha256-modp2048"}, ESP: DefaultESP})
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Profiles map[string]map[string]any `toml:"profiles"`
	}
	if _, err := toml.DecodeFile(path, &f); err != nil {
		t.Fatal(err)
	}
	corp := f.Profiles["corp"]
	if corp["gateway"] != "203.0.113.10" || corp["auth"] != "psk" || corp["virtual_ip"] != true {
		t.Errorf("corp profile: %v", corp)
	}
	psk, err := os.ReadFile(corp["psk_file"].(string))
	if err != nil || string(psk) != "sekrit" {
		t.Errorf("psk file: %q %v", psk, err)
	}
	if fi, err := os.Stat(corp["psk_file"].(string)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("psk file mode: %v %v", fi.Mode(), err)
	}
	// No lab profile probes the real Internet for a captive portal.
	if v, ok := corp["captive_probe"]; !ok || v != "" {
		t.Errorf("corp profile: captive_probe %v (set %v), want \"\"", v, ok)
	}
	if f.Profiles["cert"]["ca"] != pki.CACert || f.Profiles["cert"]["key"] != pki.ClientKey {
		t.Errorf("cert profile: %v", f.Profiles["cert"])
	}

	gpath, err := WriteRoamGateway(filepath.Join(dir, "g"), RoamGatewayConfig{Auth: "psk", PSK: "sekrit"})
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Gateway struct {
			Listen  []string `toml:"listen"`
			Pool    string   `toml:"pool"`
			LocalTS []string `toml:"local_ts"`
			Clients []struct {
				ID      string `toml:"id"`
				PSKFile string `toml:"psk_file"`
			} `toml:"clients"`
		} `toml:"gateway"`
	}
	if _, err := toml.DecodeFile(gpath, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Gateway.Listen) != 4 || g.Gateway.Listen[2] != GatewayAddr1V6.Addr().String() || g.Gateway.Pool != "10.99.200.0/24" || len(g.Gateway.Clients) != 1 || g.Gateway.Clients[0].ID != ClientID {
		t.Errorf("gateway file: %+v", g)
	}
}

// The constructors write the file and point the CLI at it, each with its
// own control socket in the directory given.
func TestNewRoam(t *testing.T) {
	dir := t.TempDir()
	l := &Lab{}
	tests := []struct {
		name       string
		make       func() (*Roam, error)
		ns, socket string
	}{
		{"client", func() (*Roam, error) {
			return NewRoamClient(l, "/bin/roam", filepath.Join(dir, "c"), LabProfile("psk", "sekrit", nil, nil))
		}, Client, filepath.Join(dir, "c", "roam.sock")},
		{"gateway", func() (*Roam, error) {
			return NewRoamGateway(l, Gateway2, "/bin/roam", filepath.Join(dir, "g"), RoamGatewayConfig{Auth: "psk", PSK: "sekrit"})
		}, Gateway2, filepath.Join(dir, "g", "gw.sock")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.make()
			if err != nil {
				t.Fatal(err)
			}
			if r.Lab != l || r.NS != tc.ns || r.Bin != "/bin/roam" || r.Socket != tc.socket || filepath.Dir(r.Config) != filepath.Dir(tc.socket) {
				t.Errorf("got %+v", r)
			}
			if _, err := toml.DecodeFile(r.Config, new(map[string]any)); err != nil {
				t.Errorf("config: %v", err)
			}
		})
	}
	if _, err := NewRoamGateway(l, Gateway, "/bin/roam", filepath.Join(dir, "bad"), RoamGatewayConfig{Auth: "pubkey"}); err == nil {
		t.Error("pubkey gateway without PKI accepted")
	}
}

func TestParseStatus(t *testing.T) {
	for _, in := range []string{
		`[{"name":"corp","state":"established","virtual_ip":"10.99.200.1","nat":true,"children":[{"bytes_in":5}]}]`,
		`{"name":"corp","state":"established","virtual_ip":"10.99.200.1","nat":true,"children":[{"bytes_in":5}]}` + "\n",
	} {
		st, err := ParseStatus([]byte(in))
		if err != nil || len(st) != 1 || st[0].Name != "corp" || !st[0].NAT || st[0].Children[0].BytesIn != 5 {
			t.Errorf("ParseStatus(%s) = %+v, %v", in, st, err)
		}
	}
	if _, err := ParseStatus([]byte("connected")); err == nil {
		t.Error("non-JSON accepted")
	}
}
