package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki is a CA and certificates it issued, written as PEM files.
type pki struct {
	t   *testing.T
	dir string
	now time.Time
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
	n   int64
}

func newPKI(t *testing.T, now time.Time) *pki {
	t.Helper()
	p := &pki{t: t, dir: t.TempDir(), now: now}
	p.ca, p.key = p.issue(nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "Test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
	})
	return p
}

func (p *pki) issue(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	p.n++
	tmpl.SerialNumber = big.NewInt(p.n)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return c, key
}

// leaf writes a certificate for the SAN email (valid from notBefore to
// notAfter, relative to now) and its key; it returns the two paths.
func (p *pki) leaf(name, email string, notBefore, notAfter time.Duration) (certPath, keyPath string) {
	p.t.Helper()
	c, key := p.issue(p.ca, p.key, &x509.Certificate{
		Subject: pkix.Name{CommonName: email}, EmailAddresses: []string{email},
		NotBefore: p.now.Add(notBefore), NotAfter: p.now.Add(notAfter),
	})
	return p.write(name+".pem", "CERTIFICATE", c.Raw, 0o644), p.writeKey(name+".key", key)
}

func (p *pki) writeKey(name string, key *ecdsa.PrivateKey) string {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name, "PRIVATE KEY", der, 0o600)
}

func (p *pki) write(name, typ string, der []byte, mode os.FileMode) string {
	return writeFile(p.t, p.dir, name, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})), mode)
}

func TestCheckProfiles(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	p := newPKI(t, now)
	caPath := p.write("ca.pem", "CERTIFICATE", p.ca.Raw, 0o644)
	cert, key := p.leaf("alice", "alice@example.com", -day, 300*day)
	expired, expiredKey := p.leaf("old", "alice@example.com", -300*day, -day)
	future, futureKey := p.leaf("future", "alice@example.com", day, 300*day)
	soon, soonKey := p.leaf("soon", "alice@example.com", -day, 10*day)
	other := newPKI(t, now)
	otherCA := other.write("other-ca.pem", "CERTIFICATE", other.ca.Raw, 0o644)
	strangerKey := p.writeKey("stranger.key", other.key)
	openKey := writeFile(t, p.dir, "open.key", readAll(t, key), 0o644)
	garbage := writeFile(t, p.dir, "garbage.pem", "not a certificate\n", 0o644)
	psk := writeFile(t, p.dir, "corp.psk", "secret\n", 0o600)
	openPSK := writeFile(t, p.dir, "open.psk", "secret\n", 0o644)

	pubkey := func(cert, key, ca, id string) string {
		return fmt.Sprintf("gateway = \"vpn.example.com\"\nlocal_id = %q\nremote_id = \"vpn.example.com\"\nauth = \"pubkey\"\ncert = %q\nkey = %q\nca = %q\n", id, cert, key, ca)
	}
	pskProfile := func(extra string) string {
		return fmt.Sprintf("gateway = \"vpn.example.com\"\nlocal_id = \"alice@example.com\"\nremote_id = \"vpn.example.com\"\npsk_file = %q\n%s", psk, extra)
	}
	tests := []struct {
		name string
		body string // the [profiles.x] table; "" checks the file as written in file
		file string
		mode os.FileMode
		want []string // substrings, one problem each, in order; none: OK
		warn int      // how many of them are warnings
	}{
		{name: "good pubkey", body: pubkey(cert, key, caPath, "alice@example.com")},
		{name: "good psk", body: pskProfile("")},
		{name: "proposal list and default", body: pskProfile(`ike = ["aes128gcm16-prfsha256-x25519,default"]` + "\n")},
		{name: "toml syntax", file: "[profiles.x\ngateway = 1\n", want: []string{"toml: line 2: expected"}},
		{name: "no profiles", file: "[other]\n", want: []string{`unknown key "other"`}},
		{name: "wrong type", body: pskProfile("mobike = \"yes\"\n"), want: []string{`"profiles.x.mobike"`}},
		{name: "unknown key", body: pskProfile("colour = 1\n"), want: []string{`unknown key "colour"`}},
		{name: "missing key", body: "gateway = \"vpn.example.com\"\nremote_id = \"gw\"\n", want: []string{"local_id: missing"}},
		{name: "bad proposal", body: pskProfile(`esp = ["aes256gcm16-blake"]` + "\n"), want: []string{`esp[0]: proposal "aes256gcm16-blake": unknown algorithm "blake"`}},
		{name: "modp1024", body: pskProfile(`ike = ["aes128-sha256-modp1024"]` + "\n"), want: []string{"modp1024 is refused: MODP groups below 2048 bits"}},
		{name: "sha1", body: pskProfile(`esp = ["aes128-sha1"]` + "\n"), want: []string{"sha1 is refused: SHA-1 is deprecated"}},
		{name: "psk readable", body: strings.Replace(pskProfile(""), psk, openPSK, 1), want: []string{"psk_file: " + openPSK + " is readable by group or others"}},
		{name: "key readable", body: pubkey(cert, openKey, caPath, "alice@example.com"), want: []string{"key: " + openKey + " is readable by group or others"}},
		{name: "file writable", body: pskProfile(""), mode: 0o666, want: []string{"file: writable by group or others"}},
		{name: "cert garbage", body: pubkey(garbage, key, caPath, "alice@example.com"), want: []string{"cert: " + garbage + ": not a PEM or DER certificate"}},
		{name: "key mismatch", body: pubkey(cert, strangerKey, caPath, "alice@example.com"), want: []string{"key: " + strangerKey + " is not the private key of cert"}},
		{name: "expired", body: pubkey(expired, expiredKey, caPath, "alice@example.com"), want: []string{"cert: " + expired + `: "CN=alice@example.com" expired on 2026-05-31`}},
		{name: "not yet valid", body: pubkey(future, futureKey, caPath, "alice@example.com"), want: []string{"is not valid before 2026-06-02"}},
		{name: "expires soon", body: pubkey(soon, soonKey, caPath, "alice@example.com"), want: []string{"warning: profile \"x\": cert: " + soon + `: "CN=alice@example.com" expires on 2026-06-11`}, warn: 1},
		{name: "other ca", body: pubkey(cert, key, otherCA, "alice@example.com"), want: []string{"cert: " + cert + " is not issued by ca " + otherCA}},
		{name: "ca not a CA", body: pubkey(cert, key, cert, "alice@example.com"), want: []string{"is not a CA certificate"}},
		{name: "identity not in cert", body: pubkey(cert, key, caPath, "bob@example.com"), want: []string{`local_id: "bob@example.com" is not named by cert`}},
		{name: "identity as DN", body: pubkey(cert, key, caPath, "CN=alice@example.com")},
		{name: "missing cert", body: pubkey(filepath.Join(p.dir, "none.pem"), key, caPath, "alice@example.com"), want: []string{"cert: stat "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.file
			if body == "" {
				body = "[profiles.x]\n" + tt.body
			}
			mode := tt.mode
			if mode == 0 {
				mode = 0o600
			}
			path := writeFile(t, t.TempDir(), "roam.toml", body, mode)
			os.Chmod(path, mode) // past the umask
			got := CheckProfiles(path, nil, now)
			warnings := 0
			for _, pr := range got {
				if pr.Warning {
					warnings++
				}
			}
			if len(got) != len(tt.want) || warnings != tt.warn {
				t.Fatalf("problems %q, want %d (%d warnings) like %q", got, len(tt.want), tt.warn, tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].String(), w) {
					t.Errorf("problem %d: %q lacks %q", i, got[i], w)
				}
			}
		})
	}
}

