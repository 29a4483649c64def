package mobility

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// fakeSA answers updates sent from the local addresses listed in working.
// An update with no working path fails after timeout, as the engine's
// retransmissions do (ike.MoveRetransmit takes about ten seconds).
type fakeSA struct {
	mu      sync.Mutex
	peers   []netip.Addr
	working map[netip.Addr]bool
	timeout time.Duration
	rtt     time.Duration // how long a working path takes to answer
	calls   [][]netpath.Path
	updates []netpath.Path
	// deadRemote: gateway addresses that answer on no path.
	deadRemote map[netip.Addr]bool
}

func (f *fakeSA) PeerAddresses() []netip.Addr {
	return f.peers
}

// Move tries the paths in order, as the engine's round-robin does when
// only working paths answer.
func (f *fakeSA) Move(ctx context.Context, paths []netpath.Path) (Probe, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(paths))
	timeout, rtt := f.timeout, f.rtt
	for _, p := range paths {
		if f.working[p.Local.Addr()] && !f.deadRemote[p.Remote.Addr()] {
			f.updates = append(f.updates, p)
			f.mu.Unlock()
			time.Sleep(rtt)
			return Probe{Path: p, NATLocal: true}, nil
		}
	}
	f.mu.Unlock()
	if timeout > 0 {
		select {
		case <-time.After(timeout):
		case <-ctx.Done():
			return Probe{}, ctx.Err()
		}
	}
	return Probe{}, errors.New("timeout")
}

func (f *fakeSA) setWorking(addrs ...netmon.Address) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.working = map[netip.Addr]bool{}
	for _, a := range addrs {
		f.working[a.Addr] = true
	}
}

func (f *fakeSA) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

var (
	gw   = netip.MustParseAddrPort("203.0.113.10:4500")
	wlan = netmon.Address{Addr: netip.MustParseAddr("192.168.10.2"), Bits: 24, IfIndex: 2, IfName: "wlan"}
	wwan = netmon.Address{Addr: netip.MustParseAddr("192.168.20.2"), Bits: 24, IfIndex: 3, IfName: "wwan"}
	eth  = netmon.Address{Addr: netip.MustParseAddr("192.168.30.2"), Bits: 24, IfIndex: 4, IfName: "eth0"}
)

func pathOn(a netmon.Address) netpath.Path {
	return netpath.Path{Local: netip.AddrPortFrom(a.Addr, 40000), Remote: gw, IfIndex: a.IfIndex}
}

func nameOf(p netpath.Path) string {
	for _, a := range []netmon.Address{wlan, wwan, eth} {
		if a.Addr == p.Local.Addr() {
			return a.IfName
		}
	}
	return p.Local.String()
}

// rig runs a Mover inside a synctest bubble and records what it reports,
// one line per callback.
type rig struct {
	sa     *fakeSA
	m      *Mover
	events chan netmon.Event
	cancel context.CancelFunc
	done   chan struct{}

	knobs knobs

	mu      sync.Mutex
	addrs   []netmon.Address
	log     []string
	setPath []netpath.Path
	// onMove, when set, takes the Move reports instead of the log line.
	onMove func(Move)
}

func (r *rig) PeerAddresses() []netip.Addr { return r.sa.PeerAddresses() }

func (r *rig) Move(ctx context.Context, paths []netpath.Path) (Probe, error) {
	return r.sa.Move(ctx, paths)
}

func (r *rig) Addresses() []netmon.Address {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.addrs)
}

func (r *rig) Traffic() Traffic {
	if r.knobs.Activity == nil {
		return nil
	}
	return rigTraffic{r.knobs}
}

func (r *rig) RTT(p netpath.Path) (time.Duration, time.Duration, bool) {
	if r.knobs.RTT == nil {
		return 0, 0, false
	}
	return r.knobs.RTT(p)
}

