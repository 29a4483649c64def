package ike

import (
	"net/netip"
	"testing"
	"time"
)

// TestIKESALimits: the gateway holds at most MaxIKESAsPerIdentity SAs of
// one identity (a new one ends the oldest) and at most MaxIKESAs in all
// (further IKE_SA_INITs are dropped).
func TestIKESALimits(t *testing.T) {
	tests := []struct {
		name      string
		perID     int
		total     int
		ids       []string
		wantUp    int // clients that connect
		wantSAs   int // SAs the gateway holds at the end
		wantLimit bool
	}{
		{"per-identity", 2, 0, []string{"alice@example.com", "alice@example.com", "alice@example.com", "alice@example.com"}, 4, 2, false},
		{"total", 0, 2, []string{"a@example.com", "b@example.com", "c@example.com"}, 2, 2, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(600+i), func(r *ResponderConfig) {
				r.MaxIKESAsPerIdentity, r.MaxIKESAs = tc.perID, tc.total
			})
			go func() {
				for {
					select {
					case <-e.respEvents:
					case <-e.ctx.Done():
						return
					}
				}
			}()
			up := 0
			for j, id := range tc.ids {
				cfg := defaultInitiatorConfig(t, id)
				cfg.NoInitialContact = true
				cfg.Path.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + j)}), 40000)
				if _, err := e.dial(cfg).wait(t, 10*time.Second); err == nil {
					up++
				} else {
					t.Logf("client %d (%s): %v", j, id, err)
				}
			}
			deadline := time.Now().Add(3 * time.Second)
			for len(e.resp.SAs()) != tc.wantSAs && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if n := len(e.resp.SAs()); n != tc.wantSAs || up != tc.wantUp {
				t.Fatalf("%d clients connected, gateway holds %d SAs; want %d and %d", up, n, tc.wantUp, tc.wantSAs)
			}
			if got := e.resp.Stats().IKESALimited > 0; got != tc.wantLimit {
				t.Fatalf("IKESALimited %d", e.resp.Stats().IKESALimited)
			}
		})
	}
}
