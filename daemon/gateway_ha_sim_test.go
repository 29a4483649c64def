package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ha"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
)

// TestHAStandbyBookkeeping: a standby node parks what the active node
// replicates (a real IKE SA's exported state, imported into a second
// responder), replaces it on a newer push, and forgets it on a delete or
// when the active's inventory lacks it; a blob that does not import is
// not parked.
func TestHAStandbyBookkeeping(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := netsim.New(1)
	t.Cleanup(func() { cancel(); n.Close() })
	ikeP := mustProposals(t, config.ParseIKEProposal, "aes128gcm16-prfsha256-x25519")
	espP := mustProposals(t, config.ParseESPProposal, "aes128gcm16")
	fast := ike.Retransmit{Initial: 40 * time.Millisecond, Factor: 1.5, Max: 200 * time.Millisecond, Retries: 10}
	responder := func(host *netsim.Host, events chan ike.Event) *ike.Responder {
		t.Helper()
		pool, err := ike.NewPool([]netip.Prefix{netip.MustParsePrefix("10.99.200.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		local, err := ike.NewPSKAuth("vpn.example.com", simPSK)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ike.NewResponder(ctx, ike.ResponderConfig{
			LocalAuth: local,
			PeerAuth:  func(*wire.Identification) (ike.PeerAuth, error) { return ike.NewPSKPeer("alice@example.com", simPSK) },
			IKE:       ikeP, ESP: espP, Pool: pool, MOBIKE: true, HA: true,
			LocalTS:   []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
			Addresses: []netip.Addr{simR1, simR2}, Retransmit: fast,
		}, host, events)
		if err != nil {
			t.Fatal(err)
		}
		host.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) { r.HandlePacket(pkt, esp.Path{Local: dst, Remote: src}) })
		return r
	}
	activeEvents := make(chan ike.Event, 64)
	responder(n.AddHost("gw", simR1), activeEvents)
	standbyResp := responder(n.AddHost("gw2", simR2), make(chan ike.Event, 64))

	clHost := n.AddHost("client", simClient)
	clientAuth, err := ike.NewPSKAuth("alice@example.com", simPSK)
	if err != nil {
		t.Fatal(err)
	}
	gwAuth, err := ike.NewPSKPeer("vpn.example.com", simPSK)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ike.Dial(ctx, ike.InitiatorConfig{
		Path:      esp.Path{Local: netip.AddrPortFrom(simClient, 40000), Remote: netip.AddrPortFrom(simR1, 500)},
		LocalAuth: clientAuth, PeerAuth: gwAuth, RemoteID: "vpn.example.com",
		IKE: ikeP, ESP: espP, RemoteTS: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
		VirtualIP: true, MOBIKE: true, Switch: true, Retransmit: fast,
	}, clHost, make(chan ike.Event, 64))
	if err != nil {
		t.Fatal(err)
	}
	clHost.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) { client.HandlePacket(pkt, esp.Path{Local: dst, Remote: src}) })
	var sa *ike.SA
	for sa == nil {
		select {
		case ev := <-activeEvents:
			if est, ok := ev.(*ike.Established); ok {
				sa = est.SA
			}
		case <-time.After(10 * time.Second):
			t.Fatal("client not established")
		}
	}
	blob, err := sa.ExportState()
	if err != nil {
		t.Fatal(err)
	}
	spii, spir := sa.SPIs()
	key := ha.SAKey{SPIi: spii, SPIr: spir}
	meta, _ := json.Marshal(haMeta{PeerID: "alice@example.com"})
	st := ha.State{SA: key, Seqs: []ha.ChildSeq{{SPIOut: 1, Seq: 7, InSeq: 9}}, Meta: meta, Blob: blob}

	gw := &gateway{cfg: &config.Gateway{Listen: []netip.Addr{simR2}}, log: discardLog(), resp: standbyResp, clients: map[*ike.SA]*gatewayClient{}, emit: func(Event) {}}
	h, err := newGatewayHA(gw, &config.HA{Role: "standby", Key: bytes.Repeat([]byte{1}, ha.KeySize),
		Listen: netip.MustParseAddrPort("127.0.0.1:1"), Peer: netip.MustParseAddrPort("127.0.0.1:2"), TakeoverAddress: simR1, DeadAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	parked := func() map[ha.SAKey]*parkedSA {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.parked
	}
	for _, step := range []struct {
		name string
		do   func()
		want bool // alice parked afterwards
	}{
		{"import", func() { h.Import(st) }, true},
		{"newer push replaces", func() { h.Import(st) }, true},
		{"inventory without it", func() { h.Keep([]ha.SAKey{{SPIi: 1, SPIr: 2}}) }, false},
		{"import again", func() { h.Import(st) }, true},
		{"inventory with it", func() { h.Keep([]ha.SAKey{key}) }, true},
		{"delete", func() { h.Drop(key) }, false},
		{"blob that does not import", func() { bad := st; bad.Blob = []byte("not a state"); h.Import(bad) }, false},
	} {
		step.do()
		p := parked()
		got, ok := p[key]
		if ok != step.want || len(p) > 1 {
			t.Fatalf("after %s: parked %v, want alice parked = %t", step.name, p, step.want)
		}
		if ok && (!got.sa.Parked() || got.meta.PeerID != "alice@example.com" || got.seqs[0].InSeq != 9) {
			t.Fatalf("after %s: parked copy %+v (parked %t)", step.name, got, got.sa.Parked())
		}
	}
}

func mustProposals(t *testing.T, parse func(string) (config.Proposal, error), s string) []ike.Proposal {
	t.Helper()
	p, err := parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return proposals([]config.Proposal{p})
}
