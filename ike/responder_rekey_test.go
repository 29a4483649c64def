package ike

import (
	"errors"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// hostileRekey makes the client send a REKEY_SA for old, whatever it knows
// about it, and returns the outcome.
func hostileRekey(t *testing.T, sa *SA, old ChildSA) (ChildSA, error) {
	t.Helper()
	done := make(chan error, 1)
	var cr *childRekey
	if !call(sa, func() {
		cr = &childRekey{old: old, ni: sa.randBytes(32), newSPIIn: sa.randSPI32()}
		sa.sendRekey(cr, 0, done)
	}) {
		t.Fatal("client SA ended")
	}
	select {
	case err := <-done:
		var made ChildSA
		call(sa, func() {
			for _, c := range sa.children {
				if c.SPIIn == cr.newSPIIn {
					made = c
				}
			}
		})
		return made, err
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to the rekey")
		return ChildSA{}, nil
	}
}

func gatewayChildren(t *testing.T, e *testEnv) int {
	t.Helper()
	sas := e.resp.SAs()
	if len(sas) != 1 {
		t.Fatalf("gateway has %d SAs", len(sas))
	}
	var n int
	call(sas[0], func() { n = len(sas[0].children) })
	return n
}

// TestRekeyOfReplacedChild: a client that rekeys the same Child SA again
// and again, or rekeys each new one without ever deleting the old, gets
// CHILD_SA_NOT_FOUND for the first and NO_ADDITIONAL_SAS past the cap; the
// gateway never holds more than MaxChildSAs.
func TestRekeyOfReplacedChild(t *testing.T) {
	const rounds = 20
	tests := []struct {
		name      string
		chain     bool // rekey the newest each time instead of the first
		wantErr   wire.NotifyType
		wantAtEnd int
	}{
		{"same-child-again", false, wire.NotifyChildSANotFound, 2},
		{"chain-without-deletes", true, wire.NotifyNoAdditionalSAs, DefaultMaxChildSAs},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(500+i), nil)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			// The client's timers never fire: it deletes nothing it replaced.
			cfg.Clock = newFakeClock()
			c, est := e.dialEstablished(t, cfg)
			// Nobody reads the events of this test: keep both sides going.
			for _, ch := range []chan Event{c.events, e.respEvents} {
				go func() {
					for {
						select {
						case <-ch:
						case <-e.ctx.Done():
							return
						}
					}
				}()
			}
			first := est.Children[0]
			cur := first
			var lastErr error
			for range rounds {
				old := first
				if tc.chain {
					old = cur
				}
				made, err := hostileRekey(t, c.sa, old)
				if err != nil {
					lastErr = err
					if !tc.chain {
						// The client drops what the gateway no longer has;
						// put it back to try again.
						call(c.sa, func() {
							if !c.sa.hasChild(first.SPIIn) {
								c.sa.children = append(c.sa.children, first)
							}
						})
					}
					continue
				}
				cur = made
			}
			if n := gatewayChildren(t, e); n != tc.wantAtEnd {
				t.Fatalf("gateway holds %d Child SAs after %d rekeys, want %d", n, rounds, tc.wantAtEnd)
			}
			var ne *NotifyError
			if !errors.As(lastErr, &ne) || ne.Type != tc.wantErr {
				t.Fatalf("last refusal %v, want %v", lastErr, tc.wantErr)
			}
		})
	}
}
