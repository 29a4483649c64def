package esp

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestRekeyPackets: an SA installed near its packet-count soft limit (an
// HA standby's can be) asks for a rekey exactly once, when the packet that
// reaches the limit is sealed, and keeps sending meanwhile.
func TestRekeyPackets(t *testing.T) {
	tests := []struct {
		name     string
		startSeq uint64 // OutboundSeq
		limit    uint64
		quietFor int // packets sent before the limit
	}{
		{"crossed after a few packets", 1000, 1003, 3},
		{"already past the limit", 5000, 1003, 0},
		{"at child_rekey_packets' default", 3<<30 - 1, 3 << 30, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newLoopbackPair(t)
			peerOfA, peerOfB := p.peers()
			var calls atomic.Int32
			asked := make(chan struct{}, 4)
			c := clientGatewayChild(0xb0b, 0xa11ce, keyMat(20), keyMat(20))
			c.a.OutboundSeq, c.a.RekeyPackets = tt.startSeq, tt.limit
			c.a.OnRekeyPackets = func() { calls.Add(1); asked <- struct{}{} }
			cfgA, _ := p.install(t, peerOfA, peerOfB, c)
			outA := cfgA.Out
			for i := 0; i < tt.quietFor; i++ {
				p.tunA.in <- ipv4Packet(20)
				recvPacket(t, p.tunB)
			}
			// Sealing comes before delivery, so nothing has been asked yet.
			if outA.soft.fired.Load() {
				t.Fatalf("soft limit reported at sequence number %d, below %d", outA.Seq(), tt.limit)
			}
			for i := 0; i < 5; i++ {
				p.tunA.in <- ipv4Packet(20)
				recvPacket(t, p.tunB) // the SA still carries traffic
			}
			select {
			case <-asked:
			case <-time.After(5 * time.Second):
				t.Fatal("no rekey asked for")
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("rekey asked for %d times", n)
			}
			if d := p.a.Drops(); d != (DropStats{}) {
				t.Fatalf("drops %+v", d)
			}
		})
	}
}

// TestRekeyPacketsOff: without a limit or a callback nothing is armed.
func TestRekeyPacketsOff(t *testing.T) {
	d := NewDataplane(nil, nil, nil)
	k := keyMat(20)
	for i, cfg := range []ChildConfig{{RekeyPackets: 10}, {OnRekeyPackets: func() {}}} {
		cfg.In, _ = NewInboundSA(uint32(i+1), k, false)
		cfg.Out, _ = NewOutboundSA(uint32(i+1), k, false)
		if err := d.InstallChild(d.NewPeer(Path{}), cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Out.soft != nil {
			t.Errorf("config %d armed a soft limit", i)
		}
	}
}
