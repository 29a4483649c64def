package esp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// socketBuffer is the send buffer we ask for: the kernel default
	// (~208 KiB) overflows within a millisecond at gigabit rates while a
	// loop is busy with crypto.
	socketBuffer = 7 << 20
	// recvSocketBuffer is the receive buffer we ask for. When the peer
	// sends faster than we open, this socket is the bottleneck queue and
	// the inner TCP flows fill it up to their windows: in the lab a
	// 4-stream download held up to 13.6 MiB of queued datagrams (kernel
	// accounting), past what 7 MiB allows (the kernel doubles the value;
	// drops began near 12.4 MiB). The queue stays bounded by those
	// windows, so a larger buffer trades loss for delay only where the
	// loss would have happened.
	recvSocketBuffer = 16 << 20
	// recvBufSize holds the largest UDP datagram, which is also the
	// largest coalesced one UDP GRO hands us.
	recvBufSize = 1 << 16
	// maxGSOSegments and maxGSOBytes bound one UDP_SEGMENT send: the
	// kernel refuses more segments than UDP_MAX_SEGMENTS and a payload
	// that with UDP and IP headers exceeds 64 KiB.
	maxGSOSegments = 64
	maxGSOBytes    = 65535 - 8 - 40

	// sendCtrlSpace fits PKTINFO of either family and a UDP_SEGMENT.
	sendCtrlSpace = 64
	// recvCtrlSpace fits PKTINFO of either family, UDP_GRO, SO_RXQ_OVFL
	// and SO_TIMESTAMPNS (120 bytes for IPv6), with room to spare.
	recvCtrlSpace = 160
	sockaddrSpace = unix.SizeofSockaddrInet6
	// sizeofTimespec is SO_TIMESTAMPNS' payload: the platform's timespec.
	sizeofTimespec = int(unsafe.Sizeof(unix.Timespec{}))
)

// Socket is one UDP socket with batch I/O (recvmmsg/sendmmsg with UDP GRO
// and GSO where the kernel has them) and per-packet source address and
// interface control (PKTINFO), so a path test can leave through a chosen
// uplink and every received packet tells which local address it reached.
type Socket struct {
	conn  *net.UDPConn
	rc    syscall.RawConn
	local netip.AddrPort // as bound (address may be unspecified)
	v6    bool
	// gso: UDP_SEGMENT works on this socket. Cleared at run time when the
	// kernel or the device refuses a segmented send.
	gso atomic.Bool
	// gsoKernel: the kernel has UDP_SEGMENT, so a path MTU change may turn
	// gso back on (rearmGSO).
	gsoKernel bool
	gro       bool // UDP_GRO is on: a received datagram may hold several packets
	// rb is ReadBatch's recvmmsg state, made on the first read: one
	// reader at a time (the dataplane's receive loop).
	rb *recvBatch
}

var _ LinkMTUConn = (*Socket)(nil)

// ListenUDP binds a UDP socket. mark, when non-zero, is set as SO_MARK so
// full-tunnel policy routing sends our own packets around the tunnel.
func ListenUDP(local netip.AddrPort, mark uint32) (*Socket, error) {
	network := "udp4"
	if local.Addr().Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}
			if serr == nil && local.Addr().Is6() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
			if serr == nil {
				// Bind to an address we may not have yet (a gateway's
				// second address being brought up, an HA takeover).
				if local.Addr().Is6() {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, local.String())
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", local, err)
	}
	s, err := newSocket(pc.(*net.UDPConn), local.Addr().Is6())
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", local, err)
	}
	return s, nil
}

