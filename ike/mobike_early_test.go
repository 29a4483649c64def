package ike

import (
	"testing"
)

// TestEarlyMove: with EarlyMove a client's move to an unproved address
// sends ESP ahead at once (PathUpdated.Unproved, with the request's size
// as the first credit) while IKE waits for the proof; a check that passes
// confirms the move, one that fails brings ESP back (Back) and the SA
// never moved. An address proved before needs neither.
func TestEarlyMove(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answered bool
	}{
		{name: "check answered", answered: true},
		{name: "check unanswered", answered: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMobikeEnv(t, func(c *ResponderConfig) { c.EarlyMove = true })
			// The check's answers are dropped until the SA's path has been
			// looked at; then, if the case says so, they get through.
			block := holdResponsesFrom(e, clientAddr2)
			c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
			old := gw.Path()
			if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
				t.Fatal(err)
			}
			early := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
			if !early.Unproved || early.Back || early.Path.Remote.Addr() != clientAddr2 || early.Credit <= 0 {
				t.Fatalf("first event %+v: want ESP ahead to %v with the request's size as credit", early, clientAddr2)
			}
			waitCounter(t, gw, "RoutabilityChecks", func(c Counters) uint64 { return c.RoutabilityChecks }, 1)
			if p := gw.Path(); !samePath(p, old) {
				t.Fatalf("the SA itself moved to %v before the proof", p)
			}
			block.Store(!tc.answered)
			end := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
			if end.Unproved {
				t.Fatalf("second event %+v still unproved", end)
			}
			if tc.answered {
				if end.Back || end.Path.Remote.Addr() != clientAddr2 || gw.Path().Remote.Addr() != clientAddr2 {
					t.Fatalf("after the proof: event %+v, SA path %v", end, gw.Path())
				}
				// Back to the address proved at IKE_AUTH: moved at once.
				if _, err := e.move(c, pathFrom(clientAddr, gwNATT)); err != nil {
					t.Fatal(err)
				}
				back := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
				if back.Unproved || back.Back || back.Path.Remote.Addr() != clientAddr {
					t.Fatalf("move to a proved address: %+v", back)
				}
				if got := gw.Counters().RoutabilityChecks; got != 1 {
					t.Fatalf("%d checks, want 1", got)
				}
				return
			}
			if !end.Back || !samePath(end.Path, old) || !samePath(gw.Path(), old) {
				t.Fatalf("after the failed check: event %+v, SA path %v; want ESP back on %v", end, gw.Path(), old)
			}
			if got := gw.Counters().RoutabilityFailures; got != 1 {
				t.Fatalf("%d failed checks, want 1", got)
			}
		})
	}
}
