package esp

import (
	"testing"
	"time"
)

// TestFirstOut: OnFirstOut is called once per child, with the time its
// first packet was sealed, before that packet arrives; later packets do
// not call it again.
func TestFirstOut(t *testing.T) {
	tests := []struct {
		name    string
		packets int
	}{
		{"one packet", 1},
		{"several packets", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newLoopbackPair(t)
			peerOfA, peerOfB := p.peers()
			calls := make(chan time.Time, 8)
			c := clientGatewayChild(0xb0c, 0xa11cf, keyMat(20), keyMat(20))
			c.a.OnFirstOut = func(at time.Time) { calls <- at }
			p.install(t, peerOfA, peerOfB, c)
			before := time.Now()
			for i := 0; i < tt.packets; i++ {
				p.tunA.in <- ipv4Packet(20)
				recvPacket(t, p.tunB)
			}
			after := time.Now()
			select {
			case at := <-calls:
				if at.Before(before.Add(-time.Millisecond)) || at.After(after) {
					t.Fatalf("first packet sealed at %v, outside the sending [%v, %v]", at, before, after)
				}
			default:
				t.Fatal("OnFirstOut not called by the time the packet arrived")
			}
			if n := len(calls); n != 0 {
				t.Fatalf("OnFirstOut called %d more times", n)
			}
		})
	}
}
