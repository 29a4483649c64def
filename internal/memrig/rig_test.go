package memrig

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/internal/memconn"
	"github.com/roam-vpn/roam/internal/memtun"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

var (
	clientAddr  = netip.MustParseAddr("192.0.2.10")
	clientAddr2 = netip.MustParseAddr("192.0.2.20")
	gwAddr      = netip.MustParseAddr("198.51.100.1")
	gwAddr2     = netip.MustParseAddr("198.51.100.2")
	natPublic   = netip.MustParseAddr("203.0.113.7")
	// The outer addresses of an IPv6 rig (rigOptions.v6).
	clientAddrs6 = [2]netip.Addr{netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:1::20")}
	gwAddrs6     = [2]netip.Addr{netip.MustParseAddr("2001:db8:2::1"), netip.MustParseAddr("2001:db8:2::2")}
	// gwInner is the host behind the gateway's TUN device, inside the
	// gateway's traffic selector.
	gwInner = netip.MustParseAddr("10.99.0.1")
	psk     = []byte("correct horse battery staple")
)

const (
	clientPort = 40000
	// wait bounds every outcome: generous, as the machine is shared; the
	// tests judge by counts, never by how long something took.
	wait = 20 * time.Second
)

var fast = ike.Retransmit{Initial: 50 * time.Millisecond, Factor: 1.5, Max: 400 * time.Millisecond, Retries: 12}

// end is one side: simulated hosts (one per uplink), its dataplane over a
// memory TUN, a small IP stack answering pings on the TUN side, and the
// glue installing what IKE negotiates.
type end struct {
	t     *testing.T
	name  string
	hosts map[netip.Addr]*netsim.Host // by address; one host may own several
	tun   *memtun.Device
	dp    *esp.Dataplane
	stack *stack

	mu   sync.Mutex
	peer *esp.Peer // the one peer (a client on the gateway)
	sa   *ike.SA   // the IKE SA (the gateway's once established)

	installed chan ike.ChildSA     // every Child SA installed, in order
	retired   chan uint32          // inbound SPIs retired on ChildDeleted
	moved     chan netpath.Path    // paths the peer was moved to (SetPath)
	switched  chan *ike.SwitchDone // gateway: finished switches
}

// currentSA is the end's IKE SA as it is now (the gateway's changes when
// the client reconnects).
func (e *end) currentSA() *ike.SA {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sa
}

// requestSwitch has the gateway ask the client to move to its address to
// (SWITCH_TO_IP_ADDRESS); t fails unless the exchange succeeds.
func (r *rig) requestSwitch(t *testing.T, to netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, wait)
	defer cancel()
	if err := r.gw.currentSA().RequestSwitch(ctx, to, ike.SwitchOptions{Retransmit: fast}); err != nil {
		t.Fatalf("switch: %v", err)
	}
}

// newEnd makes the side's hosts: one owning every address, or with split
// one per address (uplinks that can sit behind different NATs).
func newEnd(t *testing.T, n *netsim.Network, name string, inner []netip.Addr, split bool, addrs ...netip.Addr) *end {
	e := &end{t: t, name: name, hosts: map[netip.Addr]*netsim.Host{},
		tun:       memtun.New(memtun.Config{Name: name, BatchSize: 8}),
		installed: make(chan ike.ChildSA, 16), retired: make(chan uint32, 16),
		moved: make(chan netpath.Path, 16), switched: make(chan *ike.SwitchDone, 4)}
	e.stack = newStack(e.tun, inner)
	if !split {
		h := n.AddHost(name, addrs...)
		for _, a := range addrs {
			e.hosts[a] = h
		}
		return e
	}
	for _, a := range addrs {
		e.hosts[a] = n.AddHost(name+"-"+a.String(), a)
	}
	return e
}

// start runs the dataplane over conns on the host; handleIKE gets its IKE
// messages.
func (e *end) start(ctx context.Context, handleIKE esp.IKEHandler, binds ...netip.AddrPort) {
	e.dp = esp.NewDataplane(e.tun, handleIKE, nil)
	for _, b := range binds {
		c, err := memconn.Listen(e.hosts[b.Addr()], b, 0)
		if err != nil {
			e.t.Fatal(err)
		}
		e.dp.AddConn(c)
	}
	done := make(chan struct{})
	go func() { defer close(done); e.dp.Run(ctx) }()
	go e.stack.run()
	e.t.Cleanup(func() { e.tun.Close(); <-done })
}

