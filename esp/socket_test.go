package esp

import (
	"bytes"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// batchPackets makes n packets of size bytes (the last one last bytes),
// each filled with its own index so reordering or mixing shows.
func batchPackets(n, size, last int, pp *peerPath) []outPacket {
	pkts := make([]outPacket, n)
	for i := range pkts {
		l := size
		if i == n-1 {
			l = last
		}
		pkts[i] = outPacket{buf: bytes.Repeat([]byte{byte(i + 1)}, l), pp: pp}
	}
	return pkts
}

// readPackets reads datagrams from s, split at their GRO segment size, until
// it has n packets, and returns them with the number of datagrams read.
func readPackets(t *testing.T, s *Socket, n int) (pkts [][]byte, datagrams int) {
	t.Helper()
	rb := newRecvBatch(8, nil)
	for len(pkts) < n {
		count, err := s.readBatch(rb)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < count; i++ {
			data, _, ok, truncated, ctl := rb.message(i)
			if !ok || truncated {
				t.Fatalf("message %d: ok %v truncated %v", i, ok, truncated)
			}
			// The kernel stamps what it queues for us (SO_TIMESTAMPNS),
			// on the wall clock the receive loop compares it with.
			if age := time.Since(time.Unix(0, ctl.stamp)); ctl.stamp == 0 || age < -time.Minute || age > time.Minute {
				t.Fatalf("message %d: receive stamp %d (%v old)", i, ctl.stamp, age)
			}
			datagrams++
			seg := ctl.segment
			if seg <= 0 || seg > len(data) {
				seg = len(data)
			}
			for len(data) > 0 {
				l := min(seg, len(data))
				pkts = append(pkts, append([]byte(nil), data[:l]...))
				data = data[l:]
			}
		}
	}
	return pkts, datagrams
}

func checkPackets(t *testing.T, got [][]byte, want []outPacket) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i].buf) {
			t.Fatalf("packet %d: %d bytes of %d, want %d of %d", i, len(got[i]), got[i][0], len(want[i].buf), want[i].buf[0])
		}
	}
}

// TestSocketBatch sends batches over loopback with and without UDP GSO and
// GRO: every packet arrives once, intact and in order, and with both on
// the kernel carries a run of equal packets as fewer datagrams.
func TestSocketBatch(t *testing.T) {
	tests := []struct {
		name          string
		gso, gro      bool
		n, size, last int
	}{
		{"plain", false, false, 20, 1000, 1000},
		{"gso", true, false, 20, 1000, 400},
		{"gro", false, true, 20, 1000, 1000},
		{"gso+gro", true, true, 20, 1000, 400},
		{"gso capped segments", true, true, 100, 300, 300},
		{"gso capped bytes", true, true, 60, 1400, 1400},
		{"gso longer last", true, true, 10, 500, 900},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snd, rcv := listenLoopback(t), listenLoopback(t)
			if (tt.gso && !snd.gso.Load()) || (tt.gro && !rcv.gro) {
				t.Skip("the kernel has no UDP GSO or GRO")
			}
			snd.gso.Store(tt.gso)
			if !tt.gro {
				var serr error
				rcv.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) })
				if serr != nil {
					t.Fatal(serr)
				}
				rcv.gro = false
			}
			pp := &peerPath{Path: Path{Remote: rcv.LocalAddr()}, sock: snd}
			want := batchPackets(tt.n, tt.size, tt.last, pp)
			if failed := snd.writeBatch(newSendBatch(len(want)), want); failed != 0 {
				t.Fatalf("%d packets failed", failed)
			}
			got, datagrams := readPackets(t, rcv, len(want))
			checkPackets(t, got, want)
			if tt.gso && tt.gro && datagrams >= len(want) {
				t.Errorf("%d packets came as %d datagrams: not coalesced", len(want), datagrams)
			}
			if !snd.gso.Load() && tt.gso {
				t.Error("GSO was turned off on loopback")
			}
		})
	}
}

// TestGSOFallback sends segmented packets larger than the path MTU, which
// the kernel refuses (EINVAL) though it would fragment them one by one: the
// socket turns GSO off and every packet still arrives. It runs in its own
// network namespace whose loopback has a small MTU.
func TestGSOFallback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // this thread is in it from here
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	snd, rcv, err := func() (*Socket, *Socket, error) {
		defer netns.Set(orig)
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return nil, nil, err
		}
		if err := netlink.LinkSetMTU(lo, 1280); err != nil {
			return nil, nil, err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return nil, nil, err
		}
		snd, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0)
		if err != nil {
			return nil, nil, err
		}
		rcv, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0)
		return snd, rcv, err
	}()
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	defer rcv.Close()
	if !snd.gso.Load() {
		t.Skip("the kernel has no UDP GSO")
	}
	pp := &peerPath{Path: Path{Remote: rcv.LocalAddr()}, sock: snd}
	want := batchPackets(8, 1400, 1400, pp)
	if failed := snd.writeBatch(newSendBatch(len(want)), want); failed != 0 {
		t.Fatalf("%d packets failed", failed)
	}
	if snd.gso.Load() {
		t.Error("GSO still on after the kernel refused a segmented send")
	}
	got, _ := readPackets(t, rcv, len(want))
	checkPackets(t, got, want)
}

