package esp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// countTUN is an in-memory wgtun.Device that moves packets without
// allocating, so an allocation count over the dataplane sees only the
// dataplane's own: Read hands out as many copies of pkt as the number that
// arrives on in, Write copies each packet into a buffer taken from free and
// passes it on out; the reader hands it back to free.
type countTUN struct {
	tunBase
	pkt       []byte
	in        chan int
	out, free chan []byte
}

func newCountTUN(pkt []byte) *countTUN {
	f := &countTUN{tunBase: newTUNBase("count", 64), pkt: pkt, in: make(chan int), out: make(chan []byte, 1), free: make(chan []byte, 1)}
	f.free <- make([]byte, maxPacket)
	return f
}

func (f *countTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case n := <-f.in:
		for i := range n {
			sizes[i] = copy(bufs[i][offset:], f.pkt)
		}
		return n, nil
	case <-f.closed:
		return 0, os.ErrClosed
	}
}
func (f *countTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		var buf []byte
		select {
		case buf = <-f.free:
		case <-f.closed:
			return 0, os.ErrClosed
		}
		select {
		case f.out <- buf[:copy(buf[:cap(buf)], b[offset:])]:
		case <-f.closed:
			return 0, os.ErrClosed
		}
	}
	return len(bufs), nil
}

// countRig is a running dataplane over a countTUN and a loopback socket,
// with the peer of its one Child SA: a plain socket that reads what the
// dataplane sends (the kernel splits GSO datagrams for it), and one of our
// Sockets whose batch writer sends to it.
type countRig struct {
	tun      *countTUN
	d        *Dataplane
	sock     *Socket // the dataplane's
	peerConn *net.UDPConn
	peerSock *Socket
	peerIn   *InboundSA  // opens what the dataplane sends
	peerOut  *OutboundSA // seals what the dataplane opens
}

// startCountRig starts a countRig whose TUN device reads copies of outPkt,
// and stops it when tb ends.
func startCountRig(tb testing.TB, outPkt []byte) *countRig {
	tb.Helper()
	r := &countRig{tun: newCountTUN(outPkt)}
	r.d = NewDataplane(r.tun, ignoreIKE, nil)
	r.sock = listenLoopback(tb)
	r.d.AddSocket(r.sock)
	var err error
	if r.peerConn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.peerConn.Close() })
	r.peerSock = listenLoopback(tb)

	kOut, kIn := keyMat(20), keyMat(36)
	out, _ := NewOutboundSA(0x1001, kOut, false)
	in, _ := NewInboundSA(0x2002, kIn, false)
	r.peerIn, _ = NewInboundSA(0x1001, kOut, false)
	r.peerOut, _ = NewOutboundSA(0x2002, kIn, false)
	peer := r.d.NewPeer(Path{Local: r.sock.LocalAddr(), Remote: r.peerConn.LocalAddr().(*net.UDPAddr).AddrPort()})
	if err := r.d.InstallChild(peer, ChildConfig{In: in, Out: out, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.200.0/24")}}); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.d.Run(ctx) }()
	tb.Cleanup(func() { cancel(); r.tun.Close(); <-done })
	return r
}

// TestZeroAllocsPerPacket drives one dataplane over a real loopback UDP
// socket, with a socket of the test's as the peer, and counts heap
// allocations in steady state: outbound (TUN read, seal, send) and inbound
// (receive, open, TUN write) must allocate nothing, for single packets and
// for bursts big enough to be sent as one GSO datagram, received as one
// GRO datagram, and (64 packets: more than one GSO datagram holds) have
// their crypto split across workers.
func TestZeroAllocsPerPacket(t *testing.T) {
	if testing.Short() {
		t.Skip("drives real sockets")
	}
	for _, burst := range []int{1, 64} {
		t.Run(fmt.Sprintf("burst %d", burst), func(t *testing.T) { testZeroAllocs(t, burst) })
	}
}

func testZeroAllocs(t *testing.T, burst int) {
	const runs = 500
	inner := ipv4Packet(1200)
	copy(inner[12:16], []byte{10, 99, 0, 10})  // from behind the peer ...
	copy(inner[16:20], []byte{10, 99, 200, 7}) // ... to us, for inbound
	outPkt := ipv4Packet(1200)                 // us to behind the peer

	r := startCountRig(t, outPkt)
	tun, d, sock, peerConn, peerSock, peerIn, peerOut := r.tun, r.d, r.sock, r.peerConn, r.peerSock, r.peerIn, r.peerOut
	var err error

	// Sealed before counting: the test's own Seal allocates.
	sealed := make([][]byte, (runs+1)*burst)
	for i := range sealed {
		if sealed[i], err = peerOut.Seal(nil, inner); err != nil {
			t.Fatal(err)
		}
	}
	toUs := &peerPath{Path: Path{Remote: sock.LocalAddr()}, sock: peerSock}
	pkts := make([]outPacket, burst)
	sb := newSendBatch(burst)
	rbuf := make([]byte, maxPacket)
	lastOut := make([]byte, 0, maxPacket)

	// A packet the dataplane drops must fail the test, not hang it: the
	// waits below end at one deadline (set up before counting, so it
	// allocates nothing per run).
	deadline, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	peerConn.SetReadDeadline(time.Now().Add(time.Minute))
	var failed string
	outbound := testing.AllocsPerRun(runs, func() {
		tun.in <- burst
		for range burst {
			n, _, err := peerConn.ReadFromUDPAddrPort(rbuf)
			if err != nil {
				failed = err.Error()
				return
			}
			lastOut = append(lastOut[:0], rbuf[:n]...)
		}
	})
	if failed != "" {
		t.Fatal(failed)
	}
	// Opened after counting: the test's own Open allocates.
	if got, err := peerIn.Open(nil, lastOut); err != nil || !bytes.Equal(got, outPkt) {
		t.Fatalf("outbound packet did not open to the inner packet: %v", err)
	}
	next := 0
	inbound := testing.AllocsPerRun(runs, func() {
		for i := range pkts {
			pkts[i] = outPacket{buf: sealed[next], pp: toUs}
			next++
		}
		if n := peerSock.writeBatch(sb, pkts); n != 0 {
			failed = "the peer's send failed"
			return
		}
		for range burst {
			var got []byte
			select {
			case got = <-tun.out:
			case <-deadline.Done():
				failed = fmt.Sprintf("inbound packet never reached the TUN (drops %+v)", d.Drops())
				return
			}
			if !bytes.Equal(got, inner) {
				failed = "inbound packet did not reach the TUN intact"
			}
			tun.free <- got
		}
	})
	if failed != "" {
		t.Fatal(failed)
	}
	t.Logf("allocations per burst of %d: outbound %v, inbound %v", burst, outbound, inbound)
	if outbound != 0 || inbound != 0 {
		t.Errorf("allocations per burst of %d: outbound %v, inbound %v, want 0 and 0", burst, outbound, inbound)
	}
}
