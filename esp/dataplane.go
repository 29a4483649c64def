package esp

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/netpath"
	"golang.org/x/sys/cpu"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

const (
	// tunOffset is the headroom wireguard's TUN needs in front of each
	// packet for the virtio-net header used by its GSO/GRO offloads.
	tunOffset = 16
	// maxPacket bounds one UDP datagram or inner packet.
	maxPacket = 65535
	ikePort   = 500
)

// IKEHandler receives IKE messages (non-ESP marker removed) with the path
// they arrived on. It must not keep pkt.
type IKEHandler func(pkt []byte, path Path)

// Peer is the far end of one IKE SA: the path its packets take now, and its
// NAT keepalive state. SetPath swaps the path atomically, so ESP and
// keepalives follow a move at once.
type Peer struct {
	path      atomic.Pointer[peerPath]
	keepalive atomic.Int64 // interval in ns; 0 = off
	// The send side (TUN loop) and the receive side (socket loops) each
	// write their own timestamps; keeping them on separate cache lines
	// stops the two cores from bouncing one line per batch.
	_        cpu.CacheLinePad
	lastSent atomic.Int64 // unix ns of the last packet sent to the peer
	lastESP  atomic.Int64 // unix ns of the last ESP packet sent
	_        cpu.CacheLinePad
	lastRecv atomic.Int64 // unix ns of the last authenticated ESP packet received
	_        cpu.CacheLinePad
	// stray is where authenticated ESP came from when that was the
	// peer's address with another port than ours to it: a NAT in front of
	// the peer changed its mapping (TakeStray).
	stray atomic.Pointer[Path]
	// mtuPhase spreads the peers' path MTU refreshes over the interval.
	mtuPhase int64
	// children are the peer's installed children (guarded by
	// Dataplane.mu), so removing a peer does not scan every child.
	children map[*child]struct{}
	// rtt reports measured round-trip times (SetRTT); nil: none.
	rtt atomic.Pointer[RTTFunc]
	// echo measures round trips from the inner traffic (SetEchoRTT).
	echo echoTracker
}

// RTTFunc reports a round-trip time measured on path, such as IKE's
// smoothed estimate; ok is false when there is none for that path.
type RTTFunc func(path Path) (rtt time.Duration, ok bool)

// SetRTT gives the peer a source of round-trip times. A new path's GSO
// pause (gsoprobe.go) then waits a few round trips of that path for an
// ICMP instead of pmtuProbeRTT. nil removes the source.
func (p *Peer) SetRTT(f RTTFunc) {
	if f == nil {
		p.rtt.Store(nil)
		return
	}
	p.rtt.Store(&f)
}

// TakeStray returns, once, the path on which authenticated ESP arrived
// from the peer's address but another port than the current path's.
func (p *Peer) TakeStray() (Path, bool) {
	if s := p.stray.Swap(nil); s != nil {
		return *s, true
	}
	return Path{}, false
}

// Activity returns when ESP was last sent to and received from the peer:
// traffic going out with nothing coming back is how a dead path shows when
// no interface event says so (an upstream failure, a NAT that lost state).
func (p *Peer) Activity() (sent, received time.Time) {
	return time.Unix(0, p.lastESP.Load()), time.Unix(0, p.lastRecv.Load())
}

// peerPath caches what sending to a path needs.
type peerPath struct {
	Path
	oob []byte // PKTINFO choosing the source address and interface
	// conn is the path's Conn; sock the same when it is a kernel socket,
	// whose batch send (GSO, cached PKTINFO) the packet path calls
	// directly.
	conn Conn
	sock *Socket
	// stream carries the path's packets instead of a socket when the path
	// is a stream (Path.Stream, stream.go).
	stream StreamSender
	mtu    int // largest inner packet that fits the path (mtu.go); 0: unknown
	// noGSOUntil (unix ns): packets on a new path go out one datagram
	// each until then (mtu.go, pmtuProbe), or until probe has shown that
	// their size fits (gsoprobe.go).
	noGSOUntil int64
	probe      *gsoProbe
	// credit, when set, makes the path unproved (unproved.go): the bytes
	// it may still carry, the rest going to fallback.
	credit   *atomic.Int64
	fallback *peerPath
}

// Path returns the current path.
func (p *Peer) Path() Path { return p.path.Load().Path }

// SetKeepalive sets the NAT keepalive interval (0 = off).
func (p *Peer) SetKeepalive(d time.Duration) { p.keepalive.Store(int64(d)) }

type child struct {
	peer     *Peer
	in       *InboundSA
	out      *OutboundSA
	remote   []netip.Prefix // the peer's selectors
	local    []netip.Prefix // ours
	routes   []netip.Prefix // remote, masked: the prefixes routed to it
	proposal string
	// pending: installed by a rekey we answered; its outbound SA waits
	// behind the old one until the peer shows it installed the pair.
	pending atomic.Bool
	// onSoft is ChildConfig.OnRekeyPackets; softReported: it was called.
	onSoft       func()
	softReported atomic.Bool
	// onFirstOut is ChildConfig.OnFirstOut.
	onFirstOut func(time.Time)

	// Written once per batch, outbound by the TUN loop and inbound by a
	// socket loop: on separate cache lines.
	_                    cpu.CacheLinePad
	bytesOut, packetsOut atomic.Uint64
	_                    cpu.CacheLinePad
	bytesIn, packetsIn   atomic.Uint64
	_                    cpu.CacheLinePad
}

