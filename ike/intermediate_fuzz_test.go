package ike

import (
	"context"
	"net/netip"
	"testing"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// fuzzHybridResponder is a responder SA just after IKE_SA_INIT chose the
// hybrid proposal, with one IKE_FOLLOWUP_KE exchange waiting as well; its
// handlers are called on the test goroutine (no loop runs).
func fuzzHybridResponder(t *testing.T) (*SA, *wire.Notify) {
	c := common{ike: []Proposal{ikeHybrid}, esp: []Proposal{espHybrid}}
	c.fill()
	sa := newSA(context.Background(), false, c, funcTransport(func([]byte, netpath.Path) {}), make(chan Event, 64),
		netpath.Path{Local: netip.MustParseAddrPort("198.51.100.1:500"), Remote: netip.MustParseAddrPort("192.0.2.10:500")})
	sa.spii.Store(1)
	sa.spir.Store(2)
	sa.ikeProp = wire.Proposal{Number: 1, Protocol: wire.ProtoIKE, Transforms: ikeHybrid.Transforms}
	sa.ni, sa.nr = make([]byte, 32), make([]byte, 32)
	if err := sa.deriveIKEKeys(make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	sa.state = stateAuth
	sa.addKE.transforms = addKETransforms(ikeHybrid.Transforms)
	sa.addKE.intermediate = true
	n := sa.deferAdditional(sa.addKE.transforms, make([]byte, 32), false, func([]byte) func() { return nil }, nil)
	return sa, n
}

// FuzzIntermediate feeds arbitrary decrypted IKE_INTERMEDIATE and
// IKE_FOLLOWUP_KE contents to the responder's handlers: they answer or
// refuse, never panic, and only a valid ML-KEM encapsulation key gets a
// KE payload back.
func FuzzIntermediate(f *testing.F) {
	kx, err := ikecrypto.NewKeyExchange(wire.GroupMLKEM768, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, ps := range [][]wire.Payload{
		{&wire.KE{Group: 36, Data: kx.PublicKey()}},
		{&wire.KE{Group: 37, Data: make([]byte, 1568)}},
		{&wire.KE{Group: 36, Data: make([]byte, 10)}},
		{&wire.Notify{Type: wire.NotifyAdditionalKeyExchange, Data: []byte("12345678")}, &wire.KE{Group: 36, Data: kx.PublicKey()}},
		{&wire.Nonce{Data: make([]byte, 32)}},
	} {
		first, body, err := wire.EncodePayloads(ps)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(first), body, false)
		f.Add(uint8(first), body, true)
	}
	f.Fuzz(func(t *testing.T, first uint8, body []byte, followup bool) {
		ps, err := wire.DecodePayloads(wire.PayloadType(first), body)
		if err != nil {
			return
		}
		sa, link := fuzzHybridResponder(t)
		h := sa.header(wire.ExchangeIKEIntermediate, 1, false)
		h.Flags = wire.FlagInitiator
		var resp []wire.Payload
		if followup {
			if len(ps) > 0 {
				if n, ok := ps[0].(*wire.Notify); ok && n.Type == wire.NotifyAdditionalKeyExchange && len(n.Data) == 8 {
					n.Data = link.Data // let the fuzzer reach past the lookup
				}
			}
			resp, _ = sa.handleFollowupRequest(ps)
		} else {
			resp, _ = sa.handleIntermediateRequest(h, ps)
		}
		if len(resp) == 0 {
			t.Fatal("no answer")
		}
		if ke, ok := resp[0].(*wire.KE); ok {
			in := findKE(ps)
			if in == nil || ikecrypto.CheckPublicKey(in.Group, in.Data) != nil {
				t.Fatalf("answered KE %d to an invalid request", ke.Group)
			}
			if n, _ := ikecrypto.ResponseLen(ke.Group); len(ke.Data) != n {
				t.Fatalf("answer of %d bytes", len(ke.Data))
			}
		}
	})
}
