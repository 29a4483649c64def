package esp

import (
	"net/netip"
)

// Conn is the dataplane's network side: one UDP endpoint carrying IKE,
// NAT keepalives and UDP-encapsulated ESP. *Socket is the kernel's;
// internal/memconn has one over the simulated network, so a whole tunnel
// (TUN, ESP, IKE) can run inside one test process.
//
// The dataplane reads a Conn from one goroutine (its receive loop) and
// writes to it from others; Close ends a blocked ReadBatch with an error
// that wraps net.ErrClosed.
type Conn interface {
	// LocalAddr is the bound address and port (the address may be
	// unspecified: then each datagram says where it arrived).
	LocalAddr() netip.AddrPort
	// ReadBatch blocks until at least one datagram has arrived and fills
	// msgs from the front with what is there, up to len(msgs). The
	// messages' buffers belong to the Conn and stay valid until the next
	// ReadBatch; one goroutine reads at a time.
	ReadBatch(msgs []Message) (int, error)
	// WriteBatch sends pkts in order, each from its path's local address
	// and interface to its remote, and returns how many could not be sent.
	// A destination that refuses does not stop the rest.
	WriteBatch(pkts []Packet) (failed int)
	// WriteTo sends one datagram on path (IKE messages, keepalives).
	WriteTo(b []byte, path Path) error
	Close() error
}

// LinkMTUConn is a Conn that knows the MTU a packet on a path meets; the
// dataplane derives the path's inner MTU from it. A Conn without it (and
// not a *Socket, which asks the kernel's routes) leaves the MTU unknown:
// nothing is clamped or refused.
type LinkMTUConn interface {
	Conn
	LinkMTU(path Path) (int, error)
}

// Message is one received datagram.
type Message struct {
	// Buf is the datagram; the Conn's, valid until its next ReadBatch.
	Buf []byte
	// From is the sender.
	From netip.AddrPort
	// Local is the address the datagram was sent to, IfIndex the
	// interface it came in on (PKTINFO); Local invalid: the Conn's bound
	// address.
	Local   netip.Addr
	IfIndex int
	// Segment, when above 0 and below len(Buf), is the size of each of the
	// packets coalesced into Buf (UDP GRO); the last may be shorter.
	Segment int
	// Truncated: the datagram was larger than the buffer.
	Truncated bool
	// Overflow, when OverflowKnown, is the number of datagrams the Conn's
	// receive queue has dropped so far (SO_RXQ_OVFL).
	Overflow      uint32
	OverflowKnown bool
	// Received is when the kernel queued the datagram for us (Unix ns,
	// SO_TIMESTAMPNS); 0: not known. The receive loop drops ESP that
	// waited in the queue longer than staleAfter.
	Received int64
}

// Packet is one datagram to send on a Conn.
type Packet struct {
	Buf  []byte
	Path Path
}

// writeConn sends one group of an outbound batch on a Conn that is not a
// kernel socket, through the Conn's own batch send.
func (b *sendBatch) writeConn(c Conn, pkts []outPacket) (failed int) {
	if b.generic == nil {
		b.generic = make([]Packet, len(b.hdrs))
	}
	g := b.generic[:len(pkts)]
	for i, p := range pkts {
		g[i] = Packet{Buf: p.buf, Path: p.pp.Path}
	}
	failed = c.WriteBatch(g)
	clear(g) // keep no packet buffer reachable from here
	return failed
}