// Report records one line per report.
func (r *rig) Report(rep Report) {
	switch rep := rep.(type) {
	case Move:
		r.mu.Lock()
		onMove := r.onMove
		r.mu.Unlock()
		if onMove != nil {
			onMove(rep)
			return
		}
		r.record("move %s->%s nat=%v", nameOf(rep.From), rep.Interface, rep.NAT)
	case NATRefresh:
		r.record("refresh %s", nameOf(rep.Path))
	case Suspend:
		r.record("suspend: %s", rep.Reason)
	case Resume:
		r.mu.Lock()
		ok := len(r.setPath) > 0 && r.setPath[len(r.setPath)-1] == rep.Path
		r.mu.Unlock()
		if !ok {
			r.record("resume before ESP was given the path %v", rep.Path)
			return
		}
		r.record("resume %s after %v, took %v", rep.Interface, rep.Outage, rep.Took)
	case OutageEnd:
		if !errors.Is(rep.Err, ErrOutage) {
			r.record("end with a foreign error: %v", rep.Err)
			return
		}
		r.record("end: %v", rep.Err)
	case Suspect:
		r.record("suspect: %s", rep.Reason)
	}
}

// rigTraffic is the dataplane's account the knobs give.
type rigTraffic struct{ k knobs }

func (t rigTraffic) Activity() (time.Time, time.Time) { return t.k.Activity() }

func (t rigTraffic) TakeStray() (netpath.Path, bool) {
	if t.k.StrayFrom == nil {
		return netpath.Path{}, false
	}
	return t.k.StrayFrom()
}

// knobs are what a test sets of a rig's Mover: its configuration and
// what its Conn reads of the dataplane and the engine (nil: nothing).
type knobs struct {
	Interfaces   []string
	OutageLimit  time.Duration
	SuspectAfter time.Duration
	Activity     func() (sent, received time.Time)
	StrayFrom    func() (netpath.Path, bool)
	RTT          func(netpath.Path) (srtt, rttvar time.Duration, ok bool)
}

// newRig starts a Mover on start with addrs usable and working answering;
// k supplies the knobs under test (the SA, the addresses and the reports
// are the rig's).
func newRig(k knobs, start netmon.Address, addrs, working []netmon.Address) *rig {
	r := &rig{
		sa:     &fakeSA{peers: []netip.Addr{gw.Addr()}, timeout: 10 * time.Second},
		events: make(chan netmon.Event, 16),
		done:   make(chan struct{}),
		addrs:  addrs,
	}
	r.sa.setWorking(working...)
	r.knobs = k
	cur := netpath.NewCurrent(pathOn(start), start.IfName)
	cur.Follow(r)
	r.m = New(Config{Interfaces: k.Interfaces, OutageLimit: k.OutageLimit, SuspectAfter: k.SuspectAfter}, r, cur)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.m.Run(ctx, r.events)
	}()
	synctest.Wait()
	return r
}

// FollowPath records where ESP is sent, as the dataplane's peer follows
// the path.
func (r *rig) FollowPath(s netpath.State) {
	if s.Kept {
		return
	}
	r.mu.Lock()
	r.setPath = append(r.setPath, s.Sending)
	r.mu.Unlock()
}

func (r *rig) record(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, fmt.Sprintf(format, args...))
}

// send delivers an event stamped now and lets the Mover act on it.
func (r *rig) send(ev netmon.Event) {
	now := time.Now()
	switch e := ev.(type) {
	case netmon.AddressRemoved:
		e.At = now
		ev = e
	case netmon.LinkDown:
		e.At = now
		ev = e
	case netmon.Snapshot:
		e.At = now
		ev = e
	case netmon.Wake:
		e.At = now
		ev = e
	}
	r.events <- ev
	synctest.Wait()
}

func (r *rig) setAddrs(addrs ...netmon.Address) {
	r.mu.Lock()
	r.addrs = addrs
	r.mu.Unlock()
}

// wait lets fake time pass.
func (r *rig) wait(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// take returns the callbacks recorded since the last take.
func (r *rig) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.log
	r.log = nil
	return out
}

func (r *rig) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *rig) stop() {
	r.cancel()
	<-r.done
	synctest.Wait() // the last update's goroutine
}

