package esp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// countTUN is an in-memory wgtun.Device that moves packets without
// allocating, so an allocation count over the dataplane sees only the
// dataplane's own: Read hands out the packet whose index arrives on in,
// Write copies each packet into a buffer taken from free and passes it on
// out; the reader hands it back to free.
type countTUN struct {
	pkts      [][]byte
	in        chan int
	out, free chan []byte
	closeOnce sync.Once
	closed    chan struct{}
}

func newCountTUN(pkts [][]byte) *countTUN {
	f := &countTUN{pkts: pkts, in: make(chan int), out: make(chan []byte, 1), free: make(chan []byte, 1), closed: make(chan struct{})}
	f.free <- make([]byte, maxPacket)
	return f
}

func (f *countTUN) File() *os.File { return nil }
func (f *countTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case i := <-f.in:
		sizes[0] = copy(bufs[0][offset:], f.pkts[i])
		return 1, nil
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
func (f *countTUN) MTU() (int, error)          { return 1400, nil }
func (f *countTUN) Name() (string, error)      { return "count", nil }
func (f *countTUN) Events() <-chan wgtun.Event { return nil }
func (f *countTUN) BatchSize() int             { return 8 }
func (f *countTUN) Close() error               { f.closeOnce.Do(func() { close(f.closed) }); return nil }

// TestZeroAllocsPerPacket drives one dataplane over a real loopback UDP
// socket, with a plain UDP socket as the peer, and counts heap allocations
// per packet in steady state: outbound (TUN read, seal, send) and inbound
// (receive, open, TUN write) must allocate nothing.
func TestZeroAllocsPerPacket(t *testing.T) {
	if testing.Short() {
		t.Skip("drives real sockets")
	}
	const runs = 2000
	inner := ipv4Packet(1200)
	copy(inner[12:16], []byte{10, 99, 0, 10})  // from behind the peer ...
	copy(inner[16:20], []byte{10, 99, 200, 7}) // ... to us, for inbound
	outPkt := ipv4Packet(1200)                 // us to behind the peer

	tun := newCountTUN([][]byte{outPkt})
	d := NewDataplane(tun, func([]byte, Path) {}, nil)
	sock, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	d.AddSocket(sock)
	peerConn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer peerConn.Close()
	peerAddr := peerConn.LocalAddr().(*net.UDPAddr).AddrPort()

	kOut, kIn := keyMat(20), keyMat(36)
	out, _ := NewOutboundSA(0x1001, kOut, false)
	in, _ := NewInboundSA(0x2002, kIn, false)
	peerIn, _ := NewInboundSA(0x1001, kOut, false)
	peerOut, _ := NewOutboundSA(0x2002, kIn, false)
	peer := d.NewPeer(Path{Local: sock.LocalAddr(), Remote: peerAddr})
	if err := d.InstallChild(peer, ChildConfig{In: in, Out: out, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); tun.Close(); <-done }()

	// Sealed before counting: the test's own Seal allocates.
	sealed := make([][]byte, runs+1)
	for i := range sealed {
		if sealed[i], err = peerOut.Seal(nil, inner); err != nil {
			t.Fatal(err)
		}
	}
	rbuf := make([]byte, maxPacket)
	lastOut := make([]byte, 0, maxPacket)

	var failed string
	outbound := testing.AllocsPerRun(runs, func() {
		tun.in <- 0
		n, _, err := peerConn.ReadFromUDPAddrPort(rbuf)
		if err != nil {
			failed = err.Error()
			return
		}
		lastOut = append(lastOut[:0], rbuf[:n]...)
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
		if _, err := peerConn.WriteToUDPAddrPort(sealed[next], sock.LocalAddr()); err != nil {
			failed = err.Error()
			return
		}
		next++
		got := <-tun.out
		if !bytes.Equal(got, inner) {
			failed = "inbound packet did not reach the TUN intact"
		}
		tun.free <- got
	})
	if failed != "" {
		t.Fatal(failed)
	}
	t.Logf("allocations per packet: outbound %v, inbound %v", outbound, inbound)
	if outbound != 0 || inbound != 0 {
		t.Errorf("allocations per packet: outbound %v, inbound %v, want 0 and 0", outbound, inbound)
	}
}
