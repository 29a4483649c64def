package ike

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// FuzzInitiatorInitResponse hands arbitrary IKE_SA_INIT responses, under
// the SPI and Message ID the initiator waits for, to a fresh initiator:
// nothing authenticates them, so anyone on the path can send one. It must
// drop, wait or fail, never panic.
func FuzzInitiatorInitResponse(f *testing.F) {
	// Seeds: the gateway's real answer, an error notify, a cookie, junk.
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	var real []byte
	var mu sync.Mutex
	var resp *Responder
	var err error
	resp, err = NewResponder(ctx, defaultResponderConfig(f), funcTransport(func(pkt []byte, _ netpath.Path) {
		mu.Lock()
		if real == nil {
			real = append([]byte(nil), pkt...)
		}
		mu.Unlock()
	}), make(chan Event, 16))
	if err != nil {
		f.Fatal(err)
	}
	cfg := defaultInitiatorConfig(f, "alice@example.com")
	gwPath := netpath.Path{Local: netip.MustParseAddrPort("198.51.100.1:500"), Remote: cfg.Path.Local}
	sa, err := Dial(ctx, cfg, funcTransport(func(pkt []byte, _ netpath.Path) { resp.HandlePacket(pkt, gwPath) }), make(chan Event, 16))
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		mu.Lock()
		got := real != nil
		mu.Unlock()
		if got {
			break
		}
		call(sa, func() {})
	}
	mu.Lock()
	if real != nil {
		f.Add(real)
	}
	mu.Unlock()
	for _, ps := range [][]wire.Payload{
		{&wire.Notify{Type: wire.NotifyNoProposalChosen}},
		{&wire.Notify{Type: wire.NotifyCookie, Data: make([]byte, 17)}},
		{&wire.Notify{Type: wire.NotifyInvalidKEPayload, Data: []byte{0, 31}}},
		{&wire.SA{}, &wire.KE{Group: 20, Data: make([]byte, 96)}, &wire.Nonce{Data: make([]byte, 32)}},
	} {
		b, err := (&wire.Message{Header: wire.Header{SPIi: 1, SPIr: 2, Version: 0x20, Exchange: wire.ExchangeIKESAInit, Flags: wire.FlagResponse}, Payloads: ps}).Encode()
		if err == nil {
			f.Add(b)
		}
	}
	f.Add(make([]byte, wire.HeaderLen))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		sa, err := Dial(ctx, cfg, funcTransport(func([]byte, netpath.Path) {}), make(chan Event, 16))
		if err != nil {
			t.Fatal(err)
		}
		pkt := append([]byte(nil), data...)
		if len(pkt) >= wire.HeaderLen {
			// Address it to this initiator's request; the rest (next
			// payload, version, length, payloads) is the fuzzer's.
			binary.BigEndian.PutUint64(pkt[0:8], sa.spii.Load())
			pkt[18], pkt[19] = byte(wire.ExchangeIKESAInit), wire.FlagResponse
			binary.BigEndian.PutUint32(pkt[20:24], 0)
		}
		sa.HandlePacket(pkt, netpath.Path{Local: cfg.Path.Local, Remote: cfg.Path.Remote})
		call(sa, func() {})
	})
}
