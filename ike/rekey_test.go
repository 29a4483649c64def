package ike

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
)

var espPFS = Proposal{Text: "aes256gcm16-ecp256", Transforms: []wire.Transform{
	tr(wire.TransformEncr, 20, 256), tr(wire.TransformDH, 19, 0), tr(wire.TransformESN, 0, 0)}}

// children returns an SA's Child SAs as its goroutine sees them.
func children(t *testing.T, sa *SA) []ChildSA {
	t.Helper()
	var cs []ChildSA
	if !call(sa, func() { cs = slices.Clone(sa.children) }) {
		t.Fatal("SA gone")
	}
	return cs
}

// checkPair asserts that both ends hold exactly one Child SA and that it
// is the same SA seen from either side.
func checkPair(t *testing.T, client, gw *SA) ChildSA {
	t.Helper()
	cc, gc := children(t, client), children(t, gw)
	if len(cc) != 1 || len(gc) != 1 {
		t.Fatalf("client has %d Child SAs, gateway %d; want one each", len(cc), len(gc))
	}
	c, g := cc[0], gc[0]
	if c.SPIIn != g.SPIOut || c.SPIOut != g.SPIIn || !bytes.Equal(c.KeyIn, g.KeyOut) || !bytes.Equal(c.KeyOut, g.KeyIn) {
		t.Fatalf("Child SAs do not match: client %08x/%08x gateway %08x/%08x", c.SPIIn, c.SPIOut, g.SPIIn, g.SPIOut)
	}
	return c
}

// settledPair is checkPair once a rekey's old SA is gone (its DELETE
// waits replacedDeleteDelay).
func settledPair(t *testing.T, client, gw *SA) ChildSA {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for (len(children(t, client)) != 1 || len(children(t, gw)) != 1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return checkPair(t, client, gw)
}

// TestRekeyChild rekeys the Child SA from either end, with and without
// PFS: the initiator of the rekey reports it with Initiated and deletes
// the old SA; both ends end up with the one new SA and matching keys.
func TestRekeyChild(t *testing.T) {
	for i, tc := range []struct {
		name     string
		esp      []Proposal
		byClient bool
	}{
		{"client", []Proposal{esp256}, true},
		{"gateway", []Proposal{esp256}, false},
		{"client with PFS", []Proposal{espPFS}, true},
		{"gateway with PFS", []Proposal{espPFS}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(1000+i), func(r *ResponderConfig) { r.ESP = tc.esp })
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.ESP = tc.esp
			c, est := e.dialEstablished(t, cfg)
			gwEst := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			old := checkPair(t, est.SA, gwEst.SA)
			rekeyer, rekeyerEvents, otherEvents, oldIn := est.SA, c.events, e.respEvents, old.SPIIn
			if !tc.byClient {
				rekeyer, rekeyerEvents, otherEvents, oldIn = gwEst.SA, e.respEvents, c.events, old.SPIOut
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := rekeyer.RekeyChild(ctx, oldIn); err != nil {
				t.Fatal(err)
			}
			ours := nextEvent[*ChildRekeyed](t, rekeyerEvents, 2*time.Second)
			theirs := nextEvent[*ChildRekeyed](t, otherEvents, 2*time.Second)
			if !ours.Initiated || theirs.Initiated || ours.OldSPIIn != oldIn {
				t.Fatalf("rekey events: ours %+v theirs %+v", ours, theirs)
			}
			if d := nextEvent[*ChildDeleted](t, rekeyerEvents, 2*time.Second); d.SPIIn != oldIn {
				t.Fatalf("deleted %08x, want the old SA %08x", d.SPIIn, oldIn)
			}
			nextEvent[*ChildDeleted](t, otherEvents, 2*time.Second)
			now := checkPair(t, est.SA, gwEst.SA)
			if now.SPIIn == old.SPIIn || bytes.Equal(now.KeyIn, old.KeyIn) {
				t.Fatal("the Child SA was not replaced")
			}
			if err := rekeyer.RekeyChild(ctx, oldIn); err == nil {
				t.Fatal("rekeyed an SA that no longer exists")
			}
		})
	}
}

