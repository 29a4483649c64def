package ike

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike/wire"
)

type countingTransport struct{ n atomic.Uint64 }

func (c *countingTransport) SendIKE([]byte, esp.Path) error { c.n.Add(1); return nil }

// FuzzResponderHandlePacket feeds arbitrary datagrams to a responder: it
// must drop or answer them, never panic.
func FuzzResponderHandlePacket(f *testing.F) {
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	cfg := defaultResponderConfig(f)
	cfg.HalfOpenLimit = 8
	tr := &countingTransport{}
	r, err := NewResponder(ctx, cfg, tr, nil)
	if err != nil {
		f.Fatal(err)
	}
	// Seeds: a well-formed IKE_SA_INIT request, variants and junk.
	ke := make([]byte, 97)
	ke[0] = 4
	for _, group := range []uint16{20, 31} {
		msg := &wire.Message{
			Header: wire.Header{SPIi: 0x0102030405060708, Version: 0x20, Exchange: wire.ExchangeIKESAInit, Flags: wire.FlagInitiator},
			Payloads: []wire.Payload{
				&wire.SA{Proposals: offerProposals([]Proposal{ikeECP384, ikeX25519}, wire.ProtoIKE, nil, group)},
				&wire.KE{Group: group, Data: ke},
				&wire.Nonce{Data: make([]byte, 32)},
				&wire.Notify{Type: wire.NotifyNATDetectionSourceIP, Data: make([]byte, 20)},
			},
		}
		b, err := msg.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		auth := *msg
		auth.Header.Exchange = wire.ExchangeIKEAuth
		auth.Header.SPIr = 42
		auth.Header.MessageID = 1
		auth.Payloads = []wire.Payload{&wire.Encrypted{FirstInner: wire.PayloadType(35), Data: make([]byte, 64)}}
		if b, err := auth.Encode(); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, wire.HeaderLen))
	path := esp.Path{Local: netip.MustParseAddrPort("198.51.100.1:500"), Remote: netip.MustParseAddrPort("192.0.2.1:500")}
	f.Fuzz(func(t *testing.T, data []byte) {
		r.HandlePacket(data, path)
	})
}
