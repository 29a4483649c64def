package config

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestGatewayHA(t *testing.T) {
	dir := t.TempDir()
	psk := writeFile(t, dir, "alice.psk", "s3cret", 0o600)
	key := writeFile(t, dir, "ha.key", strings.Repeat("ab", 32)+"\n", 0o600)
	openKey := writeFile(t, dir, "open.key", strings.Repeat("ab", 32), 0o644)
	badKey := writeFile(t, dir, "bad.key", "short", 0o600)
	head := "[gateway]\nlisten = [\"203.0.113.42\"]\nlocal_id = \"vpn.example.com\"\npool = \"10.99.200.0/24\"\n" +
		"[[gateway.clients]]\nid = \"alice@example.com\"\npsk_file = \"" + psk + "\"\n[gateway.ha]\n"
	ok := map[string]string{
		"role": `"standby"`, "listen": `"10.98.0.2:4510"`, "peer": `"10.98.0.1:4510"`,
		"key_file": `"` + key + `"`, "takeover_address": `"203.0.113.10"`,
	}
	body := func(set map[string]string) string {
		var b strings.Builder
		b.WriteString(head)
		for _, k := range []string{"role", "listen", "peer", "key_file", "takeover_address", "dead_after"} {
			v, in := ok[k]
			if w, over := set[k]; over {
				v, in = w, w != ""
			}
			if in {
				b.WriteString(k + " = " + v + "\n")
			}
		}
		return b.String()
	}
	tests := []struct {
		name    string
		set     map[string]string
		wantErr string
		dead    time.Duration
	}{
		{name: "ok", dead: DefaultHADeadAfter},
		{name: "dead_after", set: map[string]string{"dead_after": `"600ms"`}, dead: 600 * time.Millisecond},
		{name: "no role", set: map[string]string{"role": ""}, wantErr: "gateway: ha.role: missing"},
		{name: "bad role", set: map[string]string{"role": `"primary"`}, wantErr: `ha.role: "primary" is not "active" or "standby"`},
		{name: "no listen", set: map[string]string{"listen": ""}, wantErr: "ha.listen: missing"},
		{name: "listen without port", set: map[string]string{"listen": `"10.98.0.2"`}, wantErr: `ha.listen: "10.98.0.2" is not an address:port`},
		{name: "bad peer", set: map[string]string{"peer": `"node-a:4510"`}, wantErr: `ha.peer: "node-a:4510" is not an address:port`},
		{name: "peer is us", set: map[string]string{"peer": `"10.98.0.2:4510"`}, wantErr: "ha.peer: 10.98.0.2:4510 is our own ha.listen"},
		{name: "no key", set: map[string]string{"key_file": ""}, wantErr: "ha.key_file: missing"},
		{name: "key readable by others", set: map[string]string{"key_file": `"` + openKey + `"`}, wantErr: "ha.key_file: " + openKey + " is readable by group or others"},
		{name: "bad key", set: map[string]string{"key_file": `"` + badKey + `"`}, wantErr: "ha.key_file: " + badKey + ": key is"},
		{name: "no takeover address", set: map[string]string{"takeover_address": ""}, wantErr: "ha.takeover_address: missing"},
		{name: "takeover address is ours", set: map[string]string{"takeover_address": `"203.0.113.42"`}, wantErr: "ha.takeover_address: 203.0.113.42 is one of our own listen addresses"},
		{name: "takeover address family", set: map[string]string{"takeover_address": `"2001:db8::1"`}, wantErr: "no listen address of its family"},
		{name: "short dead_after", set: map[string]string{"dead_after": `"10ms"`}, wantErr: `ha.dead_after: "10ms" is shorter than 100ms`},
		{name: "unknown key", set: map[string]string{"dead_after": `"1s"` + "\nheartbeat = \"1s\""}, wantErr: "heartbeat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := loadGatewayText(t, body(tt.set), tt.wantErr)
			if g == nil {
				return
			}
			h := g.HA
			if h == nil || h.Role != "standby" || h.Listen != netip.MustParseAddrPort("10.98.0.2:4510") ||
				h.Peer != netip.MustParseAddrPort("10.98.0.1:4510") || h.TakeoverAddress != netip.MustParseAddr("203.0.113.10") ||
				!bytes.Equal(h.Key, bytes.Repeat([]byte{0xab}, 32)) || h.DeadAfter != tt.dead {
				t.Fatalf("got %+v", h)
			}
		})
	}
	g, err := LoadGateway(writeFile(t, t.TempDir(), "gw.toml", strings.TrimSuffix(head, "[gateway.ha]\n"), 0o644))
	if err != nil || g.HA != nil {
		t.Fatalf("without [gateway.ha]: %+v, %v", g, err)
	}
}
