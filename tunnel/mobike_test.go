package tunnel

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/netmon"
)

// fakeMobilitySA answers updates from the local addresses in working; the
// others fail after the engine's retransmissions (about ten seconds).
type fakeMobilitySA struct {
	mu      sync.Mutex
	working map[netip.Addr]bool
}

func (f *fakeMobilitySA) PeerAddresses() []netip.Addr { return nil }

func (f *fakeMobilitySA) Move(ctx context.Context, paths []netpath.Path) (mobility.Probe, error) {
	f.mu.Lock()
	for _, p := range paths {
		if f.working[p.Local.Addr()] {
			f.mu.Unlock()
			return mobility.Probe{Path: p, NATLocal: true}, nil
		}
	}
	f.mu.Unlock()
	select {
	case <-time.After(10 * time.Second):
		return mobility.Probe{}, errors.New("no answer")
	case <-ctx.Done():
		return mobility.Probe{}, ctx.Err()
	}
}

// TestConnOutage drives a connection's mobility wiring through an outage:
// every uplink down (suspended: state, interface and local cleared), an
// uplink back (path-changed, then resumed, traffic on the new path), and a
// second outage that outlasts outage_limit (the connection ends with the
// outage as its reason).
func TestConnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gw := netip.MustParseAddrPort("198.51.100.1:4500")
		wlan := netmon.Address{Addr: netip.MustParseAddr("192.168.10.2"), Bits: 24, IfIndex: 2, IfName: "wlan"}
		wwan := netmon.Address{Addr: netip.MustParseAddr("192.168.20.2"), Bits: 24, IfIndex: 3, IfName: "wwan"}
		pathOf := func(a netmon.Address) netpath.Path {
			return netpath.Path{Local: netip.AddrPortFrom(a.Addr, 4500), Remote: gw, IfIndex: a.IfIndex}
		}
		var mu sync.Mutex
		var events []report.Event
		var addrs []netmon.Address
		// take returns the events since the last take but the health
		// ones, which Status emits as it looks (checked through Status).
		take := func() []report.Event {
			mu.Lock()
			defer mu.Unlock()
			var out []report.Event
			for _, ev := range events {
				if ev.Event != report.EventHealth {
					out = append(out, ev)
				}
			}
			events = nil
			return out
		}
		setAddrs := func(a ...netmon.Address) {
			mu.Lock()
			addrs = a
			mu.Unlock()
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		dp := esp.NewDataplane(nil, nil, discardLog())
		c := &conn{
			profile: &config.Profile{Name: "corp", MOBIKE: true, Interfaces: []string{"wlan", "wwan"}, OutageLimit: 30 * time.Minute},
			log:     discardLog(),
			emit: func(ev report.Event) {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			},
			cancel: cancel, dp: dp, done: make(chan struct{}), state: "established", ifname: "wlan",
			est: &ike.Established{Path: pathOf(wlan), PeerMOBIKE: true, VirtualIPs: []netip.Addr{netip.MustParseAddr("10.99.200.1")}},
		}
		c.peer = dp.NewPeer(pathOf(wlan))
		var holds []bool
		c.dpdHold = func(hold bool) {
			mu.Lock()
			holds = append(holds, hold)
			mu.Unlock()
		}
		dpdHolds := func() []bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(holds)
		}
		sa := &fakeMobilitySA{working: map[netip.Addr]bool{wwan.Addr: true}}
		mc := c.moverConn(sa, func() []netmon.Address {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(addrs)
		})
		evs := make(chan netmon.Event, 4)
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			c.newMover(c.mobilityConfig(), mc, netpath.NewCurrent(pathOf(wlan), "wlan"), nil).Run(ctx, evs)
		}()
		send := func(ev netmon.Event) {
			evs <- ev
			synctest.Wait()
		}

		// Every uplink down.
		send(netmon.LinkDown{IfIndex: wlan.IfIndex, IfName: "wlan", Current: true, At: time.Now()})
		got := take()
		if len(got) != 1 || got[0].Event != report.EventSuspended || got[0].Interface != "wlan" || got[0].From != "192.168.10.2:4500" ||
			got[0].Reason != "no usable network address" {
			t.Fatalf("events %+v, want one suspended naming wlan", got)
		}
		if st := c.Status(); st.State != "suspended" || st.Interface != "" || st.Local != "" || st.Remote != gw.String() || st.VirtualIP != "10.99.200.1" ||
			st.Health != report.HealthNoPath {
			t.Fatalf("status while suspended: %+v", st)
		}
		// Silence from the gateway proves nothing now: DPD waits.
		if h := dpdHolds(); !slices.Equal(h, []bool{true}) {
			t.Fatalf("DPD holds %v while suspended, want [true]", h)
		}

		// wwan comes back 20 s later.
		time.Sleep(20 * time.Second)
		setAddrs(wwan)
		send(netmon.Snapshot{Addrs: []netmon.Address{wwan}, At: time.Now()})
		got = take()
		var kinds []string
		for _, ev := range got {
			kinds = append(kinds, ev.Event)
		}
		if !slices.Equal(kinds, []string{report.EventPathTest, report.EventPathChanged, report.EventResumed}) {
			t.Fatalf("events %+v", got)
		}
		if r := got[2]; r.Interface != "wwan" || r.To != "192.168.20.2:4500" || r.Reason != "after 20s without a usable path" {
			t.Fatalf("resumed event %+v", r)
		}
		if st := c.Status(); st.State != "established" || st.Interface != "wwan" || st.PathChanges != 1 {
			t.Fatalf("status after resuming: %+v", st)
		}
		if c.peer.Path() != pathOf(wwan) {
			t.Fatalf("ESP on %v", c.peer.Path())
		}
		if h := dpdHolds(); !slices.Equal(h, []bool{true, false}) {
			t.Fatalf("DPD holds %v after resuming, want [true false]", h)
		}

		// Down again, for longer than outage_limit.
		setAddrs()
		send(netmon.LinkDown{IfIndex: wwan.IfIndex, IfName: "wwan", Current: true, At: time.Now()})
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		select {
		case <-c.Done():
		default:
			t.Fatal("connection still up after outage_limit")
		}
		if err := c.Err(); err == nil || err.Error() != "no usable network for 30m0s" {
			t.Fatalf("ended with %v", err)
		}
		if st := c.Status(); st.State != "disconnected" {
			t.Fatalf("state %q", st.State)
		}
		<-ran
	})
}