// ChildConfig is one Child SA pair to install. Remote lists the inner
// destinations routed into Out, the peer's traffic selectors: inbound
// packets must come from within them. Local are our traffic selectors:
// inbound packets must be addressed within them (RFC 4301 5.2), so a
// child without Local delivers nothing.
type ChildConfig struct {
	In       *InboundSA
	Out      *OutboundSA
	Remote   []netip.Prefix
	Local    []netip.Prefix
	Proposal string
	// OutboundPending defers sending on Out: the routes go behind those of
	// any child already installed for the same prefixes, and move in front
	// when the first packet authenticates on In or the older child is
	// removed. A rekey responder needs this: the initiator installs the
	// new inbound SA only when our response reaches it, so ESP sent on the
	// new SA before then would be dropped.
	OutboundPending bool
	// OutboundSeq is the first sequence number Out uses and InboundSeq the
	// highest one In has already seen (it refuses that and everything
	// below); zero: a fresh SA. An HA standby sets them from the replicated
	// counters (seq.go).
	OutboundSeq, InboundSeq uint64
	// RekeyPackets is the packet-count soft lifetime (soft.go): once Out
	// has used this many sequence numbers, the dataplane calls
	// OnRekeyPackets, once, from its own goroutine (it must not block
	// long); 0 or no callback: none.
	RekeyPackets   uint64
	OnRekeyPackets func()
	// OnFirstOut, if set, is called once, from the TUN loop, with the time
	// the first packet on Out was sealed (just before it is sent): where a
	// connect's first tunnel packet leaves, for the debug log. It must not
	// block.
	OnFirstOut func(time.Time)
}

// ChildStats are one Child SA's counters.
type ChildStats struct {
	SPIIn, SPIOut                            uint32
	BytesIn, BytesOut, PacketsIn, PacketsOut uint64
	Proposal                                 string
	// Remote and Local are the child's selectors (ChildConfig's).
	Remote, Local []netip.Prefix
}

// DropStats count packets dropped, by reason.
type DropStats struct {
	Malformed, UnknownSPI, Replayed, BadICV, NoRoute, NoPath, SendErrors uint64
	// SocketOverflow: datagrams the kernel dropped because a socket's
	// receive buffer was full (SO_RXQ_OVFL), before we could read them.
	SocketOverflow uint64
	// TUNWrite: failed writes to the TUN device (each may have carried
	// several coalesced packets).
	TUNWrite uint64
	// SeqExhausted: outbound packets refused because the SA ran out of
	// sequence numbers and must be rekeyed.
	SeqExhausted uint64
	// Truncated: datagrams larger than the receive buffer.
	Truncated uint64
	// TooBig: outbound packets larger than their path's MTU that must not
	// be fragmented (mtu.go).
	TooBig uint64
	// OutsideSelectors: authenticated inbound packets whose inner source
	// is outside the peer's traffic selectors or whose destination is
	// outside ours (RFC 4301 5.2).
	OutsideSelectors uint64
	// StreamFull: outbound records a TCP stream refused: it is down, or
	// its queue stayed full for the stream's bound on waiting (a stalled
	// connection; tcpencap.QueueWait).
	StreamFull uint64
	// TooOld: ESP left of the replay window (ErrTooOld), arrived more than
	// ReplayWindow packets behind the newest of its SA. Replayed counts
	// the ones seen already.
	TooOld uint64
	// Stale: ESP dropped unopened because it waited in a socket's receive
	// queue longer than staleAfter (the kernel's receive timestamp).
	Stale uint64
}

type drops struct {
	malformed, unknownSPI, replayed, badICV, noRoute, noPath, sendErrors atomic.Uint64
	socketOverflow, tunWrite, seqExhausted, truncated, tooBig            atomic.Uint64
	outsideSelectors, streamFull, tooOld, stale                          atomic.Uint64
}

// Dataplane moves packets between the TUN device and the UDP sockets for
// every installed Child SA.
type Dataplane struct {
	dev       wgtun.Device
	handleIKE IKEHandler
	log       *slog.Logger

	mu sync.Mutex // serialises writers of bySPI, routes, sockets and peers
	// bySPI and routes are read by the packet path without a lock
	// (lfmap.go, routes.go).
	bySPI   *lfMap[uint32, *child]
	routes  *routeTable
	sockets atomic.Pointer[[]Conn]
	streams atomic.Pointer[streamTable]
	peers   map[*Peer]struct{}

	drops drops

	runCtx  context.Context
	started chan struct{}
	wg      sync.WaitGroup

	early earlyHold // ESP that came before its SA (early.go)
	// staleAfter is the bound on ESP's wait in a socket (the constant
	// staleAfter; 0: none). Tests of other things over real sockets turn
	// it off, so a starved test process does not lose their packets.
	staleAfter int64

	crypto  chan *cryptoPart // to idle crypto workers (crypto.go)
	workers int

	// Path MTU (mtu.go). linkMTU replaces the kernel's route lookup in
	// tests; fit belongs to the TUN reader (routeBatch).
	linkMTU                func(Path, *Socket) (int, error)
	fit                    *pathFit
	icmpLimit              rateLimit
	icmpTooBig, mssClamped atomic.Uint64
	peerCount              atomic.Int64
	softBell               chan struct{}  // rung when an SA crosses its soft limit (soft.go)
	probes                 chan *gsoProbe // new paths' GSO probes to check (gsoprobe.go)
}