// newSocket makes conn the dataplane's socket; it closes conn on failure.
func newSocket(conn *net.UDPConn, v6 bool) (*Socket, error) {
	s := &Socket{conn: conn, v6: v6}
	s.local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	s.local = netip.AddrPortFrom(s.local.Addr().Unmap(), s.local.Port())
	var err error
	if s.rc, err = conn.SyscallConn(); err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	err = s.rc.Control(func(fd uintptr) { serr = s.setup(int(fd)) })
	if err == nil {
		err = serr
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// SocketFromFile makes a socket of ListenUDP's that another process
// opened and passed over (f, which stays the caller's to close) into
// this process's Socket; its options (mark, v6-only) came with it.
func SocketFromFile(f *os.File) (*Socket, error) {
	typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("passed socket: %w", err)
	}
	if typ != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("passed socket: type %d, want a datagram socket", typ)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("passed socket: %w", err)
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("passed socket: a %T, want UDP", pc)
	}
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok || la.Port == 0 {
		conn.Close()
		return nil, errors.New("passed socket: not bound")
	}
	s, err := newSocket(conn, !la.AddrPort().Addr().Unmap().Is4())
	if err != nil {
		return nil, fmt.Errorf("passed socket: %w", err)
	}
	return s, nil
}

// File returns a duplicate of the socket's descriptor, to pass to another
// process (SocketFromFile there).
func (s *Socket) File() (*os.File, error) { return s.conn.File() }

// setup turns on what the dataplane needs (PKTINFO) and what makes it fast
// where the kernel allows (big buffers, GRO, GSO, overflow counts).
func (s *Socket) setup(fd int) error {
	if s.v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return fmt.Errorf("IPV6_RECVPKTINFO: %w", err)
		}
	} else if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return fmt.Errorf("IP_PKTINFO: %w", err)
	}
	// The FORCE variants pass rmem_max/wmem_max but need CAP_NET_ADMIN;
	// without it the plain ones get what the limit allows.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvSocketBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvSocketBuffer)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
	// Best effort: without it overflows go uncounted, nothing else changes.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	// Best effort too: the kernel's receive time of each datagram, so the
	// receive loop can tell ESP that waited too long in this socket's
	// queue (staleAfter, dataplane.go). Without it nothing is dropped for
	// its age.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	s.gro = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	s.gsoKernel = err == nil
	s.gso.Store(s.gsoKernel)
	return nil
}

// LocalAddr is the bound address and port.
func (s *Socket) LocalAddr() netip.AddrPort { return s.local }

// LocalPort is the bound port.
func (s *Socket) LocalPort() uint16 { return s.local.Port() }

// Close closes the socket; a blocked read returns.
func (s *Socket) Close() error { return s.conn.Close() }

// writeOne sends one datagram with the path's control message (the IKE and
// keepalive path, not the packet path).
func (s *Socket) writeOne(b []byte, pp *peerPath) error {
	_, _, err := s.conn.WriteMsgUDPAddrPort(b, pp.oob, pp.Remote)
	return err
}

// WriteTo sends one datagram on path, from its local address and
// interface.
func (s *Socket) WriteTo(b []byte, path Path) error {
	_, _, err := s.conn.WriteMsgUDPAddrPort(b, s.oob(path.Local.Addr(), path.IfIndex), path.Remote)
	return err
}

// WriteBatch sends pkts one datagram each. The dataplane's own packets do
// not come this way: they take the batch path with UDP GSO and the
// control messages cached per path (writeBatch), which needs the
// dataplane's per-path state; this is the plain send for other callers.
func (s *Socket) WriteBatch(pkts []Packet) (failed int) {
	for _, p := range pkts {
		if s.WriteTo(p.Buf, p.Path) != nil {
			failed++
		}
	}
	return failed
}

// LinkMTU asks the kernel what MTU a packet from the socket on path meets.
func (s *Socket) LinkMTU(path Path) (int, error) { return kernelLinkMTU(path, s) }

// ReadBatch reads up to len(msgs) datagrams with one recvmmsg, blocking
// until there is one. The buffers are the socket's, reused by the next
// call; one goroutine reads at a time.
func (s *Socket) ReadBatch(msgs []Message) (int, error) {
	if s.rb == nil || len(s.rb.hdrs) != len(msgs) {
		s.rb = newRecvBatch(len(msgs), s.rb)
	}
	n, err := s.readBatch(s.rb)
	for i := range n {
		s.rb.fill(i, &msgs[i])
	}
	return n, err
}

