package esp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPacket builds an IPv4 or IPv6 TCP segment from src to dst with the
// given flags, options and payload length, its checksum correct.
func tcpPacket(src, dst netip.Addr, flags byte, opts []byte, payload int) []byte {
	tcpLen := tcpHeaderLen + len(opts) + payload
	var pkt []byte
	if src.Is4() {
		pkt = make([]byte, ipv4HeaderLen+tcpLen)
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[6:], 0x4000) // DF
		pkt[8], pkt[9] = 64, 6
		copy(pkt[12:], src.AsSlice())
		copy(pkt[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:ipv4HeaderLen], 0))
	} else {
		pkt = make([]byte, ipv6HeaderLen+tcpLen)
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(tcpLen))
		pkt[6], pkt[7] = 6, 64
		copy(pkt[8:], src.AsSlice())
		copy(pkt[24:], dst.AsSlice())
	}
	tcp := pkt[len(pkt)-tcpLen:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 0x01020304)
	tcp[12] = byte((tcpHeaderLen+len(opts))/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[tcpHeaderLen:], opts)
	for i := tcpHeaderLen + len(opts); i < len(tcp); i++ {
		tcp[i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, tcpPseudoSum(pkt, len(tcp))))
	return pkt
}

// tcpPseudoSum is the pseudo-header sum of pkt's TCP segment of length n.
func tcpPseudoSum(pkt []byte, n int) uint32 {
	if pkt[0]>>4 == 4 {
		var s uint32
		for i := 12; i < 20; i += 2 {
			s += uint32(binary.BigEndian.Uint16(pkt[i:]))
		}
		return s + 6 + uint32(n)
	}
	return pseudoSum6(pkt[8:24], pkt[24:40], n, 6)
}

// tcpChecksumOK verifies the TCP checksum of an unfragmented segment.
func tcpChecksumOK(t *testing.T, pkt []byte) bool {
	t.Helper()
	tcp, _, ok := tcpSYN(pkt)
	if !ok {
		t.Fatal("not a TCP SYN")
	}
	return checksum(tcp, tcpPseudoSum(pkt, len(tcp))) == 0
}

func mssOption(mss uint16) []byte { return []byte{2, 4, byte(mss >> 8), byte(mss)} }

var (
	v4a, v4b = netip.MustParseAddr("10.99.200.7"), netip.MustParseAddr("10.99.0.10")
	v6a, v6b = netip.MustParseAddr("fd00::7"), netip.MustParseAddr("fd00:99::10")
)

func TestInnerMTU(t *testing.T) {
	for _, tc := range []struct {
		link int
		v6   bool
		want int
	}{
		{1500, false, 1438}, // 1500-20-8-8-8-16 = 1440, minus the trailer's 2
		{1500, true, 1418},
		{1280, false, 1218},
		{1280, true, 1198},
		{1281, false, 1218}, // 1229 available: the ciphertext stays 4-aligned
		{9000, false, 8938},
		{60, false, 0},
		{0, true, 0},
	} {
		got := InnerMTU(tc.link, tc.v6)
		if got != tc.want {
			t.Errorf("InnerMTU(%d, v6 %v) = %d, want %d", tc.link, tc.v6, got, tc.want)
		}
		outer := 20
		if tc.v6 {
			outer = 40
		}
		if got > 0 {
			pad := (4 - (got+2)%4) % 4
			if size := outer + 8 + headerLen + ivLen + got + pad + 2 + icvLen; size > tc.link {
				t.Errorf("InnerMTU(%d): ESP packet of %d bytes", tc.link, size)
			}
		}
	}
}

