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

// moverRig is a connection established over wlan with MOBIKE whose
// mobility wiring (its Mover) runs against a fake SA: a test feeds it
// netmon events or a child event, and reads the events it emitted and
// its status.
type moverRig struct {
	gw         netip.AddrPort
	wlan, wwan netmon.Address
	c          *conn
	mover      *mobility.Mover
	sa         *fakeMobilitySA
	evs        chan netmon.Event
	ran        chan struct{} // closed when the mover returns

	mu     sync.Mutex
	events []report.Event
	addrs  []netmon.Address // the usable addresses netmon would list
}

// newMoverRig builds the connection, with an SA on which no address
// answers, lets prepare (if not nil) finish it before its mover starts,
// and runs the mover until cancel is called or the connection ends. It
// runs inside a synctest bubble.
func newMoverRig(ctx context.Context, cancel context.CancelFunc, prepare func(*moverRig)) *moverRig {
	r := &moverRig{
		gw:   netip.MustParseAddrPort("198.51.100.1:4500"),
		wlan: netmon.Address{Addr: netip.MustParseAddr("192.168.10.2"), Bits: 24, IfIndex: 2, IfName: "wlan"},
		wwan: netmon.Address{Addr: netip.MustParseAddr("192.168.20.2"), Bits: 24, IfIndex: 3, IfName: "wwan"},
		sa:   &fakeMobilitySA{working: map[netip.Addr]bool{}},
		evs:  make(chan netmon.Event, 4),
		ran:  make(chan struct{}),
	}
	dp := esp.NewDataplane(nil, nil, discardLog())
	r.c = &conn{
		profile: &config.Profile{Name: "corp", MOBIKE: true, Interfaces: []string{"wlan", "wwan"}, OutageLimit: 30 * time.Minute},
		log:     discardLog(),
		emit: func(ev report.Event) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		},
		cancel: cancel, dp: dp, done: make(chan struct{}), state: "established", ifname: "wlan",
		est: &ike.Established{Path: r.pathOf(r.wlan), PeerMOBIKE: true},
	}
	r.c.peer = dp.NewPeer(r.pathOf(r.wlan))
	r.c.dpdHold = func(bool) {}
	if prepare != nil {
		prepare(r)
	}
	mc := r.c.moverConn(r.sa, func() []netmon.Address {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Clone(r.addrs)
	})
	r.mover = r.c.newMover(r.c.mobilityConfig(), mc, netpath.NewCurrent(r.pathOf(r.wlan), "wlan"), nil)
	go func() {
		defer close(r.ran)
		r.mover.Run(ctx, r.evs)
	}()
	return r
}

// pathOf is the path to the gateway from a's address.
func (r *moverRig) pathOf(a netmon.Address) netpath.Path {
	return netpath.Path{Local: netip.AddrPortFrom(a.Addr, 4500), Remote: r.gw, IfIndex: a.IfIndex}
}

// send hands the mover ev and waits until the bubble is idle again.
func (r *moverRig) send(ev netmon.Event) {
	r.evs <- ev
	synctest.Wait()
}

func (r *moverRig) setAddrs(a ...netmon.Address) {
	r.mu.Lock()
	r.addrs = a
	r.mu.Unlock()
}

// emitted is every event so far.
func (r *moverRig) emitted() []report.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// take returns the events since the last take but the health ones, which
// Status emits as it looks (checked through Status).
func (r *moverRig) take() []report.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []report.Event
	for _, ev := range r.events {
		if ev.Event != report.EventHealth {
			out = append(out, ev)
		}
	}
	r.events = nil
	return out
}

// TestConnOutage drives a connection's mobility wiring through an outage:
// every uplink down (suspended: state, interface and local cleared), an
// uplink back (path-changed, then resumed, traffic on the new path), and a
// second outage that outlasts outage_limit (the connection ends with the
// outage as its reason).
func TestConnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		var holds []bool
		dpdHolds := func() []bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(holds)
		}
		r := newMoverRig(ctx, cancel, func(r *moverRig) {
			r.sa.working[r.wwan.Addr] = true
			r.c.est.VirtualIPs = []netip.Addr{netip.MustParseAddr("10.99.200.1")}
			r.c.dpdHold = func(hold bool) {
				mu.Lock()
				holds = append(holds, hold)
				mu.Unlock()
			}
		})
		c, gw, wlan, wwan := r.c, r.gw, r.wlan, r.wwan

		// Every uplink down.
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, IfName: "wlan", Current: true, At: time.Now()})
		got := r.take()
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
		r.setAddrs(wwan)
		r.send(netmon.Snapshot{Addrs: []netmon.Address{wwan}, At: time.Now()})
		got = r.take()
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
		if c.peer.Path() != r.pathOf(wwan) {
			t.Fatalf("ESP on %v", c.peer.Path())
		}
		if h := dpdHolds(); !slices.Equal(h, []bool{true, false}) {
			t.Fatalf("DPD holds %v after resuming, want [true false]", h)
		}

		// Down again, for longer than outage_limit.
		r.setAddrs()
		r.send(netmon.LinkDown{IfIndex: wwan.IfIndex, IfName: "wwan", Current: true, At: time.Now()})
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
		<-r.ran
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
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := newMoverRig(ctx, cancel, func(r *moverRig) { // nothing answers
			r.addrs = []netmon.Address{r.wwan}
			r.c.suspect = make(chan string, 1)
		})
		c := r.c
		// wlan goes: wwan is tested. Then wwan goes as well.
		r.send(netmon.LinkDown{IfIndex: r.wlan.IfIndex, IfName: "wlan", Current: true, At: time.Now()})
		r.setAddrs()
		r.send(netmon.Snapshot{At: time.Now()})
		if st := c.Status(); st.State != report.StateSuspended || st.Health != report.HealthNoPath {
			t.Fatalf("status with no address: state %q health %q (%s)", st.State, st.Health, st.HealthReason)
		}
		// The test of wwan fails after the retransmissions.
		time.Sleep(11 * time.Second)
		synctest.Wait()
		r.mu.Lock()
		var tests []report.Event
		for _, ev := range r.events {
			if ev.Event == report.EventPathTest {
				tests = append(tests, ev)
			}
		}
		r.mu.Unlock()
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
		<-r.ran
	})
}