// TestParseControl checks the control messages the receive path reads.
func TestParseControl(t *testing.T) {
	cmsg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, unix.CmsgSpace(len(data)))
		copy(putCmsgHeader(b, level, typ, len(data)), data)
		return b
	}
	le32 := func(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
	pkt4 := append(append(le32(7), 0, 0, 0, 0), 192, 0, 2, 1)
	pkt6 := append(netip.MustParseAddr("2001:db8::1").AsSlice(), le32(9)...)
	ts := unix.NsecToTimespec(1_700_000_000_123_456_789)
	stamp := unsafe.Slice((*byte)(unsafe.Pointer(&ts)), sizeofTimespec)
	tests := []struct {
		name string
		b    []byte
		want rxControl
	}{
		{"empty", nil, rxControl{}},
		{"pktinfo4", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4), rxControl{dst: netip.MustParseAddr("192.0.2.1"), ifindex: 7}},
		{"pktinfo6", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pkt6), rxControl{dst: netip.MustParseAddr("2001:db8::1"), ifindex: 9}},
		{"all", bytes.Join([][]byte{
			cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, le32(42)),
			cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4),
			cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, le32(1200)),
		}, nil), rxControl{dst: netip.MustParseAddr("192.0.2.1"), ifindex: 7, segment: 1200, drops: 42, hasDrop: true}},
		{"truncated second", append(cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, le32(1200)), cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4)[:20]...), rxControl{segment: 1200}},
		{"short pktinfo", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4[:8]), rxControl{}},
		{"timestamp", bytes.Join([][]byte{
			cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, stamp),
			cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4),
		}, nil), rxControl{dst: netip.MustParseAddr("192.0.2.1"), ifindex: 7, stamp: 1_700_000_000_123_456_789}},
		{"short timestamp", cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, stamp[:8]), rxControl{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseControl(tt.b); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzReceiveDatagram feeds arbitrary datagrams with arbitrary control
// messages through the receive path (control parse, GRO split, demux,
// open) of a dataplane with one child: nothing may panic.
func FuzzReceiveDatagram(f *testing.F) {
	out, _ := NewOutboundSA(0x2002, keyMat(20), false)
	sealed, _ := out.Seal(nil, ipv4Packet(100))
	gro := make([]byte, unix.CmsgSpace(4))
	copy(putCmsgHeader(gro, unix.IPPROTO_UDP, unix.UDP_GRO, 4), []byte{40, 0, 0, 0})
	f.Add(sealed, []byte(nil), uint16(4500))
	f.Add(append(sealed, sealed...), gro, uint16(4500))
	f.Add([]byte{0, 0, 0, 0, 1, 2, 3}, gro, uint16(4500))
	f.Add([]byte{0xff}, []byte(nil), uint16(500))
	ts := unix.NsecToTimespec(1) // a stamp decades old: never believed
	stamp := make([]byte, unix.CmsgSpace(sizeofTimespec))
	copy(putCmsgHeader(stamp, unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, sizeofTimespec), unsafe.Slice((*byte)(unsafe.Pointer(&ts)), sizeofTimespec))
	f.Add(append(sealed, sealed...), append(stamp, gro...), uint16(4500))
	f.Fuzz(func(t *testing.T, data, ctrl []byte, port uint16) {
		tun := newFakeTUN()
		d := NewDataplane(tun, func([]byte, Path) {}, nil)
		peer := d.NewPeer(Path{Remote: netip.MustParseAddrPort("127.0.0.1:4500")})
		in, _ := NewInboundSA(0x2002, keyMat(20), false)
		out, _ := NewOutboundSA(0x1001, keyMat(20), false)
		if err := d.InstallChild(peer, ChildConfig{In: in, Out: out, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, Local: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}); err != nil {
			t.Fatal(err)
		}
		s := &Socket{local: netip.MustParseAddrPort("127.0.0.1:4500")}
		rb := newRecvBatch(1, nil)
		data = data[:min(len(data), recvBufSize)]
		copy(rb.bufs[0], data)
		rb.hdrs[0].Len = uint32(len(data))
		ctrl = ctrl[:min(len(ctrl), recvCtrlSpace)]
		copy(rb.ctrl[0][:], ctrl)
		rb.hdrs[0].Hdr.SetControllen(len(ctrl))
		rb.hdrs[0].Hdr.Namelen = putSockaddr(&rb.names[0], netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), false)
		rx := newRxState(d, s.local, 2)
		go func() {
			for range tun.out {
			}
		}()
		var m Message
		rb.fill(0, &m)
		rx.datagram(&m)
		rx.flush()
		close(tun.out)
	})
}
