package esp

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// udpCounter is a plain UDP socket that counts what reaches it: a third
// party, or a client's old path that no longer leads anywhere.
type udpCounter struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	packets int
	bytes   int
}

func newUDPCounter(t *testing.T) *udpCounter {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &udpCounter{conn: c}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.packets++
			u.bytes += n
			u.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return u
}

func (u *udpCounter) addr() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (u *udpCounter) count() (packets, bytes int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.packets, u.bytes
}

// TestUnprovedPath is the security property of a gateway's early move: an
// authenticated client that names an address it does not receive at (a
// third party, a victim) gets no more than Amplification times the bytes
// it sent from there delivered there; the rest goes to the path already
// proved. A client that is really there earns the credit with its own
// traffic, so a flow runs on the new path before its proof.
func TestUnprovedPath(t *testing.T) {
	const size = 1000 // inner bytes of each packet from the gateway
	for _, tc := range []struct {
		name   string
		credit int // bytes of the request that asked for the path
		// victim: the path is a third party's; else the client's.
		victim bool
	}{
		{name: "third party, credit for two packets", credit: 2 * (size + unprovedOverhead) / Amplification, victim: true},
		{name: "third party, no credit", credit: 0, victim: true},
		{name: "the client itself earns the credit", credit: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newLoopbackPair(t)
			a, b := p.a, p.b
			old := newUDPCounter(t) // the client's old path: gone
			peerA := a.NewPeer(Path{Local: p.sa.LocalAddr(), Remote: p.sb.LocalAddr()})
			peerB := b.NewPeer(Path{Local: p.sb.LocalAddr(), Remote: old.addr()})
			k := keyMat(36)
			outB, _ := NewOutboundSA(0x1001, k, false)
			inA, _ := NewInboundSA(0x1001, k, false)
			outA, _ := NewOutboundSA(0x2001, keyMat(20), false)
			inB, _ := NewInboundSA(0x2001, keyMat(20), false)
			gwNet := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}
			cliNet := []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}
			if err := a.InstallChild(peerA, ChildConfig{In: inA, Out: outA, Remote: gwNet, Local: cliNet}); err != nil {
				t.Fatal(err)
			}
			if err := b.InstallChild(peerB, ChildConfig{In: inB, Out: outB, Remote: cliNet, Local: gwNet}); err != nil {
				t.Fatal(err)
			}
			down := ipv4Packet(size - 20)
			copy(down[12:16], []byte{10, 99, 0, 10})
			copy(down[16:20], []byte{10, 99, 200, 7})

			if tc.victim {
				victim := newUDPCounter(t)
				b.SetUnprovedPath(peerB, Path{Local: p.sb.LocalAddr(), Remote: victim.addr()}, tc.credit)
				const n = 20
				for range n {
					p.tunB.in <- down
				}
				waitCount(t, func() bool {
					vp, _ := victim.count()
					op, _ := old.count()
					return vp+op == n
				})
				vp, vb := victim.count()
				if limit := Amplification * tc.credit; vb > limit {
					t.Fatalf("the third party got %d bytes (%d packets), more than %d× the %d bytes asking for it", vb, vp, Amplification, tc.credit)
				}
				if want := Amplification * tc.credit / (size + unprovedOverhead); vp != want {
					t.Errorf("the third party got %d packets, want the %d the credit pays for", vp, want)
				}
				if _, ok := peerB.Unproved(); !ok {
					t.Error("path no longer unproved")
				}
				return
			}
			// The client moved to p.sa (already its socket) and asked from
			// there: every packet it sends pays for more than one back.
			b.SetUnprovedPath(peerB, Path{Local: p.sb.LocalAddr(), Remote: p.sa.LocalAddr()}, tc.credit)
			up := ipv4Packet(size - 20)
			const rounds = 10
			for i := range rounds {
				p.tunA.in <- up
				recvPacket(t, p.tunB)
				p.tunB.in <- down
				if got := recvPacket(t, p.tunA); len(got) != size {
					t.Fatalf("round %d: %d bytes back, want %d", i, len(got), size)
				}
			}
			if op, _ := old.count(); op != 0 {
				t.Errorf("%d packets went to the old path although the client paid for them on the new one", op)
			}
			credit, ok := peerB.Unproved()
			if !ok || credit < 0 {
				t.Errorf("Unproved() = %d, %v", credit, ok)
			}
			// The proof: SetPath ends the limit.
			b.SetPath(peerB, Path{Local: p.sb.LocalAddr(), Remote: p.sa.LocalAddr()})
			if _, ok := peerB.Unproved(); ok {
				t.Error("still unproved after SetPath")
			}
			for range 3 * rounds {
				p.tunB.in <- down
				recvPacket(t, p.tunA)
			}
		})
	}
}

// waitCount waits for done, counting on the loopback's delivery rather
// than any time bound but the test's own.
func waitCount(t *testing.T, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatal("packets did not arrive")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
