package esp

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Path MTU. Every inner packet gains outer IP, UDP and ESP headers, so the
// largest inner packet that crosses a path without outer fragments is
// smaller than the uplink's MTU. The dataplane keeps, per path, that inner
// MTU (peerPath.mtu) and holds traffic to it three ways: TCP SYNs in both
// directions get their MSS lowered to fit, an outbound packet that does not
// fit and must not be fragmented is dropped and answered with ICMP
// "fragmentation needed" or ICMPv6 "packet too big" written to the TUN
// device, and anything else is sealed as it is.

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	tcpHeaderLen  = 20
	// minIPv6MTU is the MTU every IPv6 link carries (RFC 8200 5): an IPv6
	// sender never goes below it, whatever a "packet too big" says.
	minIPv6MTU = 1280
	// icmpv4Quote bounds an ICMPv4 error to 576 octets, what every host
	// accepts (RFC 1812 4.3.2.3).
	icmpv4Quote = 576

	// ICMP errors go out at most icmpBurst at once and one per
	// icmpInterval after that: enough for every sender to learn the MTU
	// quickly, too few to be a flood of our own.
	icmpInterval = 10 * time.Millisecond
	icmpBurst    = 10
)

// InnerMTU returns the largest inner packet whose ESP-in-UDP packet fits an
// outer MTU of linkMTU: outer IP (20, or 40 for IPv6) + UDP 8 + ESP header
// 8 + IV 8 + ICV 16, with inner packet, padding and the 2 trailer bytes a
// multiple of 4. It returns 0 when nothing fits.
func InnerMTU(linkMTU int, ipv6Outer bool) int {
	outer := ipv4HeaderLen
	if ipv6Outer {
		outer = ipv6HeaderLen
	}
	avail := linkMTU - outer - udpHeaderLen - headerLen - ivLen - icvLen
	if avail < 4 {
		return 0
	}
	return avail/4*4 - 2
}

// kernelLinkMTU asks the kernel what MTU a packet from s to path.Remote
// meets: the route's MTU when it has one (set by the administrator, or a
// path MTU the kernel learnt from ICMP), else the outgoing link's.
func kernelLinkMTU(path Path, s *Socket) (int, error) {
	opts := &netlink.RouteGetOptions{Mark: socketMark(s), OifIndex: path.IfIndex}
	if a := path.Local.Addr(); a.IsValid() && !a.IsUnspecified() {
		opts.SrcAddr = net.IP(a.AsSlice())
	}
	dst := path.Remote.Addr().Unmap()
	rs, err := netlink.RouteGetWithOptions(net.IP(dst.AsSlice()), opts)
	if err != nil {
		return 0, fmt.Errorf("route to %s: %w", dst, err)
	}
	if len(rs) == 0 {
		return 0, fmt.Errorf("no route to %s", dst)
	}
	if rs[0].MTU > 0 {
		return rs[0].MTU, nil
	}
	link, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return 0, fmt.Errorf("route to %s: interface %d: %w", dst, rs[0].LinkIndex, err)
	}
	return link.Attrs().MTU, nil
}

// socketMark reads the socket's SO_MARK: full-tunnel policy routing sends
// the marked tunnel packets around the TUN device, so the route lookup
// must carry the same mark to see the uplink.
func socketMark(s *Socket) uint32 {
	if s == nil || s.conn == nil {
		return 0
	}
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return 0
	}
	var mark int
	rc.Control(func(fd uintptr) {
		mark, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	})
	return uint32(mark)
}

