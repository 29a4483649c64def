package esp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

var anyLocal = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

// TestInboundSelectors: B (the gateway in front of bLocal) delivers an
// authenticated packet from A only when its inner source is within A's
// selectors and its destination within B's own (RFC 4301 5.2); A's
// outbound route (aRoutes) is wider than B's selectors, as a misbehaving
// peer's would be.
func TestInboundSelectors(t *testing.T) {
	tests := []struct {
		name     string
		bLocal   []netip.Prefix
		src, dst string
		deliver  bool
	}{
		{"within both", prefixes("10.99.0.0/24"), "10.99.200.7", "10.99.0.10", true},
		{"source outside the peer's", prefixes("10.99.0.0/24"), "10.99.200.8", "10.99.0.10", false},
		{"destination outside ours", prefixes("10.99.0.0/24"), "10.99.200.7", "192.0.2.1", false},
		{"destination in our second selector", prefixes("10.99.0.0/24", "192.0.2.0/28"), "10.99.200.7", "192.0.2.1", true},
		{"no local selectors", nil, "10.99.200.7", "10.99.0.10", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newLoopbackPair(t)
			peerOfA, peerOfB := p.peers()
			c := clientGatewayChild(0xb0b, 0xa11ce, keyMat(20), keyMat(20))
			c.a.Remote = prefixes("0.0.0.0/0")
			c.b.Local = tt.bLocal
			p.install(t, peerOfA, peerOfB, c)
			pkt := ipv4Packet(30)
			copy(pkt[12:16], netip.MustParseAddr(tt.src).AsSlice())
			copy(pkt[16:20], netip.MustParseAddr(tt.dst).AsSlice())
			p.tunA.in <- pkt
			if tt.deliver {
				if got := recvPacket(t, p.tunB); !bytes.Equal(got, pkt) {
					t.Fatal("delivered packet differs")
				}
				if d := p.b.Drops(); d != (DropStats{}) {
					t.Fatalf("drops %+v", d)
				}
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for p.b.Drops().OutsideSelectors != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("drops %+v, want one outside selectors", p.b.Drops())
				}
				time.Sleep(5 * time.Millisecond)
			}
			if d := p.b.Drops(); d != (DropStats{OutsideSelectors: 1}) {
				t.Fatalf("drops %+v, want only one outside selectors", d)
			}
			select {
			case <-p.tunB.out:
				t.Fatal("packet outside the selectors delivered")
			default:
			}
			if st := p.b.ChildStats(peerOfB); st[0].PacketsIn != 0 {
				t.Fatalf("dropped packet counted as received: %+v", st)
			}
		})
	}
}

// TestSealErrorCounted: an SA out of sequence numbers drops as
// seq_exhausted, not as malformed.
func TestSealErrorCounted(t *testing.T) {
	p := newLoopbackPair(t)
	peer := p.a.NewPeer(Path{Local: p.sa.LocalAddr(), Remote: p.sb.LocalAddr()})
	k := keyMat(20)
	out, _ := NewOutboundSA(0xb0b, k, false)
	in, _ := NewInboundSA(0xa11ce, k, false)
	if err := p.a.InstallChild(peer, ChildConfig{In: in, Out: out, Remote: prefixes("10.99.0.0/24"), Local: anyLocal, OutboundSeq: 1 << 32}); err != nil {
		t.Fatal(err)
	}
	p.tunA.in <- ipv4Packet(10)
	p.tunA.in <- ipv4Packet(10)
	deadline := time.Now().Add(5 * time.Second)
	for p.a.Drops().SeqExhausted != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("drops %+v, want 2 seq exhausted", p.a.Drops())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := p.a.Drops(); d.Malformed != 0 {
		t.Fatalf("drops %+v", d)
	}
}

// FuzzAdmit: any decrypted inner packet is admitted or counted, never a
// panic, and only packets within both ends' selectors are admitted.
func FuzzAdmit(f *testing.F) {
	f.Add(ipv4Packet(10))
	f.Add(ipv6Packet(10))
	f.Add([]byte{0x45})
	f.Add([]byte{})
	d := NewDataplane(nil, nil, nil)
	c := &child{remote: prefixes("10.99.200.7/32", "fd00::/64"), local: prefixes("10.99.0.0/24", "fd00:1::/64")}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		before := d.Drops()
		ok := d.admit(c, pkt)
		after := d.Drops()
		counted := after.Malformed + after.OutsideSelectors - before.Malformed - before.OutsideSelectors
		if ok == (counted == 1) || counted > 1 {
			t.Fatalf("admitted %v, drops counted %d", ok, counted)
		}
		if ok {
			src, _ := innerSrc(pkt)
			dst, _ := innerDst(pkt)
			if !within(c.remote, src) || !within(c.local, dst) {
				t.Fatalf("admitted %v -> %v", src, dst)
			}
		}
	})
}