func expectLog(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("callbacks:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("callbacks:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}

func TestMover(t *testing.T) {
	tests := []struct {
		name       string
		prefs      []string
		start      netmon.Address
		addrs      []netmon.Address // usable after the event
		working    []netmon.Address
		event      netmon.Event
		wantMoveTo *netmon.Address
		wantProbes int // paths offered in the update
		wantLog    []string
		// wantESP: the paths ESP was given, in order, when not just the
		// one moved to: a lost path moves ESP onto the first candidate
		// at once, then where the update landed (or back, to report
		// the lost path, when none answered).
		wantESP []netmon.Address
	}{
		{name: "current link down moves to the other uplink", start: wlan, addrs: []netmon.Address{wwan}, working: []netmon.Address{wwan},
			event: netmon.LinkDown{IfIndex: 2, IfName: "wlan", Current: true}, wantMoveTo: &wwan, wantProbes: 1,
			wantLog: []string{"move wlan->wwan nat=true"}},
		{name: "current address removed", start: wlan, addrs: []netmon.Address{wwan}, working: []netmon.Address{wwan},
			event: netmon.AddressRemoved{Address: wlan, Current: true}, wantMoveTo: &wwan, wantProbes: 1,
			wantLog: []string{"move wlan->wwan"}},
		{name: "lost address still listed by the monitor is not tried", start: wlan, addrs: []netmon.Address{wlan, wwan},
			working: []netmon.Address{wlan, wwan}, event: netmon.AddressRemoved{Address: wlan, Current: true},
			wantMoveTo: &wwan, wantProbes: 1, wantLog: []string{"move wlan->wwan"}},
		{name: "dead candidate skipped, preference order kept", prefs: []string{"eth0", "wlan", "wwan"}, start: wlan,
			addrs: []netmon.Address{wwan, eth}, working: []netmon.Address{wwan},
			event: netmon.LinkDown{IfIndex: 2, Current: true}, wantMoveTo: &wwan, wantProbes: 2,
			wantLog: []string{"move wlan->wwan"}, wantESP: []netmon.Address{eth, wwan}},
		{name: "preferred uplink back: make-before-break", prefs: []string{"wlan", "wwan"}, start: wwan,
			addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wwan, wlan},
			event: netmon.Snapshot{}, wantMoveTo: &wlan, wantProbes: 1, wantLog: []string{"move wwan->wlan"}},
		{name: "less preferred uplink appears: stay", prefs: []string{"wlan", "wwan"}, start: wlan,
			addrs: []netmon.Address{wlan, wwan}, working: []netmon.Address{wlan, wwan}, event: netmon.Snapshot{}},
		{name: "no preference: new uplink does not move us", start: wlan,
			addrs: []netmon.Address{wlan, eth}, working: []netmon.Address{wlan, eth}, event: netmon.Snapshot{}},
		{name: "other address removed: ignored", start: wlan, addrs: []netmon.Address{wlan}, working: []netmon.Address{wlan},
			event: netmon.AddressRemoved{Address: wwan}},
		{name: "preferred uplink does not answer: stay, not suspended", prefs: []string{"wlan", "wwan"}, start: wwan,
			addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wwan}, event: netmon.Snapshot{}, wantProbes: 1},
		{name: "nothing answers: suspended", start: wlan, addrs: []netmon.Address{wwan}, event: netmon.LinkDown{IfIndex: 2, Current: true},
			wantProbes: 1, wantLog: []string{"suspend: mobility: no working path: timeout"}, wantESP: []netmon.Address{wwan, wlan}},
		{name: "last address gone: suspended without a probe", start: wlan, event: netmon.LinkDown{IfIndex: 2, Current: true},
			wantLog: []string{"suspend: no usable network address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(knobs{Interfaces: tt.prefs}, tt.start, tt.addrs, tt.working)
				defer r.stop()
				r.send(tt.event)
				r.wait(10 * time.Second) // a failing update times out, no retest yet
				if tt.wantProbes == 0 && len(r.sa.calls) != 0 ||
					tt.wantProbes > 0 && (len(r.sa.calls) != 1 || len(r.sa.calls[0]) != tt.wantProbes) {
					t.Fatalf("updates over %v, want one over %d paths", r.sa.calls, tt.wantProbes)
				}
				expectLog(t, r.take(), tt.wantLog...)
				var wantESP []netpath.Path
				for _, a := range tt.wantESP {
					wantESP = append(wantESP, pathOn(a))
				}
				if tt.wantESP == nil && tt.wantMoveTo != nil {
					wantESP = []netpath.Path{pathOn(*tt.wantMoveTo)}
				}
				if !slices.Equal(r.setPath, wantESP) {
					t.Fatalf("ESP given %v, want %v", r.setPath, wantESP)
				}
				if tt.wantMoveTo == nil {
					if len(r.sa.updates) != 0 {
						t.Fatalf("moved: %v", r.sa.updates)
					}
					return
				}
				want := pathOn(*tt.wantMoveTo)
				if len(r.sa.updates) != 1 || r.sa.updates[0] != want {
					t.Fatalf("updates %v, want %v", r.sa.updates, want)
				}
				if cur, ifname := r.m.Current(); cur != want || ifname != tt.wantMoveTo.IfName {
					t.Fatalf("current %v %s", cur, ifname)
				}
			})
		})
	}
}

