package ike

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike/wire"
)

// switchClient is an initiator advertising the switch extension.
func switchClient(t *testing.T, local netip.Addr, mod func(*InitiatorConfig)) InitiatorConfig {
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Path.Local = netip.AddrPortFrom(local, 40000)
	cfg.Switch = true
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

var fastSwitch = SwitchOptions{Retransmit: fastRR}

func (e *testEnv) requestSwitch(gw *SA, to netip.Addr, opt SwitchOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	return gw.RequestSwitch(ctx, to, opt)
}

// requestFrom makes sa send an INFORMATIONAL request with ps over path,
// retransmitted on fastRR, and reports its answer (nil) or timeout. An
// unanswered request gives its Message ID back: the peer never saw it.
func requestFrom(t *testing.T, sa *SA, path esp.Path, ps []wire.Payload) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	if !call(sa, func() {
		if sa.out != nil {
			res <- errors.New("a request is outstanding")
			return
		}
		msgID := sa.nextMsgID
		pkt, err := sa.seal(sa.header(wire.ExchangeInformational, msgID, false), ps)
		if err != nil {
			res <- err
			return
		}
		sa.nextMsgID++
		r := &request{exchange: wire.ExchangeInformational, msgID: msgID, pkt: pkt, keepSA: true, sched: &fastRR,
			paths: func(int) (esp.Path, bool) { return path, true }}
		r.onResponse = func(wire.Header, []wire.Payload, []byte) { res <- nil }
		r.onTimeout = func(err error) {
			sa.nextMsgID = msgID
			res <- err
		}
		sa.sendRequest(r)
	}) {
		t.Fatal("SA gone")
	}
	return res
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(mobikeWait):
		t.Fatal("no outcome")
		return nil
	}
}

// TestSwitchThroughRestrictedNAT is the draft's case: a restricted-cone NAT
// in front of the client, the gateway moving from R1 to R2. Sending from R2
// the RFC 4555 way is filtered by the NAT; SWITCH_TO_IP_ADDRESS, asked over
// R1 and answered to R2, opens the NAT, and the SA works through R2.
func TestSwitchThroughRestrictedNAT(t *testing.T) {
	e := newMobikeEnv(t, nil)
	_, natted := natHosts(e)
	c, gw := e.established(switchClient(t, natInside, nil), natted)
	if !gw.SwitchCapable() {
		t.Fatal("gateway: client not switch capable")
	}
	old := gw.Path()
	if old.Local.Addr() != gwAddr || old.Remote.Addr() != natPublic {
		t.Fatalf("gateway SA on %v", old)
	}

	// (a) RFC 4555 alone: the gateway just talks from R2. The NAT has no
	// permission for R2 and drops every transmission.
	filtered := e.net.Stats().NATFiltered
	fromR2 := esp.Path{Local: gw2NATT, Remote: old.Remote}
	err := waitErr(t, requestFrom(t, gw, fromR2, nil))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("liveness from R2: %v, want no answer", err)
	}
	if got := e.net.Stats().NATFiltered - filtered; got < uint64(fastRR.Retries)+1 {
		t.Fatalf("NAT filtered %d packets from R2, want every one of %d", got, fastRR.Retries+1)
	}

	// (b) SWITCH_TO_IP_ADDRESS over R1; the answer to R2 opens the NAT.
	if err := e.requestSwitch(gw, gwAddr2, fastSwitch); err != nil {
		t.Fatalf("switch: %v", err)
	}
	if s := nextEvent[*SwitchSent](t, e.respEvents, mobikeWait); s.From != gwAddr || s.To != gwAddr2 {
		t.Fatalf("SwitchSent %+v", s)
	}
	req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
	if !req.Accepted || req.From != gwAddr || req.To != gwAddr2 {
		t.Fatalf("client: %+v", req)
	}
	if gw.Path().Local.Addr() != gwAddr {
		t.Fatal("gateway moved before the client's UPDATE_SA_ADDRESSES")
	}
	res, err := e.move(c, esp.Path{Local: c.sa.Path().Local, Remote: netip.AddrPortFrom(req.To, 4500)})
	if err != nil {
		t.Fatalf("client update: %v", err)
	}
	if res.Path.Remote != gw2NATT {
		t.Fatalf("client on %v", res.Path)
	}
	pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	if pu.Path.Local.Addr() != gwAddr2 {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
	done := nextEvent[*SwitchDone](t, e.respEvents, mobikeWait)
	if done.From != gwAddr || done.To != gwAddr2 || done.Took <= 0 {
		t.Fatalf("SwitchDone %+v", done)
	}
	if p := gw.Path(); p.Local.Addr() != gwAddr2 {
		t.Fatalf("gateway SA on %v", p)
	}
	// Now the gateway's own requests from R2 pass the NAT.
	filtered = e.net.Stats().NATFiltered
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	if err := gw.CheckLiveness(ctx); err != nil {
		t.Fatalf("liveness from R2 after the switch: %v", err)
	}
	if got := e.net.Stats().NATFiltered - filtered; got != 0 {
		t.Fatalf("NAT filtered %d packets after the switch", got)
	}
	if got := gw.Counters().RoutabilityChecks; got != 0 {
		t.Fatalf("%d return routability checks", got)
	}
}