// install puts a negotiated Child SA pair into the dataplane with the
// binder both roles use (pending: a rekey we answered).
func (e *end) install(peer *esp.Peer, ch ike.ChildSA, pending bool) {
	e.t.Helper()
	if _, err := e.binder().InstallChild(peer, nil, ch, ikeesp.Install{Pending: pending}); err != nil {
		e.t.Errorf("%s: installing child SA %08x: %v", e.name, ch.SPIIn, err)
		return
	}
	e.installed <- ch
}

// binder installs into this end's dataplane as tunnel and gateway do; the
// rig arms no packet-count rekeys.
func (e *end) binder() ikeesp.Binder { return ikeesp.Binder{DP: e.dp} }

// follow handles the events both roles share after establishment (tunnel
// conn.go handleChildEvent, gateway.go's event loop).
func (e *end) follow(ctx context.Context, ev ike.Event) {
	e.mu.Lock()
	peer := e.peer
	e.mu.Unlock()
	switch ev := ev.(type) {
	case *ike.ChildRekeyed:
		e.install(peer, ev.Child, !ev.Initiated)
	case *ike.ChildDeleted:
		e.binder().Retire(ev.SPIIn)
		e.retired <- ev.SPIIn
	case *ike.PathUpdated: // gateway: the client moved
		e.binder().Move(peer, ev.Path)
		e.moved <- ev.Path
	case *ike.SwitchDone:
		e.switched <- ev
	case *ike.SwitchRequested: // client: the gateway asks to move
		if ev.Accepted {
			go e.followSwitch(ctx, ev.To)
		}
	}
}

// followSwitch moves the SA to the gateway's new address, as the client's
// mover does for SwitchTo: one UPDATE_SA_ADDRESSES to it, then ESP follows.
func (e *end) followSwitch(ctx context.Context, to netip.Addr) {
	e.mu.Lock()
	sa, peer := e.sa, e.peer
	e.mu.Unlock()
	cur := peer.Path()
	e.moveTo(ctx, sa, peer, netpath.Path{Local: cur.Local, Remote: netip.AddrPortFrom(to, cur.Remote.Port())})
}

// moveTo runs one MOBIKE update and, on success, moves ESP (as the peer
// follows mobility's netpath.Current.Set).
func (e *end) moveTo(ctx context.Context, sa *ike.SA, peer *esp.Peer, path netpath.Path) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	res, err := sa.UpdateAddresses(ctx, []netpath.Path{path})
	if err != nil {
		e.t.Errorf("%s: moving to %v: %v", e.name, path, err)
		return err
	}
	e.dp.SetPath(peer, res.Path)
	e.moved <- res.Path
	return nil
}

// rig is a client and a gateway with one IKE SA and its Child SA between
// them.
type rig struct {
	net         *netsim.Network
	client, gw  *end
	clientSA    *ike.SA
	est         *ike.Established // the client's
	vip         netip.Addr
	cancel      context.CancelFunc
	ctx         context.Context
	gwResponder *ike.Responder
}

func proposal(t *testing.T, ikeSide bool, text string) ike.Proposal {
	parse := config.ParseESPProposal
	if ikeSide {
		parse = config.ParseIKEProposal
	}
	p, err := parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return ike.Proposal{Transforms: p.Transforms, Text: p.Text}
}

// newRig builds the network, the gateway (two addresses, ports 500 and
// 4500 on each) and the client (two uplinks, one address each, the same
// port on both), and connects from the client's first address.
func newRig(t *testing.T, seed int64) *rig { return newRigWith(t, seed, rigOptions{}) }

type rigOptions struct {
	// clientNAT puts the client's first uplink behind a NAT.
	clientNAT bool
	// v6: the outer addresses are IPv6 (clientAddrs6, gwAddrs6); the
	// inner ones stay IPv4.
	v6 bool
}