// TestStaleCurrentFlag: the monitor flags an event as touching the current
// path when it is made; once the SA has moved, the rest of the old uplink's
// events (address removal after link down) must not move it again, here to
// the gateway's other address.
func TestStaleCurrentFlag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(knobs{}, wwan, []netmon.Address{wwan}, []netmon.Address{wwan})
		defer r.stop()
		r.sa.peers = []netip.Addr{gw.Addr(), netip.MustParseAddr("203.0.113.26")}
		r.send(netmon.AddressRemoved{Address: wlan, Current: true})
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true})
		if len(r.sa.calls) != 0 {
			t.Fatalf("moved on a stale event: %v", r.sa.calls)
		}
	})
}

// TestLossDuringMove: triggers that arrive while an update is in flight
// wait for it and are re-evaluated against the path it landed on: the
// removal of the uplink we just left does nothing, and a burst of
// snapshots costs one update, not one each.
func TestLossDuringMove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(knobs{}, wlan, []netmon.Address{wwan, eth}, nil)
		defer r.stop()
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true})
		if r.sa.callCount() != 1 {
			t.Fatalf("updates %v", r.sa.calls)
		}
		// Still in flight: more changes arrive.
		r.send(netmon.AddressRemoved{Address: wlan, Current: true})
		for range 5 {
			r.send(netmon.Snapshot{})
		}
		if r.sa.callCount() != 1 {
			t.Fatalf("a second update while one is in flight: %v", r.sa.calls)
		}
		r.sa.setWorking(eth)
		r.wait(10 * time.Second) // the first update times out
		expectLog(t, r.take(), "suspend: mobility: no working path", "move wlan->eth0", "resume eth0")
		if r.sa.callCount() != 2 {
			t.Fatalf("updates %v, want the failed one and one retry", r.sa.calls)
		}
	})
}

// TestPreferredBackDuringRecovery: after an outage the less preferred
// uplink returns first and the update goes there; the preferred one
// appears while that update is in flight, and the tunnel moves on to it
// once it has resumed.
func TestPreferredBackDuringRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(knobs{Interfaces: []string{"wlan", "wwan"}}, wlan, nil, []netmon.Address{wlan, wwan})
		defer r.stop()
		r.sa.rtt = 20 * time.Millisecond
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true})
		r.wait(20 * time.Second)
		r.setAddrs(wwan)
		r.send(netmon.Snapshot{})
		r.setAddrs(wwan, wlan)
		r.send(netmon.Snapshot{}) // the update over wwan is still in flight
		r.wait(time.Second)
		expectLog(t, r.take(), "suspend", "move wlan->wwan", "resume wwan after 20.02s", "move wwan->wlan")
		if cur, ifname := r.m.Current(); cur != pathOn(wlan) || ifname != "wlan" {
			t.Fatalf("on %v %s, want wlan", cur, ifname)
		}
	})
}

