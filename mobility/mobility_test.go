package mobility

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/netmon"
)

// fakeSA answers probes for the local addresses listed in working.
type fakeSA struct {
	mu      sync.Mutex
	path    esp.Path
	peers   []netip.Addr
	working map[netip.Addr]bool
	probes  []esp.Path
	updates []esp.Path
}

func (f *fakeSA) PeerAddresses() []netip.Addr {
	return f.peers
}

// Move tries the paths in order, as the engine's round-robin does when
// only working paths answer.
func (f *fakeSA) Move(_ context.Context, paths []esp.Path) (Probe, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range paths {
		f.probes = append(f.probes, p)
		if f.working[p.Local.Addr()] {
			f.updates = append(f.updates, p)
			f.path = p
			return Probe{Path: p, NATLocal: true}, nil
		}
	}
	return Probe{}, errors.New("timeout")
}

var (
	gw   = netip.MustParseAddrPort("203.0.113.10:4500")
	wlan = netmon.Address{Addr: netip.MustParseAddr("192.168.10.2"), Bits: 24, IfIndex: 2, IfName: "wlan"}
	wwan = netmon.Address{Addr: netip.MustParseAddr("192.168.20.2"), Bits: 24, IfIndex: 3, IfName: "wwan"}
	eth  = netmon.Address{Addr: netip.MustParseAddr("192.168.30.2"), Bits: 24, IfIndex: 4, IfName: "eth0"}
)

func pathOn(a netmon.Address) esp.Path {
	return esp.Path{Local: netip.AddrPortFrom(a.Addr, 40000), Remote: gw, IfIndex: a.IfIndex}
}

func TestMover(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		prefs      []string
		start      netmon.Address
		addrs      []netmon.Address // usable after the event
		working    []netmon.Address
		event      netmon.Event
		wantMoveTo *netmon.Address
		wantProbes int
	}{
		{name: "current link down moves to the other uplink", start: wlan, addrs: []netmon.Address{wwan}, working: []netmon.Address{wwan},
			event: netmon.LinkDown{IfIndex: 2, IfName: "wlan", Current: true, At: now}, wantMoveTo: &wwan, wantProbes: 1},
		{name: "current address removed", start: wlan, addrs: []netmon.Address{wwan}, working: []netmon.Address{wwan},
			event: netmon.AddressRemoved{Address: wlan, Current: true, At: now}, wantMoveTo: &wwan, wantProbes: 1},
		{name: "dead candidate skipped, preference order kept", prefs: []string{"eth0", "wlan", "wwan"}, start: wlan,
			addrs: []netmon.Address{wwan, eth}, working: []netmon.Address{wwan},
			event: netmon.LinkDown{IfIndex: 2, Current: true, At: now}, wantMoveTo: &wwan, wantProbes: 2},
		{name: "preferred uplink back: make-before-break", prefs: []string{"wlan", "wwan"}, start: wwan,
			addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wwan, wlan},
			event: netmon.Snapshot{At: now}, wantMoveTo: &wlan, wantProbes: 1},
		{name: "less preferred uplink appears: stay", prefs: []string{"wlan", "wwan"}, start: wlan,
			addrs: []netmon.Address{wlan, wwan}, working: []netmon.Address{wlan, wwan},
			event: netmon.Snapshot{At: now}, wantProbes: 0},
		{name: "no preference: new uplink does not move us", start: wlan,
			addrs: []netmon.Address{wlan, eth}, working: []netmon.Address{wlan, eth},
			event: netmon.Snapshot{At: now}, wantProbes: 0},
		{name: "other address removed: ignored", start: wlan, addrs: []netmon.Address{wlan}, working: []netmon.Address{wlan},
			event: netmon.AddressRemoved{Address: wwan, At: now}, wantProbes: 0},
		{name: "nothing works: no move", start: wlan, addrs: []netmon.Address{wwan}, working: nil,
			event: netmon.LinkDown{IfIndex: 2, Current: true, At: now}, wantProbes: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sa := &fakeSA{path: pathOn(tt.start), peers: []netip.Addr{gw.Addr()}, working: map[netip.Addr]bool{}}
			for _, a := range tt.working {
				sa.working[a.Addr] = true
			}
			var moved []Move
			var setPath []esp.Path
			m := New(Config{
				SA:         sa,
				Addresses:  func() []netmon.Address { return tt.addrs },
				SetPath:    func(p esp.Path) { setPath = append(setPath, p) },
				Interfaces: tt.prefs,
				OnMove:     func(mv Move) { moved = append(moved, mv) },
			}, pathOn(tt.start), tt.start.IfName)
			m.handle(context.Background(), tt.event)
			if len(sa.probes) != tt.wantProbes {
				t.Errorf("probes %v, want %d", sa.probes, tt.wantProbes)
			}
			if tt.wantMoveTo == nil {
				if len(moved) != 0 || len(sa.updates) != 0 {
					t.Fatalf("moved: %+v", moved)
				}
				return
			}
			want := pathOn(*tt.wantMoveTo)
			if len(sa.updates) != 1 || sa.updates[0] != want || len(setPath) != 1 || setPath[0] != want {
				t.Fatalf("updates %v setPath %v, want %v", sa.updates, setPath, want)
			}
			if len(moved) != 1 || moved[0].Interface != tt.wantMoveTo.IfName || !moved[0].NAT || moved[0].From != pathOn(tt.start) {
				t.Fatalf("move %+v", moved)
			}
			if cur, ifname := m.Current(); cur != want || ifname != tt.wantMoveTo.IfName {
				t.Fatalf("current %v %s", cur, ifname)
			}
		})
	}
}