func TestClampMSS(t *testing.T) {
	const syn, synAck, ack = 0x02, 0x12, 0x10
	opts := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	sack, wscale := []byte{4, 2}, []byte{1, 3, 3, 7}
	for _, tc := range []struct {
		name    string
		pkt     []byte
		mtu     int
		wantMSS int // 0: the packet must stay as it is
	}{
		{"v4 SYN 1460 to 1218", tcpPacket(v4a, v4b, syn, mssOption(1460), 0), 1218, 1178},
		{"v4 SYN-ACK", tcpPacket(v4b, v4a, synAck, mssOption(1460), 0), 1218, 1178},
		{"v6 SYN 1440 to 1198", tcpPacket(v6a, v6b, syn, mssOption(1440), 0), 1198, 1138},
		{"v4 MSS after others", tcpPacket(v4a, v4b, syn, opts(sack, wscale, mssOption(9000), []byte{1, 1}), 0), 1418, 1378},
		{"v4 MSS at an odd offset", tcpPacket(v4a, v4b, syn, opts([]byte{1}, mssOption(1460), []byte{1, 1, 1}), 0), 1218, 1178},
		{"v6 MSS at an odd offset", tcpPacket(v6a, v6b, syn, opts([]byte{1, 1, 1}, mssOption(65495), []byte{1}), 0), 1280, 1220},
		{"already small", tcpPacket(v4a, v4b, syn, mssOption(1000), 0), 1218, 0},
		{"exactly the limit", tcpPacket(v4a, v4b, syn, mssOption(1178), 0), 1218, 0},
		{"no MSS option", tcpPacket(v4a, v4b, syn, opts(sack, []byte{1, 1}), 0), 1218, 0},
		{"not a SYN", tcpPacket(v4a, v4b, ack, mssOption(1460), 100), 1218, 0},
		{"end of options first", tcpPacket(v4a, v4b, syn, opts([]byte{0, 1, 1, 1}, mssOption(1460)), 0), 1218, 0},
		{"option length 0", tcpPacket(v4a, v4b, syn, opts([]byte{8, 0, 1, 1}, mssOption(1460)), 0), 1218, 0},
		{"option past the header", tcpPacket(v4a, v4b, syn, []byte{1, 1, 2, 4}, 2), 1218, 0},
		{"no MTU", tcpPacket(v4a, v4b, syn, mssOption(1460), 0), 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := bytes.Clone(tc.pkt)
			changed := clampMSS(tc.pkt, tc.mtu)
			if tc.wantMSS == 0 {
				if changed || !bytes.Equal(tc.pkt, before) {
					t.Fatalf("packet changed (reported %v)", changed)
				}
				return
			}
			if !changed {
				t.Fatal("MSS not clamped")
			}
			tcp, _, _ := tcpSYN(tc.pkt)
			if i := bytes.Index(tcp[tcpHeaderLen:], []byte{2, 4}); i < 0 || int(binary.BigEndian.Uint16(tcp[tcpHeaderLen+i+2:])) != tc.wantMSS {
				t.Fatalf("options % x, want MSS %d", tcp[tcpHeaderLen:], tc.wantMSS)
			}
			if !tcpChecksumOK(t, tc.pkt) {
				t.Fatal("TCP checksum wrong after the clamp")
			}
		})
	}
}

func TestClampMSSSkips(t *testing.T) {
	frag := tcpPacket(v4a, v4b, 0x02, mssOption(1460), 0)
	binary.BigEndian.PutUint16(frag[6:], 0x2000) // MF
	udp := ipv4Packet(100)
	v6frag := tcpPacket(v6a, v6b, 0x02, mssOption(1460), 0)
	v6frag[6] = 44
	short := tcpPacket(v4a, v4b, 0x02, mssOption(1460), 0)
	binary.BigEndian.PutUint16(short[2:], 200) // longer than the packet
	for name, pkt := range map[string][]byte{"v4 fragment": frag, "UDP": udp, "v6 fragment header": v6frag, "bad length": short, "empty": nil, "version 5": {0x50}} {
		if clampMSS(pkt, 1218) {
			t.Errorf("%s: clamped", name)
		}
	}
	// Behind a hop-by-hop header the SYN is still found.
	p := tcpPacket(v6a, v6b, 0x02, mssOption(1440), 0)
	hbh := append(append(bytes.Clone(p[:40]), 6, 0, 1, 4, 0, 0, 0, 0), p[40:]...)
	hbh[6] = 0
	binary.BigEndian.PutUint16(hbh[4:], uint16(len(hbh)-40))
	if !clampMSS(hbh, 1198) {
		t.Fatal("SYN behind a hop-by-hop header not clamped")
	}
	tcp := hbh[48:]
	if got := binary.BigEndian.Uint16(tcp[22:]); got != 1138 || checksum(tcp, pseudoSum6(hbh[8:24], hbh[24:40], len(tcp), 6)) != 0 {
		t.Fatalf("MSS %d, checksum ok %v", got, checksum(tcp, pseudoSum6(hbh[8:24], hbh[24:40], len(tcp), 6)) == 0)
	}
}

