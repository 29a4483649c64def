package mobility

import (
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// espClock stands in for the dataplane's activity: a time of the last inbound
// ESP that a test moves on.
type espClock struct {
	mu         sync.Mutex
	sent, recv time.Time
}

func (e *espClock) Activity() (time.Time, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sent, e.recv
}

func (e *espClock) received() {
	e.mu.Lock()
	e.recv = time.Now()
	e.mu.Unlock()
}

// TestLiveness: a test of the current path that goes unanswered for
// SuspectAfter with no ESP from the gateway reports Suspect once; ESP that
// arrives meanwhile, a test of another uplink only, or a watch switched
// off report nothing.
func TestLiveness(t *testing.T) {
	tests := []struct {
		name    string
		after   time.Duration
		prefs   []string
		start   netmon.Address
		working []netmon.Address
		trigger netmon.Event
		espIn   bool // ESP arrives a second into the test
		want    []string
	}{
		{"current path unanswered", 3 * time.Second, nil, wlan, nil, netmon.Wake{Suspended: time.Minute}, false,
			[]string{"suspend: woke up", "suspect: path test unanswered for 3s"}},
		{"ESP from the gateway meanwhile", 3 * time.Second, nil, wlan, nil, netmon.Wake{Suspended: time.Minute}, true,
			[]string{"suspend: woke up"}},
		{"watch off", 0, nil, wlan, nil, netmon.Wake{Suspended: time.Minute}, false,
			[]string{"suspend: woke up"}},
		{"a preferred uplink unanswered", 3 * time.Second, []string{"wlan", "wwan"}, wwan, []netmon.Address{wwan}, netmon.Snapshot{}, false,
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := &espClock{}
				r := newRig(knobs{Interfaces: tt.prefs, SuspectAfter: tt.after, Activity: e.Activity}, tt.start,
					[]netmon.Address{wlan, wwan}, tt.working)
				defer r.stop()
				r.sa.peers = nil // the current gateway address only
				r.send(tt.trigger)
				if tt.espIn {
					r.wait(time.Second)
					e.received()
				}
				// Before the update gives up (10 s).
				r.wait(5 * time.Second)
				expectLog(t, r.take(), tt.want...)
				if n := r.sa.callCount(); n != 1 {
					t.Fatalf("%d updates, want 1", n)
				}
			})
		})
	}
}

func TestTestsCurrent(t *testing.T) {
	cur := netpath.Path{Local: netip.MustParseAddrPort("192.168.10.2:4500"), Remote: gw, IfIndex: 2}
	wwan := netpath.Path{Local: netip.MustParseAddrPort("192.168.20.2:4500"), Remote: gw, IfIndex: 3}
	tests := []struct {
		name  string
		paths []netpath.Path
		want  bool
	}{
		{"refresh: current first", []netpath.Path{cur, wwan}, true},
		{"same path, interface index not yet known", []netpath.Path{{Local: cur.Local, Remote: cur.Remote}}, true},
		{"better uplink only", []netpath.Path{wwan}, false},
		{"none", nil, false},
	}
	for _, tt := range tests {
		if got := testsCurrent(cur, tt.paths); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
