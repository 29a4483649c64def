package ike

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/netsim"
)

// TestDeadPeerDetection drives the client's DPD timer with a fake clock
// over the in-memory network: a quiet but live gateway is checked and the
// SA stays; inbound ESP makes a check unnecessary; while held (no usable
// network) nothing is sent; a gateway that stops answering ends the SA
// with ErrDeadPeer after the retransmissions.
func TestDeadPeerDetection(t *testing.T) {
	e := newEnv(t, 950, nil)
	fc := newFakeClock()
	var espAt atomic.Int64
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Clock = fc
	cfg.DPDDelay = 30 * time.Second
	cfg.LastInbound = func() time.Time {
		if n := espAt.Load(); n != 0 {
			return time.Unix(0, n)
		}
		return time.Time{}
	}
	c, est := e.dialEstablished(t, cfg)
	sa := est.SA
	sent := func() uint64 { return e.net.Stats().Sent }
	// idle waits until no exchange is outstanding on the client.
	idle := func() {
		t.Helper()
		if !waitNoExchange(t, sa) {
			t.Fatal("SA died")
		}
	}
	fire := func() {
		t.Helper()
		fc.mustFireNext(t, sa.Done(), "timer pending")
		call(sa, func() {})
	}

	// A quiet gateway that answers: one check, answered, SA kept.
	before := sent()
	fire()
	idle()
	if n := sent() - before; n != 2 {
		t.Fatalf("%d datagrams for a liveness check, want request and response", n)
	}

	// ESP arrived a second before the delay ran out: no check.
	espAt.Store(fc.Now().Add(29 * time.Second).UnixNano())
	before = sent()
	fire()
	if n := sent() - before; n != 0 {
		t.Fatalf("checked a peer that sent ESP: %d datagrams", n)
	}

	// Held during an outage: silence proves nothing.
	e.net.SetDefault(netsim.Impairment{Loss: 1})
	sa.HoldDPD(true)
	call(sa, func() {})
	before = sent()
	for range 3 {
		fire()
	}
	if n := sent() - before; n != 0 {
		t.Fatalf("checked while held: %d datagrams", n)
	}

	// Released, and the gateway is gone for good.
	sa.HoldDPD(false)
	call(sa, func() {})
	for fc.fireNext(sa.Done()) {
	}
	d := nextEvent[*Deleted](t, c.events, 2*time.Second)
	if !errors.Is(d.Reason, ErrDeadPeer) || !errors.Is(d.Reason, ErrUnreachable) {
		t.Fatalf("deleted with %v, want dead peer detection", d.Reason)
	}
	if sent() == before {
		t.Fatal("declared dead without a liveness check")
	}
}
