package ike

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// heldPair is a client and a gateway wired back to back, with the
// gateway's responses of one exchange kept from the client: the client
// waits for an answer that the fuzzer writes and the gateway's keys seal.
type heldPair struct {
	cancel     context.CancelFunc
	client, gw *SA
	resp       *Responder
	est        *Established // the client's, once IKE_AUTH is through
	held       chan []byte
}

// heldResponse says whether a packet from the gateway is a response of
// exchange.
func heldResponse(exchange wire.ExchangeType) func([]byte) bool {
	return func(pkt []byte) bool {
		return len(pkt) >= wire.HeaderLen && wire.ExchangeType(pkt[18]) == exchange && pkt[19]&wire.FlagResponse != 0
	}
}

func newHeldPair(tb testing.TB, hold func([]byte) bool) *heldPair {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &heldPair{cancel: cancel, held: make(chan []byte, 4)}
	cliPath := netpath.Path{Local: netip.MustParseAddrPort("192.0.2.1:40000"), Remote: netip.MustParseAddrPort("198.51.100.1:500")}
	toGW := funcTransport(func(pkt []byte, path netpath.Path) {
		p.resp.HandlePacket(pkt, netpath.Path{Local: path.Remote, Remote: path.Local})
	})
	late := newLateSA()
	toClient := funcTransport(func(pkt []byte, path netpath.Path) {
		if hold(pkt) {
			select {
			case p.held <- append([]byte(nil), pkt...):
			default:
			}
			return
		}
		late.SendIKE(pkt, path)
	})
	rEvents := make(chan Event, 64)
	go func() {
		for {
			select {
			case <-rEvents:
			case <-ctx.Done():
				return
			}
		}
	}()
	var err error
	if p.resp, err = NewResponder(ctx, defaultResponderConfig(tb), toClient, rEvents); err != nil {
		cancel()
		tb.Fatal(err)
	}
	cfg := defaultInitiatorConfig(tb, "alice@example.com")
	cfg.Path = cliPath
	if p.client, err = Dial(ctx, cfg, toGW, make(chan Event, 64)); err != nil {
		cancel()
		tb.Fatal(err)
	}
	late.set(p.client)
	return p
}

// established waits for the client's IKE_AUTH to complete.
func (p *heldPair) established(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	est, err := p.client.Wait(ctx)
	if err != nil {
		tb.Fatalf("pair not established: %v", err)
	}
	p.est = est
	p.gatewaySA(tb)
}

func (p *heldPair) gatewaySA(tb testing.TB) {
	tb.Helper()
	sas := p.resp.SAs()
	if len(sas) != 1 {
		tb.Fatalf("%d gateway SAs, want 1", len(sas))
	}
	p.gw = sas[0]
}

// next is the next held response.
func (p *heldPair) next(tb testing.TB) []byte {
	tb.Helper()
	select {
	case pkt := <-p.held:
		return pkt
	case <-time.After(10 * time.Second):
		tb.Fatal("the gateway sent no response to hold")
		return nil
	}
}

// open decrypts a held response with the client's keys: the inner
// payloads as the gateway wrote them, a real exchange's seed.
func (p *heldPair) open(tb testing.TB, pkt []byte) (first byte, body []byte, msgID uint32) {
	tb.Helper()
	msg, err := wire.Decode(pkt)
	if err != nil {
		tb.Fatal(err)
	}
	enc, ok := msg.Payloads[0].(*wire.Encrypted)
	if !ok {
		tb.Fatalf("held response starts with %T, want SK", msg.Payloads[0])
	}
	if !call(p.client, func() { body, err = p.client.skIn.Open(pkt[:enc.Offset], enc.Data) }) || err != nil {
		tb.Fatalf("opening the held response: %v", err)
	}
	return byte(enc.FirstInner), body, msg.Header.MessageID
}

// deliver seals first/body as the gateway's response of exchange with
// msgID and hands it to the client, then lets the client process it.
func (p *heldPair) deliver(exchange wire.ExchangeType, msgID uint32, first byte, body []byte) {
	var pkt []byte
	ok := call(p.gw, func() {
		h := p.gw.header(exchange, msgID, true)
		aad := wire.EncryptedHeader(h, wire.PayloadType(first), p.gw.skOut.SealedLen(len(body)))
		data, err := p.gw.skOut.Seal(aad, body)
		if err == nil {
			pkt = append(aad, data...)
		}
	})
	if !ok || pkt == nil {
		return
	}
	p.client.HandlePacket(pkt, p.client.Path())
	call(p.client, func() {})
}