// oob returns the control message that makes a packet leave from src
// through ifindex, or nil when the kernel may choose.
func (s *Socket) oob(src netip.Addr, ifindex int) []byte {
	if s.local.Addr().IsValid() && !s.local.Addr().IsUnspecified() {
		return nil // bound to one address already
	}
	hasSrc := src.IsValid() && !src.IsUnspecified()
	if !hasSrc && ifindex == 0 {
		return nil
	}
	if s.v6 {
		b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		data := putCmsgHeader(b, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
		if hasSrc {
			a := src.As16()
			copy(data[0:16], a[:])
		}
		binary.NativeEndian.PutUint32(data[16:20], uint32(ifindex))
		return b
	}
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	data := putCmsgHeader(b, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(data[0:4], uint32(ifindex))
	if hasSrc {
		a := src.Unmap().As4()
		copy(data[4:8], a[:]) // ipi_spec_dst: the source to use
	}
	return b
}

// putCmsgHeader writes a control message header for datalen bytes of data
// at the start of b and returns the data part. b must have
// unix.CmsgSpace(datalen) bytes.
func putCmsgHeader(b []byte, level, typ int32, datalen int) []byte {
	var h unix.Cmsghdr
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(datalen))
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr))
	return b[unix.CmsgLen(0):unix.CmsgLen(datalen)]
}

// rxControl is what a received datagram's control messages say.
type rxControl struct {
	dst     netip.Addr // the local address it was sent to (PKTINFO)
	ifindex int
	segment int    // UDP GRO segment size; 0: one packet
	drops   uint32 // SO_RXQ_OVFL: the socket's drops so far
	hasDrop bool
	stamp   int64 // SO_TIMESTAMPNS: the kernel's receive time, Unix ns; 0: none
}

// parseControl reads the control messages of a received datagram without
// allocating. Malformed or truncated messages end the parse; what came
// before them stands.
func parseControl(b []byte) rxControl {
	var rc rxControl
	hdrLen := unix.CmsgLen(0)
	for len(b) >= unix.SizeofCmsghdr {
		var h unix.Cmsghdr
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr), b)
		l := int(uint64(h.Len))
		if l < hdrLen || l > len(b) {
			break
		}
		data := b[hdrLen:l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			rc.ifindex = int(binary.NativeEndian.Uint32(data[0:4]))
			rc.dst = netip.AddrFrom4([4]byte(data[8:12])) // ipi_addr: the header's destination
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			rc.dst = netip.AddrFrom16([16]byte(data[0:16])).Unmap()
			rc.ifindex = int(binary.NativeEndian.Uint32(data[16:20]))
		case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO:
			switch {
			case len(data) >= 4:
				rc.segment = int(int32(binary.NativeEndian.Uint32(data)))
			case len(data) >= 2:
				rc.segment = int(binary.NativeEndian.Uint16(data))
			}
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			rc.drops, rc.hasDrop = binary.NativeEndian.Uint32(data), true
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= sizeofTimespec:
			var ts unix.Timespec
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), sizeofTimespec), data)
			rc.stamp = ts.Nano()
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return rc
}

// parseSockaddr reads the peer address the kernel wrote into a msg_name.
func parseSockaddr(b []byte, n int) (netip.AddrPort, bool) {
	if n < 2 || n > len(b) {
		return netip.AddrPort{}, false
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), true
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), binary.BigEndian.Uint16(b[2:4])), true
	}
	return netip.AddrPort{}, false
}

// putSockaddr writes ap as a sockaddr of the socket's family into b and
// returns its length (0: wrong family).
func putSockaddr(b *[sockaddrSpace]byte, ap netip.AddrPort, v6 bool) uint32 {
	*b = [sockaddrSpace]byte{}
	binary.BigEndian.PutUint16(b[2:4], ap.Port())
	if v6 {
		if !ap.Addr().Is6() || ap.Addr().Is4In6() {
			return 0
		}
		binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET6)
		a := ap.Addr().As16()
		copy(b[8:24], a[:])
		return unix.SizeofSockaddrInet6
	}
	if !ap.Addr().Unmap().Is4() {
		return 0
	}
	binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET)
	a := ap.Addr().Unmap().As4()
	copy(b[4:8], a[:])
	return unix.SizeofSockaddrInet4
}

