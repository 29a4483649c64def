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

// tunBase is what the in-memory TUN devices of these tests share: no file
// behind them, MTU 1400, no events, and a closed channel that Close closes
// once to end blocked reads.
type tunBase struct {
	name      string
	batch     int
	closeOnce sync.Once
	closed    chan struct{}
}

func newTUNBase(name string, batch int) tunBase {
	return tunBase{name: name, batch: batch, closed: make(chan struct{})}
}

func (f *tunBase) File() *os.File             { return nil }
func (f *tunBase) MTU() (int, error)          { return 1400, nil }
func (f *tunBase) Name() (string, error)      { return f.name, nil }
func (f *tunBase) Events() <-chan wgtun.Event { return nil }
func (f *tunBase) BatchSize() int             { return f.batch }
func (f *tunBase) Close() error               { f.closeOnce.Do(func() { close(f.closed) }); return nil }

// fakeTUN is an in-memory wgtun.Device: tests inject packets the "kernel"
// sends and collect the ones the dataplane writes.
type fakeTUN struct {
	tunBase
	in  chan []byte
	out chan []byte
}

func newFakeTUN() *fakeTUN {
	return &fakeTUN{tunBase: newTUNBase("fake", 8), in: make(chan []byte, 64), out: make(chan []byte, 64)}
}

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

// recvPacket is the next packet f's dataplane wrote; the test fails after
// five seconds without one.
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

// downPacket is an inner IPv4 packet with payload octets from behind the
// gateway (10.99.0.10) to the client (10.99.200.7): what B sends A.
func downPacket(payload int) []byte {
	p := ipv4Packet(payload)
	copy(p[12:16], []byte{10, 99, 0, 10})
	copy(p[16:20], []byte{10, 99, 200, 7})
	return p
}

// exchange sends n packets from A's TUN device to B's and n back, one at
// a time, each of which must come out intact.
func exchange(t *testing.T, tunA, tunB *fakeTUN, n int) {
	t.Helper()
	for i := range n {
		up := ipv4Packet(100 + i)
		tunA.in <- up
		if got := recvPacket(t, tunB); !bytes.Equal(got, up) {
			t.Fatalf("A->B packet %d mismatch", i)
		}
		down := downPacket(200 + i)
		tunB.in <- down
		if got := recvPacket(t, tunA); !bytes.Equal(got, down) {
			t.Fatalf("B->A packet %d mismatch", i)
		}
	}
}

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

