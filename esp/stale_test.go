package esp

import (
	"net/netip"
	"testing"
	"time"
)

// TestStaleESP: ESP that waited in the socket's queue longer than
// staleAfter is dropped unopened and counted as Stale; IKE and
// keepalives are handled whatever their age, also as the last segment of
// a stale GRO datagram; a datagram without a timestamp, or with one no
// clock of ours could have made, is never stale.
func TestStaleESP(t *testing.T) {
	const spi = 0x2002
	out, _ := NewOutboundSA(spi, keyMat(20), false)
	esp := func() []byte {
		p, err := out.Seal(nil, ipv4Packet(64))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ike := append([]byte{0, 0, 0, 0}, make([]byte, 60)...) // non-ESP marker
	// gro is n ESP packets and then tail (one of IKE's size or none) as one
	// UDP GRO datagram.
	gro := func(n int, tail []byte) ([]byte, int) {
		var b []byte
		seg := 0
		for range n {
			p := esp()
			seg = len(p)
			b = append(b, p...)
		}
		return append(b, tail...), seg
	}
	const ms = int64(time.Millisecond)
	tests := []struct {
		name      string
		age       int64 // now minus the receive stamp; no stamp when noStamp
		noStamp   bool
		esp       int   // ESP packets in the datagram
		ikeTail   bool  // an IKE message as its last segment
		wantIn    int   // ESP delivered to the TUN
		wantStale int   // ESP dropped for its age
		wantIKE   int   // IKE messages handed on
		wantOther int64 // other drops (none expected)
	}{
		{name: "fresh", age: 1 * ms, esp: 1, wantIn: 1},
		{name: "just under the bound", age: staleAfter - ms, esp: 1, wantIn: 1},
		{name: "stale", age: staleAfter + ms, esp: 1, wantStale: 1},
		{name: "no stamp", noStamp: true, esp: 1, wantIn: 1},
		{name: "stamp from the future", age: -time.Hour.Nanoseconds(), esp: 1, wantIn: 1},
		{name: "stamp of another clock", age: 50 * 365 * 24 * time.Hour.Nanoseconds(), esp: 1, wantIn: 1},
		{name: "stale IKE", age: 2 * staleAfter, wantIKE: 1},
		{name: "stale GRO with IKE last", age: 2 * staleAfter, esp: 5, ikeTail: true, wantStale: 5, wantIKE: 1},
		{name: "fresh GRO with IKE last", age: ms, esp: 5, ikeTail: true, wantIn: 5, wantIKE: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ikes := 0
			d := NewDataplane(newFakeTUNDiscard(), func([]byte, Path) { ikes++ }, nil)
			peer := d.NewPeer(Path{Remote: netip.MustParseAddrPort("192.0.2.9:4500")})
			in, _ := NewInboundSA(spi, keyMat(20), false)
			o, _ := NewOutboundSA(0x1001, keyMat(20), false)
			if err := d.InstallChild(peer, ChildConfig{In: in, Out: o, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, Local: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}); err != nil {
				t.Fatal(err)
			}
			rx := newRxState(d, netip.MustParseAddrPort("192.0.2.1:4500"), 8)
			var tail []byte
			if tt.ikeTail || tt.esp == 0 {
				tail = ike
			}
			buf, seg := gro(tt.esp, tail)
			rx.now = time.Now().UnixNano()
			m := Message{Buf: buf, From: netip.MustParseAddrPort("198.51.100.7:4500"), Segment: seg}
			if !tt.noStamp {
				m.Received = rx.now - tt.age
			}
			rx.datagram(&m)
			rx.flush()
			var gotIn uint64
			for _, c := range d.ChildStats(peer) {
				gotIn += c.PacketsIn
			}
			drops := d.Drops()
			if gotIn != uint64(tt.wantIn) || drops.Stale != uint64(tt.wantStale) || ikes != tt.wantIKE {
				t.Fatalf("delivered %d, stale %d, IKE %d; want %d, %d, %d", gotIn, drops.Stale, ikes, tt.wantIn, tt.wantStale, tt.wantIKE)
			}
			drops.Stale = 0
			if drops != (DropStats{}) {
				t.Fatalf("other drops: %+v", drops)
			}
		})
	}
}
