package ike

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// TestInvalidIKESPIAfterRestart: a gateway that lost its state (a new
// Responder in the old one's place) answers the client's next request with
// an unprotected INVALID_IKE_SPI (RFC 7296 2.21.4) that copies its SPIs and
// Message ID; the client takes it as a hint, tells its owner at once
// (PeerHint, which the daemon answers with a reconnect), and since no
// authenticated answer follows, its liveness check fails and the SA ends.
func TestInvalidIKESPIAfterRestart(t *testing.T) {
	e := newEnv(t, 1600, nil)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Retransmit = Retransmit{Initial: 50 * time.Millisecond, Factor: 1, Retries: 2}
	c, est := e.dialEstablished(t, cfg)
	// The restart: a fresh responder takes the gateway's packets.
	restarted, err := NewResponder(e.ctx, e.rcfg, e.gwHost, make(chan Event, 16))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var answers []*wire.Message
	e.gwHost.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		restarted.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
	})
	c.host.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		if m, err := wire.Decode(pkt); err == nil && m.Header.Flags&wire.FlagResponse != 0 {
			mu.Lock()
			answers = append(answers, m)
			mu.Unlock()
		}
		est.SA.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
	})
	res := make(chan error, 1)
	go func() { res <- est.SA.CheckLiveness(context.Background()) }()
	hint := nextEvent[*PeerHint](t, c.events, 2*time.Second)
	if hint.Refuted || hint.Notify != "INVALID_IKE_SPI" {
		t.Fatalf("hint %+v", hint)
	}
	select {
	case err := <-res:
		if err == nil {
			t.Fatal("a liveness check was answered by a gateway without the SA")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the liveness check never ended")
	}
	st := restarted.Stats()
	if st.InvalidSPISent == 0 || st.UnknownSPI < st.InvalidSPISent {
		t.Fatalf("restarted gateway stats %+v", st)
	}
	spii, spir := est.SA.SPIs()
	mu.Lock()
	m := answers[0]
	mu.Unlock()
	if m.Header.SPIi != spii || m.Header.SPIr != spir || m.Header.Exchange != wire.ExchangeInformational ||
		m.Header.Flags&wire.FlagInitiator != 0 || wire.FindNotify(m.Payloads, wire.NotifyInvalidIKESPI) == nil {
		t.Fatalf("answer %+v %v", m.Header, m.Payloads)
	}
}

// TestInvalidIKESPIOnlyForRequests: responses, IKE_SA_INIT and requests
// beyond the rate limit under unknown SPIs get no answer.
func TestInvalidIKESPIOnlyForRequests(t *testing.T) {
	fc := newFakeClock()
	sent := 0
	tr := funcTransport(func([]byte, netpath.Path) { sent++ })
	cfg := defaultResponderConfig(t)
	cfg.Clock = fc
	r, err := NewResponder(context.Background(), cfg, tr, make(chan Event, 1))
	if err != nil {
		t.Fatal(err)
	}
	msg := func(ex wire.ExchangeType, flags uint8) []byte {
		b, err := (&wire.Message{Header: wire.Header{SPIi: 7, SPIr: 9, Version: 0x20, Exchange: ex, Flags: flags, MessageID: 3},
			Payloads: []wire.Payload{&wire.Encrypted{FirstInner: wire.PayloadNone, Data: make([]byte, 32)}}}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	path := netpath.Path{Local: netip.MustParseAddrPort("198.51.100.1:4500"), Remote: netip.MustParseAddrPort("192.0.2.10:4500")}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want int
	}{
		{"response", msg(wire.ExchangeInformational, wire.FlagResponse), 0},
		{"IKE_SA_INIT with an SPIr", msg(wire.ExchangeIKESAInit, wire.FlagInitiator), 0},
		{"request", msg(wire.ExchangeInformational, wire.FlagInitiator), 1},
		{"request from the responder end", msg(wire.ExchangeCreateChildSA, 0), 1},
	} {
		sent = 0
		r.HandlePacket(tc.pkt, path)
		if sent != tc.want {
			t.Errorf("%s: %d answers, want %d", tc.name, sent, tc.want)
		}
	}
	// A flood: the burst is answered, the rest waits for the refill.
	sent = 0
	req := msg(wire.ExchangeInformational, wire.FlagInitiator)
	for range 10 * invalidSPIBurst {
		r.HandlePacket(req, path)
	}
	if sent > invalidSPIBurst {
		t.Fatalf("%d answers to a flood, want at most %d", sent, invalidSPIBurst)
	}
	if r.Stats().InvalidSPILimited == 0 {
		t.Fatal("nothing counted as rate-limited")
	}
	fc.mu.Lock()
	fc.now = fc.now.Add(invalidSPIEvery)
	fc.mu.Unlock()
	sent = 0
	r.HandlePacket(req, path)
	if sent != 1 {
		t.Fatalf("after the refill: %d answers, want 1", sent)
	}
}
