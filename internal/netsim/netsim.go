// Package netsim is an in-memory UDP network for engine tests: hosts with
// addresses, per-direction link impairments (loss, delay, jitter that
// reorders, duplication) and NAT boxes with cone mappings and restricted
// filtering. Decisions come from a seeded RNG so a test run is repeatable for
// a given order of sends; delivery runs on one goroutine in time order.
//
// Hosts speak the same datagram framing as the real socket (esp.Socket):
// IKE on a port other than 500 carries the 4-byte non-ESP marker, a single
// 0xFF byte is a NAT keepalive, anything else is ESP. A bound address and
// port (Host.Bind) takes its datagrams ahead of that demux, as a socket
// would: internal/memconn puts the dataplane there.
package netsim

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"sync"
	"time"
)

// Datagram is one UDP packet as seen on the wire.
type Datagram struct {
	Src, Dst netip.AddrPort
	Payload  []byte
}

// Impairment describes what a direction of a link does to packets.
type Impairment struct {
	// Loss is the probability that a packet is dropped.
	Loss float64
	// Drop, when set, decides deterministically: it sees the index of the
	// packet on this link (0-based) and the packet, and returns true to drop.
	Drop func(i int, d Datagram) bool
	// Delay is added to every packet; Jitter adds a uniform random extra
	// delay in [0, Jitter), which reorders packets closer than Jitter.
	Delay, Jitter time.Duration
	// Duplicate is the probability that a packet is delivered twice.
	Duplicate float64
}

// Stats counts what the network did.
type Stats struct {
	Sent, Delivered, Lost, Duplicated, NoRoute, NATFiltered uint64
}

type linkKey struct{ from, to netip.Addr }

type link struct {
	imp   Impairment
	count int
	deflt bool // created from the default impairment
}

// Network is the simulated network. Create with New, stop with Close.
type Network struct {
	mu       sync.Mutex
	rng      *rand.Rand
	hosts    map[netip.Addr]*Host
	nats     map[netip.Addr]*NAT
	links    map[linkKey]*link
	defImp   Impairment
	queue    pktQueue
	seq      uint64
	stats    Stats
	wake     chan struct{}
	done     chan struct{}
	finished chan struct{}
	closed   bool
}

// New starts a network whose random decisions derive from seed.
func New(seed int64) *Network {
	n := &Network{
		rng:      rand.New(rand.NewSource(seed)),
		hosts:    make(map[netip.Addr]*Host),
		nats:     make(map[netip.Addr]*NAT),
		links:    make(map[linkKey]*link),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	go n.run()
	return n
}

// Close stops delivery; packets in flight are discarded. Idempotent.
func (n *Network) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.finished
		return
	}
	n.closed = true
	n.mu.Unlock()
	close(n.done)
	<-n.finished
}

// Stats returns a snapshot of the counters.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// SetDefault sets the impairment of every direction without its own.
func (n *Network) SetDefault(imp Impairment) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.defImp = imp
	for k, l := range n.links {
		if l.deflt {
			delete(n.links, k)
		}
	}
}

// SetLink sets the impairment for packets sent from address from to address
// to (addresses as the sender sees them, before NAT).
func (n *Network) SetLink(from, to netip.Addr, imp Impairment) {
	n.mu.Lock()
	n.links[linkKey{from, to}] = &link{imp: imp}
	n.mu.Unlock()
}

// AddHost creates a host owning addrs.
func (n *Network) AddHost(name string, addrs ...netip.Addr) *Host {
	h := &Host{net: n, name: name}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range addrs {
		h.addrs = append(h.addrs, a)
		n.hosts[a] = h
	}
	return h
}

// AddNAT creates a NAT box with the given public address and filtering.
func (n *Network) AddNAT(public netip.Addr, filter Filtering) *NAT {
	nat := &NAT{net: n, public: public, filter: filter, nextPort: 40000,
		byInside: make(map[netip.AddrPort]*mapping), byPort: make(map[uint16]*mapping)}
	n.mu.Lock()
	n.nats[public] = nat
	n.mu.Unlock()
	return nat
}

