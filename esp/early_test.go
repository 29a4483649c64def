package esp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

func TestEarlyHold(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	var e earlyHold
	e.add(1, []byte{1}, t0)
	e.add(2, []byte{2}, t0.Add(100*time.Millisecond))
	e.add(1, []byte{3}, t0.Add(200*time.Millisecond))
	if got := e.take(1, t0.Add(300*time.Millisecond)); len(got) != 2 || got[0][0] != 1 || got[1][0] != 3 {
		t.Fatalf("take(1) = %v", got)
	}
	if got := e.take(1, t0.Add(300*time.Millisecond)); len(got) != 0 {
		t.Fatalf("taken twice: %v", got)
	}
	// Too old: gone.
	if got := e.take(2, t0.Add(100*time.Millisecond+earlyAge+time.Millisecond)); len(got) != 0 {
		t.Fatalf("aged packet delivered: %v", got)
	}
	// Full: the oldest goes first.
	for i := 0; i < earlyMax+5; i++ {
		e.add(uint32(10+i), []byte{byte(i)}, t0)
	}
	for spi := uint32(10); spi < 15; spi++ {
		if got := e.take(spi, t0); len(got) != 0 {
			t.Fatalf("SPI %d still held in a full hold: %v", spi, got)
		}
	}
	if got := e.take(15, t0); len(got) != 1 || got[0][0] != 5 {
		t.Fatalf("oldest kept packet (SPI 15): %v", got)
	}
}

// TestEarlyESP: ESP that arrives before its SA is installed (the peer sent
// on it right after its IKE response) is delivered once the SA is in, and
// no longer counted as of an unknown SPI; a packet for an SA installed
// with other keys is not.
func TestEarlyESP(t *testing.T) {
	p := newLoopbackPair(t)
	peerOfA, peerOfB := p.peers()
	c := clientGatewayChild(0x1234, 0xe4e1, keyMat(36), keyMat(36))
	c.installB(t, p.b, peerOfB)
	down := downPacket(64)
	p.tunB.in <- down
	for deadline := time.Now().Add(5 * time.Second); p.a.Drops().UnknownSPI == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the early packet never arrived")
		}
	}
	outA := c.installA(t, p.a, peerOfA).Out
	select {
	case got := <-p.tunA.out:
		if !bytes.Equal(got, down) {
			t.Fatal("early packet mangled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("early packet not delivered")
	}
	if d := p.a.Drops(); d.UnknownSPI != 0 {
		t.Fatalf("drops %+v after delivery", d)
	}

	// Held for an SPI that is then installed with other keys: not
	// delivered, still counted.
	outB2, _ := NewOutboundSA(0xbad, keyMat(36), false)
	inB2, _ := NewInboundSA(0x5678, keyMat(36), false)
	p.b.RemoveChild(0x1234)
	if err := p.b.InstallChild(peerOfB, ChildConfig{In: inB2, Out: outB2, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	p.tunB.in <- down
	for deadline := time.Now().Add(5 * time.Second); p.a.Drops().UnknownSPI == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second early packet never arrived")
		}
	}
	wrong := keyMat(36)
	wrong[0] ^= 0xff
	inA2, _ := NewInboundSA(0xbad, wrong, false)
	if err := p.a.InstallChild(peerOfA, ChildConfig{In: inA2, Out: outA, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.200.7/32")}}); err != nil {
		t.Fatal(err)
	}
	// Delivery happens within InstallChild: nothing now means never.
	select {
	case <-p.tunA.out:
		t.Fatal("packet with the wrong keys delivered")
	default:
	}
	if d := p.a.Drops(); d.UnknownSPI != 1 {
		t.Fatalf("drops %+v", d)
	}
}