func TestTooBig(t *testing.T) {
	big4 := tcpPacket(v4a, v4b, 0x10, nil, 1400)
	noDF := bytes.Clone(big4)
	binary.BigEndian.PutUint16(noDF[6:], 0)
	mcast := bytes.Clone(big4)
	copy(mcast[16:], []byte{239, 1, 2, 3})
	icmpErr := bytes.Clone(big4)
	icmpErr[9], icmpErr[20] = 1, 3
	echo := bytes.Clone(big4)
	echo[9], echo[20] = 1, 8
	laterFrag := bytes.Clone(big4)
	binary.BigEndian.PutUint16(laterFrag[6:], 0x4000|100)
	big6 := tcpPacket(v6a, v6b, 0x10, nil, 1400)
	mid6 := tcpPacket(v6a, v6b, 0x10, nil, 1220) // 1280 bytes: every IPv6 path carries it
	icmp6Err := bytes.Clone(big6)
	icmp6Err[6], icmp6Err[40] = 58, 1
	for _, tc := range []struct {
		name       string
		pkt        []byte
		mtu        int
		drop, icmp bool
		wantMTU    int
	}{
		{"v4 DF", big4, 1218, true, true, 1218},
		{"v4 without DF is sent", noDF, 1218, false, false, 0},
		{"v4 to multicast", mcast, 1218, true, false, 0},
		{"v4 ICMP error", icmpErr, 1218, true, false, 0},
		{"v4 ICMP echo", echo, 1218, true, true, 1218},
		{"v4 later fragment", laterFrag, 1218, true, false, 0},
		{"v6", big6, 1418, true, true, 1418},
		{"v6 below 1280 reports 1280", big6, 1198, true, true, 1280},
		{"v6 of 1280 bytes is sent", mid6, 1198, false, false, 0},
		{"v6 ICMPv6 error", icmp6Err, 1198, true, false, 0},
		{"not IP", []byte{0x10, 1, 2}, 1, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, minIPv6MTU)
			n, drop := tooBig(buf, tc.pkt, tc.mtu)
			if drop != tc.drop || (n > 0) != tc.icmp {
				t.Fatalf("drop %v, reply of %d bytes; want drop %v, reply %v", drop, n, tc.drop, tc.icmp)
			}
			if n == 0 {
				return
			}
			checkTooBig(t, buf[:n], tc.pkt, tc.wantMTU)
		})
	}
}