// NewDataplane makes a dataplane over dev. handleIKE gets IKE messages.
func NewDataplane(dev wgtun.Device, handleIKE IKEHandler, log *slog.Logger) *Dataplane {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dataplane{
		dev: dev, handleIKE: handleIKE, log: log, peers: map[*Peer]struct{}{}, started: make(chan struct{}),
		bySPI: newLFMap[uint32, *child](hashSPI), routes: newRouteTable(), softBell: make(chan struct{}, 1),
		probes: make(chan *gsoProbe, probeQueue), staleAfter: staleAfter,
	}
	d.crypto, d.workers = make(chan *cryptoPart), cryptoWorkers()
	d.sockets.Store(&[]Conn{})
	d.streams.Store(&streamTable{})
	d.fit = d.newPathFit()
	return d
}

// AddSocket adds a kernel UDP socket (AddConn).
func (d *Dataplane) AddSocket(s *Socket) { d.AddConn(s) }

// AddConn adds a network endpoint; its receive loop starts with Run (or at
// once if Run is already going). The dataplane closes it when Run ends.
func (d *Dataplane) AddConn(s Conn) {
	d.mu.Lock()
	socks := append(append([]Conn{}, *d.sockets.Load()...), s)
	d.sockets.Store(&socks)
	ctx := d.runCtx
	d.mu.Unlock()
	if ctx != nil {
		d.startReceive(ctx, s)
	}
}

// Run moves packets until ctx is cancelled, then closes the sockets and
// waits for its goroutines. The TUN device belongs to the caller, who must
// close it after cancelling ctx: that is what ends the blocked TUN read, and
// Run returns only after it.
func (d *Dataplane) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mu.Lock()
	d.runCtx = ctx
	socks := *d.sockets.Load()
	d.mu.Unlock()
	for _, s := range socks {
		d.startReceive(ctx, s)
	}
	d.wg.Add(4 + d.workers)
	for range d.workers {
		go func() { defer d.wg.Done(); d.cryptoWorker(ctx) }()
	}
	go func() { defer d.wg.Done(); d.keepaliveLoop(ctx) }()
	go func() { defer d.wg.Done(); d.softLoop(ctx) }()
	go func() { defer d.wg.Done(); d.probeLoop(ctx) }()
	tunErr := make(chan error, 1)
	go func() { defer d.wg.Done(); tunErr <- d.tunLoop(ctx) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-tunErr:
		cancel()
	}
	for _, s := range *d.sockets.Load() {
		s.Close()
	}
	d.wg.Wait()
	return err
}

func (d *Dataplane) startReceive(ctx context.Context, s Conn) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.receiveLoop(ctx, s)
	}()
}

// NewPeer registers a peer reached over path.
func (d *Dataplane) NewPeer(path Path) *Peer {
	p := &Peer{mtuPhase: d.peerCount.Add(1) % mtuRefreshSeconds, children: map[*child]struct{}{}}
	p.path.Store(d.resolvePathMTU(p, path))
	d.mu.Lock()
	d.peers[p] = struct{}{}
	d.mu.Unlock()
	return p
}

// SetPath moves the peer's traffic to path.
// The path's MTU is derived again: a move may change the uplink or the
// outer address family.
func (d *Dataplane) SetPath(p *Peer, path Path) { p.path.Store(d.resolvePathMTU(p, path)) }

// Follower returns what moves the peer's traffic as its connection's
// netpath.Current changes: to the path sent on (State.Sending), unless the
// change kept it (State.Kept).
func (d *Dataplane) Follower(p *Peer) netpath.Follower { return peerFollower{d: d, p: p} }

type peerFollower struct {
	d *Dataplane
	p *Peer
}

func (f peerFollower) FollowPath(s netpath.State) {
	if !s.Kept {
		f.d.SetPath(f.p, s.Sending)
	}
}

// Suspend stops the peer's outbound traffic until the next SetPath: while
// no path works, packets are dropped before sealing (DropStats.NoPath) and
// NAT keepalives pause, instead of burning sequence numbers on sends that
// fail or go nowhere. Peer.Path still reports the last path.
func (d *Dataplane) Suspend(p *Peer) {
	p.path.Store(&peerPath{Path: p.Path()})
}

// RemovePeer forgets the peer and its children.
func (d *Dataplane) RemovePeer(p *Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.peers, p)
	for c := range p.children {
		d.removeLocked(c)
	}
}

// child returns the child whose inbound SPI is spi, nil if none.
func (d *Dataplane) child(spi uint32) *child {
	c, _ := d.bySPI.get(spi)
	return c
}

func (d *Dataplane) resolvePath(path Path) *peerPath {
	path.Remote = netip.AddrPortFrom(path.Remote.Addr().Unmap(), path.Remote.Port())
	pp := &peerPath{Path: path}
	if path.Stream {
		pp.stream = d.streamFor(path.Remote)
		return pp
	}
	pp.conn = d.socketFor(path)
	if s, ok := pp.conn.(*Socket); ok {
		pp.sock = s
		pp.oob = s.oob(path.Local.Addr(), path.IfIndex)
	}
	return pp
}