// TestOutage covers the time without any working path: suspended at once,
// no probes while there is nothing to probe from, a retest as soon as an
// address appears, bounded retests while addresses exist but nothing
// answers, and the end after the outage limit.
func TestOutage(t *testing.T) {
	type step struct {
		addrs     []netmon.Address // set before the event (nil: none)
		keepAddrs bool             // leave the addresses as they are
		working   []netmon.Address // set before the event when non-nil
		event     netmon.Event     // nil: none
		wait      time.Duration    // fake time to let pass after the event
		wantLog   []string
		wantCalls int // updates sent so far
		wantEnded bool
	}
	gone := netmon.LinkDown{IfIndex: wlan.IfIndex, IfName: "wlan", Current: true}
	tests := []struct {
		name  string
		limit time.Duration
		steps []step
	}{
		{name: "all addresses gone, then one back", steps: []step{
			{event: gone, wantLog: []string{"suspend: no usable network address"}},
			{event: netmon.Snapshot{}, wait: 20 * time.Minute},
			{addrs: []netmon.Address{wwan}, working: []netmon.Address{wwan}, event: netmon.Snapshot{},
				wantLog: []string{"move wlan->wwan", "resume wwan after 20m0s, took 0s"}, wantCalls: 1},
		}},
		{name: "same address back after the link flapped", steps: []step{
			{event: gone, wait: 20 * time.Second, wantLog: []string{"suspend: no usable network address"}},
			{addrs: []netmon.Address{wlan}, working: []netmon.Address{wlan}, event: netmon.Snapshot{},
				wantLog: []string{"resume wlan after 20s"}, wantCalls: 1},
		}},
		{name: "outage limit", limit: 30 * time.Minute, steps: []step{
			{event: gone, wait: 29 * time.Minute, wantLog: []string{"suspend: no usable network address"}},
			{wait: time.Minute, wantLog: []string{"end: no usable network for 30m0s"}, wantEnded: true},
		}},
		{name: "default outage limit", steps: []step{
			{event: gone, wait: DefaultOutageLimit, wantLog: []string{"suspend", "end: no usable network for 30m0s"}, wantEnded: true},
		}},
		{name: "addresses that do not answer: retests back off", steps: []step{
			{addrs: []netmon.Address{wwan}, event: gone, wantCalls: 1},
			// Fails at 10 s, retests after 2 s, 4 s, 8 s, 16 s, each
			// taking 10 s to fail; the next at 112 s.
			{keepAddrs: true, wait: 100 * time.Second, wantLog: []string{"suspend: mobility: no working path: timeout"}, wantCalls: 5},
			{keepAddrs: true, working: []netmon.Address{wwan}, wait: 32 * time.Second,
				wantLog: []string{"move wlan->wwan", "resume wwan after 1m52s"}, wantCalls: 6},
		}},
		{name: "last address goes while an update is in flight", steps: []step{
			{addrs: []netmon.Address{wwan}, event: gone, wantCalls: 1},
			{event: netmon.Snapshot{}, wantLog: []string{"suspend: no usable network address"}, wantCalls: 1},
			// The update fails later; nothing to retest from.
			{wait: 10 * time.Minute, wantCalls: 1},
			{addrs: []netmon.Address{eth}, working: []netmon.Address{eth}, event: netmon.Snapshot{},
				wantLog: []string{"move wlan->eth0", "resume eth0"}, wantCalls: 2},
		}},
		{name: "outage limit reached while addresses do not answer", limit: 5 * time.Minute, steps: []step{
			{addrs: []netmon.Address{wwan}, event: gone, wait: 5 * time.Minute,
				wantLog: []string{"suspend: mobility: no working path", "end: no usable network for 5m0s"}, wantEnded: true, wantCalls: 8},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(knobs{OutageLimit: tt.limit}, wlan, []netmon.Address{wlan}, nil)
				defer r.stop()
				for i, s := range tt.steps {
					if !s.keepAddrs {
						r.setAddrs(s.addrs...)
					}
					if s.working != nil {
						r.sa.setWorking(s.working...)
					}
					if s.event != nil {
						r.send(s.event)
					}
					r.wait(s.wait)
					got := r.take()
					if len(got) != len(s.wantLog) {
						t.Fatalf("step %d: callbacks %q, want %q", i, got, s.wantLog)
					}
					for j := range got {
						if !strings.HasPrefix(got[j], s.wantLog[j]) {
							t.Fatalf("step %d: callbacks %q, want %q", i, got, s.wantLog)
						}
					}
					if n := r.sa.callCount(); n != s.wantCalls {
						t.Fatalf("step %d: %d updates %v, want %d", i, n, r.sa.calls, s.wantCalls)
					}
					if r.ended() != s.wantEnded {
						t.Fatalf("step %d: Run ended %v", i, r.ended())
					}
				}
			})
		})
	}
}

