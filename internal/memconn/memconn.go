// Package memconn is the dataplane's network side (esp.Conn) over the
// simulated network of internal/netsim: a UDP endpoint bound to an address
// and port of a simulated host, so the dataplane, IKE and mobility run in
// one test process with netsim's loss, delay, reordering, NAT and address
// changes between them.
//
// It behaves as the kernel socket does where the dataplane can tell: each
// datagram says the local address it reached, a send from an address the
// host no longer owns fails, a full receive queue drops and counts
// (esp.DropStats.SocketOverflow), and Close ends a blocked read with
// net.ErrClosed. It has no interfaces (IfIndex is 0), no GSO or GRO.
package memconn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// DefaultQueue is how many received datagrams wait for the reader before
// more are dropped, about what a kernel socket's default buffer holds of
// full-sized packets.
const DefaultQueue = 256

// ErrAddrNotAvailable is a send from an address the host does not own (the
// kernel's EADDRNOTAVAIL), as after that address went away.
var ErrAddrNotAvailable = errors.New("memconn: source address not available")

// Conn is one bound endpoint on a simulated host.
type Conn struct {
	host   *netsim.Host
	local  netip.AddrPort
	queue  chan netsim.Datagram
	closed chan struct{}
	once   sync.Once
	unbind func()

	overflow atomic.Uint32 // datagrams dropped on a full queue
	linkMTU  atomic.Int64  // what LinkMTU reports; 0: unknown
}

var _ esp.LinkMTUConn = (*Conn)(nil)

// Listen binds local (address one of the host's, or unspecified; port not
// 0) on host, with room for queue received datagrams (0: DefaultQueue).
func Listen(host *netsim.Host, local netip.AddrPort, queue int) (*Conn, error) {
	if local.Port() == 0 {
		return nil, fmt.Errorf("memconn: listen %s: a port is needed", local)
	}
	if a := local.Addr(); !a.IsUnspecified() && !host.Owns(a) {
		return nil, fmt.Errorf("memconn: listen %s: %w", local, ErrAddrNotAvailable)
	}
	if queue <= 0 {
		queue = DefaultQueue
	}
	c := &Conn{host: host, local: local, queue: make(chan netsim.Datagram, queue), closed: make(chan struct{})}
	unbind, err := host.Bind(local, c.deliver)
	if err != nil {
		return nil, fmt.Errorf("memconn: listen %s: %w", local, err)
	}
	c.unbind = unbind
	return c, nil
}

// deliver runs on the network's delivery goroutine: it must not block.
func (c *Conn) deliver(d netsim.Datagram) {
	select {
	case c.queue <- d:
	default:
		c.overflow.Add(1)
	}
}

// LocalAddr is the bound address and port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// ReadBatch blocks for one datagram and takes whatever else is queued, up
// to len(msgs). The buffers are the Conn's and never reused.
func (c *Conn) ReadBatch(msgs []esp.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	var d netsim.Datagram
	select {
	case d = <-c.queue:
	case <-c.closed:
		return 0, fmt.Errorf("memconn: read %s: %w", c.local, net.ErrClosed)
	}
	n := 0
	for {
		msgs[n] = esp.Message{Buf: d.Payload, From: d.Src, Local: d.Dst.Addr(), Overflow: c.overflow.Load(), OverflowKnown: true}
		n++
		if n == len(msgs) {
			return n, nil
		}
		select {
		case d = <-c.queue:
		default:
			return n, nil
		}
	}
}

// WriteTo sends b on path from the bound port: from path's local address
// when it has one (the host must own it), else from the bound address or
// the host's first of the family.
func (c *Conn) WriteTo(b []byte, path netpath.Path) error {
	select {
	case <-c.closed:
		return fmt.Errorf("memconn: write %s: %w", c.local, net.ErrClosed)
	default:
	}
	src := c.local.Addr()
	if src.IsUnspecified() {
		if a := path.Local.Addr(); a.IsValid() && !a.IsUnspecified() {
			src = a
		}
	}
	if !src.IsUnspecified() && !c.host.Owns(src) {
		return fmt.Errorf("memconn: send from %s: %w", src, ErrAddrNotAvailable)
	}
	return c.host.Send(netip.AddrPortFrom(src, c.local.Port()), path.Remote, b)
}

// WriteBatch sends pkts one by one (netsim copies each) and counts the
// failures.
func (c *Conn) WriteBatch(pkts []esp.Packet) (failed int) {
	for _, p := range pkts {
		if c.WriteTo(p.Buf, p.Path) != nil {
			failed++
		}
	}
	return failed
}

// SetLinkMTU sets the link MTU that LinkMTU reports (0: unknown), as a
// route's MTU would be; netsim itself carries datagrams of any size.
func (c *Conn) SetLinkMTU(mtu int) { c.linkMTU.Store(int64(mtu)) }

// LinkMTU reports the MTU set with SetLinkMTU.
func (c *Conn) LinkMTU(netpath.Path) (int, error) {
	if m := c.linkMTU.Load(); m > 0 {
		return int(m), nil
	}
	return 0, errors.New("memconn: no link MTU set")
}

// Overflows is how many received datagrams a full queue dropped.
func (c *Conn) Overflows() uint32 { return c.overflow.Load() }

// Close unbinds the endpoint and ends a blocked ReadBatch. Idempotent.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.unbind()
		close(c.closed)
	})
	return nil
}
