package ikeesp

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/netpath"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/ikesim"
	"github.com/roam-vpn/roam/internal/memtun"
	"github.com/roam-vpn/roam/internal/netsim"
)

// espEnd is one end's dataplane over a loopback UDP socket.
type espEnd struct {
	dp   *esp.Dataplane
	tun  *memtun.Device
	sock *esp.Socket
	peer *esp.Peer
}

func startESPEnd(t *testing.T) *espEnd {
	t.Helper()
	e := &espEnd{tun: memtun.New(memtun.Config{})}
	e.dp = esp.NewDataplane(e.tun, func([]byte, netpath.Path) {}, nil)
	var err error
	if e.sock, err = esp.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0); err != nil {
		t.Fatal(err)
	}
	e.dp.AddSocket(e.sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.dp.Run(ctx) }()
	t.Cleanup(func() { cancel(); e.tun.Close(); <-done })
	return e
}

// TestRekeyOnPackets: a client's Child SA installed a few packets short of
// child_rekey_packets (as after an HA takeover) is rekeyed by a real
// CREATE_CHILD_SA once traffic crosses the limit, and the new SA carries
// the traffic after it; nothing is dropped on the way.
func TestRekeyOnPackets(t *testing.T) {
	const limit = 1000
	ctx, cancel := context.WithCancel(context.Background())
	n := netsim.New(7)
	t.Cleanup(func() { cancel(); n.Close() })
	log := slog.New(slog.DiscardHandler)
	gwAddr, clientAddr := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.10")
	gwEvents := make(chan ike.Event, 64)
	ikesim.Listen(ctx, t, n.AddHost("gw", gwAddr), ikesim.ResponderConfig(t), gwEvents)
	clEvents := make(chan ike.Event, 64)
	icfg := ikesim.InitiatorConfig(t, netip.AddrPortFrom(clientAddr, 40000), netip.AddrPortFrom(gwAddr, 500))
	client := ikesim.Dial(ctx, t, n.AddHost("client", clientAddr), icfg, clEvents)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	clEst, err := client.Wait(wctx)
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	gwEst := ikesim.Established(t, gwEvents, 10*time.Second)

	// ESP between the two ends goes over loopback; IKE stays on netsim.
	cl, gw := startESPEnd(t), startESPEnd(t)
	cl.peer = cl.dp.NewPeer(netpath.Path{Local: cl.sock.LocalAddr(), Remote: gw.sock.LocalAddr()})
	gw.peer = gw.dp.NewPeer(netpath.Path{Local: gw.sock.LocalAddr(), Remote: cl.sock.LocalAddr()})
	install := func(e *espEnd, sa *ike.SA, ch ike.ChildSA, pending bool, startSeq uint64) {
		t.Helper()
		cfg, err := ChildConfig(ch, SelectorsToPrefixes(ch.RemoteTS), pending)
		if err != nil {
			t.Fatal(err)
		}
		cfg.OutboundSeq = startSeq
		RekeyOnPackets(&cfg, sa, limit, log)
		if err := e.dp.InstallChild(e.peer, cfg); err != nil {
			t.Fatal(err)
		}
	}
	install(cl, clEst.SA, clEst.Children[0], false, limit-5)
	install(gw, gwEst.SA, gwEst.Children[0], false, 0)
	oldSPI := clEst.Children[0].SPIIn

	// What conn and gateway do with the Child SA events.
	rekeyed := make(chan ike.ChildSA, 4)
	follow := func(e *espEnd, sa *ike.SA, events <-chan ike.Event, report chan<- ike.ChildSA) {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				switch ev := ev.(type) {
				case *ike.ChildRekeyed:
					install(e, sa, ev.Child, !ev.Initiated, 0)
					if report != nil {
						report <- ev.Child
					}
				case *ike.ChildDeleted:
					e.dp.RetireChild(ev.SPIIn, esp.RetireGrace)
				}
			}
		}
	}
	go follow(cl, clEst.SA, clEvents, rekeyed)
	go follow(gw, gwEst.SA, gwEvents, nil)

	vip := clEst.VirtualIPs[0]
	send := func() {
		t.Helper()
		pkt := make([]byte, 60)
		pkt[0], pkt[9] = 0x45, 17
		copy(pkt[12:16], vip.AsSlice())
		copy(pkt[16:20], []byte{10, 99, 0, 10})
		if err := cl.tun.Inject(ctx, pkt); err != nil {
			t.Fatal(err)
		}
		select {
		case <-gw.tun.Written():
		case <-time.After(5 * time.Second):
			t.Fatalf("packet not delivered; client drops %+v, gateway drops %+v", cl.dp.Drops(), gw.dp.Drops())
		}
	}
	for i := 0; i < 10; i++ { // crosses the limit at the 6th
		send()
	}
	var child ike.ChildSA
	select {
	case child = <-rekeyed:
	case <-time.After(10 * time.Second):
		t.Fatal("no rekey after child_rekey_packets")
	}
	if child.SPIIn == oldSPI {
		t.Fatal("the rekey did not make a new SA")
	}
	// Traffic moves to the new SA (the client ran the rekey, so at once).
	for i := 0; i < 5; i++ {
		send()
	}
	// The rekey runs alongside the traffic, so where the packets before it
	// went depends on timing: at least the six up to the limit on the old
	// SA, at least the five after it on the new one.
	var oldOut, newOut uint64
	for _, cs := range cl.dp.ChildStats(cl.peer) {
		switch cs.SPIIn {
		case oldSPI:
			oldOut = cs.PacketsOut
		case child.SPIIn:
			newOut = cs.PacketsOut
		}
	}
	if oldOut < 6 || newOut < 5 || oldOut+newOut != 15 {
		t.Fatalf("old SA sent %d packets, new %d; want >= 6 and >= 5, 15 in all", oldOut, newOut)
	}
	var newIn uint64
	for _, cs := range gw.dp.ChildStats(gw.peer) {
		if cs.SPIOut == child.SPIIn {
			newIn = cs.PacketsIn
		}
	}
	if newIn != newOut {
		t.Fatalf("gateway received %d packets on the new SA, the client sent %d", newIn, newOut)
	}
	if d := cl.dp.Drops(); d != (esp.DropStats{}) {
		t.Fatalf("client drops %+v", d)
	}
	if d := gw.dp.Drops(); d != (esp.DropStats{}) {
		t.Fatalf("gateway drops %+v", d)
	}
}