// socketFor picks the socket of the path's family and local port (a
// gateway has one per address and port); any of the family otherwise.
func (d *Dataplane) socketFor(path Path) Conn {
	v6 := path.Remote.Addr().Is6()
	var fallback Conn
	for _, s := range *d.sockets.Load() {
		local := s.LocalAddr()
		if local.Addr().Is6() != v6 {
			continue
		}
		la := local.Addr()
		portOK := path.Local.Port() == 0 || local.Port() == path.Local.Port()
		addrOK := la.IsUnspecified() || !path.Local.Addr().IsValid() || path.Local.Addr().IsUnspecified() || la == path.Local.Addr()
		if portOK && addrOK {
			return s
		}
		if fallback == nil {
			fallback = s
		}
	}
	return fallback
}

// InstallChild adds a Child SA pair for peer.
func (d *Dataplane) InstallChild(p *Peer, cfg ChildConfig) error {
	if cfg.In == nil || cfg.Out == nil {
		return errors.New("esp: child needs both SAs")
	}
	applySeq(cfg)
	c := &child{peer: p, in: cfg.In, out: cfg.Out, remote: cfg.Remote, local: cfg.Local, proposal: cfg.Proposal, onFirstOut: cfg.OnFirstOut}
	for _, pfx := range cfg.Remote {
		c.routes = append(c.routes, pfx.Masked())
	}
	d.armSoft(c, cfg)
	defer d.deliverEarly(c) // after the unlock below
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.child(cfg.In.SPI()) != nil {
		return errors.New("esp: inbound SPI already installed")
	}
	d.bySPI.set(cfg.In.SPI(), c)
	p.children[c] = struct{}{}
	// New routes go first so that a rekeyed child replaces the old one for
	// outbound traffic at once; the old stays for inbound stragglers. A
	// pending child goes last until promote.
	c.pending.Store(cfg.OutboundPending)
	d.routes.add(c, cfg.OutboundPending)
	return nil
}

// promote puts a pending child's routes in front of the others: the peer
// has used its SA pair, so our outbound traffic can move to it.
func (d *Dataplane) promote(c *child) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !c.pending.CompareAndSwap(true, false) {
		return
	}
	d.routes.promote(c)
}

// RetireGrace is how long a deleted Child SA still opens inbound packets:
// a peer's ESP pipeline may have packets for the old SA queued behind the
// DELETE exchange (kernel-libipsec does), and they would otherwise be lost.
const RetireGrace = 2 * time.Second

// RetireChild stops sending on the child whose inbound SPI is spiIn at
// once and removes it after grace, so packets the peer sent before it
// stopped using the SA still arrive.
func (d *Dataplane) RetireChild(spiIn uint32, grace time.Duration) {
	d.mu.Lock()
	if c := d.child(spiIn); c != nil {
		d.routes.drop(c)
	}
	d.mu.Unlock()
	time.AfterFunc(grace, func() { d.RemoveChild(spiIn) })
}

// RemoveChild removes the child whose inbound SPI is spiIn.
func (d *Dataplane) RemoveChild(spiIn uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.child(spiIn); c != nil {
		d.removeLocked(c)
	}
}

// removeLocked forgets c; d.mu is held.
func (d *Dataplane) removeLocked(c *child) {
	d.routes.drop(c)
	d.bySPI.delete(c.in.SPI())
	delete(c.peer.children, c)
}

// ChildStats returns the counters of peer's children (all when peer is nil).
func (d *Dataplane) ChildStats(p *Peer) []ChildStats {
	var cs []*child
	if p != nil {
		d.mu.Lock()
		for c := range p.children {
			cs = append(cs, c)
		}
		d.mu.Unlock()
	} else {
		for _, c := range d.bySPI.all() {
			cs = append(cs, c)
		}
	}
	var out []ChildStats
	for _, c := range cs {
		out = append(out, ChildStats{
			SPIIn: c.in.SPI(), SPIOut: c.out.SPI(),
			BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
			PacketsIn: c.packetsIn.Load(), PacketsOut: c.packetsOut.Load(),
			Proposal: c.proposal, Remote: slices.Clone(c.remote), Local: slices.Clone(c.local),
		})
	}
	return out
}

// Drops returns the drop counters.
func (d *Dataplane) Drops() DropStats {
	return DropStats{
		Malformed: d.drops.malformed.Load(), UnknownSPI: d.drops.unknownSPI.Load(),
		Replayed: d.drops.replayed.Load(), BadICV: d.drops.badICV.Load(),
		NoRoute: d.drops.noRoute.Load(), NoPath: d.drops.noPath.Load(), SendErrors: d.drops.sendErrors.Load(),
		SocketOverflow: d.drops.socketOverflow.Load(), TUNWrite: d.drops.tunWrite.Load(),
		SeqExhausted: d.drops.seqExhausted.Load(), Truncated: d.drops.truncated.Load(),
		TooBig: d.drops.tooBig.Load(), OutsideSelectors: d.drops.outsideSelectors.Load(),
		StreamFull: d.drops.streamFull.Load(), TooOld: d.drops.tooOld.Load(), Stale: d.drops.stale.Load(),
	}
}