// pathInnerMTU is the inner MTU of a path through c; 0 when the kernel
// (or the Conn) cannot say (then nothing is clamped or refused).
func (d *Dataplane) pathInnerMTU(path Path, c Conn) int {
	if c == nil || !path.Remote.IsValid() {
		return 0
	}
	var mtu int
	var err error
	switch c := c.(type) {
	case *Socket:
		link := d.linkMTU
		if link == nil {
			link = kernelLinkMTU
		}
		mtu, err = link(path, c)
	case LinkMTUConn:
		mtu, err = c.LinkMTU(path)
	default:
		return 0
	}
	if err != nil {
		d.log.Debug("path MTU unknown", "remote", path.Remote, "err", err)
		return 0
	}
	return InnerMTU(mtu, path.Remote.Addr().Is6() && !path.Remote.Addr().Is4In6())
}

// MTU returns the inner MTU of the peer's current path (0: unknown).
func (p *Peer) MTU() int {
	if pp := p.path.Load(); pp != nil {
		return pp.mtu
	}
	return 0
}

// refreshMTU derives the peer's path MTU again, for a path MTU the kernel
// learnt from ICMP after the path was set. A SetPath in between wins.
func (d *Dataplane) refreshMTU(p *Peer) {
	pp := p.path.Load()
	if pp == nil || pp.conn == nil {
		return
	}
	mtu := d.pathInnerMTU(pp.Path, pp.conn)
	if mtu == 0 || mtu == pp.mtu {
		return
	}
	np := *pp
	np.mtu = mtu
	np.probe = d.newProbe(p) // datagrams of the new size have to show they fit
	if p.path.CompareAndSwap(pp, &np) {
		if pp.sock != nil {
			pp.sock.rearmGSO()
		}
		d.log.Info("path MTU changed", "remote", pp.Remote, "inner_mtu", mtu)
	}
}

// pathFit holds outbound packets to their path's MTU. One belongs to the
// TUN reader: its buffer is where ICMP replies are built.
type pathFit struct {
	d    *Dataplane
	buf  []byte
	bufs [][]byte
}

func (d *Dataplane) newPathFit() *pathFit {
	return &pathFit{d: d, buf: make([]byte, tunOffset+minIPv6MTU), bufs: make([][]byte, 1)}
}

// fits clamps a TCP SYN's MSS to an inner MTU of mtu and reports whether
// pkt may be sealed. A packet too big that must not be fragmented is
// counted and answered with ICMP (rate-limited); the caller drops it.
func (f *pathFit) fits(pkt []byte, mtu int) bool {
	if mtu <= 0 {
		return true
	}
	if len(pkt) <= mtu {
		if clampMSS(pkt, mtu) {
			f.d.mssClamped.Add(1)
		}
		return true
	}
	n, drop := tooBig(f.buf[tunOffset:], pkt, mtu)
	if !drop {
		return true
	}
	d := f.d
	d.drops.tooBig.Add(1)
	if n > 0 && d.dev != nil && d.icmpLimit.allow(time.Now().UnixNano()) {
		f.bufs[0] = f.buf[:tunOffset+n]
		if _, err := d.dev.Write(f.bufs, tunOffset); err != nil {
			d.log.Debug("TUN write of ICMP too big", "err", err)
		} else {
			d.icmpTooBig.Add(1)
		}
	}
	return false
}

// rateLimit is a lock-free GCRA: tat is when the next event would be due
// at the steady rate.
type rateLimit struct{ tat atomic.Int64 }

func (r *rateLimit) allow(now int64) bool {
	for {
		tat := r.tat.Load()
		t := max(tat, now)
		if t-now > int64((icmpBurst-1)*icmpInterval) {
			return false
		}
		if r.tat.CompareAndSwap(tat, t+int64(icmpInterval)) {
			return true
		}
	}
}