// send is called by hosts; src is the sender's own address.
func (n *Network) send(from *Host, d Datagram) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("netsim: network closed")
	}
	n.stats.Sent++
	k := linkKey{d.Src.Addr(), d.Dst.Addr()}
	l := n.links[k]
	if l == nil {
		// Each direction counts its own packets for Impairment.Drop.
		l = &link{imp: n.defImp, deflt: true}
		n.links[k] = l
	}
	i := l.count
	l.count++
	if l.imp.Drop != nil && l.imp.Drop(i, d) {
		n.stats.Lost++
		return nil
	}
	if l.imp.Loss > 0 && n.rng.Float64() < l.imp.Loss {
		n.stats.Lost++
		return nil
	}
	// Source NAT happens on the way out, while the mapping is created.
	if nat := from.nat; nat != nil && !nat.inside(d.Dst.Addr()) {
		d.Src = nat.outbound(d.Src, d.Dst)
	}
	copies := 1
	if l.imp.Duplicate > 0 && n.rng.Float64() < l.imp.Duplicate {
		copies = 2
		n.stats.Duplicated++
	}
	now := time.Now()
	for range copies {
		at := now.Add(l.imp.Delay)
		if l.imp.Jitter > 0 {
			at = at.Add(time.Duration(n.rng.Int63n(int64(l.imp.Jitter))))
		}
		n.seq++
		heap.Push(&n.queue, &queued{at: at, seq: n.seq, d: d})
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
	return nil
}

func (n *Network) run() {
	defer close(n.finished)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n.mu.Lock()
		var next *queued
		if n.queue.Len() > 0 {
			next = n.queue[0]
			if !next.at.After(time.Now()) {
				heap.Pop(&n.queue)
				h, d := n.route(next.d)
				n.mu.Unlock()
				if h != nil {
					h.receive(d)
				}
				continue
			}
		}
		n.mu.Unlock()
		wait := time.Hour
		if next != nil {
			wait = time.Until(next.at)
		}
		timer.Reset(wait)
		select {
		case <-n.done:
			return
		case <-n.wake:
		case <-timer.C:
		}
	}
}

// route resolves the receiving host at delivery time, so a NAT flushed or an
// address removed while a packet is in flight affects it. Called with mu.
func (n *Network) route(d Datagram) (*Host, Datagram) {
	if nat := n.nats[d.Dst.Addr()]; nat != nil {
		dst, ok := nat.inbound(d.Src, d.Dst)
		if !ok {
			n.stats.NATFiltered++
			return nil, d
		}
		d.Dst = dst
	}
	h := n.hosts[d.Dst.Addr()]
	if h == nil {
		n.stats.NoRoute++
		return nil, d
	}
	n.stats.Delivered++
	return h, d
}