// TestOutageLimitDefaults: the profile's default and mobility's are one.
func TestOutageLimitDefaults(t *testing.T) {
	if config.DefaultOutageLimit != mobility.DefaultOutageLimit {
		t.Fatalf("config %v, mobility %v", config.DefaultOutageLimit, mobility.DefaultOutageLimit)
	}
}

// TestConnAddressesGoneDuringTest: a path test is in flight when the last
// usable address goes too (both uplinks down within moments, as the
// torture bench does). Its failure, about ten seconds later, says nothing
// about the gateway: the connection stays suspended with no usable
// address as the reason (health no-path), and no replacement SA is
// suspected lost, which would show a reconnect (health testing) for the
// rest of an outage that no reconnect can end.
func TestConnAddressesGoneDuringTest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gw := netip.MustParseAddrPort("198.51.100.1:4500")
		wlan := netmon.Address{Addr: netip.MustParseAddr("192.168.10.2"), Bits: 24, IfIndex: 2, IfName: "wlan"}
		wwan := netmon.Address{Addr: netip.MustParseAddr("192.168.20.2"), Bits: 24, IfIndex: 3, IfName: "wwan"}
		pathOf := func(a netmon.Address) netpath.Path {
			return netpath.Path{Local: netip.AddrPortFrom(a.Addr, 4500), Remote: gw, IfIndex: a.IfIndex}
		}
		var mu sync.Mutex
		var events []report.Event
		addrs := []netmon.Address{wwan}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		dp := esp.NewDataplane(nil, nil, discardLog())
		c := &conn{
			profile: &config.Profile{Name: "corp", MOBIKE: true, Interfaces: []string{"wlan", "wwan"}, OutageLimit: 30 * time.Minute},
			log:     discardLog(),
			emit: func(ev report.Event) {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			},
			cancel: cancel, dp: dp, done: make(chan struct{}), state: "established", ifname: "wlan",
			est:     &ike.Established{Path: pathOf(wlan), PeerMOBIKE: true},
			suspect: make(chan string, 1),
		}
		c.peer = dp.NewPeer(pathOf(wlan))
		c.dpdHold = func(bool) {}
		sa := &fakeMobilitySA{working: map[netip.Addr]bool{}} // nothing answers
		mc := c.moverConn(sa, func() []netmon.Address {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(addrs)
		})
		evs := make(chan netmon.Event, 4)
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			c.newMover(c.mobilityConfig(), mc, netpath.NewCurrent(pathOf(wlan), "wlan"), nil).Run(ctx, evs)
		}()
		send := func(ev netmon.Event) {
			evs <- ev
			synctest.Wait()
		}
		// wlan goes: wwan is tested. Then wwan goes as well.
		send(netmon.LinkDown{IfIndex: wlan.IfIndex, IfName: "wlan", Current: true, At: time.Now()})
		mu.Lock()
		addrs = nil
		mu.Unlock()
		send(netmon.Snapshot{At: time.Now()})
		if st := c.Status(); st.State != report.StateSuspended || st.Health != report.HealthNoPath {
			t.Fatalf("status with no address: state %q health %q (%s)", st.State, st.Health, st.HealthReason)
		}
		// The test of wwan fails after the retransmissions.
		time.Sleep(11 * time.Second)
		synctest.Wait()
		mu.Lock()
		var tests []report.Event
		for _, ev := range events {
			if ev.Event == report.EventPathTest {
				tests = append(tests, ev)
			}
		}
		mu.Unlock()
		if len(tests) != 1 || tests[0].Reason == "" {
			t.Fatalf("path-test events %+v, want the failed test of wwan", tests)
		}
		select {
		case reason := <-c.suspect:
			t.Fatalf("a test over an address gone since made the SA suspect: %s", reason)
		default:
		}
		if st := c.Status(); st.State != report.StateSuspended || st.Health != report.HealthNoPath || st.HealthReason != "no usable network address" {
			t.Fatalf("status after the failed test: state %q health %q (%s)", st.State, st.Health, st.HealthReason)
		}
		cancel()
		<-ran
	})
}