// withAuthOf puts the real response's AUTH (and IDr, which it covers) in
// place of the fuzzer's, so mutations of the other payloads get past the
// AUTH check to the code that reads them. An undecodable body is sent as
// it is, for the decoder.
func withAuthOf(first byte, body []byte, realFirst byte, realBody []byte) (byte, []byte, bool) {
	real, err := wire.DecodePayloads(wire.PayloadType(realFirst), realBody)
	if err != nil {
		return first, body, false
	}
	ps, err := wire.DecodePayloads(wire.PayloadType(first), body)
	if err != nil {
		return first, body, false
	}
	var auth, idr wire.Payload
	for _, r := range real {
		switch r.(type) {
		case *wire.Auth:
			auth = r
		case *wire.Identification:
			idr = r
		}
	}
	hasAuth := false
	for i, q := range ps {
		switch q.(type) {
		case *wire.Auth:
			ps[i], hasAuth = auth, true
		case *wire.Identification:
			ps[i] = idr
		}
	}
	f, b, err := wire.EncodePayloads(ps)
	if err != nil {
		return first, body, false
	}
	return byte(f), b, hasAuth
}

// authResponseSeeds are variants of the gateway's real IKE_AUTH response:
// as it is, its CP reply with attributes of every length, without TS, with
// an error notify added.
func authResponseSeeds(realFirst byte, realBody []byte) [][2][]byte {
	seeds := [][2][]byte{{{realFirst}, realBody}}
	real, err := wire.DecodePayloads(wire.PayloadType(realFirst), realBody)
	if err != nil {
		return seeds
	}
	add := func(ps []wire.Payload) {
		if f, b, err := wire.EncodePayloads(ps); err == nil {
			seeds = append(seeds, [2][]byte{{byte(f)}, b})
		}
	}
	cps := []*wire.Config{
		{CfgType: 2, Attributes: []wire.ConfigAttribute{{Type: 1, Value: []byte{10, 99}}, {Type: 3, Value: make([]byte, 5)}}},
		{CfgType: 2, Attributes: []wire.ConfigAttribute{{Type: 8, Value: make([]byte, 16)}, {Type: 10, Value: make([]byte, 17)}}},
		{CfgType: 2, Attributes: []wire.ConfigAttribute{{Type: 1, Value: []byte{0, 0, 0, 0}}, {Type: 1, Value: []byte{255, 255, 255, 255}}, {Type: 2, Value: []byte{255, 255, 255, 0}}}},
		{CfgType: 2, Attributes: []wire.ConfigAttribute{{Type: 8, Value: append(make([]byte, 16), 200)}, {Type: 25, Value: []byte("corp.example")}}},
		{CfgType: 1},
		{CfgType: 2},
	}
	for _, cp := range cps {
		var ps []wire.Payload
		for _, r := range real {
			if _, ok := r.(*wire.Config); ok {
				ps = append(ps, cp)
			} else {
				ps = append(ps, r)
			}
		}
		add(ps)
	}
	var noTS []wire.Payload
	for _, r := range real {
		if _, ok := r.(*wire.TrafficSelectors); !ok {
			noTS = append(noTS, r)
		}
	}
	add(noTS)
	add(append(append([]wire.Payload(nil), real...), &wire.Notify{Type: wire.NotifyTSUnacceptable}))
	add(append(append([]wire.Payload(nil), real...), &wire.Notify{Type: wire.NotifyAuthLifetime, Data: []byte{0, 0}}))
	return seeds
}

// FuzzInitiatorAuthResponse hands a client waiting for its IKE_AUTH
// response arbitrary inner payloads sealed with the gateway's keys, with
// the real AUTH in place of the fuzzer's: the code behind the AUTH check
// (SA, TS, CP reply, notifies, MOBIKE addresses) must accept, refuse or
// fail the SA, never panic, and never establish without the gateway's
// AUTH. Seeds come from the real response of an engine exchange.
func FuzzInitiatorAuthResponse(f *testing.F) {
	p := newHeldPair(f, heldResponse(wire.ExchangeIKEAuth))
	realFirst, realBody, _ := p.open(f, p.next(f))
	p.cancel()
	for _, s := range authResponseSeeds(realFirst, realBody) {
		f.Add(s[0][0], s[1])
	}
	f.Add(byte(wire.PayloadNotify), []byte{0, 0, 0, 8, 0, 0, 0, 24})
	f.Add(byte(wire.PayloadNone), []byte{})
	f.Fuzz(func(t *testing.T, first byte, body []byte) {
		p := newHeldPair(t, heldResponse(wire.ExchangeIKEAuth))
		defer p.cancel()
		pkt := p.next(t)
		p.gatewaySA(t)
		realFirst, realBody, msgID := p.open(t, pkt)
		first, body, hasAuth := withAuthOf(first, body, realFirst, realBody)
		p.deliver(wire.ExchangeIKEAuth, msgID, first, body)
		select {
		case <-p.client.outcome.ready:
			if p.client.outcome.est != nil && !hasAuth {
				t.Fatal("established without the gateway's AUTH")
			}
		default:
		}
	})
}

