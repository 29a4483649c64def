package ike

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

type countingTransport struct{ n atomic.Uint64 }

func (c *countingTransport) SendIKE([]byte, netpath.Path) error { c.n.Add(1); return nil }

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
		nn := *msg
		nn.Payloads = append(slices.Clone(msg.Payloads), &wire.Notify{Type: wire.NotifyNoNATsAllowed, Data: make([]byte, 12)})
		if b, err := nn.Encode(); err == nil {
			f.Add(b)
		}
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
	path := netpath.Path{Local: netip.MustParseAddrPort("198.51.100.1:500"), Remote: netip.MustParseAddrPort("192.0.2.1:500")}
	f.Fuzz(func(t *testing.T, data []byte) {
		r.HandlePacket(data, path)
	})
}

type funcTransport func(pkt []byte, path netpath.Path)

func (f funcTransport) SendIKE(pkt []byte, path netpath.Path) error { f(pkt, path); return nil }

// lateSA is a Transport to an SA that Dial has not returned yet: what is
// sent to it waits until set.
type lateSA struct {
	sa     atomic.Pointer[SA]
	dialed chan struct{}
}

func newLateSA() *lateSA { return &lateSA{dialed: make(chan struct{})} }

func (l *lateSA) set(sa *SA) {
	l.sa.Store(sa)
	close(l.dialed)
}

func (l *lateSA) SendIKE(pkt []byte, path netpath.Path) error {
	<-l.dialed
	l.sa.Load().HandlePacket(pkt, netpath.Path{Local: path.Remote, Remote: path.Local})
	return nil
}

// fuzzPair is an established initiator/responder pair wired back to back.
type fuzzPair struct {
	cancel context.CancelFunc
	client *SA
	gw     *SA
}

func newFuzzPair(tb testing.TB) *fuzzPair {
	ctx, cancel := context.WithCancel(context.Background())
	var resp *Responder
	var client *SA
	cliPath := netpath.Path{Local: netip.MustParseAddrPort("192.0.2.1:40000"), Remote: netip.MustParseAddrPort("198.51.100.1:500")}
	toGW := funcTransport(func(pkt []byte, p netpath.Path) {
		resp.HandlePacket(pkt, netpath.Path{Local: p.Remote, Remote: p.Local})
	})
	// The gateway may answer before Dial has returned the client.
	toClient := newLateSA()
	rEvents := make(chan Event, 16)
	var err error
	if resp, err = NewResponder(ctx, defaultResponderConfig(tb), toClient, rEvents); err != nil {
		tb.Fatal(err)
	}
	cfg := defaultInitiatorConfig(tb, "alice@example.com")
	cfg.Path = cliPath
	if client, err = Dial(ctx, cfg, toGW, make(chan Event, 16)); err != nil {
		tb.Fatal(err)
	}
	toClient.set(client)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := client.Wait(wctx); err != nil {
		tb.Fatal(err)
	}
	est := (<-rEvents).(*Established)
	go func() {
		for range rEvents {
		}
	}()
	return &fuzzPair{cancel: cancel, client: client, gw: est.SA}
}

// FuzzSAHandleRequest encrypts arbitrary inner payload bytes with valid keys
// and the expected Message ID and hands them to an established responder
// SA, so the fuzzer reaches the payload handlers behind decryption.
func FuzzSAHandleRequest(f *testing.F) {
	f.Add(byte(37), byte(0), []byte{})
	f.Add(byte(37), byte(42), []byte{0, 0, 0, 8, 3, 4, 0, 1, 1, 2, 3, 4})
	f.Add(byte(37), byte(41), []byte{0, 0, 0, 8, 0, 0, 0x40, 0x0c})
	f.Add(byte(35), byte(35), []byte{0, 0, 0, 12, 2, 0, 0, 0, 'a', 'b', 'c', 'd'})
	f.Add(byte(36), byte(33), []byte{0, 0, 0, 4})
	f.Add(byte(37), byte(47), []byte{0, 0, 0, 12, 1, 0, 0, 0, 0, 1, 0, 0})
	// MOBIKE notifies: UPDATE_SA_ADDRESSES with a short NO_NATS_ALLOWED,
	// with a well-formed one, and an ADDITIONAL_IP4_ADDRESS of 3 bytes.
	f.Add(byte(37), byte(41), []byte{41, 0, 0, 8, 0, 0, 0x40, 0x10, 0, 0, 0, 13, 0, 0, 0x40, 0x12, 1, 2, 3, 4, 5})
	f.Add(byte(37), byte(41), []byte{41, 0, 0, 8, 0, 0, 0x40, 0x10, 0, 0, 0, 20, 0, 0, 0x40, 0x12,
		192, 0, 2, 1, 198, 51, 100, 1, 0x11, 0x94, 0x11, 0x94})
	f.Add(byte(37), byte(41), []byte{41, 0, 0, 11, 0, 0, 0x40, 0x0d, 1, 2, 3, 0, 0, 0, 8, 0, 0, 0x40, 0x0f})
	var pair *fuzzPair
	f.Cleanup(func() {
		if pair != nil {
			pair.cancel()
		}
	})
	f.Fuzz(func(t *testing.T, exchange, first byte, body []byte) {
		pair = livePair(t, pair)
		gw, client := pair.gw, pair.client
		var msgID uint32
		if !call(gw, func() { msgID = gw.peerNextMsgID }) {
			return
		}
		deliverSealed(gw, client, body, func(sealedLen int) []byte {
			return wire.EncryptedHeader(client.header(wire.ExchangeType(exchange), msgID, false), wire.PayloadType(first), sealedLen)
		})
	})
}

// livePair returns pair while both its SAs live, else (ending pair) a new
// one.
func livePair(t *testing.T, pair *fuzzPair) *fuzzPair {
	if pair != nil && !isDone(pair.gw) && !isDone(pair.client) {
		return pair
	}
	if pair != nil {
		pair.cancel()
	}
	return newFuzzPair(t)
}

// deliverSealed seals body under the client's keys behind the header aad
// makes (for the sealed length), inside the client's goroutine, hands the
// packet to the gateway, and lets the gateway's goroutine process it before
// the next input. Nothing is sent once either SA has ended.
func deliverSealed(gw, client *SA, body []byte, aad func(sealedLen int) []byte) {
	var pkt []byte
	ok := call(client, func() {
		a := aad(client.skOut.SealedLen(len(body)))
		data, err := client.skOut.Seal(a, body)
		if err == nil {
			pkt = append(a, data...)
		}
	})
	if !ok || pkt == nil {
		return
	}
	gw.HandlePacket(pkt, gw.Path())
	call(gw, func() {})
}

func isDone(sa *SA) bool {
	select {
	case <-sa.Done():
		return true
	default:
		return false
	}
}

// call runs f on the SA goroutine and waits for it.
func call(sa *SA, f func()) bool {
	done := make(chan struct{})
	if !sa.post(func() { defer close(done); f() }) {
		return false
	}
	select {
	case <-done:
		return true
	case <-sa.Done():
		return false
	}
}