// checkTooBig verifies an ICMP reply to orig: addresses swapped, checksums
// right, the MTU reported and the start of orig quoted.
func checkTooBig(t *testing.T, r, orig []byte, mtu int) {
	t.Helper()
	if r[0]>>4 == 4 {
		if len(r) > icmpv4Quote || int(binary.BigEndian.Uint16(r[2:])) != len(r) || checksum(r[:20], 0) != 0 {
			t.Fatalf("bad IPv4 header % x (length %d)", r[:20], len(r))
		}
		if !bytes.Equal(r[12:16], orig[16:20]) || !bytes.Equal(r[16:20], orig[12:16]) || r[9] != 1 {
			t.Fatalf("ICMP from %v to %v proto %d", r[12:16], r[16:20], r[9])
		}
		m := r[20:]
		if m[0] != 3 || m[1] != 4 || int(binary.BigEndian.Uint16(m[6:])) != mtu || checksum(m, 0) != 0 {
			t.Fatalf("ICMP type %d code %d MTU %d checksum ok %v", m[0], m[1], binary.BigEndian.Uint16(m[6:]), checksum(m, 0) == 0)
		}
		if !bytes.Equal(m[8:], orig[:len(m)-8]) {
			t.Fatal("quote is not the start of the packet")
		}
		return
	}
	if len(r) > minIPv6MTU || int(binary.BigEndian.Uint16(r[4:])) != len(r)-40 || r[6] != 58 {
		t.Fatalf("bad IPv6 header % x (length %d)", r[:40], len(r))
	}
	if !bytes.Equal(r[8:24], orig[24:40]) || !bytes.Equal(r[24:40], orig[8:24]) {
		t.Fatal("addresses not swapped")
	}
	m := r[40:]
	if m[0] != 2 || m[1] != 0 || int(binary.BigEndian.Uint32(m[4:])) != mtu || checksum(m, pseudoSum6(r[8:24], r[24:40], len(m), 58)) != 0 {
		t.Fatalf("ICMPv6 type %d code %d MTU %d", m[0], m[1], binary.BigEndian.Uint32(m[4:]))
	}
	if !bytes.Equal(m[8:], orig[:len(m)-8]) {
		t.Fatal("quote is not the start of the packet")
	}
}

func TestRateLimit(t *testing.T) {
	var r rateLimit
	now := time.Now().UnixNano()
	n := 0
	for range 100 {
		if r.allow(now) {
			n++
		}
	}
	if n != icmpBurst {
		t.Fatalf("%d allowed at once, want the burst of %d", n, icmpBurst)
	}
	if !r.allow(now + int64(icmpInterval)) {
		t.Fatal("nothing allowed one interval later")
	}
	if r.allow(now + int64(icmpInterval)) {
		t.Fatal("two allowed in one interval after the burst")
	}
}

// TestPathFitNoAlloc: holding a packet to the path costs no allocation,
// whether it fits, has its MSS clamped, or is answered with ICMP.
func TestPathFitNoAlloc(t *testing.T) {
	d := NewDataplane(newFakeTUNDiscard(), nil, nil)
	f := d.newPathFit()
	data := tcpPacket(v4a, v4b, 0x10, nil, 1000)
	syn := tcpPacket(v4a, v4b, 0x02, mssOption(1460), 0)
	big := tcpPacket(v4a, v4b, 0x10, nil, 1400)
	for name, pkt := range map[string][]byte{"fits": data, "SYN": syn, "too big": big} {
		if a := testing.AllocsPerRun(100, func() {
			binary.BigEndian.PutUint16(syn[len(syn)-2:], 1460)
			f.fits(pkt, 1218)
		}); a != 0 {
			t.Errorf("%s: %v allocations per packet", name, a)
		}
	}
	if d.Drops().TooBig == 0 || d.MTUStats().ICMPTooBig == 0 || d.MTUStats().MSSClamped == 0 {
		t.Fatalf("drops %+v, MTU stats %+v", d.Drops(), d.MTUStats())
	}
}

// discardTUN is a TUN device that accepts writes and never has a packet.
type discardTUN struct{ *fakeTUN }

func newFakeTUNDiscard() discardTUN { return discardTUN{newFakeTUN()} }

func (discardTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }

