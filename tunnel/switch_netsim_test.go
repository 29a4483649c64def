package tunnel

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netmon"
)

// TestSwitchEndToEnd runs the client's whole chain on the in-memory
// network: a restricted-cone NAT in front of the client, a gateway with
// two addresses. The gateway's SWITCH_TO_IP_ADDRESS reaches the engine,
// the connection hands it to the Mover (followSwitch), the Mover moves the
// SA through the ikeMobility adapter, and the gateway sees the move land.
func TestSwitchEndToEnd(t *testing.T) {
	const wait = 10 * time.Second
	r1, r2 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	inside, public := netip.MustParseAddr("10.1.1.10"), netip.MustParseAddr("203.0.113.77")
	psk := []byte("correct horse battery staple")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := netsim.New(1)
	defer n.Close()
	gwHost := n.AddHost("gw", r1, r2)
	client := n.AddHost("client", inside)
	n.AddNAT(public, netsim.RestrictedCone).Attach(client)

	ikeProp, err := config.ParseIKEProposal("aes128gcm16-prfsha256-x25519")
	if err != nil {
		t.Fatal(err)
	}
	espProp, err := config.ParseESPProposal("aes128gcm16")
	if err != nil {
		t.Fatal(err)
	}
	gwAuth, err := ike.NewPSKAuth("vpn.example.com", psk)
	if err != nil {
		t.Fatal(err)
	}
	gwEvents := make(chan ike.Event, 64)
	resp, err := ike.NewResponder(ctx, ike.ResponderConfig{
		LocalAuth: gwAuth,
		PeerAuth:  func(*wire.Identification) (ike.PeerAuth, error) { return ike.NewPSKPeer("alice@example.com", psk) },
		IKE:       ikeesp.Proposals([]config.Proposal{ikeProp}), ESP: ikeesp.Proposals([]config.Proposal{espProp}),
		MOBIKE: true, Addresses: []netip.Addr{r1, r2},
		// No CP here: alice's side is a network granted to her.
		PeerTS: func(*wire.Identification) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.1.1.0/24")} },
	}, gwHost, gwEvents)
	if err != nil {
		t.Fatal(err)
	}
	gwHost.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		resp.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
	})

	p := &config.Profile{Name: "corp", MOBIKE: true, Switch: true, AcceptSwitch: config.AcceptSwitchAnnounced,
		SwitchNotify: config.DefaultSwitchNotify, OutageLimit: time.Minute}
	local, err := ike.NewPSKAuth("alice@example.com", psk)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ike.NewPSKPeer("vpn.example.com", psk)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan ike.Event, 16)
	// The SA is known to the receive callback before its first message
	// can be answered.
	var mu sync.Mutex
	var ready *ike.SA
	client.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		mu.Lock()
		sa := ready
		mu.Unlock()
		if sa != nil {
			sa.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
		}
	})
	start := netpath.Path{Local: netip.AddrPortFrom(inside, 4500), Remote: netip.AddrPortFrom(r1, 4500)}
	mu.Lock()
	sa, err := ike.Dial(ctx, ike.InitiatorConfig{
		Path: start, LocalAuth: local, PeerAuth: peer, RemoteID: "vpn.example.com",
		IKE: ikeesp.Proposals([]config.Proposal{ikeProp}), ESP: ikeesp.Proposals([]config.Proposal{espProp}),
		RemoteTS: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, MOBIKE: true,
		Switch: p.Switch, AcceptSwitch: acceptSwitch(p), SwitchNotify: wire.NotifyType(p.SwitchNotify),
		Retransmit: ike.MoveRetransmit,
	}, client, events)
	ready = sa
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, wait)
	defer wcancel()
	if _, err := sa.Wait(wctx); err != nil {
		t.Fatalf("establishing: %v", err)
	}
	var gwSA *ike.SA
	for gwSA == nil {
		select {
		case ev := <-gwEvents:
			if est, ok := ev.(*ike.Established); ok {
				gwSA = est.SA
			}
		case <-wctx.Done():
			t.Fatal("gateway: no Established")
		}
	}

	emitted := make(chan report.Event, 16)
	dp := esp.NewDataplane(nil, nil, discardLog())
	c := &conn{profile: p, log: discardLog(), emit: func(ev report.Event) { emitted <- ev }, cancel: cancel, dp: dp,
		done: make(chan struct{}), state: "established", ifname: "eth0", est: &ike.Established{Path: sa.Path(), PeerMOBIKE: true}}
	c.peer = dp.NewPeer(sa.Path())
	addrs := func() []netmon.Address {
		return []netmon.Address{{Addr: inside, Bits: 24, IfIndex: 2, IfName: "eth0"}}
	}
	s := &session{sa: sa, events: events, peer: c.peer}
	s.mover = c.newMover(c.mobilityConfig(), c.moverConn(ikeMobility{sa: sa}, addrs), sa.Current(), nil)
	go s.mover.Run(ctx, make(chan netmon.Event))
	go func() {
		for {
			select {
			case ev := <-events:
				c.handleChildEvent(s, ev)
			case <-ctx.Done():
				return
			}
		}
	}()

	if err := gwSA.RequestSwitch(wctx, r2, ike.SwitchOptions{}); err != nil {
		t.Fatalf("switch: %v", err)
	}
	var kinds []string
	for len(kinds) < 3 {
		select {
		case ev := <-emitted:
			kinds = append(kinds, ev.Event)
			if ev.Event == report.EventPathChanged && (ev.ToGateway != "198.51.100.2:4500" || ev.FromGateway != "198.51.100.1:4500") {
				t.Fatalf("path-changed %+v", ev)
			}
		case <-wctx.Done():
			t.Fatalf("events so far %v", kinds)
		}
	}
	if kinds[0] != report.EventSwitchRequested || kinds[2] != report.EventPathChanged {
		t.Fatalf("events %v, want switch-requested, path-test, path-changed", kinds)
	}
	for done := false; !done; {
		select {
		case ev := <-gwEvents:
			_, done = ev.(*ike.SwitchDone)
		case <-wctx.Done():
			t.Fatal("gateway: no SwitchDone")
		}
	}
	if got := gwSA.Path().Local.Addr(); got != r2 {
		t.Fatalf("gateway SA on %v", gwSA.Path())
	}
	if got := c.peer.Path().Remote.Addr(); got != r2 {
		t.Fatalf("client ESP on %v", c.peer.Path())
	}
	// The gateway's own requests from R2 pass the client's NAT now.
	if err := gwSA.CheckLiveness(wctx); err != nil {
		t.Fatalf("liveness from R2: %v", err)
	}
}
