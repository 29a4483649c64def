package daemon

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/mobility"
)

// TestHealthTracker walks the tracker through sequences of looks at the
// connection, each at a given offset from t0 with the traffic times then,
// and checks the state after each.
func TestHealthTracker(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	never := time.Time{}
	type look struct {
		ms   int // now, from t0
		in   healthInput
		want string
	}
	est := func(espSent, espRecv, ikeSent, ikeRecv time.Time) healthInput {
		return healthInput{state: "established", espSent: espSent, espRecv: espRecv, ikeSent: ikeSent, ikeRecv: ikeRecv}
	}
	tests := []struct {
		name  string
		looks []look
	}{
		{"handshake answered, idle: ok", []look{
			{0, healthInput{state: "connecting", ikeSent: at(0)}, HealthTesting},
			{50, est(never, never, at(0), at(40)), HealthOK},
			{60_000, est(never, never, at(0), at(40)), HealthOK},
		}},
		{"outbound ESP never answered is not ok", []look{
			{50, est(at(45), never, at(0), at(40)), HealthOK},
			{300, est(at(290), never, at(0), at(40)), HealthOK},
			{550, est(at(540), never, at(0), at(40)), HealthTesting},
			{5_000, est(at(4_990), never, at(0), at(40)), HealthTesting},
		}},
		{"blackholed, then answered again", []look{
			{100, est(at(90), at(95), at(0), at(40)), HealthOK},
			{200, est(at(190), at(95), at(0), at(40)), HealthOK},
			{700, est(at(690), at(95), at(0), at(40)), HealthTesting},
			{800, est(at(790), at(795), at(0), at(40)), HealthOK},
		}},
		{"a reply within dead_after keeps ok", []look{
			{100, est(at(100), at(50), at(0), at(40)), HealthOK},
			{500, est(at(500), at(450), at(0), at(40)), HealthOK},
			{900, est(at(900), at(850), at(0), at(40)), HealthOK},
		}},
		{"unanswered liveness check", []look{
			{30_000, est(never, never, at(30_000), at(40)), HealthOK},
			{30_600, est(never, never, at(30_500), at(40)), HealthTesting},
			{31_000, est(never, never, at(30_500), at(30_900)), HealthOK},
		}},
		{"one packet out, then idle: stays unproven", []look{
			{100, est(at(100), never, at(0), at(40)), HealthOK},
			{10_000, est(at(100), never, at(0), at(40)), HealthTesting},
		}},
		{"path test in flight", []look{
			{100, est(never, never, at(0), at(40)), HealthOK},
			{200, healthInput{state: "established", testing: true, ikeSent: at(150), ikeRecv: at(40)}, HealthTesting},
			{250, est(never, never, at(150), at(240)), HealthOK},
		}},
		{"no path, then asleep", []look{
			{100, healthInput{state: stateSuspended, suspendCause: "no usable network address"}, HealthNoPath},
			{200, healthInput{state: stateSuspended, suspendCause: mobility.WakePrefix + "system suspended for 1m0s"}, HealthSuspended},
			{300, healthInput{state: stateSuspended, suspendCause: "mobility: no working path: timeout"}, HealthNoPath},
		}},
		{"reconnecting", []look{
			{100, healthInput{state: stateReconnecting, espSent: at(90)}, HealthTesting},
		}},
		{"disconnected has no health", []look{
			{100, healthInput{state: "disconnected"}, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := healthTracker{deadAfter: 500 * time.Millisecond}
			for i, l := range tt.looks {
				got, reason, _, _ := h.update(l.in, at(l.ms))
				if got != l.want {
					t.Fatalf("look %d (t0+%dms): %q (%s), want %q", i, l.ms, got, reason, l.want)
				}
				if got != "" && reason == "" {
					t.Fatalf("look %d: state %q without a reason", i, got)
				}
			}
		})
	}
}

// TestHealthChangeReported: update names the previous state only on a
// change, so each transition is one event.
func TestHealthChangeReported(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	h := healthTracker{deadAfter: 500 * time.Millisecond}
	in := healthInput{state: "established", ikeSent: t0, ikeRecv: t0.Add(20 * time.Millisecond)}
	var changes []string
	for ms := 0; ms <= 2000; ms += 100 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if ms >= 1000 {
			in.espSent = now // sending, nothing back
		}
		if _, _, from, changed := h.update(in, now); changed {
			changes = append(changes, from+"->"+h.state)
		}
	}
	if got := strings.Join(changes, " "); got != "->ok ok->testing" {
		t.Fatalf("changes %q", got)
	}
}