// newBareRig is a rig with its network and context but neither end yet;
// the test's cleanup cancels the context and closes the network.
func newBareRig(t *testing.T, seed int64) *rig {
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{net: netsim.New(seed), ctx: ctx, cancel: cancel}
	t.Cleanup(func() {
		cancel()
		r.net.Close()
	})
	return r
}

func newRigWith(t *testing.T, seed int64, opt rigOptions) *rig {
	t.Helper()
	r := newBareRig(t, seed)
	ctx := r.ctx
	cAddrs, gAddrs := [2]netip.Addr{clientAddr, clientAddr2}, [2]netip.Addr{gwAddr, gwAddr2}
	if opt.v6 {
		cAddrs, gAddrs = clientAddrs6, gwAddrs6
	}
	r.gw = newEnd(t, r.net, "gw", []netip.Addr{gwInner}, false, gAddrs[:]...)
	r.client = newEnd(t, r.net, "client", nil, true, cAddrs[:]...)
	if opt.clientNAT {
		r.net.AddNAT(natPublic, netsim.PortRestrictedCone).Attach(r.client.hosts[cAddrs[0]])
	}

	ikeProp, espProp := r.startGateway(t, gAddrs[:])

	clientAuth, err := ike.NewPSKAuth("alice@example.com", psk)
	if err != nil {
		t.Fatal(err)
	}
	gwPeer, err := ike.NewPSKPeer("vpn.example.com", psk)
	if err != nil {
		t.Fatal(err)
	}
	icfg := ike.InitiatorConfig{
		Path:      netpath.Path{Local: netip.AddrPortFrom(cAddrs[0], clientPort), Remote: netip.AddrPortFrom(gAddrs[0], 500)},
		LocalAuth: clientAuth, PeerAuth: gwPeer, RemoteID: "vpn.example.com",
		IKE: []ike.Proposal{ikeProp}, ESP: []ike.Proposal{espProp},
		RemoteTS:  []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
		VirtualIP: true, MOBIKE: true, Switch: true, Retransmit: fast,
	}
	var (
		saMu sync.Mutex
		sa   *ike.SA
	)
	r.client.start(ctx, func(pkt []byte, path netpath.Path) {
		saMu.Lock()
		s := sa
		saMu.Unlock()
		if s != nil {
			s.HandlePacket(pkt, path)
		}
	}, netip.AddrPortFrom(cAddrs[0], clientPort), netip.AddrPortFrom(cAddrs[1], clientPort))
	clientEvents := make(chan ike.Event, 64)
	saMu.Lock()
	sa, err = ike.Dial(ctx, icfg, r.client.dp, clientEvents)
	saMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, wait)
	defer wcancel()
	est, err := sa.Wait(wctx)
	if err != nil {
		t.Fatalf("establishing: %v", err)
	}
	if len(est.VirtualIPs) == 0 || len(est.Children) != 1 {
		t.Fatalf("established with inner addresses %v and %d Child SAs", est.VirtualIPs, len(est.Children))
	}
	r.clientSA, r.est, r.vip = sa, est, est.VirtualIPs[0]
	r.client.stack.setOwn(r.vip)
	peer := r.client.dp.NewPeer(est.Path)
	r.client.mu.Lock()
	r.client.peer, r.client.sa = peer, sa
	r.client.mu.Unlock()
	r.client.install(peer, est.Children[0], false)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-clientEvents:
				r.client.follow(ctx, ev)
			}
		}
	}()
	// Both ends have the Child SA before any test sends.
	for _, e := range []*end{r.client, r.gw} {
		r.expectInstalled(t, e)
	}
	return r
}