// TestLoopbackPathMTU runs the hooks end to end over two dataplanes whose
// uplink MTU is 1280: a SYN is clamped on the way out and on the way in,
// a DF packet too big is answered on the sender's TUN device and dropped,
// and a move to a path with a larger MTU lets it through.
func TestLoopbackPathMTU(t *testing.T) {
	var uplink atomic.Int64 // the MTU the "kernel" reports for every path
	uplink.Store(1280)
	p := newLoopbackPairWith(t, func(d *Dataplane) { d.linkMTU = linkMTUOf(&uplink) })
	a, tunA, tunB := p.a, p.tunA, p.tunB
	remoteB := p.sb.LocalAddr()
	peerOfA, peerOfB := p.peers()
	c := clientGatewayChild(0xb0b, 0xa11ce, keyMat(36), keyMat(20))
	c.esnDown = true
	p.install(t, peerOfA, peerOfB, c)
	if peerOfA.MTU() != 1218 {
		t.Fatalf("A's path MTU %d, want 1218 for a 1280 uplink", peerOfA.MTU())
	}
	mssOf := func(pkt []byte) int {
		tcp, _, _ := tcpSYN(pkt)
		return int(binary.BigEndian.Uint16(tcp[22:]))
	}

	tunA.in <- tcpPacket(v4a, v4b, 0x02, mssOption(1460), 0)
	if got := recvPacket(t, tunB); mssOf(got) != 1178 || !tcpChecksumOK(t, got) {
		t.Fatalf("outbound SYN arrived with MSS %d", mssOf(got))
	}
	tunB.in <- tcpPacket(v4b, v4a, 0x12, mssOption(1460), 0)
	if got := recvPacket(t, tunA); mssOf(got) != 1178 || !tcpChecksumOK(t, got) {
		t.Fatalf("inbound SYN-ACK written with MSS %d", mssOf(got))
	}

	big := tcpPacket(v4a, v4b, 0x10, nil, 1300)
	tunA.in <- big
	checkTooBig(t, recvPacket(t, tunA), big, 1218)
	if d := a.Drops(); d.TooBig != 1 {
		t.Fatalf("drops %+v, want one too big", d)
	}
	// A move to a larger uplink lets the same packet through; a refresh
	// sees the MTU shrink again.
	uplink.Store(1500)
	a.SetPath(peerOfA, Path{Local: p.sa.LocalAddr(), Remote: remoteB})
	if peerOfA.MTU() != 1438 {
		t.Fatalf("after the move A's path MTU is %d, want 1438", peerOfA.MTU())
	}
	uplink.Store(1280)
	a.refreshMTU(peerOfA)
	if peerOfA.MTU() != 1218 {
		t.Fatalf("after the refresh A's path MTU is %d, want 1218", peerOfA.MTU())
	}
	uplink.Store(1500)
	a.refreshMTU(peerOfA)
	tunA.in <- big
	if got := recvPacket(t, tunB); !bytes.Equal(got, big) {
		t.Fatal("the packet that fits the new path did not arrive intact")
	}
}

func FuzzClampMSS(f *testing.F) {
	f.Add(tcpPacket(v4a, v4b, 0x02, mssOption(1460), 0), 1218)
	f.Add(tcpPacket(v6a, v6b, 0x12, append([]byte{1}, append(mssOption(9000), 1, 1, 1)...), 0), 1198)
	f.Add(ipv4Packet(10), 576)
	f.Fuzz(func(t *testing.T, pkt []byte, mtu int) {
		before := bytes.Clone(pkt)
		tcp, _, isSYN := tcpSYN(pkt)
		sumOK := isSYN && checksum(tcp, tcpPseudoSum(pkt, len(tcp))) == 0
		if !clampMSS(pkt, mtu) {
			if !bytes.Equal(pkt, before) {
				t.Fatal("packet changed without a clamp")
			}
			return
		}
		diff := 0
		for i := range pkt {
			if pkt[i] != before[i] {
				diff++
			}
		}
		if diff > 4 {
			t.Fatalf("%d bytes changed; only the MSS and the checksum may", diff)
		}
		if sumOK && checksum(tcp, tcpPseudoSum(pkt, len(tcp))) != 0 {
			t.Fatal("a valid checksum broken by the clamp")
		}
	})
}