// TestWake: a wake-up (resume from suspend, or a stopped daemon continued)
// suspends the connection, tests the current path first and resumes; time
// suspended counts towards the outage limit, time stopped was seen by the
// timers already.
func TestWake(t *testing.T) {
	slept := func(d time.Duration) netmon.Wake { return netmon.Wake{Suspended: d} }
	tests := []struct {
		name      string
		working   []netmon.Address
		before    time.Duration // outage before the wake (all addresses gone); 0: none
		wake      netmon.Wake
		wantLog   []string
		wantFirst netmon.Address // where the first update went
		wantEnded bool
	}{
		{name: "short suspend, path still works", working: []netmon.Address{wlan, wwan}, wake: slept(5 * time.Minute),
			wantLog: []string{"suspend: woke up: system suspended for 5m0s", "resume wlan after 5m0s"}, wantFirst: wlan},
		{name: "short suspend, NAT gone on wlan", working: []netmon.Address{wwan}, wake: slept(5 * time.Minute),
			wantLog: []string{"suspend: woke up: system suspended for 5m0s", "move wlan->wwan", "resume wwan"}, wantFirst: wlan},
		{name: "process stopped, path still works", working: []netmon.Address{wlan, wwan}, wake: netmon.Wake{Stopped: 40 * time.Second},
			wantLog: []string{"suspend: woke up: process stopped for 40s", "resume wlan after 0s"}, wantFirst: wlan},
		{name: "stopped, then suspended", working: []netmon.Address{wlan}, wake: netmon.Wake{Stopped: 20 * time.Second, Suspended: time.Minute},
			wantLog: []string{"suspend: woke up: system suspended for 1m0s, process stopped for 20s", "resume wlan after 1m0s"}, wantFirst: wlan},
		{name: "process stopped for longer than the limit: not counted", working: []netmon.Address{wlan}, wake: netmon.Wake{Stopped: 2 * time.Hour},
			wantLog: []string{"suspend: woke up: process stopped for 2h0m0s", "resume wlan after 0s"}, wantFirst: wlan},
		{name: "suspended longer than the limit", working: []netmon.Address{wlan}, wake: slept(2 * time.Hour),
			wantLog: []string{"suspend: woke up: system suspended for 2h0m0s", "end: no usable network for 2h0m0s"}, wantEnded: true},
		{name: "outage, then asleep past the limit", working: []netmon.Address{wlan}, before: 10 * time.Minute, wake: slept(25 * time.Minute),
			wantLog: []string{"suspend: no usable network address", "end: no usable network for 35m0s"}, wantEnded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(knobs{OutageLimit: 30 * time.Minute}, wlan, []netmon.Address{wlan, wwan}, tt.working)
				defer r.stop()
				if tt.before > 0 {
					r.setAddrs()
					r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true})
					r.wait(tt.before)
					r.setAddrs(wlan, wwan)
				}
				r.send(tt.wake)
				expectLog(t, r.take(), tt.wantLog...)
				if r.ended() != tt.wantEnded {
					t.Fatalf("Run ended: %v", r.ended())
				}
				if tt.wantEnded {
					return
				}
				if len(r.sa.calls) != 1 || r.sa.calls[0][0] != pathOn(tt.wantFirst) {
					t.Fatalf("updates %v, want one starting on %s", r.sa.calls, tt.wantFirst.IfName)
				}
			})
		})
	}
}

// traffic stands in for esp.Peer.Activity: while sending, a packet leaves
// every 10 ms; while answered, each is answered at once.
type traffic struct {
	mu                 sync.Mutex
	sending, answered  bool
	lastSent, lastRecv time.Time
}

func (tr *traffic) Activity() (time.Time, time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	now := time.Now().Truncate(10 * time.Millisecond)
	if tr.sending {
		tr.lastSent = now
		if tr.answered {
			tr.lastRecv = now
		}
	}
	return tr.lastSent, tr.lastRecv
}

func (tr *traffic) set(sending, answered bool) {
	tr.Activity() // bring the times up to now under the old regime
	tr.mu.Lock()
	tr.sending, tr.answered = sending, answered
	tr.mu.Unlock()
}

