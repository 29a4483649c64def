package tunnel

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/report"
)

// TestStatusHealthJSON: the new fields appear under their documented
// names, and the times are absent until something happened.
func TestStatusHealthJSON(t *testing.T) {
	now := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	st := report.Status{Name: "office", State: "established", Health: report.HealthOK, HealthReason: "the gateway answers",
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
	var evs []report.Event
	c := newConn(&config.Profile{Name: "corp", Gateway: "198.51.100.1"}, discardLog(), func(ev report.Event) { evs = append(evs, ev) })
	defer c.cancel()
	now := time.Now()
	steps := []struct {
		state report.State
		cause string
		want  string // event "from->to", "" for none
	}{
		{"connecting", "", "->testing"},
		{"connecting", "", ""},
		{report.StateSuspended, mobility.WakePrefix + "process stopped for 40s", "testing->suspended"},
		{report.StateSuspended, "ike: UPDATE_SA_ADDRESSES unanswered", "suspended->no-path"},
		{report.StateReconnecting, "", "no-path->testing"},
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
			if ev.Event != report.EventHealth || ev.Reason == "" {
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
