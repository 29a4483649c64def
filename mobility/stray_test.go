package mobility

import (
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// strays hands out one stray path when armed, like esp.Peer.TakeStray.
type strays struct {
	mu sync.Mutex
	p  *netpath.Path
}

func (s *strays) set(p netpath.Path) { s.mu.Lock(); s.p = &p; s.mu.Unlock() }
func (s *strays) take() (netpath.Path, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return netpath.Path{}, false
	}
	p := *s.p
	s.p = nil
	return p, true
}

// TestStrayPort: ESP from the gateway's address but another port (a NAT in
// front of the gateway moved) makes the Mover update over that port, and
// the result is a NAT refresh, not an uplink move; ESP from another
// gateway address is no such sign.
func TestStrayPort(t *testing.T) {
	moved := netip.AddrPortFrom(gw.Addr(), 61000)
	other := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.26"), 4500)
	tests := []struct {
		name      string
		from      netip.AddrPort
		wantCalls int
		wantLog   []string
	}{
		{"new port of the gateway's address", moved, 1, []string{"refresh wlan"}},
		{"another gateway address", other, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &traffic{sending: true, answered: true}
				st := &strays{}
				r := newRig(knobs{Activity: tr.Activity, StrayFrom: st.take}, wlan, []netmon.Address{wlan, wwan}, []netmon.Address{wlan, wwan})
				defer r.stop()
				r.wait(time.Second)
				p := pathOn(wlan)
				p.Remote = tt.from
				st.set(p)
				r.wait(time.Second)
				expectLog(t, r.take(), tt.wantLog...)
				if len(r.sa.calls) != tt.wantCalls {
					t.Fatalf("%d updates %v, want %d", len(r.sa.calls), r.sa.calls, tt.wantCalls)
				}
				if tt.wantCalls == 0 {
					return
				}
				if got := r.sa.calls[0][0]; got.Remote != moved || got.Local != pathOn(wlan).Local {
					t.Fatalf("update first over %v, want the gateway's new port from our current address", got)
				}
				if cur, _ := r.m.Current(); cur.Remote != moved {
					t.Fatalf("current path %v, want the gateway's new port", cur)
				}
			})
		})
	}
}