// recvBatch is the preallocated state of one receive loop's recvmmsg: the
// message vector, a 64 KiB buffer per message and the syscall closure,
// made once so a read allocates nothing.
type recvBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	names [][sockaddrSpace]byte
	ctrl  [][recvCtrlSpace]byte
	n     int
	errno syscall.Errno
	read  func(fd uintptr) bool
}

// newRecvBatch makes a batch of n messages, keeping the buffers of old
// (a smaller batch that grew, or nil).
func newRecvBatch(n int, old *recvBatch) *recvBatch {
	b := &recvBatch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		bufs:  make([][]byte, n),
		names: make([][sockaddrSpace]byte, n),
		ctrl:  make([][recvCtrlSpace]byte, n),
	}
	if old != nil {
		copy(b.bufs, old.bufs)
	}
	for i := range b.hdrs {
		if b.bufs[i] == nil {
			b.bufs[i] = make([]byte, recvBufSize)
		}
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(recvBufSize)
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Name = &b.names[i][0]
		h.Control = &b.ctrl[i][0]
	}
	b.read = func(fd uintptr) bool {
		for {
			n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait until readable
			}
			b.n, b.errno = int(n), e
			return true
		}
	}
	return b
}

// message returns received message i: its data, the sender and the
// control messages.
func (b *recvBatch) message(i int) (data []byte, from netip.AddrPort, ok, truncated bool, ctl rxControl) {
	m := &b.hdrs[i]
	from, ok = parseSockaddr(b.names[i][:], int(m.Hdr.Namelen))
	ctl = parseControl(b.ctrl[i][:min(int(m.Hdr.Controllen), recvCtrlSpace)])
	truncated = m.Hdr.Flags&unix.MSG_TRUNC != 0
	return b.bufs[i][:min(int(m.Len), recvBufSize)], from, ok, truncated, ctl
}

// fill describes received message i as a Message.
func (b *recvBatch) fill(i int, m *Message) {
	data, from, ok, truncated, ctl := b.message(i)
	if !ok {
		from = netip.AddrPort{}
	}
	*m = Message{Buf: data, From: from, Local: ctl.dst, IfIndex: ctl.ifindex, Segment: ctl.segment,
		Truncated: truncated, Overflow: ctl.drops, OverflowKnown: ctl.hasDrop, Received: ctl.stamp}
}

// readBatch reads up to len(b.hdrs) datagrams; it blocks until at least
// one is there.
func (s *Socket) readBatch(b *recvBatch) (int, error) {
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Namelen = sockaddrSpace
		h.SetControllen(recvCtrlSpace)
		h.Flags = 0
	}
	if err := s.rc.Read(b.read); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, b.errno
	}
	return b.n, nil
}

// outPacket is one sealed ESP packet queued for sending.
type outPacket struct {
	buf []byte
	pp  *peerPath
}

// sendBatch is the preallocated state of the TUN loop's sendmmsg: one
// message per datagram, one iovec per packet pointing at the packet where
// it was sealed (GSO sends several packets as one datagram without a copy).
type sendBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names [][sockaddrSpace]byte
	ctrl  [][sendCtrlSpace]byte
	first []int // the index in pkts of each message's first packet
	pkts  []outPacket
	// generic is writeConn's packet list for a Conn other than a socket.
	generic []Packet
	nm      int // messages built

	off   int // first message not yet sent
	sent  int
	errno syscall.Errno
	write func(fd uintptr) bool
}

func newSendBatch(n int) *sendBatch {
	b := &sendBatch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([][sockaddrSpace]byte, n),
		ctrl:  make([][sendCtrlSpace]byte, n),
		first: make([]int, n+1),
	}
	b.write = func(fd uintptr) bool {
		for {
			n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.off])), uintptr(b.nm-b.off), 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // the socket buffer is full: wait, don't drop
			}
			b.sent, b.errno = int(n), e
			return true
		}
	}
	return b
}