// Host is a machine on the network. Its methods are safe for concurrent use.
type Host struct {
	net  *Network
	name string

	// Guarded by net.mu.
	addrs []netip.Addr
	nat   *NAT

	hmu       sync.Mutex
	bound     map[netip.AddrPort]func(d Datagram)
	ike       func(pkt []byte, src, dst netip.AddrPort)
	raw       func(d Datagram)
	esp       func(d Datagram)
	keepalive uint64
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

// Addrs returns the host's current addresses.
func (h *Host) Addrs() []netip.Addr {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	return append([]netip.Addr(nil), h.addrs...)
}

// AddAddr gives the host another address.
func (h *Host) AddAddr(a netip.Addr) {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	h.addrs = append(h.addrs, a)
	h.net.hosts[a] = h
}

// RemoveAddr takes an address away; packets to it are no longer delivered.
func (h *Host) RemoveAddr(a netip.Addr) {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	for i, x := range h.addrs {
		if x == a {
			h.addrs = append(h.addrs[:i], h.addrs[i+1:]...)
			break
		}
	}
	if h.net.hosts[a] == h {
		delete(h.net.hosts, a)
	}
}

// HandleIKE sets the receiver of IKE messages (non-ESP marker stripped).
// It runs on the network's delivery goroutine and must not block; pkt is
// the receiver's to keep.
func (h *Host) HandleIKE(fn func(pkt []byte, src, dst netip.AddrPort)) {
	h.hmu.Lock()
	h.ike = fn
	h.hmu.Unlock()
}

// HandleESP sets the receiver of ESP datagrams.
func (h *Host) HandleESP(fn func(d Datagram)) {
	h.hmu.Lock()
	h.esp = fn
	h.hmu.Unlock()
}

// HandleRaw, when set, receives every datagram instead of the demux.
func (h *Host) HandleRaw(fn func(d Datagram)) {
	h.hmu.Lock()
	h.raw = fn
	h.hmu.Unlock()
}

// Bind makes fn the receiver of every datagram to local, ahead of the
// demux, as a socket bound there would be: local's address is one of the
// host's or unspecified (any of the family's). fn runs on the network's
// delivery goroutine and must not block; the payload is fn's to keep. The
// returned func unbinds.
func (h *Host) Bind(local netip.AddrPort, fn func(d Datagram)) (unbind func(), err error) {
	h.hmu.Lock()
	defer h.hmu.Unlock()
	if h.bound[local] != nil {
		return nil, fmt.Errorf("netsim: %s is bound already on host %s", local, h.name)
	}
	if h.bound == nil {
		h.bound = make(map[netip.AddrPort]func(Datagram))
	}
	h.bound[local] = fn
	return func() {
		h.hmu.Lock()
		delete(h.bound, local)
		h.hmu.Unlock()
	}, nil
}

// Owns reports whether a is one of the host's addresses now.
func (h *Host) Owns(a netip.Addr) bool {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	for _, x := range h.addrs {
		if x == a {
			return true
		}
	}
	return false
}

// Keepalives returns how many NAT keepalives the host received.
func (h *Host) Keepalives() uint64 {
	h.hmu.Lock()
	defer h.hmu.Unlock()
	return h.keepalive
}

// Send transmits a raw datagram from src to dst. An unspecified src address
// is replaced by the host's first address of dst's family.
func (h *Host) Send(src, dst netip.AddrPort, payload []byte) error {
	if !src.Addr().IsValid() || src.Addr().IsUnspecified() {
		a, ok := h.addrFor(dst.Addr())
		if !ok {
			return fmt.Errorf("netsim: host %s has no address for %s", h.name, dst.Addr())
		}
		src = netip.AddrPortFrom(a, src.Port())
	}
	return h.net.send(h, Datagram{Src: src, Dst: dst, Payload: append([]byte(nil), payload...)})
}

// SendIKEFrom sends an IKE message with the framing the real socket uses.
func (h *Host) SendIKEFrom(src, dst netip.AddrPort, pkt []byte) error {
	if src.Port() == 500 || dst.Port() == 500 {
		return h.Send(src, dst, pkt)
	}
	b := make([]byte, 4+len(pkt))
	copy(b[4:], pkt)
	return h.Send(src, dst, b)
}

func (h *Host) addrFor(dst netip.Addr) (netip.Addr, bool) {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	for _, a := range h.addrs {
		if a.Is4() == dst.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (h *Host) receive(d Datagram) {
	h.hmu.Lock()
	raw, ike, esp := h.raw, h.ike, h.esp
	bound := h.bound[d.Dst]
	if bound == nil {
		unspec := netip.IPv4Unspecified()
		if d.Dst.Addr().Is6() {
			unspec = netip.IPv6Unspecified()
		}
		bound = h.bound[netip.AddrPortFrom(unspec, d.Dst.Port())]
	}
	h.hmu.Unlock()
	if bound != nil {
		bound(d)
		return
	}
	if raw != nil {
		raw(d)
		return
	}
	p := d.Payload
	switch {
	case d.Src.Port() == 500 || d.Dst.Port() == 500:
		if ike != nil {
			ike(p, d.Src, d.Dst)
		}
	case len(p) == 1 && p[0] == 0xFF:
		h.hmu.Lock()
		h.keepalive++
		h.hmu.Unlock()
	case len(p) >= 4 && p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0:
		if ike != nil {
			ike(p[4:], d.Src, d.Dst)
		}
	default:
		if esp != nil {
			esp(d)
		}
	}
}

// Filtering is a NAT's inbound filtering rule (RFC 4787).
type Filtering int

const (
	// FullCone accepts inbound packets from anyone to a mapped port.
	FullCone Filtering = iota
	// RestrictedCone accepts them only from addresses the inside host has
	// sent to through the mapping.
	RestrictedCone
	// PortRestrictedCone also requires the remote port to match.
	PortRestrictedCone
)

type mapping struct {
	inside  netip.AddrPort
	port    uint16
	allowed map[netip.AddrPort]bool
}

// NAT is an endpoint-independent mapping NAT with configurable filtering.
// Attach hosts to put them behind it.
type NAT struct {
	net      *Network
	public   netip.Addr
	filter   Filtering
	members  []*Host
	nextPort uint16
	byInside map[netip.AddrPort]*mapping
	byPort   map[uint16]*mapping
}

// Attach puts h behind the NAT: its packets to addresses outside the NAT
// leave with the NAT's public address.
func (nat *NAT) Attach(h *Host) {
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	h.nat = nat
	nat.members = append(nat.members, h)
}

// Public returns the NAT's current public address.
func (nat *NAT) Public() netip.Addr {
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	return nat.public
}

// Flush forgets every mapping, as a conntrack flush or NAT reboot does.
func (nat *NAT) Flush() {
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	nat.byInside = make(map[netip.AddrPort]*mapping)
	nat.byPort = make(map[uint16]*mapping)
}

// SetPublic changes the public address; existing mappings are lost.
func (nat *NAT) SetPublic(a netip.Addr) {
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	delete(nat.net.nats, nat.public)
	nat.public = a
	nat.net.nats[a] = nat
	nat.byInside = make(map[netip.AddrPort]*mapping)
	nat.byPort = make(map[uint16]*mapping)
}

// Mappings returns the number of live mappings.
func (nat *NAT) Mappings() int {
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	return len(nat.byInside)
}

// Called with net.mu held.
func (nat *NAT) inside(a netip.Addr) bool {
	for _, h := range nat.members {
		for _, x := range h.addrs {
			if x == a {
				return true
			}
		}
	}
	return false
}

// Called with net.mu held.
func (nat *NAT) outbound(src, dst netip.AddrPort) netip.AddrPort {
	m := nat.byInside[src]
	if m == nil {
		for nat.byPort[nat.nextPort] != nil || nat.nextPort < 1024 {
			nat.nextPort++
		}
		m = &mapping{inside: src, port: nat.nextPort, allowed: make(map[netip.AddrPort]bool)}
		nat.nextPort++
		nat.byInside[src] = m
		nat.byPort[m.port] = m
	}
	m.allowed[dst] = true
	return netip.AddrPortFrom(nat.public, m.port)
}

// Called with net.mu held.
func (nat *NAT) inbound(src, dst netip.AddrPort) (netip.AddrPort, bool) {
	m := nat.byPort[dst.Port()]
	if m == nil {
		return netip.AddrPort{}, false
	}
	switch nat.filter {
	case RestrictedCone:
		ok := false
		for a := range m.allowed {
			if a.Addr() == src.Addr() {
				ok = true
				break
			}
		}
		if !ok {
			return netip.AddrPort{}, false
		}
	case PortRestrictedCone:
		if !m.allowed[src] {
			return netip.AddrPort{}, false
		}
	}
	return m.inside, true
}

type queued struct {
	at  time.Time
	seq uint64
	d   Datagram
}

type pktQueue []*queued

func (q pktQueue) Len() int { return len(q) }
func (q pktQueue) Less(i, j int) bool {
	if q[i].at.Equal(q[j].at) {
		return q[i].seq < q[j].seq
	}
	return q[i].at.Before(q[j].at)
}
func (q pktQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pktQueue) Push(x any)   { *q = append(*q, x.(*queued)) }
func (q *pktQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
