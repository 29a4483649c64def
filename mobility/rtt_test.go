package mobility

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

func TestSilenceWindow(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name               string
		srtt, rttvar, dead time.Duration
		want               time.Duration
	}{
		{"lab path", 21 * ms, 25 * ms, 500 * ms, 121 * ms},
		{"fresh estimate (rttvar srtt/2)", 40 * ms, 20 * ms, 500 * ms, 120 * ms},
		{"LAN: the floor", 1 * ms, 0, 500 * ms, 70 * ms},
		{"slow path: capped at dead_after", 300 * ms, 100 * ms, 500 * ms, 500 * ms},
		{"dead_after below the floor wins", 1 * ms, 0, 40 * ms, 40 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SilenceWindow(tt.srtt, tt.rttvar, tt.dead); got != tt.want {
				t.Fatalf("SilenceWindow(%v, %v, %v) = %v, want %v", tt.srtt, tt.rttvar, tt.dead, got, tt.want)
			}
		})
	}
}

// TestSilentPathRTT: with a measured RTT a flow that stops being answered
// is tested after the RTT window, not after DeadAfter; an answer late by
// less than the window, a single unanswered packet, or an unmeasured path
// keep the old DeadAfter behaviour.
func TestSilentPathRTT(t *testing.T) {
	ms := time.Millisecond
	lab := func(netpath.Path) (time.Duration, time.Duration, bool) { return 21 * ms, 15 * ms, true }
	unknown := func(netpath.Path) (time.Duration, time.Duration, bool) { return 0, 0, false }
	window := SilenceWindow(21*ms, 15*ms, DefaultDeadAfter)
	tests := []struct {
		name string
		rtt  func(netpath.Path) (time.Duration, time.Duration, bool)
		// silence: how long the flow goes unanswered (0: until tested).
		silence time.Duration
		// once: one packet goes out, then nothing.
		once      bool
		wantCalls int
		// the first test between min and max after the silence began.
		min, max time.Duration
	}{
		{name: "flow unanswered: tested in RTT time", rtt: lab, wantCalls: 1, min: window, max: window + 3*silenceTick},
		{name: "no RTT yet: DeadAfter", rtt: unknown, wantCalls: 1, min: DefaultDeadAfter, max: DefaultDeadAfter + 3*silenceTick},
		{name: "answer late by less than the window", rtt: lab, silence: window - 3*silenceTick},
		{name: "single packet unanswered: no RTT-time test", rtt: lab, once: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &traffic{sending: true, answered: true}
				r := newRig(knobs{Activity: tr.Activity, RTT: tt.rtt}, wlan, []netmon.Address{wlan, wwan}, []netmon.Address{wlan})
				defer r.stop()
				r.wait(time.Second)
				if r.sa.callCount() != 0 {
					t.Fatalf("tested a path that answers: %v", r.sa.calls)
				}
				start := time.Now()
				tr.set(!tt.once, false)
				if tt.once {
					tr.mu.Lock()
					tr.lastSent = time.Now().Add(time.Millisecond)
					tr.mu.Unlock()
				}
				var first time.Duration
				for range 300 {
					if tt.silence > 0 && time.Since(start) >= tt.silence {
						tr.set(true, true)
					}
					r.wait(silenceTick / 2)
					if first == 0 && r.sa.callCount() > 0 {
						first = time.Since(start)
						tr.set(true, true) // the update healed it
					}
				}
				if got := r.sa.callCount(); got != tt.wantCalls {
					t.Fatalf("%d tests %v, want %d", got, r.sa.calls, tt.wantCalls)
				}
				if tt.wantCalls > 0 && (first < tt.min || first > tt.max) {
					t.Fatalf("first test %v after the silence began, want %v to %v", first, tt.min, tt.max)
				}
			})
		})
	}
}

// TestSilenceLearnsJitter: a flow whose answers stall now and then and
// come back by themselves (a loaded machine, a jittery link) widens the
// window past those stalls, so the same stall, longer than the RTT window,
// does not test the path once it has been seen to heal.
func TestSilenceLearnsJitter(t *testing.T) {
	ms := time.Millisecond
	rtt := func(netpath.Path) (time.Duration, time.Duration, bool) { return 21 * ms, 15 * ms, true }
	stall := func(tr *traffic, r *rig, d time.Duration) {
		tr.set(true, false)
		r.wait(d)
		tr.set(true, true)
		r.wait(200 * ms)
	}
	tests := []struct {
		name      string
		history   []time.Duration // stalls that healed first
		last      time.Duration
		wantCalls int
	}{
		{name: "first long stall is tested", last: 160 * ms, wantCalls: 1},
		{name: "stall like those that healed before is not", history: []time.Duration{90 * ms, 90 * ms}, last: 160 * ms},
		{name: "much longer than the healed ones is", history: []time.Duration{90 * ms}, last: 260 * ms, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &traffic{sending: true, answered: true}
				r := newRig(knobs{Activity: tr.Activity, RTT: rtt}, wlan, []netmon.Address{wlan, wwan}, []netmon.Address{wlan})
				defer r.stop()
				r.wait(time.Second)
				for _, d := range tt.history {
					stall(tr, r, d)
				}
				if n := r.sa.callCount(); n != 0 {
					t.Fatalf("stalls shorter than the window tested: %v", r.sa.calls)
				}
				stall(tr, r, tt.last)
				if got := r.sa.callCount(); got != tt.wantCalls {
					t.Fatalf("%d tests %v, want %d", got, r.sa.calls, tt.wantCalls)
				}
			})
		})
	}
}

// TestSilenceStalledProcess: a tick that comes late (this process was not
// running, so answers may wait unread in the socket) leaves the judgement
// to the next tick; the same silence seen by timely ticks tests the path,
// and a silence that goes on after the stall is tested on the next tick.
func TestSilenceStalledProcess(t *testing.T) {
	ms := time.Millisecond
	rtt := func(netpath.Path) (time.Duration, time.Duration, bool) { return 21 * ms, 5 * ms, true }
	window := SilenceWindow(21*ms, 5*ms, DefaultDeadAfter)
	tests := []struct {
		name  string
		ticks []time.Duration // offsets of the checks from the last answer
		want  bool            // a path test wanted
	}{
		{"timely ticks", ticksEvery(silenceTick, window+2*silenceTick), true},
		{"one late tick: the stall is ours", append(ticksEvery(silenceTick, 2*silenceTick), window+2*silenceTick), false},
		{"late tick, then the silence goes on", append(ticksEvery(silenceTick, 2*silenceTick), window+2*silenceTick, window+3*silenceTick), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			sent, recv := t0, t0
			r := &rig{sa: &fakeSA{}, knobs: knobs{RTT: rtt, Activity: func() (time.Time, time.Time) { return sent, recv }}}
			m := New(Config{}, r, netpath.NewCurrent(pathOn(wlan), wlan.IfName))
			m.tickEvery = silenceTick
			m.checkSilence(t0)
			for _, d := range tt.ticks {
				now := t0.Add(d)
				sent = now.Add(-ms) // a steady flow, unanswered since t0
				m.checkSilence(now)
			}
			if got := m.pending != nil; got != tt.want {
				t.Fatalf("path test wanted: %v, want %v (ticks %v)", got, tt.want, tt.ticks)
			}
		})
	}
}

// ticksEvery lists the offsets every, 2·every, ... up to end.
func ticksEvery(every, end time.Duration) []time.Duration {
	var out []time.Duration
	for d := every; d <= end; d += every {
		out = append(out, d)
	}
	return out
}
