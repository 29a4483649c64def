package config

import (
	"strings"
	"testing"
	"time"
)

// TestReauthTime: reauth_time in a profile and in a gateway file; off
// (only when the gateway asks, or never) by default.
func TestReauthTime(t *testing.T) {
	dir := t.TempDir()
	psk := writeFile(t, dir, "alice.psk", "s3cret", 0o600)
	tests := []struct {
		name, line string
		want       time.Duration
		wantErr    string
	}{
		{name: "default", want: 0},
		{name: "set", line: `reauth_time = "8h"`, want: 8 * time.Hour},
		{name: "off", line: `reauth_time = "0"`, want: 0},
		{name: "tiny", line: `reauth_time = "2s"`, wantErr: `reauth_time: "2s" is shorter than 10s`},
		{name: "bad", line: `reauth_time = "daily"`, wantErr: `reauth_time: "daily" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			profile := "[profiles.corp]\ngateway = \"198.51.100.1\"\nlocal_id = \"alice@example.com\"\nremote_id = \"vpn.example.com\"\npsk_file = \"" + psk + "\"\n" + tt.line + "\n"
			gateway := "[gateway]\nlisten = [\"203.0.113.10\"]\nlocal_id = \"vpn.example.com\"\npool = \"10.99.200.0/24\"\n" + tt.line +
				"\n[[gateway.clients]]\nid = \"alice@example.com\"\npsk_file = \"" + psk + "\"\n"
			ps, perr := LoadProfiles(writeFile(t, t.TempDir(), "roam.toml", profile, 0o644))
			g, gerr := LoadGateway(writeFile(t, t.TempDir(), "gw.toml", gateway, 0o644))
			for _, err := range []error{perr, gerr} {
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
					}
				} else if err != nil {
					t.Fatal(err)
				}
			}
			if tt.wantErr != "" {
				return
			}
			if ps["corp"].ReauthTime != tt.want || g.ReauthTime != tt.want {
				t.Fatalf("reauth_time: profile %v, gateway %v, want %v", ps["corp"].ReauthTime, g.ReauthTime, tt.want)
			}
		})
	}
}
