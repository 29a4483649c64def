package tunnel

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/ikesim"
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := netsim.New(1)
	defer n.Close()
	gwHost := n.AddHost("gw", r1, r2)
	client := n.AddHost("client", inside)
	n.AddNAT(public, netsim.RestrictedCone).Attach(client)

	gwEvents := make(chan ike.Event, 64)
	rcfg := ikesim.ResponderConfig(t)
	// No CP here: alice's side is a network granted to her.
	rcfg.Pool, rcfg.LocalTS, rcfg.Retransmit = nil, nil, ike.Retransmit{}
	rcfg.PeerTS = func(*wire.Identification) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.1.1.0/24")} }
	rcfg.MOBIKE, rcfg.Addresses = true, []netip.Addr{r1, r2}
	ikesim.Listen(ctx, t, gwHost, rcfg, gwEvents)

	p := &config.Profile{Name: "corp", MOBIKE: true, Switch: true, AcceptSwitch: config.AcceptSwitchAnnounced,
		SwitchNotify: config.DefaultSwitchNotify, OutageLimit: time.Minute}
	events := make(chan ike.Event, 16)
	icfg := ikesim.InitiatorConfig(t, netip.AddrPortFrom(inside, 4500), netip.AddrPortFrom(r1, 4500))
	icfg.VirtualIP, icfg.MOBIKE, icfg.Retransmit = false, true, ike.MoveRetransmit
	icfg.Switch, icfg.AcceptSwitch, icfg.SwitchNotify = p.Switch, acceptSwitch(p), wire.NotifyType(p.SwitchNotify)
	sa := ikesim.Dial(ctx, t, client, icfg, events)
	wctx, wcancel := context.WithTimeout(ctx, wait)
	defer wcancel()
	if _, err := sa.Wait(wctx); err != nil {
		t.Fatalf("establishing: %v", err)
	}
	gwSA := ikesim.Established(t, gwEvents, wait).SA

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
