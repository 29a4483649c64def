package ike

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// countResponses counts the IKE responses the client behind the NAT sends
// to each gateway address (the link key is the address before the NAT).
func countResponses(e *testEnv) (toR1, toR2 *atomic.Int64) {
	toR1, toR2 = new(atomic.Int64), new(atomic.Int64)
	for _, l := range []struct {
		dst netip.Addr
		n   *atomic.Int64
	}{{gwAddr, toR1}, {gwAddr2, toR2}} {
		resp := ikeResponseFrom(natInside)
		e.net.SetLink(natInside, l.dst, netsim.Impairment{Drop: func(i int, d netsim.Datagram) bool {
			if resp(i, d) {
				l.n.Add(1)
			}
			return false
		}})
	}
	return toR1, toR2
}

// TestSwitchRevisions runs the draft's case (a restricted-cone NAT in front
// of the client, the gateway moving it from R1 to R2) under each pair of
// revision rules: where the client answers, what the gateway makes of it,
// and whether the client's UPDATE_SA_ADDRESSES then lands on R2.
func TestSwitchRevisions(t *testing.T) {
	tests := []struct {
		name       string
		client, gw SwitchRevision
		answerAtR2 bool  // the client answers at the new address
		wantErr    error // RequestSwitch's result
		switchDone bool  // SwitchDone after the client's update
	}{
		{"00 both", SwitchRev00, SwitchRev00, true, nil, true},
		{"03 both", SwitchRev03, SwitchRev03, false, nil, true},
		// A gateway on -03 rules takes a -00 client's answer at R2 as yes.
		{"03 gateway, 00 client", SwitchRev00, SwitchRev03, true, nil, true},
		// A -00 gateway reads a -03 client's answer at R1 as a refusal
		// (the caller hears ErrSwitchRefused); the update that follows is
		// then an ordinary RFC 4555 move and still lands.
		{"00 gateway, 03 client", SwitchRev03, SwitchRev00, false, ErrSwitchRefused, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMobikeEnv(t, func(c *ResponderConfig) { c.SwitchRevision = tt.gw })
			_, natted := natHosts(e)
			c, gw := e.established(switchClient(t, natInside, func(c *InitiatorConfig) { c.SwitchRevision = tt.client }), natted)
			toR1, toR2 := countResponses(e)
			filtered := e.net.Stats().NATFiltered

			err := e.requestSwitch(gw, gwAddr2, fastSwitch)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("switch: %v, want %v", err, tt.wantErr)
			}
			req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
			if !req.Accepted || req.From != gwAddr || req.To != gwAddr2 {
				t.Fatalf("client: %+v", req)
			}
			if r1, r2 := toR1.Load(), toR2.Load(); (r2 > 0) != tt.answerAtR2 || (r1 > 0) == tt.answerAtR2 {
				t.Fatalf("client answered %d times to R1, %d to R2; want the answer at R2: %v", r1, r2, tt.answerAtR2)
			}
			if p := gw.Path(); p.Local.Addr() != gwAddr {
				t.Fatalf("gateway moved to %v before the client's UPDATE_SA_ADDRESSES", p)
			}
			// The owner (daemon/mobility) moves the SA at once.
			e.followSwitch(t, c, gw2NATT)
			if tt.switchDone {
				if done := nextEvent[*SwitchDone](t, e.respEvents, mobikeWait); done.To != gwAddr2 {
					t.Fatalf("SwitchDone %+v", done)
				}
			} else {
				noEvent[*SwitchDone](t, e.respEvents)
			}
			// The client's own end (the NAT's mapping) stayed: verified.
			if got := gw.Counters().RoutabilityChecks; got != 0 {
				t.Fatalf("%d return routability checks", got)
			}
			// Both ends work through R2 and the NAT now lets R2 in.
			ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
			defer cancel()
			if err := gw.CheckLiveness(ctx); err != nil {
				t.Fatalf("gateway's liveness check from R2: %v", err)
			}
			if err := c.sa.CheckLiveness(ctx); err != nil {
				t.Fatalf("client's liveness check to R2: %v", err)
			}
			if tt.answerAtR2 && e.net.Stats().NATFiltered != filtered {
				// The answer to R2 opened the NAT before the update.
				t.Fatalf("NAT filtered %d packets", e.net.Stats().NATFiltered-filtered)
			}
		})
	}
}