// build turns pkts into messages. With gso, consecutive packets on the
// same path of the same length (the last may be shorter) share one
// UDP_SEGMENT datagram, except on a path still probing its MTU (pmtuProbe)
// for sizes not yet shown to fit (gsoprobe.go).
func (b *sendBatch) build(s *Socket, pkts []outPacket, gso bool) {
	b.pkts, b.nm, b.off = pkts, 0, 0
	now := time.Now().UnixNano()
	for i := 0; i < len(pkts); {
		p := pkts[i]
		size, total := len(p.buf), len(p.buf)
		j := i + 1
		for gso && size <= p.pp.gsoLimit(now) && j < len(pkts) && j-i < maxGSOSegments && pkts[j].pp == p.pp {
			l := len(pkts[j].buf)
			if l > size || total+l > maxGSOBytes {
				break
			}
			total += l
			j++
			if l < size {
				break // only the last segment may be short
			}
		}
		for k := i; k < j; k++ {
			b.iovs[k].Base = unsafe.SliceData(pkts[k].buf)
			b.iovs[k].SetLen(len(pkts[k].buf))
		}
		h := &b.hdrs[b.nm].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(j - i)
		h.Namelen = putSockaddr(&b.names[b.nm], p.pp.Remote, s.v6)
		h.Name = &b.names[b.nm][0]
		ctl := append(b.ctrl[b.nm][:0], p.pp.oob...)
		if j-i > 1 {
			n := len(ctl)
			ctl = ctl[:n+unix.CmsgSpace(2)]
			data := putCmsgHeader(ctl[n:], unix.IPPROTO_UDP, unix.UDP_SEGMENT, 2)
			binary.NativeEndian.PutUint16(data, uint16(size))
		}
		h.Control = nil
		if len(ctl) > 0 {
			h.Control = &b.ctrl[b.nm][0]
		}
		h.SetControllen(len(ctl))
		if j-i == 1 {
			p.pp.sentAlone(size, now)
		}
		b.first[b.nm] = i
		b.nm++
		i = j
	}
	b.first[b.nm] = len(pkts)
}

// isGSOError reports whether a segmented send may have failed because of
// the segmentation: the device cannot checksum it (EIO), or the kernel
// refuses segments longer than the path MTU (EMSGSIZE, EINVAL), which it
// would fragment when sent one by one.
func isGSOError(e syscall.Errno) bool {
	return e == unix.EIO || e == unix.EINVAL || e == unix.EMSGSIZE || e == unix.ENOPROTOOPT || e == unix.EOPNOTSUPP
}

// writeBatch sends pkts (all of them for this socket) and returns how many
// could not be sent. A message the kernel refuses is skipped so one bad
// destination does not stall the rest; a refused segmented send turns GSO
// off for the socket and sends the same packets one by one, unless they
// fail that way too (then segmentation was not the problem).
func (s *Socket) writeBatch(b *sendBatch, pkts []outPacket) (failed int) {
	gso := s.gso.Load()
	b.build(s, pkts, gso)
	retried := -1 // first packet of a GSO message being retried without GSO
	for b.off < b.nm {
		if err := s.rc.Write(b.write); err != nil {
			return failed + len(pkts) - b.first[b.off] // closed
		}
		if b.errno == 0 {
			if b.sent > 0 && retried >= 0 {
				retried = -1 // the retry went out: GSO was the problem
			}
			b.off += max(b.sent, 1)
			continue
		}
		m := b.off
		if gso && b.hdrs[m].Hdr.Iovlen > 1 && isGSOError(b.errno) {
			gso = false
			s.gso.Store(false)
			retried = b.first[m]
			b.build(s, pkts[retried:], false)
			pkts = pkts[retried:]
			continue
		}
		if retried >= 0 && b.first[m] == 0 {
			// The same packet fails without segmentation too.
			s.gso.Store(true)
			retried = -1
		}
		failed += b.first[m+1] - b.first[m]
		b.off++
	}
	return failed
}

// rearmGSO turns GSO back on after a path MTU change. The kernel refuses a
// segmented send whose segments exceed the path MTU it learnt from an ICMP
// (writeBatch then turned GSO off); once the path's packets are sized to
// the new MTU, segmenting works again. Where a device refuses GSO itself,
// the next segmented send turns it off again, one failed call per change.
func (s *Socket) rearmGSO() {
	if s.gsoKernel {
		s.gso.Store(true)
	}
}

// errClosedSocket reports whether err means the socket was closed.
func errClosedSocket(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADF)
}
