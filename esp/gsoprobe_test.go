package esp

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// TestGSOProbe follows a new path's GSO pause: sizes not yet sent alone
// go out one datagram each; a datagram sent alone proves its size once
// the path MTU is still the same pmtuProbeRTT later, and GSO then carries
// segments up to it; a smaller MTU found by the check proves nothing.
func TestGSOProbe(t *testing.T) {
	tests := []struct {
		name       string
		uplinkThen int // the uplink MTU when the probe is checked
		sent       int // the datagram sent alone
		wantProven bool
		rtt        time.Duration // the path's measured round trip; 0: none
	}{
		{"same MTU", 1500, 1452, true, 0},
		{"ICMP lowered the MTU", 1280, 1452, false, 0},
		{"same MTU, measured RTT", 1500, 1452, true, time.Millisecond},
		{"ICMP lowered the MTU, measured RTT", 1280, 1452, false, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var uplink atomic.Int64
			uplink.Store(1500)
			d, s := newMTUDataplane(t, &uplink)
			s.gso.Store(false) // as after a segmented send the kernel refused
			p := d.NewPeer(Path{Local: s.LocalAddr(), Remote: netip.MustParseAddrPort("127.0.0.1:4500")})
			if tt.rtt > 0 {
				p.SetRTT(func(Path) (time.Duration, bool) { return tt.rtt, true })
			}
			pp := p.path.Load()
			now := time.Now().UnixNano()
			if got := pp.gsoLimit(now); got != 0 {
				t.Fatalf("GSO limit %d on a new path, want 0", got)
			}
			if got := pp.gsoLimit(pp.noGSOUntil); got != maxPacket {
				t.Fatalf("GSO limit %d after the pause, want %d", got, maxPacket)
			}
			uplink.Store(int64(tt.uplinkThen))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() { defer close(done); d.probeLoop(ctx) }()
			defer func() { cancel(); <-done }()
			pp.sentAlone(100, now)
			pp.sentAlone(tt.sent, now)
			pp.sentAlone(tt.sent-10, now) // smaller: changes nothing
			for deadline := time.Now().Add(30 * time.Second); pp.probe.queued.Load(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the probe was never checked")
				}
			}
			proven := int(pp.probe.proven.Load())
			if tt.wantProven {
				if proven != tt.sent || p.path.Load() != pp {
					t.Fatalf("proven %d, path replaced %v; want %d on the same path", proven, p.path.Load() != pp, tt.sent)
				}
				if got := pp.gsoLimit(now); got != tt.sent {
					t.Fatalf("GSO limit %d, want %d", got, tt.sent)
				}
				return
			}
			np := p.path.Load()
			if s.gsoKernel && !s.gso.Load() {
				t.Error("GSO still off on the socket after the MTU change")
			}
			if proven != 0 || np == pp || np.probe == pp.probe || np.probe.proven.Load() != 0 {
				t.Fatalf("proven %d, new path %v: want nothing proven and a fresh probe", proven, np != pp)
			}
		})
	}
}

// TestGSOProbeBuild checks that the send stage sends a probing path's
// packets of a proven size with GSO and larger ones alone, recording them.
func TestGSOProbeBuild(t *testing.T) {
	s := listenLoopback(t)
	now := time.Now()
	tests := []struct {
		name         string
		proven, size int
		wantMsgs     int
		wantRecorded int64
	}{
		{"nothing proven", 0, 1000, 8, 1000},
		{"size proven", 1000, 1000, 1, 0},
		{"larger than proven", 1000, 1200, 8, 1200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pp := &peerPath{Path: Path{Remote: netip.MustParseAddrPort("127.0.0.1:4500")}, sock: s,
				noGSOUntil: now.Add(time.Hour).UnixNano(), probe: &gsoProbe{check: make(chan *gsoProbe, 1)}}
			pp.probe.proven.Store(int64(tt.proven))
			pkts := batchPackets(8, tt.size, tt.size, pp)
			b := newSendBatch(len(pkts))
			b.build(s, pkts, true)
			if b.nm != tt.wantMsgs {
				t.Errorf("%d messages, want %d", b.nm, tt.wantMsgs)
			}
			if got := pp.probe.sentSize.Load(); got != tt.wantRecorded {
				t.Errorf("recorded %d, want %d", got, tt.wantRecorded)
			}
		})
	}
}

// TestProbeWait checks how long a probing path waits for an ICMP: a few
// measured round trips of that path within bounds, pmtuProbeRTT without a
// measurement.
func TestProbeWait(t *testing.T) {
	path := Path{Local: netip.MustParseAddrPort("192.0.2.1:4500"), Remote: netip.MustParseAddrPort("198.51.100.1:4500")}
	other := Path{Local: netip.MustParseAddrPort("192.0.2.9:4500"), Remote: path.Remote}
	tests := []struct {
		name string
		rtt  RTTFunc // nil: no SetRTT
		want time.Duration
	}{
		{"no source", nil, pmtuProbeRTT},
		{"nil source", RTTFunc(nil), pmtuProbeRTT},
		{"no sample for the path", func(p Path) (time.Duration, bool) { return time.Millisecond, p == other }, pmtuProbeRTT},
		{"zero sample", func(Path) (time.Duration, bool) { return 0, true }, pmtuProbeRTT},
		{"lab round trip", func(Path) (time.Duration, bool) { return 200 * time.Microsecond, true }, minProbeWait},
		{"30 ms", func(p Path) (time.Duration, bool) { return 30 * time.Millisecond, p == path }, 90 * time.Millisecond},
		{"satellite", func(Path) (time.Duration, bool) { return 600 * time.Millisecond, true }, pmtuProbeRTT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Peer{}
			if tt.name != "no source" {
				p.SetRTT(tt.rtt)
			}
			if got := p.probeWait(path); got != tt.want {
				t.Errorf("probeWait %v, want %v", got, tt.want)
			}
		})
	}
}