// SendIKE sends an IKE message, adding the non-ESP marker unless either
// port is 500 (RFC 7296 2.23).
func (d *Dataplane) SendIKE(pkt []byte, path Path) error {
	pp := d.resolvePath(path)
	if pp.stream != nil {
		rec := make([]byte, 4+len(pkt))
		copy(rec[4:], pkt)
		if !pp.stream.QueueRecord(rec) {
			return errStreamFull
		}
		pp.stream.FlushRecords()
		return nil
	}
	if pp.conn == nil {
		return errors.New("esp: no socket for this path")
	}
	buf := pkt
	if path.Remote.Port() != ikePort && pp.conn.LocalAddr().Port() != ikePort {
		buf = make([]byte, 4+len(pkt))
		copy(buf[4:], pkt)
	}
	return pp.writeOne(buf)
}

// writeOne sends one datagram on the path: a kernel socket with the
// control message cached for the path.
func (pp *peerPath) writeOne(b []byte) error {
	if pp.sock != nil {
		return pp.sock.writeOne(b, pp)
	}
	return pp.conn.WriteTo(b, pp.Path)
}

// SendKeepalive sends one NAT keepalive (0xFF) to the peer's path now.
func (d *Dataplane) SendKeepalive(p *Peer) error {
	pp := p.path.Load()
	if pp.stream != nil {
		// A stream needs no NAT keepalive (RFC 9329 6.4 leaves it to TCP's
		// own keepalives, which the stream's socket sends).
		return nil
	}
	if pp.conn == nil {
		return errors.New("esp: no socket for this path")
	}
	err := pp.writeOne([]byte{0xff}) // RFC 3948 2.3
	if err == nil {
		p.lastSent.Store(time.Now().UnixNano())
	}
	return err
}

func (d *Dataplane) keepaliveLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.mu.Lock()
			peers := make([]*Peer, 0, len(d.peers))
			for p := range d.peers {
				peers = append(peers, p)
			}
			d.mu.Unlock()
			for _, p := range peers {
				iv := p.keepalive.Load()
				if iv > 0 && now.UnixNano()-p.lastSent.Load() >= iv {
					d.SendKeepalive(p)
				}
				d.maybeRefreshMTU(p, now)
			}
		}
	}
}

func innerDst(pkt []byte) (netip.Addr, bool) {
	if len(pkt) < 1 {
		return netip.Addr{}, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < 40 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return netip.Addr{}, false
}

func innerSrc(pkt []byte) (netip.Addr, bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(pkt[12:16])), true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(pkt[8:24])), true
	}
	return netip.Addr{}, false
}

// sealRoom is the tail room a TUN read buffer keeps beyond the largest
// packet, for the ESP trailer (padding, pad length, next header) and ICV
// written behind the inner packet when it is sealed in place.
const sealRoom = 3 + 2 + icvLen

// txJob is one outbound packet between the stages of a TUN batch: routed,
// its sequence number reserved, not yet sealed.
type txJob struct {
	c   *child
	pp  *peerPath
	buf []byte // the TUN buffer holding it, headroom included
	n   int    // its length behind the headroom
	seq uint64
}

// batchCount adds up one child's packets and bytes over a run of a batch,
// so the shared counters are written once per run instead of per packet.
type batchCount struct {
	c              *child
	packets, bytes uint64
}

func (b *batchCount) addOut(c *child, n int, now int64) {
	if c != b.c {
		b.flushOut(now)
		b.c = c
	}
	b.packets++
	b.bytes += uint64(n)
}

func (b *batchCount) flushOut(now int64) {
	if b.c != nil && b.packets > 0 {
		// Only the TUN loop adds here: the count equals this batch's
		// once, at the first.
		if b.c.packetsOut.Add(b.packets) == b.packets && b.c.onFirstOut != nil {
			b.c.onFirstOut(time.Unix(0, now))
		}
		b.c.bytesOut.Add(b.bytes)
		b.c.peer.lastSent.Store(now)
		b.c.peer.lastESP.Store(now)
	}
	*b = batchCount{}
}

func (b *batchCount) addIn(c *child, n int, now int64) {
	if c != b.c {
		b.flushIn(now)
		b.c = c
	}
	b.packets++
	b.bytes += uint64(n)
}

func (b *batchCount) flushIn(now int64) {
	if b.c != nil && b.packets > 0 {
		b.c.packetsIn.Add(b.packets)
		b.c.bytesIn.Add(b.bytes)
		b.c.peer.lastRecv.Store(now)
	}
	*b = batchCount{}
}

// tunDepth is how many TUN read batches can wait for the send stage. A TUN
// read returns one packet unless the kernel handed over a GSO super-packet,
// so small packets come one per read: queueing reads lets the send stage
// seal and send what several reads brought with one sendmmsg. 16 took fewer
// system calls per packet than 4, but in the same quiet-machine bench it
// moved less: single-stream TCP upload 1552 against 1841 Mbit/s, 64-byte
// UDP upload 15.6k against 28.0k datagrams/s. Deeper queues make longer
// bursts, which the receiver's socket and TCP's pacing pay for.
const tunDepth = 4

// tunBatch is one TUN read's buffers and what it brought.
type tunBatch struct {
	bufs  [][]byte
	sizes []int
	count int
}

