package esp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// TestLoopbackPipeline connects two dataplanes over 127.0.0.1: a packet
// written into one fake TUN comes out of the other, both ways, and IKE
// messages with the non-ESP marker reach the IKE handler without it.
func TestLoopbackPipeline(t *testing.T) {
	p := newLoopbackPair(t)
	a, b, tunA, tunB, ikeB, sa := p.a, p.b, p.tunA, p.tunB, p.ikeB, p.sa

	// A is the client 10.99.200.7, B the gateway in front of 10.99.0.0/24.
	peerOfA, peerOfB := p.peers()
	c := clientGatewayChild(0xb0b, 0xa11ce, keyMat(36), keyMat(20))
	c.esnDown = true
	c.a.Proposal, c.b.Proposal = "aes256gcm16", "aes128gcm16"
	p.install(t, peerOfA, peerOfB, c)

	exchange(t, tunA, tunB, 20)
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
		n := ikeB.count()
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
			tunB.in <- downPacket(300)
			recvPacket(t, tunA)
		}},
		{"old child removed", func(t *testing.T, a, b *Dataplane, tunA, tunB *fakeTUN) {
			a.RemoveChild(0x1001)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newLoopbackPair(t)
			a, b, tunA, tunB := p.a, p.b, p.tunA, p.tunB
			peerA, peerB := p.peers()
			// pair installs SPIs up (A->B) and down (B->A) on both sides.
			pair := func(up, down uint32, pendingA bool) {
				kUp, kDown := keyMat(36), keyMat(36)
				kUp[0], kDown[0] = byte(up), byte(down)
				c := clientGatewayChild(up, down, kUp, kDown)
				c.a.OutboundPending = pendingA
				p.install(t, peerA, peerB, c)
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

// TestRetireChild: a retired child carries no more outbound traffic, still
// opens what the peer sent on it during the grace period, and is gone
// after it.
func TestRetireChild(t *testing.T) {
	p := newLoopbackPair(t)
	a, b := p.a, p.b
	peerA, peerB := p.peers()
	install := func(up, down uint32) {
		kUp, kDown := keyMat(36), keyMat(36)
		kUp[0], kDown[0] = byte(up), byte(down)
		p.install(t, peerA, peerB, clientGatewayChild(up, down, kUp, kDown))
	}
	// The successor first, then the SA to retire: installed last, the
	// latter's routes come first on both sides, so B keeps sending on it
	// and A would too without RetireChild.
	install(0x2002, 0x1002)
	install(0x2001, 0x1001)
	down := downPacket(300)
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
	b := p.b
	sb2 := listenLoopback(t)
	b.AddSocket(sb2)
	peerA, peerB := p.peers()
	p.install(t, peerA, peerB, clientGatewayChild(0x2001, 0x1001, keyMat(20), keyMat(36)))
	down := downPacket(300)
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
