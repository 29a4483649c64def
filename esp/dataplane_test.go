package esp

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// fakeTUN is an in-memory wgtun.Device: tests inject packets the "kernel"
// sends and collect the ones the dataplane writes.
type fakeTUN struct {
	in        chan []byte
	out       chan []byte
	closeOnce sync.Once
	closed    chan struct{}
}

func newFakeTUN() *fakeTUN {
	return &fakeTUN{in: make(chan []byte, 64), out: make(chan []byte, 64), closed: make(chan struct{})}
}

func (f *fakeTUN) File() *os.File { return nil }
func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-f.in:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-f.closed:
		return 0, os.ErrClosed
	}
}
func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		f.out <- append([]byte{}, b[offset:]...)
	}
	return len(bufs), nil
}
func (f *fakeTUN) MTU() (int, error)          { return 1400, nil }
func (f *fakeTUN) Name() (string, error)      { return "fake", nil }
func (f *fakeTUN) Events() <-chan wgtun.Event { return nil }
func (f *fakeTUN) BatchSize() int             { return 8 }
func (f *fakeTUN) Close() error               { f.closeOnce.Do(func() { close(f.closed) }); return nil }

type ikeRecorder struct {
	mu   sync.Mutex
	msgs [][]byte
	path []Path
}

func (r *ikeRecorder) handle(pkt []byte, p Path) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, append([]byte{}, pkt...))
	r.path = append(r.path, p)
}

// loopbackPair runs two dataplanes over fake TUN devices, each with a UDP
// socket on 127.0.0.1, and stops them when the test ends.
type loopbackPair struct {
	a, b       *Dataplane
	tunA, tunB *fakeTUN
	ikeA, ikeB *ikeRecorder
	sa, sb     *Socket
}

func newLoopbackPair(t *testing.T) *loopbackPair {
	t.Helper()
	return newLoopbackPairWith(t, nil)
}

// newLoopbackPairWith is newLoopbackPair with configure applied to both
// dataplanes before they run.
func newLoopbackPairWith(t *testing.T, configure func(*Dataplane)) *loopbackPair {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &loopbackPair{tunA: newFakeTUN(), tunB: newFakeTUN(), ikeA: &ikeRecorder{}, ikeB: &ikeRecorder{}}
	p.a = NewDataplane(p.tunA, p.ikeA.handle, nil)
	p.b = NewDataplane(p.tunB, p.ikeB.handle, nil)
	if configure != nil {
		configure(p.a)
		configure(p.b)
	}
	var err error
	if p.sa, err = ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0); err != nil {
		t.Fatal(err)
	}
	if p.sb, err = ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0); err != nil {
		t.Fatal(err)
	}
	p.a.AddSocket(p.sa)
	p.b.AddSocket(p.sb)
	var wg sync.WaitGroup
	for _, d := range []*Dataplane{p.a, p.b} {
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
	}
	// Run returns once ctx is done and the device's owner closed it.
	t.Cleanup(func() { cancel(); p.tunA.Close(); p.tunB.Close(); wg.Wait() })
	return p
}

// TestLoopbackPipeline connects two dataplanes over 127.0.0.1: a packet
// written into one fake TUN comes out of the other, both ways, and IKE
// messages with the non-ESP marker reach the IKE handler without it.
func TestLoopbackPipeline(t *testing.T) {
	p := newLoopbackPair(t)
	a, b, tunA, tunB, ikeB, sa, sb := p.a, p.b, p.tunA, p.tunB, p.ikeB, p.sa, p.sb

	// A is the client 10.99.200.7, B the gateway in front of 10.99.0.0/24.
	peerOfA := a.NewPeer(Path{Local: sa.LocalAddr(), Remote: sb.LocalAddr()})
	peerOfB := b.NewPeer(Path{Local: sb.LocalAddr(), Remote: sa.LocalAddr()})
	kAB, kBA := keyMat(36), keyMat(20)
	outA, _ := NewOutboundSA(0xb0b, kAB, false)
	inB, _ := NewInboundSA(0xb0b, kAB, false)
	outB, _ := NewOutboundSA(0xa11ce, kBA, true)
	inA, _ := NewInboundSA(0xa11ce, kBA, true)
	if err := a.InstallChild(peerOfA, ChildConfig{In: inA, Out: outA, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}, Proposal: "aes256gcm16"}); err != nil {
		t.Fatal(err)
	}
	if err := b.InstallChild(peerOfB, ChildConfig{In: inB, Out: outB, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Proposal: "aes128gcm16"}); err != nil {
		t.Fatal(err)
	}

	recv := func(f *fakeTUN) []byte {
		select {
		case p := <-f.out:
			return p
		case <-time.After(5 * time.Second):
			t.Fatal("no packet out of the TUN")
			return nil
		}
	}
	for i := 0; i < 20; i++ {
		up := ipv4Packet(100 + i)
		tunA.in <- up
		if got := recv(tunB); !bytes.Equal(got, up) {
			t.Fatalf("A->B packet %d mismatch", i)
		}
		down := ipv4Packet(200 + i)
		copy(down[12:16], []byte{10, 99, 0, 10})
		copy(down[16:20], []byte{10, 99, 200, 7})
		tunB.in <- down
		if got := recv(tunA); !bytes.Equal(got, down) {
			t.Fatalf("B->A packet %d mismatch", i)
		}
	}
	// No route: dropped and counted.
	stray := ipv4Packet(10)
	copy(stray[16:20], []byte{192, 0, 2, 1})
	tunA.in <- stray
	// Spoofed inner source from A: B must drop it.
	spoof := ipv4Packet(10)
	copy(spoof[12:16], []byte{10, 99, 0, 99})
	tunA.in <- spoof

	if err := a.SendIKE([]byte{0x11, 0x22, 0x33}, peerOfA.Path()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ikeB.mu.Lock()
		n := len(ikeB.msgs)
		ikeB.mu.Unlock()
		if n > 0 && b.Drops().OutsideSelectors > 0 && a.Drops().NoRoute > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("IKE %d, drops A %+v B %+v", n, a.Drops(), b.Drops())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.Equal(ikeB.msgs[0], []byte{0x11, 0x22, 0x33}) || ikeB.path[0].Remote != sa.LocalAddr() || ikeB.path[0].Local.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("IKE got %x via %+v", ikeB.msgs[0], ikeB.path[0])
	}
	st := a.ChildStats(peerOfA)
	if len(st) != 1 || st[0].PacketsOut != 21 || st[0].PacketsIn != 20 || st[0].SPIOut != 0xb0b {
		t.Fatalf("stats %+v", st)
	}
	a.RemoveChild(0xa11ce)
	if len(a.ChildStats(nil)) != 0 {
		t.Fatal("child not removed")
	}
}

