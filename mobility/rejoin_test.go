package mobility

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// TestRejoin: an uplink that the mover's order puts ahead of the first
// path of an update still unanswered past its first retransmission (its
// answers lost, or its uplink blackholed) joins that update at once: the
// update is called again with the new list, the newcomer first, and the
// tunnel ends there one RTT after it appeared, not after the ten seconds
// the old update takes to fail. An update answered before it is late is
// left alone and followed by make-before-break, as before.
func TestRejoin(t *testing.T) {
	const rtt = 20 * time.Millisecond
	type step struct {
		addrs   []netmon.Address // usable from this step on (nil: unchanged)
		working []netmon.Address // answering from this step on (nil: unchanged)
		event   netmon.Event     // nil: none
		wait    time.Duration    // fake time to let pass after the event
		// wantCalls: every update so far, each as the uplinks it
		// tried in order.
		wantCalls [][]netmon.Address
		wantLog   []string
		wantOn    *netmon.Address // the Mover's path after the step
		// wantESP: every path ESP was given so far (nil: not checked).
		wantESP []netmon.Address
	}
	down := netmon.LinkDown{IfIndex: wlan.IfIndex, IfName: "wlan", Current: true}
	snap := netmon.Snapshot{}
	tests := []struct {
		name  string
		prefs []string
		rtt   time.Duration
		start netmon.Address
		addrs []netmon.Address
		steps []step
	}{
		{name: "lost uplink back while the update over the other is unanswered", start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: time.Second, wantCalls: [][]netmon.Address{{wwan}}},
				// ESP went ahead onto wwan with the first update, and onto
				// wlan with the joined one.
				{addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wlan}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}, {wlan, wwan}}, wantESP: []netmon.Address{wwan, wlan}},
				// The SA never left wlan as far as it confirmed: no move.
				{wait: rtt, wantOn: &wlan},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {wlan, wwan}}, wantOn: &wlan},
			}},
		{name: "preferred uplink appears while the update is unanswered", prefs: []string{"eth0", "wlan", "wwan"}, start: wlan,
			addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: time.Second, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{wwan, eth}, working: []netmon.Address{eth}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}, {eth, wwan}}},
				{wait: rtt, wantLog: []string{"move wlan->eth0 nat=true took 20ms"}, wantOn: &eth},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {eth, wwan}}, wantOn: &eth},
			}},
		{name: "outage: preferred back while the retest is unanswered", prefs: []string{"wlan", "wwan"}, start: wlan,
			steps: []step{
				{event: down, wait: 5 * time.Second, wantLog: []string{"suspend: no usable network address"}},
				{addrs: []netmon.Address{wwan}, event: snap, wait: time.Second, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wlan}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}, {wlan, wwan}}},
				{wait: rtt, wantLog: []string{"resume wlan after 6.02s, took 20ms"}, wantOn: &wlan},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {wlan, wwan}}, wantOn: &wlan},
			}},
		{name: "back before the update is late: joins when it is", start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: 50 * time.Millisecond, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wlan}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}}},
				{wait: DefaultRejoinAfter - 50*time.Millisecond, wantCalls: [][]netmon.Address{{wwan}, {wlan, wwan}}},
				{wait: rtt, wantOn: &wlan},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {wlan, wwan}}, wantOn: &wlan},
			}},
		// wwan's address goes as the update to it leaves (its IPv4
		// removed, another address left): no answer can come back to it,
		// so the update joins at once instead of after RejoinAfter.
		{name: "first path's address gone before the update is late: joins at once", start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: 10 * time.Millisecond, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{eth}, working: []netmon.Address{eth}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}, {eth}}},
				{wait: rtt, wantLog: []string{"move wlan->eth0"}, wantOn: &eth},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {eth}}, wantOn: &eth},
			}},
		// As above, but an earlier snapshot (eth appearing) had already
		// set the wait: the one that takes wwan's address cuts it short.
		{name: "first path's address gone while the join waits: joins at once", start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: 10 * time.Millisecond, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{wwan, eth}, working: []netmon.Address{eth}, event: snap, wait: 10 * time.Millisecond,
					wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{eth}, event: snap, wantCalls: [][]netmon.Address{{wwan}, {eth}}},
				{wait: rtt, wantLog: []string{"move wlan->eth0"}, wantOn: &eth},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {eth}}, wantOn: &eth},
			}},
		// Every uplink flaps while the update over wwan is unanswered: its
		// answer may have come while the address was away, so when wwan
		// is back the update goes out again at once.
		{name: "every address gone and back while the update is unanswered: sent again at once", start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: 10 * time.Millisecond, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{}, event: snap, wait: 10 * time.Millisecond,
					wantCalls: [][]netmon.Address{{wwan}}, wantLog: []string{"suspend: no usable network address"}},
				{addrs: []netmon.Address{wwan}, working: []netmon.Address{wwan}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}, {wwan}}},
				{wait: rtt, wantLog: []string{"move wlan->wwan nat=true took 20ms", "resume wwan after 30ms, took 20ms"}, wantOn: &wwan},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {wwan}}, wantOn: &wwan},
			}},
		{name: "another uplink appears: added to the unanswered update", start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: time.Second, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{wwan, eth}, working: []netmon.Address{eth}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}, {wwan, eth}}},
				{wait: rtt, wantLog: []string{"move wlan->eth0"}, wantOn: &eth},
			}},
		{name: "snapshot that changes nothing: no join", start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{event: down, wait: time.Second, wantCalls: [][]netmon.Address{{wwan}}},
				{event: snap, wait: time.Second, wantCalls: [][]netmon.Address{{wwan}}},
				// The update fails (10 s), the connection is suspended and
				// retested after 2 s.
				{wait: 10 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {wwan}},
					wantLog: []string{"suspend: mobility: no working path: timeout"}},
			}},
		{name: "answered before it is late: move, then make-before-break", prefs: []string{"wlan", "wwan"}, rtt: 100 * time.Millisecond,
			start: wlan, addrs: []netmon.Address{wwan},
			steps: []step{
				{working: []netmon.Address{wwan}, event: down, wait: 50 * time.Millisecond, wantCalls: [][]netmon.Address{{wwan}}},
				{addrs: []netmon.Address{wwan, wlan}, working: []netmon.Address{wwan, wlan}, event: snap,
					wantCalls: [][]netmon.Address{{wwan}}},
				{wait: time.Second, wantCalls: [][]netmon.Address{{wwan}, {wlan}},
					wantLog: []string{"move wlan->wwan", "move wwan->wlan"}, wantOn: &wlan},
				{wait: 30 * time.Second, wantCalls: [][]netmon.Address{{wwan}, {wlan}}, wantOn: &wlan},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(knobs{Interfaces: tt.prefs}, tt.start, tt.addrs, nil)
				defer r.stop()
				r.sa.rtt = rtt
				if tt.rtt > 0 {
					r.sa.rtt = tt.rtt
				}
				r.mu.Lock()
				r.onMove = func(mv Move) {
					r.record("move %s->%s nat=%v took %v", nameOf(mv.From), mv.Interface, mv.NAT, mv.Took)
				}
				r.mu.Unlock()
				for i, s := range tt.steps {
					if s.addrs != nil {
						r.setAddrs(s.addrs...)
					}
					if s.working != nil {
						r.sa.setWorking(s.working...)
					}
					if s.event != nil {
						r.send(s.event)
					}
					r.wait(s.wait)
					if s.wantCalls != nil {
						r.sa.mu.Lock()
						calls := r.sa.calls
						r.sa.mu.Unlock()
						if !sameCalls(calls, s.wantCalls) {
							t.Fatalf("step %d: updates over %v, want over %v", i, calls, s.wantCalls)
						}
					}
					expectLog(t, r.take(), s.wantLog...)
					if s.wantESP != nil {
						var want []netpath.Path
						for _, a := range s.wantESP {
							want = append(want, pathOn(a))
						}
						r.mu.Lock()
						got := slices.Clone(r.setPath)
						r.mu.Unlock()
						if !slices.Equal(got, want) {
							t.Fatalf("step %d: ESP given %v, want %v", i, got, want)
						}
					}
					if s.wantOn != nil {
						if cur, ifname := r.m.Current(); cur != pathOn(*s.wantOn) || ifname != s.wantOn.IfName {
							t.Fatalf("step %d: on %v %s, want %s", i, cur, ifname, s.wantOn.IfName)
						}
					}
				}
			})
		})
	}
}

// sameCalls compares the updates a fakeSA saw with uplink lists.
func sameCalls(got [][]netpath.Path, want [][]netmon.Address) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			return false
		}
		for j, a := range want[i] {
			if got[i][j] != pathOn(a) {
				return false
			}
		}
	}
	return true
}
