package memrig

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// TestPing sends inner pings each way through the tunnel, over IPv4 and
// over IPv6 outer addresses, and counts every reply: the netsim network is
// lossless here, so all must come back once.
func TestPing(t *testing.T) {
	for _, outer := range []struct {
		name string
		v6   bool
	}{{"ipv4 outer", false}, {"ipv6 outer", true}} {
		t.Run(outer.name, func(t *testing.T) {
			r := newRigWith(t, 1, rigOptions{v6: outer.v6})
			if got := r.gw.peer.Path().Remote.Addr().Is6(); got != outer.v6 {
				t.Fatalf("the gateway's ESP goes to %v", r.gw.peer.Path())
			}
			testPing(t, r)
		})
	}
}

func testPing(t *testing.T, r *rig) {
	tests := []struct {
		name string
		flow func() *flow
	}{
		{"client to gateway side", func() *flow { return &flow{from: r.client, src: r.vip, dst: gwInner, id: 1} }},
		{"gateway side to client", func() *flow { return &flow{from: r.gw, src: gwInner, dst: r.vip, id: 2} }},
	}
	const pings = 20
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.flow()
			for range pings {
				if err := f.send(r.ctx); err != nil {
					t.Fatal(err)
				}
			}
			if got := f.answered(t, 1, pings); got != pings {
				t.Fatalf("%d of %d pings answered", got, pings)
			}
		})
	}
	if d := r.client.stack.duplicates() + r.gw.stack.duplicates(); d != 0 {
		t.Fatalf("%d duplicate replies", d)
	}
	for _, e := range []*end{r.client, r.gw} {
		checkDrops(t, e)
		cs := e.dp.ChildStats(nil)
		if len(cs) != 1 || cs[0].PacketsIn != 2*pings || cs[0].PacketsOut != 2*pings {
			t.Fatalf("%s child stats %+v, want %d packets each way", e.name, cs, 2*pings)
		}
	}
}

// TestMOBIKEMove moves the client to its second uplink while pings flow:
// the old address goes away, UPDATE_SA_ADDRESSES goes out from the new
// one, both dataplanes follow, and every ping sent after both moved is
// answered. Pings sent in between may be lost (sent from an address that is
// gone, or answered to it); they are counted. From behind a NAT, the
// gateway first reaches the client at the NAT's public address.
func TestMOBIKEMove(t *testing.T) {
	tests := []struct {
		name string
		nat  bool
	}{
		{"direct to direct", false},
		{"from behind a NAT to direct", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigWith(t, int64(2+i), rigOptions{clientNAT: tc.nat})
			if r.est.NATLocal != tc.nat {
				t.Fatalf("established with NATLocal %v", r.est.NATLocal)
			}
			wantFirst := clientAddr
			if tc.nat {
				wantFirst = natPublic
			}
			if p := r.gw.peer.Path(); p.Remote.Addr() != wantFirst {
				t.Fatalf("gateway's ESP goes to %v before the move, want %s", p, wantFirst)
			}
			f := &flow{from: r.client, src: r.vip, dst: gwInner, id: 3}
			for range 10 {
				f.send(r.ctx)
			}
			f.answered(t, 1, 10)

			// Every ping up to before is answered before the address goes: only
			// later ones can be lost to the move.
			st := startFlows(r.ctx, f)
			before := st.settle(t)[0]
			r.client.hosts[clientAddr].RemoveAddr(clientAddr)
			to := netpath.Path{Local: netip.AddrPortFrom(clientAddr2, clientPort), Remote: r.client.peer.Path().Remote}
			if err := r.client.moveTo(r.ctx, r.clientSA, r.client.peer, to); err != nil {
				t.Fatal(err)
			}
			cm := expect(t, "client move", r.client.moved)
			gm := expect(t, "gateway move", r.gw.moved)
			// Both sides follow; 50 more pings on the new path.
			marks, lasts := st.finish(50)
			during, last := marks[0], lasts[0]

			if cm.Local.Addr() != clientAddr2 || gm.Remote != netip.AddrPortFrom(clientAddr2, clientPort) {
				t.Fatalf("client moved to %v, gateway to %v", cm, gm)
			}
			if p := r.gw.peer.Path(); p.Remote.Addr() != clientAddr2 {
				t.Fatalf("gateway's ESP goes to %v", p)
			}
			got := f.answered(t, during+1, last)
			lost := int(last) - got
			t.Logf("pings %d, answered %d, lost %d; %d sent after the last answered check and before both sides moved", last, got, lost, during-before)
			if lost > int(during-before) {
				t.Fatalf("%d pings lost, more than the %d sent while moving", lost, during-before)
			}
			if d := r.client.stack.duplicates(); d != 0 {
				t.Fatalf("%d duplicate replies", d)
			}
			for _, e := range []*end{r.client, r.gw} {
				t.Logf("%s drops %+v", e.name, checkDrops(t, e))
			}
		})
	}
}