// TestSilentPath: traffic out and nothing back for DeadAfter makes the
// mover test the current path, first; a live path gets an update (the NAT
// may have a new mapping), a dead one makes it move. Idle tunnels and
// answered traffic never cause a test, and a one-way flow backs off.
func TestSilentPath(t *testing.T) {
	tests := []struct {
		name         string
		sending      bool
		answered     bool
		currentWorks bool
		healed       bool // the update repairs the path (the NAT maps us again)
		wantLog      []string
		wantCalls    int // over the first minute of silence
		wantFirstTo  netpath.Path
	}{
		{name: "traffic both ways", sending: true, answered: true},
		{name: "idle tunnel", sending: false},
		{name: "NAT lost its mapping: refresh on the same path", sending: true, currentWorks: true, healed: true,
			wantLog: []string{"refresh wlan"}, wantCalls: 1, wantFirstTo: pathOn(wlan)},
		{name: "upstream dead: move", sending: true, healed: true,
			wantLog: []string{"move wlan->wwan"}, wantCalls: 1, wantFirstTo: pathOn(wlan)},
		// 0.5 s, then 1, 2, 4, 8, 16 s later: 6 updates in the first
		// minute (the next 32 s later).
		{name: "one-way flow on a live path backs off", sending: true, currentWorks: true,
			wantLog: slices.Repeat([]string{"refresh wlan"}, 6), wantCalls: 6, wantFirstTo: pathOn(wlan)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &traffic{sending: true, answered: true}
				working := []netmon.Address{wwan}
				if tt.currentWorks {
					working = append(working, wlan)
				}
				var checkedAt []time.Duration
				start := time.Now()
				r := newRig(knobs{Activity: tr.Activity}, wlan, []netmon.Address{wlan, wwan}, working)
				defer r.stop()
				r.wait(3 * time.Second) // answered traffic: nothing to test
				if r.sa.callCount() != 0 {
					t.Fatalf("tested a path that answers: %v", r.sa.calls)
				}
				silentAt := time.Since(start)
				tr.set(tt.sending, tt.answered)
				for range 600 {
					before := r.sa.callCount()
					r.wait(100 * time.Millisecond)
					if r.sa.callCount() > before {
						checkedAt = append(checkedAt, time.Since(start)-silentAt)
						if tt.healed {
							tr.set(true, true)
						}
					}
				}
				expectLog(t, r.take(), tt.wantLog...)
				if len(r.sa.calls) != tt.wantCalls {
					t.Fatalf("%d updates %v, want %d", len(r.sa.calls), r.sa.calls, tt.wantCalls)
				}
				if tt.wantCalls == 0 {
					return
				}
				if r.sa.calls[0][0] != tt.wantFirstTo {
					t.Fatalf("first update over %v, want the current path first", r.sa.calls[0])
				}
				// Detection: DeadAfter plus at most two ticks.
				if first := checkedAt[0]; first < DefaultDeadAfter || first > DefaultDeadAfter+2*DefaultDeadAfter/10+100*time.Millisecond {
					t.Fatalf("first test %v after the silence began, want about %v", first, DefaultDeadAfter)
				}
			})
		})
	}
}

// TestSilenceAfterIdle: a packet after a long idle spell that gets its
// answer within DeadAfter is no reason to test, although the last inbound
// packet is minutes old when it leaves.
func TestSilenceAfterIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &traffic{}
		r := newRig(knobs{Activity: tr.Activity}, wlan, []netmon.Address{wlan}, []netmon.Address{wlan})
		defer r.stop()
		tr.set(true, true)
		r.wait(time.Second)
		tr.set(false, false)
		r.wait(5 * time.Minute)
		// One request, its answer 200 ms later.
		tr.mu.Lock()
		tr.lastSent = time.Now()
		tr.mu.Unlock()
		r.wait(200 * time.Millisecond)
		tr.mu.Lock()
		tr.lastRecv = time.Now()
		tr.mu.Unlock()
		r.wait(10 * time.Second)
		if r.sa.callCount() != 0 {
			t.Fatalf("tested after an idle spell: %v", r.sa.calls)
		}
	})
}