// count is how many IKE messages have arrived.
func (r *ikeRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// ignoreIKE is an IKE handler for tests that send none.
func ignoreIKE([]byte, Path) {}

// listenOn is a Socket bound to addr, closed when the test ends.
func listenOn(tb testing.TB, addr string) *Socket {
	tb.Helper()
	s, err := ListenUDP(netip.MustParseAddrPort(addr), 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// listenLoopback is a Socket on an ephemeral port of 127.0.0.1, closed
// when the test ends.
func listenLoopback(tb testing.TB) *Socket {
	tb.Helper()
	return listenOn(tb, "127.0.0.1:0")
}

// dataplanePair is two running dataplanes, A and B, each with a UDP socket
// on 127.0.0.1.
type dataplanePair struct {
	a, b   *Dataplane
	sa, sb *Socket
}

// startDataplanePair runs dataplanes over tunA and tunB, with configure
// (if not nil) applied to both before they run, and stops them when the
// test ends.
func startDataplanePair(t *testing.T, tunA, tunB wgtun.Device, ikeA, ikeB func([]byte, Path), configure func(*Dataplane)) dataplanePair {
	t.Helper()
	p := dataplanePair{a: NewDataplane(tunA, ikeA, nil), b: NewDataplane(tunB, ikeB, nil)}
	// A packet of these tests may wait in a socket while the loaded test
	// machine does not run the receive loop (TestEarlyESP's lost its
	// only packet once at 100 ms); the bound is TestStaleESP's subject.
	p.a.staleAfter, p.b.staleAfter = 0, 0
	if configure != nil {
		configure(p.a)
		configure(p.b)
	}
	p.sa, p.sb = listenLoopback(t), listenLoopback(t)
	p.a.AddSocket(p.sa)
	p.b.AddSocket(p.sb)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, d := range []*Dataplane{p.a, p.b} {
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
	}
	// Run returns once ctx is done and the device's owner closed it.
	t.Cleanup(func() { cancel(); tunA.Close(); tunB.Close(); wg.Wait() })
	return p
}

// peers are A's peer for B and B's peer for A, over the pair's sockets.
func (p dataplanePair) peers() (peerOfA, peerOfB *Peer) {
	return p.a.NewPeer(Path{Local: p.sa.LocalAddr(), Remote: p.sb.LocalAddr()}),
		p.b.NewPeer(Path{Local: p.sb.LocalAddr(), Remote: p.sa.LocalAddr()})
}

// loopbackPair runs two dataplanes over fake TUN devices, each with a UDP
// socket on 127.0.0.1, and stops them when the test ends.
type loopbackPair struct {
	dataplanePair
	tunA, tunB *fakeTUN
	ikeA, ikeB *ikeRecorder
}

func newLoopbackPair(t *testing.T) *loopbackPair {
	t.Helper()
	return newLoopbackPairWith(t, nil)
}

// newLoopbackPairWith is newLoopbackPair with configure applied to both
// dataplanes before they run.
func newLoopbackPairWith(t *testing.T, configure func(*Dataplane)) *loopbackPair {
	t.Helper()
	p := &loopbackPair{tunA: newFakeTUN(), tunB: newFakeTUN(), ikeA: &ikeRecorder{}, ikeB: &ikeRecorder{}}
	p.dataplanePair = startDataplanePair(t, p.tunA, p.tunB, p.ikeA.handle, p.ikeB.handle, configure)
	return p
}

// testChild is a Child SA between A, the client, and B, the gateway: SPI up
// with key kUp carries A to B, down with kDown B to A. a and b are the
// ChildConfigs the two sides install, without their SAs.
type testChild struct {
	cipher     Cipher
	up, down   uint32
	kUp, kDown []byte
	esnDown    bool // B to A with extended sequence numbers
	a, b       ChildConfig
}

// clientGatewayChild is a child between the client 10.99.200.7 on A and
// the gateway in front of 10.99.0.0/24 on B.
func clientGatewayChild(up, down uint32, kUp, kDown []byte) testChild {
	return testChild{up: up, down: down, kUp: kUp, kDown: kDown,
		a: ChildConfig{Remote: prefixes("10.99.0.0/24"), Local: prefixes("10.99.200.7/32")},
		b: ChildConfig{Remote: prefixes("10.99.200.7/32"), Local: prefixes("10.99.0.0/24")}}
}

// installA installs A's half through peer and returns the config it
// installed.
func (c testChild) installA(t *testing.T, a *Dataplane, peer *Peer) ChildConfig {
	t.Helper()
	cfg := c.a
	var err error
	if cfg.Out, err = NewOutboundSAWith(c.cipher, c.up, c.kUp, false); err != nil {
		t.Fatal(err)
	}
	if cfg.In, err = NewInboundSAWith(c.cipher, c.down, c.kDown, c.esnDown); err != nil {
		t.Fatal(err)
	}
	if err := a.InstallChild(peer, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// installB installs B's half through peer and returns the config it
// installed.
func (c testChild) installB(t *testing.T, b *Dataplane, peer *Peer) ChildConfig {
	t.Helper()
	cfg := c.b
	var err error
	if cfg.Out, err = NewOutboundSAWith(c.cipher, c.down, c.kDown, c.esnDown); err != nil {
		t.Fatal(err)
	}
	if cfg.In, err = NewInboundSAWith(c.cipher, c.up, c.kUp, false); err != nil {
		t.Fatal(err)
	}
	if err := b.InstallChild(peer, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// install installs both halves of c, A's first.
func (p dataplanePair) install(t *testing.T, peerOfA, peerOfB *Peer, c testChild) (a, b ChildConfig) {
	t.Helper()
	return c.installA(t, p.a, peerOfA), c.installB(t, p.b, peerOfB)
}
