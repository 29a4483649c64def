package ikeesp

import (
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/report"
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
		in   HealthInput
		want string
	}
	est := func(espSent, espRecv, ikeSent, ikeRecv time.Time) HealthInput {
		return HealthInput{State: "established", ESPSent: espSent, ESPRecv: espRecv, IKESent: ikeSent, IKERecv: ikeRecv}
	}
	tests := []struct {
		name  string
		looks []look
	}{
		{"handshake answered, idle: ok", []look{
			{0, HealthInput{State: "connecting", IKESent: at(0)}, report.HealthTesting},
			{50, est(never, never, at(0), at(40)), report.HealthOK},
			{60_000, est(never, never, at(0), at(40)), report.HealthOK},
		}},
		{"outbound ESP never answered is not ok", []look{
			{50, est(at(45), never, at(0), at(40)), report.HealthOK},
			{300, est(at(290), never, at(0), at(40)), report.HealthOK},
			{550, est(at(540), never, at(0), at(40)), report.HealthTesting},
			{5_000, est(at(4_990), never, at(0), at(40)), report.HealthTesting},
		}},
		{"blackholed, then answered again", []look{
			{100, est(at(90), at(95), at(0), at(40)), report.HealthOK},
			{200, est(at(190), at(95), at(0), at(40)), report.HealthOK},
			{700, est(at(690), at(95), at(0), at(40)), report.HealthTesting},
			{800, est(at(790), at(795), at(0), at(40)), report.HealthOK},
		}},
		{"a reply within dead_after keeps ok", []look{
			{100, est(at(100), at(50), at(0), at(40)), report.HealthOK},
			{500, est(at(500), at(450), at(0), at(40)), report.HealthOK},
			{900, est(at(900), at(850), at(0), at(40)), report.HealthOK},
		}},
		{"unanswered liveness check", []look{
			{30_000, est(never, never, at(30_000), at(40)), report.HealthOK},
			{30_600, est(never, never, at(30_500), at(40)), report.HealthTesting},
			{31_000, est(never, never, at(30_500), at(30_900)), report.HealthOK},
		}},
		{"one packet out, then idle: stays unproven", []look{
			{100, est(at(100), never, at(0), at(40)), report.HealthOK},
			{10_000, est(at(100), never, at(0), at(40)), report.HealthTesting},
		}},
		{"path test in flight", []look{
			{100, est(never, never, at(0), at(40)), report.HealthOK},
			{200, HealthInput{State: "established", Testing: true, IKESent: at(150), IKERecv: at(40)}, report.HealthTesting},
			{250, est(never, never, at(150), at(240)), report.HealthOK},
		}},
		{"no path, then asleep", []look{
			{100, HealthInput{State: report.StateSuspended, SuspendCause: "no usable network address"}, report.HealthNoPath},
			{200, HealthInput{State: report.StateSuspended, SuspendCause: mobility.WakePrefix + "system suspended for 1m0s"}, report.HealthSuspended},
			{300, HealthInput{State: report.StateSuspended, SuspendCause: "mobility: no working path: timeout"}, report.HealthNoPath},
		}},
		{"reconnecting", []look{
			{100, HealthInput{State: report.StateReconnecting, ESPSent: at(90)}, report.HealthTesting},
		}},
		{"disconnected has no health", []look{
			{100, HealthInput{State: "disconnected"}, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := HealthTracker{DeadAfter: 500 * time.Millisecond}
			for i, l := range tt.looks {
				got, reason, _, _ := h.Update(l.in, at(l.ms))
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
	h := HealthTracker{DeadAfter: 500 * time.Millisecond}
	in := HealthInput{State: "established", IKESent: t0, IKERecv: t0.Add(20 * time.Millisecond)}
	var changes []string
	for ms := 0; ms <= 2000; ms += 100 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if ms >= 1000 {
			in.ESPSent = now // sending, nothing back
		}
		if _, _, from, changed := h.Update(in, now); changed {
			changes = append(changes, from+"->"+h.state)
		}
	}
	if got := strings.Join(changes, " "); got != "->ok ok->testing" {
		t.Fatalf("changes %q", got)
	}
}

// TestHealthAfterGap: a watcher looks every 100 ms; a look long after the
// one before (the daemon was stopped, SIGSTOP) must not repeat the ok of
// before the gap until the other end is heard again, or dead_after passes
// with nothing sent (an idle tunnel is judged as ever).
func TestHealthAfterGap(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	est := func(espSent, espRecv time.Time) HealthInput {
		return HealthInput{State: "established", ESPSent: espSent, ESPRecv: espRecv, IKESent: at(0), IKERecv: at(40)}
	}
	type look struct {
		ms   int
		in   HealthInput
		want string
	}
	before := []look{{100, est(at(90), at(95)), report.HealthOK}, {200, est(at(190), at(195)), report.HealthOK}}
	tests := []struct {
		name  string
		every time.Duration
		looks []look
	}{
		{"answered after the gap", 100 * time.Millisecond, append(before,
			look{35_200, est(at(35_190), at(195)), report.HealthTesting},
			look{35_300, est(at(35_290), at(35_250)), report.HealthOK},
		)},
		{"idle after the gap", 100 * time.Millisecond, append(before,
			look{35_200, est(at(190), at(195)), report.HealthTesting},
			look{35_300, est(at(190), at(195)), report.HealthTesting},
			look{35_700, est(at(190), at(195)), report.HealthOK},
		)},
		{"sending after the gap, never answered", 100 * time.Millisecond, append(before,
			look{35_200, est(at(35_190), at(195)), report.HealthTesting},
			look{35_700, est(at(35_690), at(195)), report.HealthTesting},
			look{40_000, est(at(39_990), at(195)), report.HealthTesting},
		)},
		{"regular looks: no gap", 100 * time.Millisecond, append(before,
			look{300, est(at(290), at(295)), report.HealthOK},
			look{1_100, est(at(1_090), at(1_095)), report.HealthOK},
		)},
		{"looks on request only: a pause is no gap", 0, append(before,
			look{35_200, est(at(35_190), at(35_195)), report.HealthOK},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := HealthTracker{DeadAfter: 500 * time.Millisecond, LookEvery: tt.every}
			for i, l := range tt.looks {
				got, reason, _, _ := h.Update(l.in, at(l.ms))
				if got != l.want {
					t.Fatalf("look %d (t0+%dms): %q (%s), want %q", i, l.ms, got, reason, l.want)
				}
			}
		})
	}
}