// FuzzInitiatorCreateChildResponse hands an established client waiting
// for the answer to its CREATE_CHILD_SA (kind 0: a Child SA rekey, 1: an
// IKE SA rekey, 2: an additional Child SA) arbitrary inner payloads sealed with the gateway's keys:
// proposals, KE, nonces, TS and notifies of the response must be checked,
// never trusted into a panic. Seeds are the gateway's real answers.
func FuzzInitiatorCreateChildResponse(f *testing.F) {
	for kind := range byte(3) {
		p := newCreateChildPair(f, kind)
		first, body, _ := p.open(f, p.next(f))
		p.cancel()
		f.Add(kind, first, body)
	}
	f.Add(byte(0), byte(wire.PayloadNotify), []byte{0, 0, 0, 8, 0, 0, 0, 14})
	f.Add(byte(1), byte(wire.PayloadNotify), []byte{0, 0, 0, 10, 0, 0, 0, 17, 0, 20})
	f.Add(byte(0), byte(wire.PayloadNone), []byte{})
	f.Fuzz(func(t *testing.T, kind, first byte, body []byte) {
		p := newCreateChildPair(t, kind%3)
		defer p.cancel()
		_, _, msgID := p.open(t, p.next(t))
		p.deliver(wire.ExchangeCreateChildSA, msgID, first, body)
	})
}

// newCreateChildPair is an established pair whose client has sent a
// CREATE_CHILD_SA the gateway answered (held back): a rekey of its Child SA
// (kind 0), of the IKE SA (1), or a further Child SA (2).
func newCreateChildPair(tb testing.TB, kind byte) *heldPair {
	tb.Helper()
	p := newHeldPair(tb, heldResponse(wire.ExchangeCreateChildSA))
	p.established(tb)
	ctx, cancel := context.WithCancel(context.Background())
	prev := p.cancel
	p.cancel = func() { cancel(); prev() }
	go func() {
		switch kind {
		case 0:
			p.client.RekeyChild(ctx, p.est.Children[0].SPIIn)
		case 1:
			p.client.RekeyIKE(ctx)
		default:
			p.client.CreateChild(ctx, Selectors{Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.128/25")}})
		}
	}()
	return p
}

// TestHeldPairReachesPastAuth: the fuzz harness is worth its time only if
// a response it seals gets through the AUTH check. The gateway's own
// response of another pair, with this pair's AUTH put in, establishes the
// client; with the AUTH left out it does not.
func TestHeldPairReachesPastAuth(t *testing.T) {
	seed := newHeldPair(t, heldResponse(wire.ExchangeIKEAuth))
	seedFirst, seedBody, _ := seed.open(t, seed.next(t))
	seed.cancel()
	for _, tt := range []struct {
		name     string
		dropAuth bool
		want     bool
	}{{"other pair's response, this AUTH", false, true}, {"without AUTH", true, false}} {
		t.Run(tt.name, func(t *testing.T) {
			first, body := seedFirst, seedBody
			if tt.dropAuth {
				ps, err := wire.DecodePayloads(wire.PayloadType(first), body)
				if err != nil {
					t.Fatal(err)
				}
				var keep []wire.Payload
				for _, q := range ps {
					if _, ok := q.(*wire.Auth); !ok {
						keep = append(keep, q)
					}
				}
				f, b, err := wire.EncodePayloads(keep)
				if err != nil {
					t.Fatal(err)
				}
				first, body = byte(f), b
			}
			p := newHeldPair(t, heldResponse(wire.ExchangeIKEAuth))
			defer p.cancel()
			pkt := p.next(t)
			p.gatewaySA(t)
			realFirst, realBody, msgID := p.open(t, pkt)
			first, body, _ = withAuthOf(first, body, realFirst, realBody)
			p.deliver(wire.ExchangeIKEAuth, msgID, first, body)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			est, err := p.client.Wait(ctx)
			if got := err == nil && est != nil; got != tt.want {
				t.Fatalf("established %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}
