package mobility

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// TestSwitchTo: the gateway asked to move to its address gw2. The path from
// the current local address comes first; if the new address answers on no
// path, the current path and the others are tested as after a silence.
func TestSwitchTo(t *testing.T) {
	gw2 := netip.MustParseAddr("203.0.113.20")
	to := func(a netmon.Address) netpath.Path {
		p := pathOn(a)
		p.Remote = netip.AddrPortFrom(gw2, gw.Port())
		return p
	}
	tests := []struct {
		name      string
		start     netmon.Address
		addrs     []netmon.Address
		working   []netmon.Address
		deadGW2   bool
		wantCalls [][]netpath.Path
		want      netpath.Path // the path the SA ends on
		wantLog   []string
	}{
		{name: "current local address first", start: wlan, addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wlan, wwan},
			wantCalls: [][]netpath.Path{{to(wlan), to(wwan)}}, want: to(wlan), wantLog: []string{"move wlan->wlan switched"}},
		{name: "current uplink cannot reach it, the other can", start: wlan, addrs: []netmon.Address{wlan, wwan}, working: []netmon.Address{wwan},
			wantCalls: [][]netpath.Path{{to(wlan), to(wwan)}}, want: to(wwan), wantLog: []string{"move wlan->wwan switched"}},
		{name: "current address unlisted by the monitor still first", start: eth, addrs: []netmon.Address{wwan}, working: []netmon.Address{eth},
			wantCalls: [][]netpath.Path{{to(eth), to(wwan)}}, want: to(eth), wantLog: []string{"move eth0->eth0 switched"}},
		{name: "new address dead: back to testing the current path", start: wlan, addrs: []netmon.Address{wlan}, working: []netmon.Address{wlan},
			deadGW2: true, wantCalls: [][]netpath.Path{{to(wlan)}, {pathOn(wlan), to(wlan)}}, want: pathOn(wlan), wantLog: []string{"refresh wlan"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(knobs{}, tt.start, tt.addrs, tt.working)
				defer r.stop()
				r.sa.peers = []netip.Addr{gw.Addr(), gw2}
				if tt.deadGW2 {
					r.sa.deadRemote = map[netip.Addr]bool{gw2: true}
				}
				var moves []Move
				r.mu.Lock()
				r.onMove = func(mv Move) {
					moves = append(moves, mv)
					sw := ""
					if mv.Switched {
						sw = " switched"
					}
					r.record("move %s->%s%s", nameOf(mv.From), mv.Interface, sw)
				}
				r.mu.Unlock()
				r.m.SwitchTo(gw2)
				synctest.Wait()
				r.wait(30 * time.Second)
				if len(r.sa.calls) != len(tt.wantCalls) {
					t.Fatalf("updates over %v, want %v", r.sa.calls, tt.wantCalls)
				}
				for i := range tt.wantCalls {
					if len(r.sa.calls[i]) != len(tt.wantCalls[i]) {
						t.Fatalf("update %d over %v, want %v", i, r.sa.calls[i], tt.wantCalls[i])
					}
					for j := range tt.wantCalls[i] {
						if r.sa.calls[i][j] != tt.wantCalls[i][j] {
							t.Fatalf("update %d over %v, want %v", i, r.sa.calls[i], tt.wantCalls[i])
						}
					}
				}
				expectLog(t, r.take(), tt.wantLog...)
				if cur, _ := r.m.Current(); cur != tt.want {
					t.Fatalf("current %v, want %v", cur, tt.want)
				}
				if len(moves) > 0 && (moves[0].From != pathOn(tt.start) || moves[0].To != tt.want) {
					t.Fatalf("move %+v", moves[0])
				}
			})
		})
	}
}

// TestSwitchToDuringMove: a switch asked for while an update is in flight
// joins it at once, without the paths that update left (wlan is down); the
// newest switch wins, and only its result is taken.
func TestSwitchToDuringMove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gw2, gw3 := netip.MustParseAddr("203.0.113.20"), netip.MustParseAddr("203.0.113.30")
		r := newRig(knobs{}, wlan, []netmon.Address{wwan}, []netmon.Address{wwan})
		defer r.stop()
		r.sa.rtt = time.Second
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true})
		r.m.SwitchTo(gw2)
		r.m.SwitchTo(gw3)
		// Before the first update's answer (1 s) the switch is on its way.
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if len(r.sa.calls) != 2 {
			t.Fatalf("updates over %v before the first answered", r.sa.calls)
		}
		r.wait(5 * time.Second)
		if len(r.sa.calls) != 2 {
			t.Fatalf("updates over %v", r.sa.calls)
		}
		want := pathOn(wwan)
		want.Remote = netip.AddrPortFrom(gw3, gw.Port())
		if got := r.sa.calls[1]; len(got) != 1 || got[0] != want {
			t.Fatalf("switch update over %v, want %v", got, want)
		}
		if cur, _ := r.m.Current(); cur != want {
			t.Fatalf("current %v", cur)
		}
	})
}