// TestSwitchRev03OldGone: under -03 rules the client answers at R1, which
// has gone from the gateway (its request still left from there). The
// client's update lands on R2 first; the gateway then asks again over R2
// at once instead of waiting out its retransmission timer, and gets the
// cached answer there. The timer here is an hour: only that makes the
// switch complete within the test's wait.
func TestSwitchRev03OldGone(t *testing.T) {
	e := newMobikeEnv(t, func(c *ResponderConfig) { c.SwitchRevision = SwitchRev03 })
	_, natted := natHosts(e)
	c, gw := e.established(switchClient(t, natInside, func(c *InitiatorConfig) { c.SwitchRevision = SwitchRev03 }), natted)
	e.net.SetLink(natInside, gwAddr, netsim.Impairment{Drop: func(int, netsim.Datagram) bool { return true }})

	res := make(chan error, 1)
	go func() {
		res <- e.requestSwitch(gw, gwAddr2, SwitchOptions{OldGone: true, Retransmit: Retransmit{Initial: time.Hour, Retries: 1}})
	}()
	req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
	if !req.Accepted || req.To != gwAddr2 {
		t.Fatalf("client: %+v", req)
	}
	if _, err := e.move(c, netpath.Path{Local: c.sa.Path().Local, Remote: gw2NATT}); err != nil {
		t.Fatalf("client update: %v", err)
	}
	if done := nextEvent[*SwitchDone](t, e.respEvents, mobikeWait); done.From != gwAddr || done.To != gwAddr2 {
		t.Fatalf("SwitchDone %+v", done)
	}
	if err := waitErr(t, res); err != nil {
		t.Fatalf("switch: %v", err)
	}
	noEvent[*SwitchFailed](t, e.respEvents)
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	if err := gw.CheckLiveness(ctx); err != nil {
		t.Fatalf("gateway's liveness check from R2: %v", err)
	}
}

// TestSwitchRev03Refused: under -03 rules a refusal is answered at the old
// address too, so the gateway cannot tell it from a yes; the client checks
// the old path, and no update comes.
func TestSwitchRev03Refused(t *testing.T) {
	e := newMobikeEnv(t, func(c *ResponderConfig) {
		c.SwitchRevision = SwitchRev03
		c.Addresses = []netip.Addr{gwAddr} // R2 not announced
	})
	_, natted := natHosts(e)
	c, gw := e.established(switchClient(t, natInside, func(c *InitiatorConfig) { c.SwitchRevision = SwitchRev03 }), natted)
	toR1, toR2 := countResponses(e)
	if err := e.requestSwitch(gw, gwAddr2, fastSwitch); err != nil {
		t.Fatalf("switch: %v", err)
	}
	req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
	if req.Accepted || req.Reason != "not announced by the gateway" {
		t.Fatalf("client: %+v", req)
	}
	if toR1.Load() == 0 || toR2.Load() != 0 {
		t.Fatalf("client answered %d times to R1, %d to R2", toR1.Load(), toR2.Load())
	}
	noEvent[*SwitchDone](t, e.respEvents)
	if p := gw.Path(); p.Local.Addr() != gwAddr {
		t.Fatalf("gateway on %v", p)
	}
}

func TestSwitchRevisionChecked(t *testing.T) {
	for _, bad := range []SwitchRevision{-1, 2, 7} {
		cfg := switchClient(t, clientAddr, func(c *InitiatorConfig) { c.SwitchRevision = bad })
		if _, err := Dial(context.Background(), cfg, hostsTransport{}, nil); err == nil {
			t.Errorf("Dial accepted SwitchRevision %d", bad)
		}
		rcfg := defaultResponderConfig(t)
		rcfg.SwitchRevision = bad
		if _, err := NewResponder(context.Background(), rcfg, hostsTransport{}, nil); err == nil {
			t.Errorf("NewResponder accepted SwitchRevision %d", bad)
		}
	}
}