// TestRekeyCollision makes both ends rekey the same Child SA at once over
// a link slow enough that the requests cross (RFC 7296 2.8.1). Both
// exchanges succeed; the redundant SA and the old one are deleted, and
// the ends agree on the one that remains.
func TestRekeyCollision(t *testing.T) {
	for seed := int64(0); seed < 4; seed++ {
		e := newEnv(t, 1100+seed, nil)
		e.net.SetDefault(netsim.Impairment{Delay: 30 * time.Millisecond})
		c, est := e.dialEstablished(t, defaultInitiatorConfig(t, "alice@example.com"))
		gwEst := nextEvent[*Established](t, e.respEvents, 2*time.Second)
		old := checkPair(t, est.SA, gwEst.SA)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Add(2)
		go func() { defer wg.Done(); errs[0] = est.SA.RekeyChild(ctx, old.SPIIn) }()
		go func() { defer wg.Done(); errs[1] = gwEst.SA.RekeyChild(ctx, old.SPIOut) }()
		wg.Wait()
		cancel()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("seed %d: rekeys: client %v, gateway %v", seed, errs[0], errs[1])
		}
		// Each side ran one rekey and answered the other's, then the old
		// SA and the redundant new one are deleted.
		for _, side := range []struct {
			name   string
			events chan Event
		}{{"client", c.events}, {"gateway", e.respEvents}} {
			var ran, answered, deleted int
			timeout := time.After(3 * time.Second)
			for ran+answered < 2 || deleted < 2 {
				select {
				case ev := <-side.events:
					switch ev := ev.(type) {
					case *ChildRekeyed:
						if ev.Initiated {
							ran++
						} else {
							answered++
						}
					case *ChildDeleted:
						deleted++
					}
				case <-timeout:
					t.Fatalf("seed %d: %s ran %d rekeys, answered %d, saw %d deletes", seed, side.name, ran, answered, deleted)
				}
			}
			if ran != 1 || answered != 1 {
				t.Fatalf("seed %d: %s ran %d rekeys and answered %d: the requests did not cross", seed, side.name, ran, answered)
			}
		}
		if now := checkPair(t, est.SA, gwEst.SA); now.SPIIn == old.SPIIn {
			t.Fatalf("seed %d: the old SA survived", seed)
		}
	}
}

// TestRekeyTimer: the soft lifetime starts the rekey by itself.
func TestRekeyTimer(t *testing.T) {
	e := newEnv(t, 1200, nil)
	cfg, fc := clockedInitiatorConfig(t)
	cfg.ChildRekeyTime, cfg.ChildLifeTime, cfg.RekeyJitter = time.Hour, 70*time.Minute, 5*time.Minute
	c, est := e.dialEstablished(t, cfg)
	if at := fc.mustFireNext(t, est.SA.Done(), "lifetime timer"); at > time.Hour || at <= 55*time.Minute {
		t.Fatalf("first timer after %v, want the soft lifetime less at most the jitter", at)
	}
	ev := nextEvent[*ChildRekeyed](t, c.events, 2*time.Second)
	if !ev.Initiated || ev.OldSPIIn != est.Children[0].SPIIn {
		t.Fatalf("rekey event %+v", ev)
	}
	// The old SA's DELETE waits a moment for its last packets. Its timer
	// is armed on the SA's goroutine after the event went out: wait for
	// that step to end.
	call(est.SA, func() {})
	if at := fc.mustFireNext(t, est.SA.Done(), "timer for the old SA's DELETE"); at != replacedDeleteDelay {
		t.Fatalf("old SA deleted %v after the rekey, want %v", at, replacedDeleteDelay)
	}
	nextEvent[*ChildDeleted](t, c.events, 2*time.Second)
}