// tunLoop reads batches from the TUN device and hands them to sendLoop,
// which moves what is queued through three stages: classify and route
// every packet and reserve its sequence number; seal in place; send per
// socket. The crypto stage touches only its own packets' buffers, so it
// can be split across cores with the order kept by the sequence numbers
// already assigned.
func (d *Dataplane) tunLoop(ctx context.Context) error {
	n := max(d.dev.BatchSize(), 1)
	var batches [tunDepth]tunBatch
	full := make(chan int, tunDepth)
	free := make(chan int, tunDepth)
	for i := range batches {
		b := &batches[i]
		b.bufs, b.sizes = make([][]byte, n), make([]int, n)
		for k := range b.bufs {
			b.bufs[k] = make([]byte, tunOffset+maxPacket, tunOffset+maxPacket+sealRoom)
		}
		free <- i
	}
	sent := make(chan struct{})
	go func() { defer close(sent); d.sendLoop(&batches, n, full, free) }()
	defer func() { close(full); <-sent }()
	for {
		var i int
		select {
		case i = <-free:
		case <-ctx.Done():
			return nil
		}
		b := &batches[i]
		count, err := d.dev.Read(b.bufs, b.sizes, tunOffset)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			if !errors.Is(err, wgtun.ErrTooManySegments) {
				d.log.Debug("TUN read", "err", err)
				if count == 0 {
					// A read error with nothing read: the device is gone.
					return err
				}
			}
		}
		b.count = count
		full <- i
	}
}

// sendLoop takes the queued TUN batches, oldest first, and routes, seals
// and sends all of them together, then gives their buffers back.
func (d *Dataplane) sendLoop(batches *[tunDepth]tunBatch, n int, full <-chan int, free chan<- int) {
	jobs := make([]txJob, 0, tunDepth*n)
	sealed := make([][]byte, tunDepth*n)
	pkts := make([]outPacket, 0, tunDepth*n)
	group := make([]outPacket, 0, tunDepth*n)
	sb := newSendBatch(tunDepth * n)
	parts := newCryptoParts()
	var taken [tunDepth]int
	for i := range full {
		k := 1
		taken[0] = i
	gather:
		for k < tunDepth {
			select {
			case j, ok := <-full:
				if !ok {
					break gather
				}
				taken[k] = j
				k++
			default:
				break gather
			}
		}
		jobs = jobs[:0]
		for _, j := range taken[:k] {
			b := &batches[j]
			jobs = d.routeBatch(b.bufs[:b.count], b.sizes, jobs)
		}
		pkts = d.sealBatch(parts, jobs, sealed, pkts[:0], time.Now().UnixNano())
		d.sendBatch(sb, pkts, group)
		for _, j := range taken[:k] {
			free <- j
		}
	}
}

// routeBatch is the first outbound stage: it finds each packet's child and
// path and reserves its sequence number.
func (d *Dataplane) routeBatch(bufs [][]byte, sizes []int, jobs []txJob) []txJob {
	for i := range bufs {
		pkt := bufs[i][tunOffset : tunOffset+sizes[i]]
		dst, ok := innerDst(pkt)
		if !ok {
			d.drops.malformed.Add(1)
			continue
		}
		c := d.routes.lookup(dst, pkt)
		if c == nil {
			d.drops.noRoute.Add(1)
			continue
		}
		pp := c.peer.path.Load()
		if pp != nil && pp.credit != nil {
			pp = pp.spend(sizes[i])
		}
		if pp == nil || (pp.conn == nil && pp.stream == nil) {
			d.drops.noPath.Add(1)
			continue
		}
		if !d.fit.fits(pkt, pp.mtu) {
			continue
		}
		c.peer.echo.sent(pkt, pp.Path)
		seq, err := c.out.nextSeq()
		if err != nil {
			d.drops.seqExhausted.Add(1)
			continue
		}
		jobs = append(jobs, txJob{c: c, pp: pp, buf: bufs[i], n: sizes[i], seq: seq})
	}
	return jobs
}

// sealBatch is the crypto stage: each packet is sealed where the TUN read
// put it, parts of a big batch on other cores; the packets come out in job
// (sequence number) order.
func (d *Dataplane) sealBatch(parts *cryptoParts, jobs []txJob, sealed [][]byte, pkts []outPacket, now int64) []outPacket {
	d.sealParallel(parts, jobs, sealed[:len(jobs)])
	var count batchCount
	for i, j := range jobs {
		if sealed[i] == nil {
			d.drops.malformed.Add(1)
			continue
		}
		count.addOut(j.c, j.n, now)
		pkts = append(pkts, outPacket{buf: sealed[i], pp: j.pp})
	}
	count.flushOut(now)
	return pkts
}

// sendBatch is the last outbound stage: the packets go out per socket, in
// order, with one sendmmsg for as many as the kernel takes.
func (d *Dataplane) sendBatch(sb *sendBatch, pkts, group []outPacket) {
	for len(pkts) > 0 {
		c, st := pkts[0].pp.conn, pkts[0].pp.stream
		group, rest := group[:0], pkts[:0]
		for _, p := range pkts {
			if p.pp.conn == c && p.pp.stream == st {
				group = append(group, p)
			} else {
				rest = append(rest, p) // compacts in place, order kept
			}
		}
		pkts = rest
		if st != nil {
			if failed := sendStream(st, group); failed > 0 {
				d.drops.streamFull.Add(uint64(failed))
			}
			continue
		}
		var failed int
		if s := group[0].pp.sock; s != nil {
			failed = s.writeBatch(sb, group)
		} else {
			failed = sb.writeConn(c, group)
		}
		if failed > 0 {
			d.drops.sendErrors.Add(uint64(failed))
		}
	}
}