func readAll(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// One broken profile does not stop the others, and is named only when
// asked for.
func TestBrokenProfileIsolated(t *testing.T) {
	dir := t.TempDir()
	psk := writeFile(t, dir, "p.psk", "secret", 0o600)
	good := fmt.Sprintf("gateway = \"gw\"\nlocal_id = \"a\"\nremote_id = \"b\"\npsk_file = %q\n", psk)
	path := writeFile(t, dir, "roam.toml", "[profiles.corp]\n"+good+
		"[profiles.typo]\n"+good+"mobik = true\n"+
		"[profiles.badtype]\n"+good+"dns = 1\n"+
		"[profiles.home]\n"+good, 0o600)
	for _, name := range []string{"corp", "home"} {
		if p, err := LoadProfile(path, name); err != nil || p.Name != name {
			t.Errorf("LoadProfile(%s) = %v, %v", name, p, err)
		}
	}
	for name, want := range map[string]string{"typo": `profile "typo": unknown key "mobik"`, "badtype": `profile "badtype": toml: line`} {
		if _, err := LoadProfile(path, name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadProfile(%s) error %v, want %q", name, err, want)
		}
	}
	if _, err := LoadProfiles(path); err == nil {
		t.Error("LoadProfiles accepted a file with broken profiles")
	}
	names, err := ProfileNames(path)
	if err != nil || strings.Join(names, " ") != "badtype corp home typo" {
		t.Errorf("ProfileNames = %v, %v", names, err)
	}
	if got := CheckProfiles(path, []string{"corp", "hom"}, time.Now()); len(got) != 1 || got[0].String() != `profile "hom": no such profile; did you mean "home"?` {
		t.Errorf("CheckProfiles(corp, hom) = %q", got)
	}
}

func TestProposalLists(t *testing.T) {
	tests := []struct {
		given []string
		want  []string
	}{
		{nil, DefaultIKE},
		{[]string{"default"}, DefaultIKE},
		{[]string{"aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384"}, []string{"aes128gcm16-prfsha256-x25519", "aes256-sha384-ecp384"}},
		{[]string{"aes128gcm16-prfsha256-x25519,default"}, append([]string{"aes128gcm16-prfsha256-x25519"}, DefaultIKE...)},
	}
	for _, tt := range tests {
		got, err := proposals("ike", tt.given, DefaultIKE, ParseIKEProposal)
		if err != nil {
			t.Fatalf("%q: %v", tt.given, err)
		}
		var texts []string
		for _, p := range got {
			texts = append(texts, p.Text)
		}
		if strings.Join(texts, " ") != strings.Join(tt.want, " ") {
			t.Errorf("%q: %q, want %q", tt.given, texts, tt.want)
		}
	}
	if _, err := proposals("ike", []string{"aes128gcm16-prfsha256-x25519,"}, DefaultIKE, ParseIKEProposal); err == nil || !strings.Contains(err.Error(), "ike[0]: empty proposal") {
		t.Errorf("trailing comma: %v", err)
	}
}

func TestCheckGateway(t *testing.T) {
	now := time.Now()
	p := newPKI(t, now)
	caPath := p.write("ca.pem", "CERTIFICATE", p.ca.Raw, 0o644)
	cert, key := p.leaf("gw", "vpn@example.com", -time.Hour, 100*24*time.Hour)
	gw := func(id string) string {
		return fmt.Sprintf("[gateway]\nlisten = [\"203.0.113.10\"]\nlocal_id = %q\nauth = \"pubkey\"\ncert = %q\nkey = %q\nca = %q\npool = \"10.99.200.0/24\"\n", id, cert, key, caPath)
	}
	path := writeFile(t, t.TempDir(), "gw.toml", gw("vpn@example.com"), 0o600)
	if !IsGatewayFile(path) {
		t.Fatal("not recognised as a gateway file")
	}
	if got := CheckGateway(path, now); len(got) != 0 {
		t.Errorf("good gateway: %q", got)
	}
	path = writeFile(t, t.TempDir(), "gw.toml", gw("vpn.example.com")+"ike = [\"3des-sha256-modp2048\"]\n", 0o600)
	got := CheckGateway(path, now)
	if len(got) != 2 || !strings.Contains(got[0].String(), "gateway: ike[0]: proposal \"3des-sha256-modp2048\": 3des is refused") ||
		!strings.Contains(got[1].String(), `gateway: local_id: "vpn.example.com" is not named by cert`) {
		t.Errorf("broken gateway: %q", got)
	}
}

// The example shipped as /etc/roam/roam.toml.example is valid once its
// files exist: every profile passes roam check.
func TestExampleProfileFile(t *testing.T) {
	example, err := os.ReadFile("../contrib/roam.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p := newPKI(t, now)
	p.write("ca.pem", "CERTIFICATE", p.ca.Raw, 0o644)
	cert, key := p.leaf("alice", "alice@example.com", -time.Hour, 100*24*time.Hour)
	os.Rename(cert, filepath.Join(p.dir, "alice.pem"))
	os.Rename(key, filepath.Join(p.dir, "alice.key"))
	writeFile(t, p.dir, "corp.psk", "secret\n", 0o600)
	body := strings.ReplaceAll(string(example), "/etc/roam/", p.dir+"/")
	path := writeFile(t, p.dir, "roam.toml", body, 0o600)
	if got := CheckProfiles(path, nil, now); len(got) != 0 {
		t.Errorf("the example has problems: %q", got)
	}
	f, err := ReadProfiles(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"corp": "psk", "office": "pubkey", "travel": AuthEAPMSCHAPv2}
	for name, auth := range want {
		if pr := f.Profiles[name]; pr == nil || pr.Auth != auth {
			t.Errorf("profile %s: %+v, want auth %s", name, pr, auth)
		}
	}
}

func TestSocketGroupKey(t *testing.T) {
	dir := t.TempDir()
	psk := writeFile(t, dir, "p.psk", "secret", 0o600)
	prof := fmt.Sprintf("[profiles.corp]\ngateway = \"gw\"\nlocal_id = \"a\"\nremote_id = \"b\"\npsk_file = %q\n", psk)
	tests := []struct {
		top, wantErr, wantProblem string
	}{
		{top: ""},
		{top: `socket_group = "root"`},
		{top: `socket_group = "no such group here"`, wantErr: `socket_group: "no such group here" is not a group name`},
		{top: `socket_group = "roamnosuchgroup"`, wantProblem: "socket_group: group: unknown group roamnosuchgroup"},
	}
	for _, tt := range tests {
		path := writeFile(t, dir, "roam.toml", tt.top+"\n"+prof, 0o600)
		f, err := ReadProfiles(path)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want %q", tt.top, err, tt.wantErr)
			}
			continue
		}
		if err != nil || f.Profiles["corp"] == nil {
			t.Fatalf("%q: %v", tt.top, err)
		}
		got := CheckProfiles(path, nil, time.Now())
		if tt.wantProblem == "" && len(got) != 0 || tt.wantProblem != "" && (len(got) != 1 || !strings.Contains(got[0].String(), tt.wantProblem)) {
			t.Errorf("%q: problems %q, want %q", tt.top, got, tt.wantProblem)
		}
	}
}
