package esp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/netpath"
)

// TestSuspend: a suspended peer's outbound packets are dropped before
// sealing and counted as NoPath; SetPath brings the traffic back on the
// same Child SA.
func TestSuspend(t *testing.T) {
	p := newLoopbackPair(t)
	a, tunA, tunB := p.a, p.tunA, p.tunB
	peerOfA, peerOfB := p.peers()
	path := peerOfA.Path()
	p.install(t, peerOfA, peerOfB, clientGatewayChild(0xb0b, 0xa11ce, keyMat(36), keyMat(20)))

	a.Suspend(peerOfA)
	if peerOfA.Path() != path {
		t.Fatalf("suspended peer reports path %v, want the last one %v", peerOfA.Path(), path)
	}
	for i := range 3 {
		tunA.in <- ipv4Packet(100 + i)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.Drops().NoPath < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("drops %+v, want 3 without a path", a.Drops())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := a.ChildStats(peerOfA); len(st) != 1 || st[0].PacketsOut != 0 {
		t.Fatalf("sealed while suspended: %+v", st)
	}
	if sent, _ := peerOfA.Activity(); sent.After(time.Unix(0, 0)) {
		t.Fatalf("a dropped packet counts as sent ESP (%v): dead-path detection would fire while suspended", sent)
	}

	a.SetPath(peerOfA, path)
	want := ipv4Packet(7)
	tunA.in <- want
	select {
	case got := <-tunB.out:
		if !bytes.Equal(got, want) {
			t.Fatal("packet after resume mismatch")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no packet after SetPath")
	}
}

// TestFollower: the peer sends where its connection's netpath.Current
// says; a change that kept the sending path (a Set confirming a Try)
// leaves its derived send state as it was.
func TestFollower(t *testing.T) {
	wlan := Path{Local: netip.MustParseAddrPort("192.168.10.2:4500"), Remote: netip.MustParseAddrPort("203.0.113.10:4500"), IfIndex: 2}
	wwan := Path{Local: netip.MustParseAddrPort("192.168.20.2:4500"), Remote: wlan.Remote, IfIndex: 3}
	eth := Path{Local: netip.MustParseAddrPort("192.168.30.2:4500"), Remote: wlan.Remote, IfIndex: 4}
	float := wlan
	float.Remote = netip.MustParseAddrPort("203.0.113.10:4501")
	type step struct {
		try     bool
		confirm bool // Confirm (the SA moved it) instead of Set
		suspend bool // Suspend the peer, then check nothing else
		path    Path
		want    Path // where the peer sends after the step
		derive  bool // the step derived the peer's send state again
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"set", []step{{path: wwan, want: wwan, derive: true}}},
		{"set the same path", []step{{path: wlan, want: wlan, derive: true}}},
		{"try, confirmed", []step{{try: true, path: wwan, want: wwan, derive: true}, {path: wwan, want: wwan}}},
		{"try, another answers", []step{{try: true, path: wwan, want: wwan, derive: true}, {path: eth, want: eth, derive: true}}},
		{"try, back to the old path", []step{{try: true, path: wwan, want: wwan, derive: true}, {try: true, path: wlan, want: wlan, derive: true}}},
		{"try, the SA confirms, set", []step{{try: true, path: wwan, want: wwan, derive: true}, {confirm: true, path: wwan, want: wwan},
			{path: wwan, want: wwan}}},
		{"the SA confirms, set", []step{{confirm: true, path: wwan, want: wwan, derive: true}, {path: wwan, want: wwan, derive: true}}},
		// The SA floated to another port long before; an outage suspended
		// the peer; the same path answers again: the peer must resume.
		{"confirm, suspend, the same path set", []step{{confirm: true, path: float, want: float, derive: true}, {suspend: true},
			{path: float, want: float, derive: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDataplane(nil, nil, nil)
			p := d.NewPeer(wlan)
			start := p.path.Load()
			cur := netpath.NewCurrent(wlan, "wlan")
			cur.Follow(d.Follower(p))
			if p.path.Load() != start {
				t.Fatal("Follow derived the peer's path again")
			}
			for i, s := range tt.steps {
				before := p.path.Load()
				switch {
				case s.suspend:
					d.Suspend(p)
					continue
				case s.try:
					cur.Try(s.path)
				case s.confirm:
					cur.Confirm(s.path)
				default:
					cur.Set(s.path, "")
				}
				if got := p.Path(); got != s.want {
					t.Fatalf("step %d: peer on %v, want %v", i, got, s.want)
				}
				if derived := p.path.Load() != before; derived != s.derive {
					t.Fatalf("step %d: derived again %v, want %v", i, derived, s.derive)
				}
			}
		})
	}
}
