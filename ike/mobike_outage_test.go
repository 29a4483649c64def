package ike

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// TestUpdateAfterOutage: an UPDATE_SA_ADDRESSES that gets no answer
// because every path is dead fails without killing the SA, and after a
// long outage the next update (same message ID and COOKIE2, RFC 4555 3.5)
// moves the SA and the responder, and the SA goes on working: the failed
// update left no hole in the message IDs.
func TestUpdateAfterOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, 1, nil)
		var blackout atomic.Bool
		e.net.SetDefault(netsim.Impairment{Drop: func(int, netsim.Datagram) bool { return blackout.Load() }})
		c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
		est, err := c.wait(t, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		nextEvent[*Established](t, e.respEvents, 10*time.Second)
		nextEvent[*Established](t, c.events, 10*time.Second)
		ctx := context.Background()

		moved := netip.MustParseAddr("192.0.2.20")
		c.host.AddAddr(moved)
		to := []netpath.Path{{Local: netip.AddrPortFrom(moved, est.Path.Local.Port()), Remote: est.Path.Remote}}
		blackout.Store(true)
		start := time.Now()
		_, err = c.sa.UpdateAddresses(ctx, to)
		var unreachable *UnreachableError
		if !errors.As(err, &unreachable) {
			t.Fatalf("update during the outage: %v, want unreachable", err)
		}
		t.Logf("failed after %v", time.Since(start))
		select {
		case ev := <-c.events:
			t.Fatalf("event %T after a failed update", ev)
		default:
		}
		for range 3 { // retried while the outage lasts
			time.Sleep(time.Minute)
			if _, err := c.sa.UpdateAddresses(ctx, to); !errors.As(err, &unreachable) {
				t.Fatalf("retry during the outage: %v", err)
			}
		}

		time.Sleep(30 * time.Minute)
		blackout.Store(false)
		res, err := c.sa.UpdateAddresses(ctx, to)
		if err != nil {
			t.Fatalf("update after the outage: %v", err)
		}
		if res.Path.Local.Addr() != moved || c.sa.Path().Local.Addr() != moved {
			t.Fatalf("moved to %v, SA on %v", res.Path, c.sa.Path())
		}
		up := nextEvent[*PathUpdated](t, e.respEvents, 10*time.Second)
		if up.Path.Remote.Addr() != moved {
			t.Fatalf("responder moved to %v", up.Path)
		}
		if err := c.sa.CheckLiveness(ctx); err != nil {
			t.Fatalf("liveness after the move: %v", err)
		}
	})
}
