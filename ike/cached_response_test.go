package ike

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// fireDue runs every timer that is due at the clock's time.
func (c *fakeClock) fireDue() {
	for {
		c.mu.Lock()
		i := slices.IndexFunc(c.timers, func(t *fakeTimer) bool { return !t.stopped && !t.at.After(c.now) })
		if i < 0 {
			c.mu.Unlock()
			return
		}
		t := c.timers[i]
		c.timers = slices.Delete(c.timers, i, i+1)
		t.stopped = true
		c.mu.Unlock()
		t.f()
	}
}

// TestCachedResponseLimits: duplicates of a request (a replay from any
// source, say) get the cached response at most a few times in a row, and
// not at all once the cache was dropped after the exchange.
func TestCachedResponseLimits(t *testing.T) {
	tests := []struct {
		name    string
		expire  bool // let the cache time run out first
		replays int
		maxSent int
	}{
		{"burst", false, 20, cachedRespBurst},
		{"expired", true, 3, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			e := newEnv(t, int64(800+i), func(r *ResponderConfig) { r.Clock = clock })
			var mu sync.Mutex
			var authReq []byte
			e.gwHost.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
				if len(pkt) >= wire.HeaderLen && wire.ExchangeType(pkt[18]) == wire.ExchangeIKEAuth && pkt[19]&wire.FlagResponse == 0 {
					mu.Lock()
					authReq = append([]byte(nil), pkt...)
					mu.Unlock()
				}
				e.resp.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
			})
			victim := netip.MustParseAddr("192.0.2.222")
			var got atomic.Int64
			e.net.AddHost("victim", victim).HandleIKE(func([]byte, netip.AddrPort, netip.AddrPort) { got.Add(1) })
			if _, err := e.dial(defaultInitiatorConfig(t, "alice@example.com")).wait(t, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second).SA
			if tc.expire {
				clock.advance(cachedRespKeep + time.Second)
				clock.fireDue()
			}
			call(gw, func() {})
			mu.Lock()
			replay := authReq
			mu.Unlock()
			for range tc.replays {
				e.resp.HandlePacket(replay, netpath.Path{Local: gwNATT, Remote: netip.AddrPortFrom(victim, 4500)})
			}
			call(gw, func() {})
			// Whatever was sent has arrived once the network is idle.
			deadline := time.Now().Add(time.Second)
			for gw.Counters().DuplicateRequests < uint64(tc.replays) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			if n := got.Load(); n > int64(tc.maxSent) {
				t.Fatalf("%d replays drew %d responses to the victim, want at most %d", tc.replays, n, tc.maxSent)
			}
		})
	}
}