// TestPendingOutbound checks the rekey responder's rule: a child installed
// with OutboundPending carries no outbound traffic until the peer shows it
// has the new pair (a packet authenticates on it) or the old child goes.
func TestPendingOutbound(t *testing.T) {
	for _, tc := range []struct {
		name    string
		promote func(t *testing.T, a, b *Dataplane, tunA, tunB *fakeTUN)
	}{
		{"first inbound packet", func(t *testing.T, a, b *Dataplane, tunA, tunB *fakeTUN) {
			down := ipv4Packet(300)
			copy(down[12:16], []byte{10, 99, 0, 10})
			copy(down[16:20], []byte{10, 99, 200, 7})
			tunB.in <- down
			recvPacket(t, tunA)
		}},
		{"old child removed", func(t *testing.T, a, b *Dataplane, tunA, tunB *fakeTUN) {
			a.RemoveChild(0x1001)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newLoopbackPair(t)
			a, b, tunA, tunB, sa, sb := p.a, p.b, p.tunA, p.tunB, p.sa, p.sb
			peerA := a.NewPeer(Path{Local: sa.LocalAddr(), Remote: sb.LocalAddr()})
			peerB := b.NewPeer(Path{Local: sb.LocalAddr(), Remote: sa.LocalAddr()})
			gwNet := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}
			cliNet := []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}
			// pair installs SPIs up (A->B) and down (B->A) on both sides.
			pair := func(up, down uint32, pendingA bool) {
				kUp, kDown := keyMat(36), keyMat(36)
				kUp[0], kDown[0] = byte(up), byte(down)
				outA, _ := NewOutboundSA(up, kUp, false)
				inB, _ := NewInboundSA(up, kUp, false)
				outB, _ := NewOutboundSA(down, kDown, false)
				inA, _ := NewInboundSA(down, kDown, false)
				if err := a.InstallChild(peerA, ChildConfig{In: inA, Out: outA, Remote: gwNet, Local: cliNet, OutboundPending: pendingA}); err != nil {
					t.Fatal(err)
				}
				if err := b.InstallChild(peerB, ChildConfig{In: inB, Out: outB, Remote: cliNet, Local: gwNet}); err != nil {
					t.Fatal(err)
				}
			}
			pair(0x2001, 0x1001, false)
			// B started a rekey; A answered it and installs the new pair
			// pending, as the daemon does.
			pair(0x2002, 0x1002, true)
			// sentOn sends one packet from A and returns the SPI it
			// arrived on at B.
			sentOn := func(size int) uint32 {
				before := map[uint32]uint64{}
				for _, st := range b.ChildStats(peerB) {
					before[st.SPIIn] = st.PacketsIn
				}
				tunA.in <- ipv4Packet(size)
				recvPacket(t, tunB)
				for _, st := range b.ChildStats(peerB) {
					if st.PacketsIn > before[st.SPIIn] {
						return st.SPIIn
					}
				}
				t.Fatal("no child counted the packet")
				return 0
			}
			if got := sentOn(400); got != 0x2001 {
				t.Fatalf("before promotion A sent on %08x, want the old SA 00002001", got)
			}
			tc.promote(t, a, b, tunA, tunB)
			if got := sentOn(401); got != 0x2002 {
				t.Fatalf("after promotion A sent on %08x, want the new SA 00002002", got)
			}
		})
	}
}