// tcpSYN returns the TCP header of pkt when pkt is an unfragmented IPv4
// or IPv6 TCP segment with SYN set, and the fixed IP header length that
// the MSS excludes (RFC 6691: 20 or 40).
func tcpSYN(pkt []byte) (tcp []byte, ipLen int, ok bool) {
	if len(pkt) < 1 {
		return nil, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4HeaderLen {
			return nil, 0, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < ipv4HeaderLen || total < ihl || total > len(pkt) || pkt[9] != unix.IPPROTO_TCP {
			return nil, 0, false
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return nil, 0, false // a fragment (MF or an offset)
		}
		tcp, ipLen = pkt[ihl:total], ipv4HeaderLen
	case 6:
		if len(pkt) < ipv6HeaderLen {
			return nil, 0, false
		}
		end := ipv6HeaderLen + int(binary.BigEndian.Uint16(pkt[4:]))
		if end > len(pkt) {
			return nil, 0, false
		}
		next, off := pkt[6], ipv6HeaderLen
		// Skip the extension headers a TCP segment may carry before it;
		// a fragment header ends the search.
		for next == unix.IPPROTO_HOPOPTS || next == unix.IPPROTO_ROUTING || next == unix.IPPROTO_DSTOPTS {
			if off+8 > end {
				return nil, 0, false
			}
			next, off = pkt[off], off+(int(pkt[off+1])+1)*8
		}
		if next != unix.IPPROTO_TCP || off > end {
			return nil, 0, false
		}
		tcp, ipLen = pkt[off:end], ipv6HeaderLen
	default:
		return nil, 0, false
	}
	if len(tcp) < tcpHeaderLen || tcp[13]&0x02 == 0 {
		return nil, 0, false
	}
	return tcp, ipLen, true
}

// clampMSS lowers the MSS option of a TCP SYN in pkt to what an inner MTU
// of mtu carries (MTU - IP header - TCP header) and fixes the checksum
// incrementally (RFC 1624). It reports whether it changed pkt. A SYN
// without the option is left alone: its sender assumes 536 or 1220 (RFC
// 9293 3.7.1), which fits every path we accept.
func clampMSS(pkt []byte, mtu int) bool {
	tcp, ipLen, ok := tcpSYN(pkt)
	if !ok {
		return false
	}
	limit := mtu - ipLen - tcpHeaderLen
	if limit <= 0 {
		return false
	}
	dataOff := int(tcp[12]>>4) * 4
	if dataOff < tcpHeaderLen || dataOff > len(tcp) {
		return false
	}
	for i := tcpHeaderLen; i < dataOff; {
		switch kind := tcp[i]; kind {
		case 0: // end of options
			return false
		case 1: // no-op
			i++
			continue
		}
		if i+1 >= dataOff {
			return false
		}
		l := int(tcp[i+1])
		if l < 2 || i+l > dataOff {
			return false
		}
		if tcp[i] == 2 && l == 4 {
			old := binary.BigEndian.Uint16(tcp[i+2:])
			if int(old) <= limit {
				return false
			}
			mss := uint16(limit)
			binary.BigEndian.PutUint16(tcp[i+2:], mss)
			if (i+2)%2 == 1 {
				// At an odd offset the two bytes fall into two checksum
				// words; a one's complement sum of byte-swapped words is
				// the byte-swapped sum, so swap both values.
				old, mss = old<<8|old>>8, mss<<8|mss>>8
			}
			sum := binary.BigEndian.Uint16(tcp[16:])
			binary.BigEndian.PutUint16(tcp[16:], checksumReplace(sum, old, mss))
			return true
		}
		i += l
	}
	return false
}

// checksumReplace updates an Internet checksum for one 16-bit word going
// from old to new: HC' = ~(~HC + ~m + m') (RFC 1624 3, eqn. 3).
func checksumReplace(sum, old, new uint16) uint16 {
	s := uint32(^sum) + uint32(^old) + uint32(new)
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

// checksum is the Internet checksum (RFC 1071) of b added to initial.
func checksum(b []byte, initial uint32) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// tooBig decides about an inner packet larger than the path's inner MTU.
// drop false: seal it anyway, the outer packet is fragmented by the kernel.
// That is the case of IPv4 without DF, whose sender allowed fragments
// (Linux's own IPsec does the same), and of IPv6 up to 1280 octets, which
// every IPv6 sender may send whatever the path. Otherwise drop is true and,
// where RFC 1812 4.3.2.7 and RFC 4443 2.4 allow an error, dst[:n] holds the
// ICMP "fragmentation needed" or ICMPv6 "packet too big" for the sender.
//
// The error comes from the packet's destination: the sender's kernel drops
// a packet from one of its own addresses arriving on the TUN device, and
// reverse-path filtering wants a source routed through the tunnel, which
// the destination of a packet routed into the tunnel is.
func tooBig(dst, pkt []byte, mtu int) (n int, drop bool) {
	if len(pkt) < 1 {
		return 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		return tooBig4(dst, pkt, mtu)
	case 6:
		return tooBig6(dst, pkt, mtu)
	}
	return 0, false
}

func tooBig4(dst, pkt []byte, mtu int) (int, bool) {
	if len(pkt) < ipv4HeaderLen {
		return 0, false
	}
	frag := binary.BigEndian.Uint16(pkt[6:])
	if frag&0x4000 == 0 {
		return 0, false // no DF
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < ipv4HeaderLen || ihl > len(pkt) {
		return 0, true
	}
	src, to := [4]byte(pkt[12:16]), [4]byte(pkt[16:20])
	if !unicast4(src) || !unicast4(to) || frag&0x1fff != 0 {
		return 0, true // nobody to tell, or not the first fragment
	}
	if pkt[9] == unix.IPPROTO_ICMP && ihl < len(pkt) && isICMPv4Error(pkt[ihl]) {
		return 0, true
	}
	quote := min(len(pkt), icmpv4Quote-ipv4HeaderLen-8)
	n := ipv4HeaderLen + 8 + quote
	if len(dst) < n {
		return 0, true
	}
	h := dst[:ipv4HeaderLen]
	clear(h)
	h[0] = 0x45
	h[1] = 0xc0 // internetwork control, as routers send errors (RFC 1812 4.3.2.5)
	binary.BigEndian.PutUint16(h[2:], uint16(n))
	h[8] = 64
	h[9] = unix.IPPROTO_ICMP
	copy(h[12:16], to[:])
	copy(h[16:20], src[:])
	binary.BigEndian.PutUint16(h[10:], checksum(h, 0))
	m := dst[ipv4HeaderLen:n]
	m[0], m[1] = 3, 4 // destination unreachable, fragmentation needed and DF set
	clear(m[2:8])
	binary.BigEndian.PutUint16(m[6:], uint16(mtu)) // next-hop MTU (RFC 1191 4)
	copy(m[8:], pkt[:quote])
	binary.BigEndian.PutUint16(m[2:], checksum(m, 0))
	return n, true
}

func unicast4(a [4]byte) bool {
	return a[0] != 0 && a[0] != 127 && a[0] < 224 && a != [4]byte{255, 255, 255, 255}
}

func isICMPv4Error(typ byte) bool {
	switch typ {
	case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
		return true
	}
	return false
}

func tooBig6(dst, pkt []byte, mtu int) (int, bool) {
	if len(pkt) <= minIPv6MTU {
		return 0, false
	}
	if len(pkt) < ipv6HeaderLen {
		return 0, true
	}
	src, to := pkt[8:24], pkt[24:40]
	if !unicast6([16]byte(src)) || !unicast6([16]byte(to)) {
		return 0, true
	}
	// An ICMPv6 error (type below 128) right after the fixed header gets
	// no error back; one behind extension headers is not looked for.
	if pkt[6] == unix.IPPROTO_ICMPV6 && len(pkt) > ipv6HeaderLen && pkt[ipv6HeaderLen] < 128 {
		return 0, true
	}
	quote := min(len(pkt), minIPv6MTU-ipv6HeaderLen-8)
	n := ipv6HeaderLen + 8 + quote
	if len(dst) < n {
		return 0, true
	}
	h := dst[:ipv6HeaderLen]
	clear(h)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(n-ipv6HeaderLen))
	h[6] = unix.IPPROTO_ICMPV6
	h[7] = 64
	copy(h[8:24], to)
	copy(h[24:40], src)
	m := dst[ipv6HeaderLen:n]
	m[0], m[1] = 2, 0 // packet too big
	clear(m[2:4])
	binary.BigEndian.PutUint32(m[4:], uint32(max(mtu, minIPv6MTU)))
	copy(m[8:], pkt[:quote])
	binary.BigEndian.PutUint16(m[2:], checksum(m, pseudoSum6(h[8:24], h[24:40], len(m), unix.IPPROTO_ICMPV6)))
	return n, true
}

func unicast6(a [16]byte) bool {
	return a[0] != 0xff && a != [16]byte{} && a != [16]byte{15: 1}
}

// pseudoSum6 is the unfolded sum of the IPv6 pseudo-header (RFC 8200 8.1).
func pseudoSum6(src, dst []byte, length int, proto uint8) uint32 {
	var s uint32
	for i := 0; i < 16; i += 2 {
		s += uint32(binary.BigEndian.Uint16(src[i:])) + uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	return s + uint32(length>>16) + uint32(length&0xffff) + uint32(proto)
}

// mtuRefreshSeconds is how often an idle peer's path MTU is derived again
// between moves: the kernel may have learnt a smaller one from ICMP sent
// by a router on the path. A peer we sent ESP to in the last second is
// refreshed every second: until then the kernel fragments what we send it.
const mtuRefreshSeconds = 5

// maybeRefreshMTU refreshes p's path MTU when its turn has come (the
// keepalive loop calls it every second).
func (d *Dataplane) maybeRefreshMTU(p *Peer, now time.Time) {
	if now.Unix()%mtuRefreshSeconds == p.mtuPhase || now.UnixNano()-p.lastESP.Load() < int64(time.Second) {
		d.refreshMTU(p)
	}
}

// resolvePathMTU is resolvePath with the path's MTU, for the paths ESP
// takes (an IKE message's path needs none).
func (d *Dataplane) resolvePathMTU(p *Peer, path Path) *peerPath {
	pp := d.resolvePath(path)
	pp.mtu = d.pathInnerMTU(path, pp.conn)
	pp.noGSOUntil = time.Now().Add(pmtuProbe).UnixNano()
	pp.probe = d.newProbe(p)
	return pp
}

// pmtuProbe is how long a new path's packets go out without UDP GSO. The
// kernel sets DF only on a datagram no larger than the path MTU it knows,
// which a GSO datagram never is: segmented sends carry no DF, a smaller
// link on the new path fragments them silently, and neither the kernel nor
// roam learns its MTU. Single datagrams carry DF, so the router's ICMP
// reaches the kernel's route cache and the next MTU refresh (every second
// while ESP flows) brings it to the dataplane. The pause ends sooner for
// datagrams of a size that has shown it fits (gsoprobe.go).
const pmtuProbe = 2 * time.Second

// clampInbound lowers the MSS of a TCP SYN from the peer to the path's
// MTU, so the host behind our TUN device sends segments that fit.
func (d *Dataplane) clampInbound(pkt []byte, p *Peer) {
	if mtu := p.path.Load().mtu; mtu > 0 && clampMSS(pkt, mtu) {
		d.mssClamped.Add(1)
	}
}

// MTUStats count what the dataplane did to hold packets to path MTUs.
type MTUStats struct {
	// ICMPTooBig: ICMP "fragmentation needed" and ICMPv6 "packet too
	// big" messages written to the TUN device.
	ICMPTooBig uint64
	// MSSClamped: TCP SYNs whose MSS option was lowered.
	MSSClamped uint64
}

// MTUStats returns the path MTU counters.
func (d *Dataplane) MTUStats() MTUStats {
	return MTUStats{ICMPTooBig: d.icmpTooBig.Load(), MSSClamped: d.mssClamped.Load()}
}