// TestStatusHealthJSON: the new fields appear under their documented
// names, and the times are absent until something happened.
func TestStatusHealthJSON(t *testing.T) {
	now := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	st := Status{Name: "office", State: "established", Health: HealthOK, HealthReason: "the gateway answers",
		LastInboundIKE: &now, RTTMS: 21.5, RTTSamples: 3}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"health", "health_reason", "last_inbound_ike", "rtt_ms", "rtt_samples"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing from %s", k, b)
		}
	}
	for _, k := range []string{"last_inbound_esp", "last_outbound_esp"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s present though nothing was received: %s", k, b)
		}
	}
}

// TestConnHealthEvents: a connection's health changes become health events
// (from, to, reason) and Status shows the last verdict.
func TestConnHealthEvents(t *testing.T) {
	var evs []Event
	c := newConn(&config.Profile{Name: "corp", Gateway: "198.51.100.1"}, discardLog(), func(ev Event) { evs = append(evs, ev) })
	defer c.cancel()
	now := time.Now()
	steps := []struct {
		state, cause string
		want         string // event "from->to", "" for none
	}{
		{"connecting", "", "->testing"},
		{"connecting", "", ""},
		{stateSuspended, mobility.WakePrefix + "process stopped for 40s", "testing->suspended"},
		{stateSuspended, "ike: UPDATE_SA_ADDRESSES unanswered", "suspended->no-path"},
		{stateReconnecting, "", "no-path->testing"},
	}
	for i, s := range steps {
		c.mu.Lock()
		c.state, c.suspendCause = s.state, s.cause
		c.mu.Unlock()
		n := len(evs)
		c.checkHealth(now.Add(time.Duration(i) * time.Second))
		var got string
		if len(evs) > n {
			ev := evs[len(evs)-1]
			if ev.Event != EventHealth || ev.Reason == "" {
				t.Fatalf("step %d: event %+v", i, ev)
			}
			got = ev.From + "->" + ev.To
		}
		if got != s.want {
			t.Fatalf("step %d (%s): event %q, want %q", i, s.state, got, s.want)
		}
		if h, _ := c.healthNow(); s.want != "" && !strings.HasSuffix(s.want, h) {
			t.Fatalf("step %d: status health %q after %q", i, h, s.want)
		}
	}
}

// TestHealthAfterGap: a watcher looks every 100 ms; a look long after the
// one before (the daemon was stopped, SIGSTOP) must not repeat the ok of
// before the gap until the other end is heard again, or dead_after passes
// with nothing sent (an idle tunnel is judged as ever).
func TestHealthAfterGap(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	est := func(espSent, espRecv time.Time) healthInput {
		return healthInput{state: "established", espSent: espSent, espRecv: espRecv, ikeSent: at(0), ikeRecv: at(40)}
	}
	type look struct {
		ms   int
		in   healthInput
		want string
	}
	before := []look{{100, est(at(90), at(95)), HealthOK}, {200, est(at(190), at(195)), HealthOK}}
	tests := []struct {
		name  string
		every time.Duration
		looks []look
	}{
		{"answered after the gap", 100 * time.Millisecond, append(before,
			look{35_200, est(at(35_190), at(195)), HealthTesting},
			look{35_300, est(at(35_290), at(35_250)), HealthOK},
		)},
		{"idle after the gap", 100 * time.Millisecond, append(before,
			look{35_200, est(at(190), at(195)), HealthTesting},
			look{35_300, est(at(190), at(195)), HealthTesting},
			look{35_700, est(at(190), at(195)), HealthOK},
		)},
		{"sending after the gap, never answered", 100 * time.Millisecond, append(before,
			look{35_200, est(at(35_190), at(195)), HealthTesting},
			look{35_700, est(at(35_690), at(195)), HealthTesting},
			look{40_000, est(at(39_990), at(195)), HealthTesting},
		)},
		{"regular looks: no gap", 100 * time.Millisecond, append(before,
			look{300, est(at(290), at(295)), HealthOK},
			look{1_100, est(at(1_090), at(1_095)), HealthOK},
		)},
		{"looks on request only: a pause is no gap", 0, append(before,
			look{35_200, est(at(35_190), at(35_195)), HealthOK},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := healthTracker{deadAfter: 500 * time.Millisecond, lookEvery: tt.every}
			for i, l := range tt.looks {
				got, reason, _, _ := h.update(l.in, at(l.ms))
				if got != l.want {
					t.Fatalf("look %d (t0+%dms): %q (%s), want %q", i, l.ms, got, reason, l.want)
				}
			}
		})
	}
}