// rxJob is one received ESP packet between the stages of a receive batch:
// classified, then opened into its TUN buffer (dst), then delivered.
type rxJob struct {
	c     *child
	pkt   []byte
	path  Path
	dst   []byte // the TUN buffer's headroom, to open behind
	inner []byte
	err   error
}

// rxState is one receive loop's reused state: its TUN buffers, the ESP
// packets waiting to be opened into them, the packets waiting for the TUN
// write, and the counters added up over the batch.
type rxState struct {
	d         *Dataplane
	local     netip.AddrPort // the Conn's bound address
	now       int64
	tunBufs   [][]byte
	jobs      []rxJob
	out       [][]byte
	count     batchCount
	parts     *cryptoParts
	lastDrops uint32 // the socket's SO_RXQ_OVFL count already added
	stale     uint64 // ESP of this batch dropped for its age, not yet added
}

// staleAfter bounds how long ESP may wait in a socket's receive queue.
// IKE and ESP share port 4500, so under a flood the reader cannot keep
// up with, an IKE request queues behind everything ahead of it: seconds
// of ESP with the 16 MiB buffer. A client's path test sends its
// UPDATE_SA_ADDRESSES on the current path first and on the others
// ike.MoveRetransmit's 200 ms later; when the current path's answer waits
// longer than that here, another of our addresses answers first from an
// idle socket and the client moves off a healthy path. Dropping ESP
// older than staleAfter before opening it (which is most of a packet's
// cost) lets the reader catch up, so IKE waits at most about staleAfter:
// half that retransmission interval, the other half the margin for the
// round trip's jitter and a loaded machine. A healthy reader keeps the
// queue under a millisecond; 100 ms of queue is far past any bandwidth-
// delay product the tunnel needs, so no flow loses throughput by it, only
// delay. IKE is never dropped for its age.
const staleAfter = int64(100 * time.Millisecond)

// stampTrusted bounds the age a receive timestamp may show and still be
// believed: a step of the wall clock, or a timestamp from another clock,
// must not turn every datagram stale.
const stampTrusted = int64(time.Minute)

const (
	// recvMessages is how many datagrams one recvmmsg reads.
	recvMessages = 64
	// firstReadBatch is how many a receive loop's first reads ask for; a
	// read that fills its batch doubles it, up to recvMessages. A socket
	// keeps a 64 KiB buffer per message of its batch (GRO datagrams), so
	// the full batch is 4 MiB, and made at once it would be made between
	// the gateway's IKE_SA_INIT answer, which may already be waiting in a
	// connection's socket, and its first read: on a daemon just started,
	// with one P and a small heap, that allocation starts a GC cycle whose
	// assists and stops delayed IKE_AUTH by several milliseconds. A
	// client's sockets that carry only IKE never need more; under load
	// the batch is full after a handful of reads.
	firstReadBatch = 4
	// rxPackets is how many opened packets a receive loop writes to the
	// TUN device at once, whose GRO coalesces the segments of a flow among
	// them into one write. A GRO datagram from a peer's GSO send holds up
	// to 45 full-sized packets: with room for 64 the write of two such
	// datagrams was split in three; 128 (wireguard-go's batch) holds two
	// and a half.
	rxPackets = 128
)

// receiveLoop reads batches from one socket, splits GRO-coalesced
// datagrams into their packets, demultiplexes IKE, keepalives and ESP, and
// writes decrypted packets to the TUN device in batches.
func (d *Dataplane) receiveLoop(ctx context.Context, s Conn) {
	msgs := make([]Message, recvMessages)
	rx := newRxState(d, s.LocalAddr(), rxPackets)
	batch := firstReadBatch
	for {
		count, err := s.ReadBatch(msgs[:batch])
		if err != nil {
			if ctx.Err() != nil || errClosedSocket(err) {
				return
			}
			d.log.Debug("UDP read", "err", err)
			continue
		}
		rx.now = time.Now().UnixNano()
		for i := range msgs[:count] {
			rx.datagram(&msgs[i])
		}
		rx.flush()
		if count == batch && batch < len(msgs) {
			batch = min(2*batch, len(msgs)) // the queue outgrew the batch
		}
	}
}

// datagram handles one received datagram: one packet, or several of one
// size (the last may be shorter) when GRO coalesced them.
func (rx *rxState) datagram(m *Message) {
	data, from := m.Buf, m.From
	if m.OverflowKnown && m.Overflow != rx.lastDrops {
		rx.d.drops.socketOverflow.Add(uint64(m.Overflow - rx.lastDrops))
		rx.lastDrops = m.Overflow
	}
	if m.Truncated {
		rx.d.drops.truncated.Add(1)
		return
	}
	if !from.IsValid() {
		return
	}
	dst := m.Local
	if !dst.IsValid() {
		dst = rx.local.Addr()
	}
	path := Path{Local: netip.AddrPortFrom(dst, rx.local.Port()), Remote: from, IfIndex: m.IfIndex}
	age := rx.now - m.Received
	stale := m.Received != 0 && rx.d.staleAfter > 0 && age > rx.d.staleAfter && age < stampTrusted
	seg := m.Segment
	if seg <= 0 || seg > len(data) {
		seg = len(data)
	}
	for {
		l := min(seg, len(data))
		rx.packet(data[:l], path, stale)
		data = data[l:]
		if len(data) == 0 {
			return
		}
	}
}