// TestTestingWhileUpdateInFlight: Testing is true exactly while a path test
// that doubts the current path is unanswered, for status to show that the
// path's fate is open; a make-before-break test of a preferred uplink
// leaves it false, as the current path still works.
func TestTestingWhileUpdateInFlight(t *testing.T) {
	tests := []struct {
		name    string
		better  bool // a preferred uplink appears instead of the current one going down
		working []netmon.Address
		wait    time.Duration // how long the answer (or the give-up) takes
		testing bool
	}{
		{"answered after an RTT", false, []netmon.Address{wwan}, 40 * time.Millisecond, true},
		{"unanswered until the timeout", false, nil, 10 * time.Second, true},
		{"make-before-break", true, []netmon.Address{wlan, eth}, 40 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(knobs{Interfaces: []string{"eth0", "wlan", "wwan"}}, wlan, []netmon.Address{wlan, wwan}, tt.working)
				r.sa.mu.Lock()
				r.sa.rtt = tt.wait
				r.sa.mu.Unlock()
				if r.m.Testing() {
					t.Fatal("testing before any event")
				}
				if tt.better {
					r.setAddrs(wlan, eth)
					r.send(netmon.Snapshot{})
				} else {
					r.setAddrs(wwan)
					r.send(netmon.LinkDown{IfIndex: wlan.IfIndex})
				}
				if n := r.sa.callCount(); n != 1 {
					t.Fatalf("%d updates started, want 1", n)
				}
				if got := r.m.Testing(); got != tt.testing {
					t.Fatalf("Testing() = %v while the update is in flight, want %v", got, tt.testing)
				}
				r.wait(tt.wait)
				if r.m.Testing() {
					t.Fatal("still testing after the update ended")
				}
				r.stop()
			})
		})
	}
}

// TestESPAheadOfAnswer: when the current uplink goes away, ESP is sent on
// the first candidate while its update is still unanswered, and the
// Mover's current path changes only with the answer.
func TestESPAheadOfAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(knobs{}, wlan, []netmon.Address{wwan}, []netmon.Address{wwan})
		defer r.stop()
		r.sa.rtt = 20 * time.Millisecond
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true})
		r.mu.Lock()
		early := slices.Clone(r.setPath)
		r.mu.Unlock()
		if want := []netpath.Path{pathOn(wwan)}; !slices.Equal(early, want) {
			t.Fatalf("ESP given %v before the answer, want %v", early, want)
		}
		if cur, _ := r.m.Current(); cur != pathOn(wlan) {
			t.Fatalf("current %v before the answer", cur)
		}
		r.wait(r.sa.rtt)
		expectLog(t, r.take(), "move wlan->wwan")
		if cur, _ := r.m.Current(); cur != pathOn(wwan) {
			t.Fatalf("current %v after the answer", cur)
		}
		if len(r.setPath) != 1 {
			t.Fatalf("ESP given %v, want the early path only", r.setPath)
		}
	})
}

// TestLossJoinsSilenceCheck: the current uplink goes down while a silence
// check (current path first) is in flight: the loss does not wait behind
// it but joins it with the remaining paths at once, and ESP goes ahead.
func TestLossJoinsSilenceCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &traffic{sending: true, answered: true}
		r := newRig(knobs{Activity: tr.Activity}, wlan, []netmon.Address{wlan, wwan}, []netmon.Address{wwan})
		defer r.stop()
		r.sa.rtt = 300 * time.Millisecond
		r.wait(time.Second)
		tr.set(true, false)
		for r.sa.callCount() == 0 {
			r.wait(silenceTick)
		}
		if got := r.sa.calls[0]; len(got) != 2 || got[0] != pathOn(wlan) {
			t.Fatalf("silence check over %v, want the current path first", got)
		}
		r.setAddrs(wwan)
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, Current: true})
		if n := r.sa.callCount(); n != 2 || !slices.Equal(r.sa.calls[1], []netpath.Path{pathOn(wwan)}) {
			t.Fatalf("updates %v, want the loss to join with wwan at once", r.sa.calls)
		}
		r.mu.Lock()
		early := slices.Clone(r.setPath)
		r.mu.Unlock()
		if !slices.Equal(early, []netpath.Path{pathOn(wwan)}) {
			t.Fatalf("ESP given %v before the answer, want wwan", early)
		}
		tr.set(true, true)
		r.wait(time.Second)
		expectLog(t, r.take(), "move wlan->wwan")
		if r.sa.callCount() != 2 {
			t.Fatalf("updates %v after the move", r.sa.calls)
		}
	})
}