func recvPacket(t *testing.T, f *fakeTUN) []byte {
	t.Helper()
	select {
	case p := <-f.out:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet out of the TUN")
		return nil
	}
}

// TestRetireChild: a retired child carries no more outbound traffic, still
// opens what the peer sent on it during the grace period, and is gone
// after it.
func TestRetireChild(t *testing.T) {
	p := newLoopbackPair(t)
	a, b := p.a, p.b
	peerA := a.NewPeer(Path{Local: p.sa.LocalAddr(), Remote: p.sb.LocalAddr()})
	peerB := b.NewPeer(Path{Local: p.sb.LocalAddr(), Remote: p.sa.LocalAddr()})
	gwNet := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}
	cliNet := []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}
	install := func(up, down uint32) {
		kUp, kDown := keyMat(36), keyMat(36)
		kUp[0], kDown[0] = byte(up), byte(down)
		outA, _ := NewOutboundSA(up, kUp, false)
		inB, _ := NewInboundSA(up, kUp, false)
		outB, _ := NewOutboundSA(down, kDown, false)
		inA, _ := NewInboundSA(down, kDown, false)
		if err := a.InstallChild(peerA, ChildConfig{In: inA, Out: outA, Remote: gwNet, Local: cliNet}); err != nil {
			t.Fatal(err)
		}
		if err := b.InstallChild(peerB, ChildConfig{In: inB, Out: outB, Remote: cliNet, Local: gwNet}); err != nil {
			t.Fatal(err)
		}
	}
	// The successor first, then the SA to retire: installed last, the
	// latter's routes come first on both sides, so B keeps sending on it
	// and A would too without RetireChild.
	install(0x2002, 0x1002)
	install(0x2001, 0x1001)
	down := ipv4Packet(300)
	copy(down[12:16], []byte{10, 99, 0, 10})
	copy(down[16:20], []byte{10, 99, 200, 7})
	a.RetireChild(0x1001, 300*time.Millisecond)
	p.tunB.in <- down
	recvPacket(t, p.tunA)
	var oldIn uint64
	for _, st := range a.ChildStats(peerA) {
		if st.SPIIn == 0x1001 {
			oldIn = st.PacketsIn
		}
	}
	if oldIn != 1 {
		t.Fatalf("the retired SA opened %d packets during its grace, want 1", oldIn)
	}
	p.tunA.in <- ipv4Packet(301)
	recvPacket(t, p.tunB)
	for _, st := range b.ChildStats(peerB) {
		if st.SPIIn == 0x2001 && st.PacketsIn != 0 {
			t.Fatal("A sent on the retired SA")
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(a.ChildStats(peerA)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("retired SA still installed after its grace: %+v", a.ChildStats(peerA))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTakeStray: authenticated ESP from the peer's address but another
// port is reported once; from the expected port it is not.
func TestTakeStray(t *testing.T) {
	p := newLoopbackPair(t)
	a, b := p.a, p.b
	sb2, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	b.AddSocket(sb2)
	peerA := a.NewPeer(Path{Local: p.sa.LocalAddr(), Remote: p.sb.LocalAddr()})
	peerB := b.NewPeer(Path{Local: p.sb.LocalAddr(), Remote: p.sa.LocalAddr()})
	k := keyMat(36)
	outB, _ := NewOutboundSA(0x1001, k, false)
	inA, _ := NewInboundSA(0x1001, k, false)
	outA, _ := NewOutboundSA(0x2001, keyMat(20), false)
	inB, _ := NewInboundSA(0x2001, keyMat(20), false)
	if err := a.InstallChild(peerA, ChildConfig{In: inA, Out: outA, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.InstallChild(peerB, ChildConfig{In: inB, Out: outB, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	down := ipv4Packet(300)
	copy(down[12:16], []byte{10, 99, 0, 10})
	copy(down[16:20], []byte{10, 99, 200, 7})
	p.tunB.in <- down
	recvPacket(t, p.tunA)
	if s, ok := peerA.TakeStray(); ok {
		t.Fatalf("stray reported for the expected port: %+v", s)
	}
	// B's NAT "moves": its packets now leave from another port.
	b.SetPath(peerB, Path{Local: sb2.LocalAddr(), Remote: p.sa.LocalAddr()})
	p.tunB.in <- down
	recvPacket(t, p.tunA)
	s, ok := peerA.TakeStray()
	if !ok || s.Remote != sb2.LocalAddr() {
		t.Fatalf("TakeStray = %+v, %v; want the peer's new port %v", s, ok, sb2.LocalAddr())
	}
	if _, ok := peerA.TakeStray(); ok {
		t.Fatal("stray reported twice")
	}
}