// packet classifies one received packet: IKE and keepalives are handled
// at once, ESP of a known SA queued to be opened unless it is stale (it
// waited in the socket longer than staleAfter).
func (rx *rxState) packet(pkt []byte, path Path, stale bool) {
	d := rx.d
	if !path.Stream && (path.Remote.Port() == ikePort || rx.local.Port() == ikePort) {
		d.handleIKE(pkt, path)
		return
	}
	if len(pkt) == 1 && pkt[0] == 0xff {
		return // NAT keepalive
	}
	if len(pkt) >= 4 && binary.BigEndian.Uint32(pkt) == 0 {
		d.handleIKE(pkt[4:], path)
		return
	}
	if stale {
		rx.stale++
		return
	}
	if len(pkt) < headerLen {
		d.drops.malformed.Add(1)
		return
	}
	c := d.child(binary.BigEndian.Uint32(pkt))
	if c == nil {
		d.drops.unknownSPI.Add(1)
		d.early.add(binary.BigEndian.Uint32(pkt), pkt, time.Unix(0, rx.now))
		return
	}
	if len(rx.jobs) == len(rx.tunBufs) {
		rx.flush() // a batch of GRO datagrams can hold more packets than buffers
	}
	rx.jobs = append(rx.jobs, rxJob{c: c, pkt: pkt, path: path, dst: rx.tunBuf(len(rx.jobs))[:tunOffset]})
}

// newRxState makes a receive loop's state for batches of up to n packets.
func newRxState(d *Dataplane, local netip.AddrPort, n int) *rxState {
	return &rxState{d: d, local: local, tunBufs: make([][]byte, n), jobs: make([]rxJob, 0, n), out: make([][]byte, 0, n), parts: newCryptoParts()}
}

// tunBuf returns the TUN buffer of the batch's i-th packet, made at its
// first use. Each is its own allocation: the TUN write's GRO appends
// coalesced packets to the first buffer of a flow, within its capacity.
// Made up front, a loop's buffers are 8 MiB, and a connection's first
// receive loop would make them between the gateway's IKE_SA_INIT answer
// waiting in its socket and its first read; most loops never fill more
// than a few of them.
func (rx *rxState) tunBuf(i int) []byte {
	if rx.tunBufs[i] == nil {
		rx.tunBufs[i] = make([]byte, tunOffset+maxPacket)
	}
	return rx.tunBufs[i]
}

// deliver is the stage after decryption, in arrival order: it checks an
// opened packet and queues it for the TUN write.
func (rx *rxState) deliver(j *rxJob) {
	d, c, inner, path := rx.d, j.c, j.inner, j.path
	if j.err != nil {
		d.countOpenError(j.err)
		return
	}
	if c.pending.Load() {
		d.promote(c)
	}
	if len(inner) == tunOffset {
		return // dummy packet
	}
	if !d.admit(c, inner[tunOffset:]) {
		return
	}
	rx.count.addIn(c, len(inner)-tunOffset, rx.now)
	d.clampInbound(inner[tunOffset:], c.peer)
	pp := c.peer.path.Load()
	c.peer.echo.answered(inner[tunOffset:], pp.Path, rx.now)
	if pp.credit != nil {
		pp.earn(path, len(j.pkt))
	}
	if cur := pp.Remote; path.Remote != cur && path.Remote.Addr() == cur.Addr() && c.peer.stray.Load() == nil {
		stray := path
		c.peer.stray.Store(&stray)
	}
	rx.out = append(rx.out, inner)
}

// flush writes the opened packets to the TUN device and the batch's
// counters to their children. A TUN write blocks while the device queue is
// full rather than dropping; what fails is counted.
func (rx *rxState) flush() {
	if len(rx.jobs) > 0 {
		rx.d.openParallel(rx.parts, rx.jobs)
		for i := range rx.jobs {
			rx.deliver(&rx.jobs[i])
			rx.jobs[i] = rxJob{} // keep no packet or child alive
		}
		rx.jobs = rx.jobs[:0]
	}
	rx.count.flushIn(rx.now)
	if rx.stale > 0 {
		rx.d.drops.stale.Add(rx.stale)
		rx.stale = 0
	}
	if len(rx.out) > 0 && rx.d.dev != nil {
		if _, err := rx.d.dev.Write(rx.out, tunOffset); err != nil {
			rx.d.drops.tunWrite.Add(uint64(countErrors(err)))
			rx.d.log.Debug("TUN write", "err", err)
		}
	}
	rx.out = rx.out[:0]
}

// countErrors is how many errors err joins (wgtun joins one per failed
// write).
func countErrors(err error) int {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return max(len(j.Unwrap()), 1)
	}
	return 1
}

func (d *Dataplane) countOpenError(err error) {
	switch {
	case errors.Is(err, ErrTooOld):
		d.drops.tooOld.Add(1)
	case errors.Is(err, ErrReplayed):
		d.drops.replayed.Add(1)
	case errors.Is(err, ErrBadICV):
		d.drops.badICV.Add(1)
	case errors.Is(err, ErrUnknownSPI):
		d.drops.unknownSPI.Add(1)
	default:
		d.drops.malformed.Add(1)
	}
}
