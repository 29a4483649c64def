package tunnel

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/netmon"
)

// TestDecodeHandoff: a handoff comes back with working sockets; one whose
// state and descriptors disagree is refused with the reason, and none of
// its sockets is left open here.
func TestDecodeHandoff(t *testing.T) {
	good := handoffState{Profile: "corp", Gateway: netip.MustParseAddrPort("127.0.0.1:500"),
		Route: netmon.Route{Src: netip.MustParseAddr("127.0.0.1"), IfIndex: 1, IfName: "lo", MTU: 65536},
		First: ike.FirstMessage{SPIi: 1, Group: 19, Packet: []byte{1}}, Sockets: 1}
	tests := []struct {
		name    string
		state   func() []byte
		socks   []string // local addresses of the sockets passed
		wantErr string
	}{
		{name: "one socket", state: func() []byte { return mustJSON(t, good) }, socks: []string{"127.0.0.1:0"}},
		{name: "not JSON", state: func() []byte { return []byte("{") }, socks: []string{"127.0.0.1:0"}, wantErr: "handoff:"},
		{name: "count differs", state: func() []byte { s := good; s.Sockets = 2; return mustJSON(t, s) }, socks: []string{"127.0.0.1:0"}, wantErr: "2 sockets named, 1 passed"},
		{name: "no first message", state: func() []byte { s := good; s.First.Packet = nil; return mustJSON(t, s) }, socks: []string{"127.0.0.1:0"}, wantErr: "no gateway, route or first message"},
		{name: "other family first", state: func() []byte { return mustJSON(t, good) }, socks: []string{"[::1]:0"}, wantErr: "not of the gateway's family"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var files []*os.File
			for _, a := range tt.socks {
				s, err := esp.ListenUDP(netip.MustParseAddrPort(a), 0)
				if err != nil {
					t.Skipf("no socket on %s: %v", a, err)
				}
				f, err := s.File()
				s.Close()
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				files = append(files, f)
			}
			h, err := decodeHandoff(tt.state(), files)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if h.Profile != "corp" || h.Gateway != good.Gateway || len(h.socks) != 1 || h.socks[0].LocalAddr().Port() == 0 {
				t.Fatalf("handoff %+v", h)
			}
			state, passed, err := h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			defer closeFiles(passed)
			if len(passed) != 1 || !strings.Contains(string(state), `"sockets":1`) {
				t.Fatalf("marshalled %s with %d files", state, len(passed))
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
