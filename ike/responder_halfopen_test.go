package ike

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// floodInit is an IKE_SA_INIT request under spii with a real X25519 key,
// preceded by cookie when set.
func floodInit(t *testing.T, spii uint64, cookie []byte) []byte {
	t.Helper()
	kx, err := ikecrypto.NewKeyExchange(wire.GroupCurve25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ps []wire.Payload
	if cookie != nil {
		ps = append(ps, &wire.Notify{Type: wire.NotifyCookie, Data: cookie})
	}
	ps = append(ps,
		&wire.SA{Proposals: offerProposals([]Proposal{ikeX25519}, wire.ProtoIKE, nil, wire.GroupCurve25519)},
		&wire.KE{Group: wire.GroupCurve25519, Data: kx.PublicKey()},
		&wire.Nonce{Data: make([]byte, 32)})
	b, err := (&wire.Message{Header: wire.Header{SPIi: spii, Version: 0x20, Exchange: wire.ExchangeIKESAInit, Flags: wire.FlagInitiator}, Payloads: ps}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHalfOpenFloodFromOneSource: one address that answers every COOKIE
// sends far more IKE_SA_INITs than the gateway has half-open slots. It may
// hold only a few of them, and a client from another address still connects.
func TestHalfOpenFloodFromOneSource(t *testing.T) {
	const limit, flood = 48, 120
	e := newEnv(t, 400, func(r *ResponderConfig) { r.HalfOpenLimit = limit })
	attacker := netip.MustParseAddrPort("192.0.2.66:500")
	h := e.net.AddHost("attacker", attacker.Addr())
	var mu sync.Mutex
	answered := map[uint64]bool{}
	h.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		m, err := wire.Decode(pkt)
		if err != nil || len(m.Payloads) == 0 {
			return
		}
		n, ok := m.Payloads[0].(*wire.Notify)
		if !ok || n.Type != wire.NotifyCookie {
			return
		}
		mu.Lock()
		again := answered[m.Header.SPIi]
		answered[m.Header.SPIi] = true
		mu.Unlock()
		if !again {
			_ = h.SendIKEFrom(dst, src, floodInit(t, m.Header.SPIi, n.Data))
		}
	})
	for i := range flood {
		if err := h.SendIKEFrom(attacker, gwIKE, floodInit(t, uint64(0x1000+i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Every request ends as a half-open SA, dropped or refused for its
	// source (cookies are answered once).
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.resp.Stats()
		if uint64(e.resp.HalfOpen())+st.HalfOpenDropped+st.HalfOpenBlocked >= flood {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flood not processed: %d half-open, %+v", e.resp.HalfOpen(), st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.resp.HalfOpen(); n > DefaultHalfOpenPerSource {
		t.Errorf("one address holds %d half-open SAs, want at most %d", n, DefaultHalfOpenPerSource)
	}
	c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
	if _, err := c.wait(t, 5*time.Second); err != nil {
		t.Fatalf("alice during the flood: %v (stats %+v)", err, e.resp.Stats())
	}
}