// TestStaleCurrentFlag: the monitor flags an event as touching the current
// path when it is made; once the SA has moved, the rest of the old uplink's
// events (address removal after link down) must not move it again, here to
// the gateway's other address.
func TestStaleCurrentFlag(t *testing.T) {
	other := netip.MustParseAddr("203.0.113.26")
	sa := &fakeSA{path: pathOn(wwan), peers: []netip.Addr{gw.Addr(), other}, working: map[netip.Addr]bool{wwan.Addr: true}}
	m := New(Config{SA: sa, Addresses: func() []netmon.Address { return []netmon.Address{wwan} }, SetPath: func(esp.Path) {}}, pathOn(wwan), "wwan")
	for _, ev := range []netmon.Event{
		netmon.AddressRemoved{Address: wlan, Current: true, At: time.Now()},
		netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true, At: time.Now()},
	} {
		m.handle(context.Background(), ev)
	}
	if len(sa.probes) != 0 {
		t.Fatalf("moved on a stale event: probes %v", sa.probes)
	}
}

// TestRecoverWhenAddressReturns: all uplinks gone, then one comes back; the
// first snapshot with an address triggers the move.
func TestRecoverWhenAddressReturns(t *testing.T) {
	sa := &fakeSA{path: pathOn(wlan), peers: []netip.Addr{gw.Addr()}, working: map[netip.Addr]bool{wwan.Addr: true}}
	var addrs []netmon.Address
	m := New(Config{SA: sa, Addresses: func() []netmon.Address { return addrs }, SetPath: func(esp.Path) {}}, pathOn(wlan), "wlan")
	m.handle(context.Background(), netmon.LinkDown{IfIndex: 2, Current: true, At: time.Now()})
	if len(sa.updates) != 0 {
		t.Fatal("moved with no address")
	}
	addrs = []netmon.Address{wwan}
	m.handle(context.Background(), netmon.Snapshot{At: time.Now()})
	if len(sa.updates) != 1 || sa.updates[0] != pathOn(wwan) {
		t.Fatalf("updates %v", sa.updates)
	}
}

// TestSilentPath: traffic out and nothing back for longer than DeadAfter
// makes the mover test the current path; a live path gets an update (the
// NAT may have a new mapping), a dead one makes it move.
func TestSilentPath(t *testing.T) {
	base := time.Unix(1000, 0)
	tests := []struct {
		name          string
		sent, recv    time.Duration // offsets from base
		now           time.Duration
		currentWorks  bool
		wantProbes    int
		wantUpdateTo  *netmon.Address
		wantRefreshed bool
	}{
		{name: "traffic both ways", sent: 5 * time.Second, recv: 5 * time.Second, now: 5100 * time.Millisecond},
		{name: "idle tunnel", sent: 1 * time.Second, recv: 0, now: 10 * time.Second},
		{name: "silent, path alive: NAT refresh", sent: 5 * time.Second, recv: 3 * time.Second, now: 5100 * time.Millisecond,
			currentWorks: true, wantProbes: 1, wantUpdateTo: &wlan, wantRefreshed: true},
		{name: "silent, path dead: move", sent: 5 * time.Second, recv: 3 * time.Second, now: 5100 * time.Millisecond,
			wantProbes: 2, wantUpdateTo: &wwan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sa := &fakeSA{path: pathOn(wlan), peers: []netip.Addr{gw.Addr()}, working: map[netip.Addr]bool{wwan.Addr: true, wlan.Addr: tt.currentWorks}}
			refreshed := false
			m := New(Config{
				SA:           sa,
				Addresses:    func() []netmon.Address { return []netmon.Address{wlan, wwan} },
				SetPath:      func(esp.Path) {},
				Activity:     func() (time.Time, time.Time) { return base.Add(tt.sent), base.Add(tt.recv) },
				OnNATRefresh: func(esp.Path, time.Duration) { refreshed = true },
			}, pathOn(wlan), "wlan")
			m.checkSilence(context.Background(), base.Add(tt.now))
			if len(sa.probes) != tt.wantProbes {
				t.Fatalf("probes %v, want %d", sa.probes, tt.wantProbes)
			}
			if tt.wantUpdateTo == nil {
				if len(sa.updates) != 0 {
					t.Fatalf("updates %v", sa.updates)
				}
				return
			}
			if len(sa.updates) != 1 || sa.updates[0] != pathOn(*tt.wantUpdateTo) || refreshed != tt.wantRefreshed {
				t.Fatalf("updates %v refreshed %v", sa.updates, refreshed)
			}
			// A second tick right after must not test again.
			m.checkSilence(context.Background(), base.Add(tt.now+100*time.Millisecond))
			if len(sa.probes) != tt.wantProbes {
				t.Fatalf("tested again within the window: %v", sa.probes)
			}
		})
	}
}