// startGateway runs the gateway end (r.gw, its hosts made): a responder
// with MOBIKE on ports 500 and 4500 of each of gAddrs, its Child SAs
// installed through the binder. It returns the one IKE and ESP proposal
// it accepts.
func (r *rig) startGateway(t *testing.T, gAddrs []netip.Addr) (ikeProp, espProp ike.Proposal) {
	t.Helper()
	ctx := r.ctx
	ikeProp, espProp = proposal(t, true, "aes128gcm16-prfsha256-x25519"), proposal(t, false, "aes128gcm16")
	pool, err := ike.NewPool([]netip.Prefix{netip.MustParsePrefix("10.99.200.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	gwAuth, err := ike.NewPSKAuth("vpn.example.com", psk)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := ike.ResponderConfig{
		LocalAuth: gwAuth,
		PeerAuth: func(id *wire.Identification) (ike.PeerAuth, error) {
			if string(id.Data) != "alice@example.com" {
				return nil, errors.New("unknown client")
			}
			return ike.NewPSKPeer("alice@example.com", psk)
		},
		IKE: []ike.Proposal{ikeProp}, ESP: []ike.Proposal{espProp},
		LocalTS: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Pool: pool,
		MOBIKE: true, Addresses: gAddrs,
		RoutabilityRetransmit: fast, Retransmit: fast,
	}
	gwEvents := make(chan ike.Event, 64)
	var resp atomic.Pointer[ike.Responder]
	var binds []netip.AddrPort
	for _, a := range gAddrs {
		binds = append(binds, netip.AddrPortFrom(a, 500), netip.AddrPortFrom(a, 4500))
	}
	r.gw.start(ctx, func(pkt []byte, path netpath.Path) {
		if rp := resp.Load(); rp != nil {
			rp.HandlePacket(pkt, path)
		}
	}, binds...)
	rp, err := ike.NewResponder(ctx, rcfg, r.gw.dp, gwEvents)
	if err != nil {
		t.Fatal(err)
	}
	resp.Store(rp)
	r.gwResponder = rp
	go r.gw.gatewayLoop(ctx, gwEvents)
	return ikeProp, espProp
}

// gatewayLoop is the gateway's event loop (gateway/gateway.go): install a
// client's Child SAs when it is established, then follow it.
func (e *end) gatewayLoop(ctx context.Context, events <-chan ike.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if est, ok := ev.(*ike.Established); ok {
				peer := e.dp.NewPeer(est.Path)
				e.mu.Lock()
				e.peer, e.sa = peer, est.SA
				e.mu.Unlock()
				for _, ch := range est.Children {
					e.install(peer, ch, false)
				}
				continue
			}
			e.follow(ctx, ev)
		}
	}
}

func (r *rig) expectInstalled(t *testing.T, e *end) ike.ChildSA {
	t.Helper()
	select {
	case ch := <-e.installed:
		return ch
	case <-time.After(wait):
		t.Fatalf("%s: no Child SA installed", e.name)
		return ike.ChildSA{}
	}
}

func expect[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("no %s", what)
		var zero T
		return zero
	}
}

// checkDrops fails on drops that mean a broken dataplane rather than the
// network or a move: bad ICVs, replays, malformed packets.
func checkDrops(t *testing.T, e *end) esp.DropStats {
	t.Helper()
	d := e.dp.Drops()
	if d.BadICV != 0 || d.Replayed != 0 || d.TooOld != 0 || d.Malformed != 0 || d.OutsideSelectors != 0 || d.TUNWrite != 0 {
		t.Errorf("%s drops: %+v", e.name, d)
	}
	return d
}

// flow is a numbered stream of pings from one end to an address behind
// the other, and the replies counted back.
type flow struct {
	from     *end
	src, dst netip.Addr
	id       uint16
	sent     atomic.Uint32
}

// send injects the next ping; sent counts it once it is in. One goroutine
// sends on a flow.
func (f *flow) send(ctx context.Context) error {
	seq := f.sent.Load() + 1
	if err := f.from.tun.Inject(ctx, echo(f.src, f.dst, 8, f.id, uint16(seq))); err != nil {
		return err
	}
	f.sent.Store(seq)
	return nil
}

// run sends a ping every interval until ctx is done.
func (f *flow) run(ctx context.Context, interval time.Duration) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			f.send(ctx)
		}
	}
}

// flows are flows sending a ping every 2 ms, each on its own goroutine.
type flows struct {
	fs   []*flow
	stop context.CancelFunc
	done chan struct{}
}