func FuzzTooBig(f *testing.F) {
	f.Add(tcpPacket(v4a, v4b, 0x10, nil, 1400), uint16(1218))
	f.Add(tcpPacket(v6a, v6b, 0x10, nil, 1400), uint16(1198))
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0x40, 0}, uint16(8))
	f.Fuzz(func(t *testing.T, pkt []byte, m uint16) {
		// The dataplane asks only about packets larger than the path's
		// MTU, which is at least 68 (RFC 791).
		if len(pkt) <= 69 {
			return
		}
		mtu := 68 + int(m)%(len(pkt)-68)
		buf := make([]byte, minIPv6MTU)
		n, drop := tooBig(buf, pkt, mtu)
		if n > 0 && !drop {
			t.Fatal("an ICMP reply for a packet that is sent")
		}
		if n == 0 {
			return
		}
		if pkt[0]>>4 == 4 {
			checkTooBig(t, buf[:n], pkt, mtu)
		} else {
			checkTooBig(t, buf[:n], pkt, max(mtu, minIPv6MTU))
		}
	})
}

// TestKernelLinkMTU asks the kernel for real: the path to 127.0.0.1 leaves
// by the loopback device, whose MTU it reports.
func TestKernelLinkMTU(t *testing.T) {
	s := listenLoopback(t)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no loopback device:", err)
	}
	got, err := kernelLinkMTU(Path{Local: s.LocalAddr(), Remote: netip.MustParseAddrPort("127.0.0.1:4500")}, s)
	if err != nil {
		t.Fatal(err)
	}
	if got != lo.MTU {
		t.Fatalf("link MTU %d, want lo's %d", got, lo.MTU)
	}
	d := NewDataplane(nil, nil, nil)
	if got, want := d.pathInnerMTU(Path{Remote: netip.MustParseAddrPort("127.0.0.1:4500")}, s), InnerMTU(lo.MTU, false); got != want {
		t.Fatalf("inner MTU %d, want %d", got, want)
	}
}

// linkMTUOf is a Dataplane.linkMTU that reports uplink for every path, as
// a kernel would for a link whose MTU the test sets.
func linkMTUOf(uplink *atomic.Int64) func(Path, *Socket) (int, error) {
	return func(Path, *Socket) (int, error) { return int(uplink.Load()), nil }
}

// newMTUDataplane is a dataplane, not running, with linkMTUOf(uplink) and
// one socket on 127.0.0.1 that is closed when the test ends.
func newMTUDataplane(t *testing.T, uplink *atomic.Int64) (*Dataplane, *Socket) {
	t.Helper()
	d := NewDataplane(nil, nil, nil)
	d.linkMTU = linkMTUOf(uplink)
	s := listenLoopback(t)
	d.AddSocket(s)
	return d, s
}

// TestMaybeRefreshMTU: a peer with ESP sent in the last second has its
// path MTU derived again every second, an idle one only on its turn.
func TestMaybeRefreshMTU(t *testing.T) {
	var uplink atomic.Int64
	uplink.Store(1500)
	d, s := newMTUDataplane(t, &uplink)
	base := time.Unix(1_000_000_000, 0) // a multiple of the interval
	for _, tc := range []struct {
		name   string
		active bool
		at     time.Time
		want   int
	}{
		{"idle, not its turn", false, base.Add(time.Second), 1438},
		{"idle, its turn", false, base, 1218},
		{"active", true, base.Add(time.Second), 1218},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uplink.Store(1500)
			p := d.NewPeer(Path{Local: s.LocalAddr(), Remote: netip.MustParseAddrPort("127.0.0.1:4500")})
			p.mtuPhase = 0
			if tc.active {
				p.lastESP.Store(tc.at.Add(-100 * time.Millisecond).UnixNano())
			}
			uplink.Store(1280)
			d.maybeRefreshMTU(p, tc.at)
			if p.MTU() != tc.want {
				t.Fatalf("path MTU %d, want %d", p.MTU(), tc.want)
			}
		})
	}
}
