package ike

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/roam-vpn/roam/netpath"
)

// pathLog records what a Current tells its follower.
type pathLog struct {
	mu     sync.Mutex
	states []netpath.State
}

func (l *pathLog) FollowPath(s netpath.State) {
	l.mu.Lock()
	l.states = append(l.states, s)
	l.mu.Unlock()
}

func (l *pathLog) last() netpath.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.states[len(l.states)-1]
}

// TestSACurrent: the SA keeps no path of its own. Its Current starts on
// the dialed path, named after the dial's uplink; the port float, the
// answer to an update and the responder following it are Confirms of the
// same Current that Path reads and followers hear of, and the uplink's
// name stays only while the interface does.
func TestSACurrent(t *testing.T) {
	tests := []struct {
		name    string
		to      netpath.Path
		wantIf  string
		remoteA netip.Addr // the client's address the gateway ends on
	}{
		{"same uplink, other gateway address", netpath.Path{Local: netip.AddrPortFrom(clientAddr, 40000), Remote: gw2NATT},
			"wlan", clientAddr},
		{"other uplink", netpath.Path{Local: netip.AddrPortFrom(clientAddr2, 40000), Remote: gwNATT, IfIndex: 3},
			"", clientAddr2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMobikeEnv(t, nil)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.IfName = "wlan"
			c, gw := e.established(cfg, e.net.AddHost("client", clientAddr, clientAddr2))

			start := c.sa.Current().Load()
			if start.Path != c.sa.Path() || start.Sending != start.Path || start.IfName != "wlan" {
				t.Fatalf("client's Current %+v, SA on %v", start, c.sa.Path())
			}
			if start.Path.Remote != gwNATT {
				t.Fatalf("client on %v after IKE_SA_INIT, want the float to %v", start.Path.Remote, gwNATT)
			}
			var client, gateway pathLog
			c.sa.Current().Follow(&client)
			gw.Current().Follow(&gateway)

			res, err := e.move(c, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			want := netpath.State{Path: res.Path, IfName: tt.wantIf, Sending: res.Path}
			if got := client.last(); got != want || c.sa.Path() != res.Path {
				t.Fatalf("client's Current told %+v, SA on %v; want %+v", got, c.sa.Path(), want)
			}
			up := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
			if got := gateway.last(); got.Path != up.Path || got.Sending != up.Path || gw.Path() != up.Path ||
				up.Path.Remote.Addr() != tt.remoteA {
				t.Fatalf("gateway's Current told %+v, SA on %v; the gateway moved to %v, want the client at %v",
					got, gw.Path(), up.Path, tt.remoteA)
			}
		})
	}
}