func startFlows(ctx context.Context, fs ...*flow) *flows {
	ctx, stop := context.WithCancel(ctx)
	st := &flows{fs: fs, stop: stop, done: make(chan struct{}, len(fs))}
	for _, f := range fs {
		go func() { defer func() { st.done <- struct{}{} }(); f.run(ctx, 2*time.Millisecond) }()
	}
	return st
}

func (st *flows) sent() []uint16 {
	n := make([]uint16, len(st.fs))
	for i, f := range st.fs {
		n[i] = uint16(f.sent.Load())
	}
	return n
}

// settle lets the flows run a little and waits until every ping sent so
// far is answered; it returns how many each has sent.
func (st *flows) settle(t *testing.T) []uint16 {
	t.Helper()
	time.Sleep(50 * time.Millisecond)
	n := st.sent()
	for i, f := range st.fs {
		f.answered(t, 1, n[i])
	}
	return n
}

// finish lets every flow send n more pings, stops them, and returns how
// many each had sent when finish was called and in the end.
func (st *flows) finish(n uint16) (marks, lasts []uint16) {
	marks = st.sent()
	for {
		cur, more := st.sent(), true
		for i := range cur {
			more = more && cur[i] >= marks[i]+n
		}
		if more {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	st.stop()
	for range st.fs {
		<-st.done
	}
	return marks, st.sent()
}

// answered waits until every ping numbered from..to has its reply, and
// returns how many of 1..to have one.
func (f *flow) answered(t *testing.T, from, to uint16) int {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		missing := 0
		for s := from; s <= to; s++ {
			if !f.from.stack.replied(f.id, s) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the pings %d..%d from %s got no reply", missing, from, to, f.src)
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := 0
	for s := uint16(1); s <= to; s++ {
		if f.from.stack.replied(f.id, s) {
			got++
		}
	}
	return got
}

// stack is the IP stack behind a TUN device: it answers echo requests to
// its own addresses and records echo replies.
type stack struct {
	dev *memtun.Device
	mu  sync.Mutex
	own map[netip.Addr]bool
	got map[[2]uint16]int // (id, seq) -> replies seen
}

func newStack(dev *memtun.Device, own []netip.Addr) *stack {
	s := &stack{dev: dev, own: map[netip.Addr]bool{}, got: map[[2]uint16]int{}}
	for _, a := range own {
		s.own[a] = true
	}
	return s
}

func (s *stack) setOwn(a netip.Addr) {
	s.mu.Lock()
	s.own[a] = true
	s.mu.Unlock()
}

func (s *stack) replied(id, seq uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[[2]uint16{id, seq}] > 0
}

func (s *stack) duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.got {
		n += c - 1
	}
	return n
}

func (s *stack) run() {
	for pkt := range s.dev.Written() {
		src, dst, typ, id, seq, ok := parseEcho(pkt)
		if !ok {
			continue
		}
		s.mu.Lock()
		mine := s.own[dst]
		if typ == 0 && mine {
			s.got[[2]uint16{id, seq}]++
		}
		s.mu.Unlock()
		if typ == 8 && mine {
			s.dev.Inject(context.Background(), echo(dst, src, 0, id, seq))
		}
	}
}

// echo builds an IPv4 ICMP echo request (typ 8) or reply (0) with 56
// octets of data.
func echo(src, dst netip.Addr, typ uint8, id, seq uint16) []byte {
	p := make([]byte, 20+8+56)
	p[0], p[8], p[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:16], s4[:])
	copy(p[16:20], d4[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
	icmp := p[20:]
	icmp[0] = typ
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	for i := 8; i < len(icmp); i++ {
		icmp[i] = byte(i)
	}
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	return p
}

func parseEcho(p []byte) (src, dst netip.Addr, typ uint8, id, seq uint16, ok bool) {
	if len(p) < 28 || p[0] != 0x45 || p[9] != 1 || checksum(p[:20]) != 0 || checksum(p[20:]) != 0 {
		return
	}
	src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
	return src, dst, p[20], binary.BigEndian.Uint16(p[24:]), binary.BigEndian.Uint16(p[26:]), true
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func (f *flow) String() string { return fmt.Sprintf("%s->%s", f.src, f.dst) }