// TestRekeyUnderTraffic replaces the Child SA, run by either side, while
// pings flow both ways. The new pair goes in before the old one leaves and
// the side that answered the rekey sends on the new pair only once the
// other uses it, so on a lossless network no ping is lost.
func TestRekeyUnderTraffic(t *testing.T) {
	tests := []struct {
		name      string
		initiator func(*rig) *end
	}{
		{"client rekeys", func(r *rig) *end { return r.client }},
		{"gateway rekeys", func(r *rig) *end { return r.gw }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, int64(10+i))
			up := &flow{from: r.client, src: r.vip, dst: gwInner, id: 4}
			down := &flow{from: r.gw, src: gwInner, dst: r.vip, id: 5}
			st := startFlows(r.ctx, up, down)
			st.settle(t)

			e := tc.initiator(r)
			old := e.dp.ChildStats(nil)[0].SPIIn
			rctx, cancel := context.WithTimeout(r.ctx, wait)
			defer cancel()
			sa := e.currentSA()
			if err := sa.RekeyChild(rctx, old); err != nil {
				t.Fatalf("rekey: %v", err)
			}
			newSPI := map[*end]uint32{}
			for _, x := range []*end{r.client, r.gw} {
				newSPI[x] = r.expectInstalled(t, x).SPIIn
				expect(t, x.name+" old child retired", x.retired)
			}
			_, lasts := st.finish(50)
			for i, f := range []*flow{up, down} {
				last := lasts[i]
				if got := f.answered(t, 1, last); got != int(last) {
					t.Fatalf("%v: %d of %d pings answered", f, got, last)
				}
			}
			for _, x := range []*end{r.client, r.gw} {
				checkDrops(t, x)
				for _, cs := range x.dp.ChildStats(nil) {
					if cs.SPIIn == newSPI[x] && (cs.PacketsIn == 0 || cs.PacketsOut == 0) {
						t.Fatalf("%s: the new Child SA carried %d packets in, %d out", x.name, cs.PacketsIn, cs.PacketsOut)
					}
				}
			}
		})
	}
}

// TestGatewaySwitch has the gateway ask the client to move to its second
// address (SWITCH_TO_IP_ADDRESS) while pings flow: the client accepts,
// moves the SA there with UPDATE_SA_ADDRESSES, and ESP follows on both
// sides; the gateway's old address is removed after the switch, and pings
// sent after both moved are all answered.
func TestGatewaySwitch(t *testing.T) {
	r := newRig(t, 3)
	f := &flow{from: r.client, src: r.vip, dst: gwInner, id: 6}
	st := startFlows(r.ctx, f)
	before := st.settle(t)[0]

	r.requestSwitch(t, gwAddr2)
	cm := expect(t, "client move", r.client.moved)
	gm := expect(t, "gateway move", r.gw.moved)
	sd := expect(t, "switch done", r.gw.switched)
	r.gw.hosts[gwAddr].RemoveAddr(gwAddr)
	marks, lasts := st.finish(50)
	during, last := marks[0], lasts[0]

	for _, e := range []*end{r.client, r.gw} {
		t.Logf("%s drops %+v, path %v", e.name, e.dp.Drops(), e.peer.Path())
	}
	t.Logf("network %+v", r.net.Stats())
	if cm.Remote.Addr() != gwAddr2 || gm.Local.Addr() != gwAddr2 || sd.To != gwAddr2 {
		t.Fatalf("client moved to %v, gateway to %v, switch to %v", cm, gm, sd.To)
	}
	got := f.answered(t, during+1, last)
	lost := int(last) - got
	t.Logf("pings %d, answered %d, lost %d; %d sent after the last answered check and before the switch was done", last, got, lost, during-before)
	if lost > int(during-before) {
		t.Fatalf("%d pings lost, more than the %d sent during the switch", lost, during-before)
	}
	for _, e := range []*end{r.client, r.gw} {
		t.Logf("%s drops %+v", e.name, checkDrops(t, e))
	}
}

// TestImpairedPath sends pings over an impaired network once the SA is up
// and accounts for every one: a lost datagram (request or reply) costs
// exactly one ping, a duplicated one is refused by the receiver's replay
// window, and reordering within the window costs nothing.
func TestImpairedPath(t *testing.T) {
	tests := []struct {
		name string
		imp  netsim.Impairment
	}{
		{"loss", netsim.Impairment{Loss: 0.1}},
		{"duplication", netsim.Impairment{Duplicate: 0.2}},
		{"reordering", netsim.Impairment{Jitter: 5 * time.Millisecond}},
	}
	const pings = 100
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, int64(20+i))
			r.net.SetDefault(tc.imp) // only ESP from here on: no DPD, no NAT keepalives
			f := &flow{from: r.client, src: r.vip, dst: gwInner, id: 7}
			for range pings {
				if err := f.send(r.ctx); err != nil {
					t.Fatal(err)
				}
			}
			// Every ping ends answered or with one datagram lost.
			deadline := time.Now().Add(wait)
			var got int
			for {
				got = 0
				for s := uint16(1); s <= pings; s++ {
					if f.from.stack.replied(f.id, s) {
						got++
					}
				}
				if got+int(r.net.Stats().Lost) >= pings || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			st := r.net.Stats()
			replayed := r.client.dp.Drops().Replayed + r.gw.dp.Drops().Replayed
			t.Logf("answered %d of %d; network %+v; replayed drops %d", got, pings, st, replayed)
			if got+int(st.Lost) != pings {
				t.Fatalf("%d answered and %d datagrams lost, want them to add up to %d pings", got, st.Lost, pings)
			}
			if replayed != st.Duplicated {
				t.Fatalf("%d duplicates refused by the replay windows, the network duplicated %d", replayed, st.Duplicated)
			}
			if d := r.client.stack.duplicates(); d != 0 {
				t.Fatalf("%d duplicate replies reached the client's stack", d)
			}
			if tc.imp.Loss == 0 && got != pings {
				t.Fatalf("%d of %d answered without loss", got, pings)
			}
			for _, e := range []*end{r.client, r.gw} {
				if d := e.dp.Drops(); d.BadICV != 0 || d.Malformed != 0 || d.OutsideSelectors != 0 || d.TUNWrite != 0 {
					t.Errorf("%s drops: %+v", e.name, d)
				}
			}
		})
	}
}
