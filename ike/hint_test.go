package ike

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// unprotected builds a cleartext notification as a peer without our state
// sends it.
func unprotected(t *testing.T, spii, spir uint64, n *wire.Notify) []byte {
	t.Helper()
	m := &wire.Message{Header: wire.Header{SPIi: spii, SPIr: spir, Version: 0x20, Exchange: wire.ExchangeInformational, Flags: wire.FlagResponse},
		Payloads: []wire.Payload{n}}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUnprotectedHints: an unauthenticated INVALID_IKE_SPI or INVALID_SPI
// concerning our SA makes the client test the gateway at once. A live
// gateway answers and the SA stays (a forged notification costs one
// exchange, and hints are rate-limited); notifications about other SAs or
// from other addresses are ignored; a gateway that has really lost the SA
// does not answer, and the SA ends with ErrDeadPeer within the
// retransmissions instead of after the DPD delay.
func TestUnprotectedHints(t *testing.T) {
	e := newEnv(t, 951, nil)
	cfg, fc := clockedInitiatorConfig(t)
	cfg.DPDDelay = 30 * time.Second
	c, est := e.dialEstablished(t, cfg)
	sa := est.SA
	spii, spir := sa.SPIs()
	from := netpath.Path{Local: est.Path.Local, Remote: est.Path.Remote}
	sent := func() uint64 { return e.net.Stats().Sent }
	settle := func() {
		t.Helper()
		waitNoExchange(t, sa)
	}
	var outSPI [4]byte
	binary.BigEndian.PutUint32(outSPI[:], est.Children[0].SPIOut)

	tests := []struct {
		name      string
		pkt       []byte
		path      netpath.Path
		wantHints uint64
		wantSent  uint64
	}{
		{name: "forged INVALID_IKE_SPI, gateway alive", pkt: unprotected(t, spii, spir, &wire.Notify{Type: wire.NotifyInvalidIKESPI}),
			path: from, wantHints: 1, wantSent: 2},
		{name: "again at once: rate-limited", pkt: unprotected(t, spii, spir, &wire.Notify{Type: wire.NotifyInvalidIKESPI}),
			path: from, wantHints: 2, wantSent: 0},
		{name: "another SA's SPIs", pkt: unprotected(t, spii+1, spir, &wire.Notify{Type: wire.NotifyInvalidIKESPI}),
			path: from, wantHints: 2, wantSent: 0},
		{name: "not our ESP SPI", pkt: unprotected(t, 77, 0, &wire.Notify{Type: wire.NotifyInvalidSPI, Data: []byte{1, 2, 3, 4}}),
			path: from, wantHints: 2, wantSent: 0},
		{name: "from elsewhere", pkt: unprotected(t, spii, spir, &wire.Notify{Type: wire.NotifyInvalidIKESPI}),
			path: netpath.Path{Local: from.Local, Remote: netip.MustParseAddrPort("203.0.113.99:4500")}, wantHints: 2, wantSent: 0},
	}
	// deliver hands a packet to the SA goroutine and returns once it was
	// handled: HandlePacket's inbox and call's control channel are served
	// in either order.
	deliver := func(pkt []byte, path netpath.Path) {
		t.Helper()
		if !call(sa, func() { sa.handlePacket(inPacket{pkt: pkt, path: path}) }) {
			t.Fatal("SA gone")
		}
	}
	for _, tt := range tests {
		before := sent()
		deliver(tt.pkt, tt.path)
		settle()
		if got := sa.Hints(); got != tt.wantHints {
			t.Fatalf("%s: %d hints, want %d", tt.name, got, tt.wantHints)
		}
		if got := sent() - before; got != tt.wantSent {
			t.Fatalf("%s: %d datagrams, want %d", tt.name, got, tt.wantSent)
		}
	}

	// The gateway restarted: it answers nothing, and says our ESP SPI is
	// unknown. (The rate limit has passed.)
	call(sa, func() { sa.hint.last = fc.Now().Add(-hintInterval) })
	e.net.SetDefault(netsim.Impairment{Loss: 1})
	start := fc.Now()
	deliver(unprotected(t, 0x1122, 0, &wire.Notify{Type: wire.NotifyInvalidSPI, Data: outSPI[:]}), from)
	// Each timer's work is done before the next is looked for, so the
	// clock stops where the SA died.
	for fc.fireNext(sa.Done()) {
		call(sa, func() {})
	}
	d := nextEvent[*Deleted](t, c.events, 2*time.Second)
	if !errors.Is(d.Reason, ErrDeadPeer) || !errors.Is(d.Reason, ErrUnreachable) || !strings.Contains(d.Reason.Error(), "INVALID_SPI") {
		t.Fatalf("deleted with %v", d.Reason)
	}
	if took := fc.Now().Sub(start); took >= cfg.DPDDelay {
		t.Fatalf("declared dead after %v, no sooner than dead peer detection would have", took)
	}
}
