package config

import (
	"strings"
	"testing"
)

func TestLoadProfileEAPMSCHAPv2(t *testing.T) {
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644)
	pw := writeFile(t, dir, "corp.pw", "pässwörd s3cret\n", 0o600)
	loose := writeFile(t, dir, "loose.pw", "pässwörd s3cret\n", 0o640)
	notUTF8 := writeFile(t, dir, "bad.pw", "\xff\xfe", 0o600)
	psk := writeFile(t, dir, "corp.psk", "s3cret\n", 0o600)
	base := corpProfile + `auth = "eap-mschapv2"
ca = "` + ca + `"
`
	tests := []struct {
		name    string
		body    string
		wantErr string
		check   func(t *testing.T, p *Profile)
	}{
		{name: "prompted", body: base, check: func(t *testing.T, p *Profile) {
			if p.EAPIdentity != "alice@example.com" || p.Password != nil || !p.NeedsPassword() || p.EAPOnly {
				t.Errorf("got identity %q, password set %v, eap_only %v", p.EAPIdentity, p.Password != nil, p.EAPOnly)
			}
		}},
		{name: "password file", body: base + "eap_identity = 'CORP\\alice'\npassword_file = \"" + pw + "\"\neap_only = true\n",
			check: func(t *testing.T, p *Profile) {
				if p.EAPIdentity != `CORP\alice` || string(p.Password) != "pässwörd s3cret" || p.NeedsPassword() || !p.EAPOnly {
					t.Errorf("got identity %q, eap_only %v", p.EAPIdentity, p.EAPOnly)
				}
			}},
		{name: "loose password file", body: base + "password_file = \"" + loose + "\"\n", wantErr: "password_file: " + loose + " is readable by group or others"},
		{name: "password not UTF-8", body: base + "password_file = \"" + notUTF8 + "\"\n", wantErr: "password_file: password is not valid UTF-8"},
		{name: "missing ca", body: strings.Replace(base, `ca = "`+ca+`"`, "", 1), wantErr: "ca: missing"},
		{name: "psk_file with eap", body: base + "psk_file = \"" + psk + "\"\n", wantErr: "not used with auth"},
		{name: "password_file with psk", body: strings.Replace(base, `auth = "eap-mschapv2"`, `psk_file = "`+psk+`"`, 1) + "password_file = \"" + pw + "\"\n",
			wantErr: `password_file: only for auth = "eap-mschapv2"`},
		{name: "eap_only with psk", body: strings.Replace(base, `auth = "eap-mschapv2"`, `psk_file = "`+psk+`"`, 1) + "eap_only = true\n",
			wantErr: `eap_only: only for auth = "eap-mschapv2" or "eap-tls"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p := loadCorp(t, tt.body, tt.wantErr); p != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestCheckPassword(t *testing.T) {
	for _, tc := range []struct {
		pw string
		ok bool
	}{{"x", true}, {"", false}, {strings.Repeat("é", 256), true}, {strings.Repeat("é", 257), false}, {"\xc3", false}} {
		if err := CheckPassword([]byte(tc.pw)); (err == nil) != tc.ok {
			t.Errorf("CheckPassword(%d bytes) = %v", len(tc.pw), err)
		}
	}
}

func TestLoadProfileEAPTLS(t *testing.T) {
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", "x", 0o644)
	cert := writeFile(t, dir, "alice.pem", "x", 0o644)
	key := writeFile(t, dir, "alice.key", "x", 0o600)
	looseKey := writeFile(t, dir, "loose.key", "x", 0o644)
	pw := writeFile(t, dir, "corp.pw", "s3cret", 0o600)
	base := corpProfile + `auth = "eap-tls"
ca = "` + ca + `"
cert = "` + cert + `"
`
	withKey := base + "key = \"" + key + "\"\n"
	tests := []struct {
		name, body, wantErr string
	}{
		{"ok", withKey + "eap_identity = \"alice\"\neap_only = true\n", ""},
		{"missing key", base, "key: missing (auth = \"eap-tls\")"},
		{"loose key", base + "key = \"" + looseKey + "\"\n", "readable by group or others"},
		{"password_file with eap-tls", withKey + "password_file = \"" + pw + "\"\n", `password_file: only for auth = "eap-mschapv2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadCorp(t, tt.body, tt.wantErr)
			if p == nil {
				return
			}
			if p.Auth != AuthEAPTLS || p.EAPIdentity != "alice" || !p.EAPOnly || p.Cert != cert || p.Key != key || p.NeedsPassword() {
				t.Fatalf("got %+v", p)
			}
		})
	}
}

func TestLoadGatewayEAPClients(t *testing.T) {
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", "x", 0o644)
	cert := writeFile(t, dir, "gw.pem", "x", 0o644)
	key := writeFile(t, dir, "gw.key", "x", 0o600)
	pw := writeFile(t, dir, "alice.pw", "s3cret pw\n", 0o600)
	loose := writeFile(t, dir, "loose.pw", "s3cret pw\n", 0o644)
	psk := writeFile(t, dir, "alice.psk", "s3cret", 0o600)
	head := func(auth string) string {
		return `[gateway]
listen = ["203.0.113.10"]
local_id = "vpn.example.com"
auth = "` + auth + `"
cert = "` + cert + `"
key = "` + key + `"
ca = "` + ca + `"
pool = "10.99.200.0/24"

[[gateway.clients]]
id = "alice@example.com"
`
	}
	tests := []struct {
		name, body, wantErr string
		user                string
	}{
		{name: "password", body: head("pubkey") + "password_file = \"" + pw + "\"\n", user: "alice@example.com"},
		{name: "eap identity", body: head("pubkey") + "password_file = \"" + pw + "\"\neap_identity = \"alice\"\n", user: "alice"},
		{name: "psk gateway", body: head("psk") + "password_file = \"" + pw + "\"\n", wantErr: `clients[0].password_file: needs auth = "pubkey"`},
		{name: "both", body: head("pubkey") + "password_file = \"" + pw + "\"\npsk_file = \"" + psk + "\"\n", wantErr: "not both"},
		{name: "loose", body: head("pubkey") + "password_file = \"" + loose + "\"\n", wantErr: "readable by group or others"},
		{name: "identity alone", body: head("pubkey") + "eap_identity = \"alice\"\n", wantErr: "eap_identity: only with password_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := loadGatewayText(t, tt.body, tt.wantErr)
			if g == nil {
				return
			}
			c := g.Clients[0]
			if string(c.Password) != "s3cret pw" || c.EAPIdentity != tt.user || c.PSK != nil {
				t.Fatalf("client %q identity %q", c.ID, c.EAPIdentity)
			}
		})
	}
}
