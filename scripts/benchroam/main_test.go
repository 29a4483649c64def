package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab/probe"
)

func TestParseFlags(t *testing.T) {
	names := func(c config) string {
		var n []string
		for _, s := range c.scenarios {
			n = append(n, s.name)
		}
		return strings.Join(n, ",")
	}
	for _, tc := range []struct {
		name      string
		args      []string
		env       map[string]string
		reps      int
		bound     time.Duration
		scenarios string
		clients   string
		gateway   string // "": strongswan, the default
		err       string
	}{
		{name: "defaults", reps: 10, bound: 10 * time.Second,
			scenarios: "a-link-down,b-address-removed,c-preferred-back,d-nat-flushed,d2-nat-address,e-connect,e2-connect-daemon", clients: "roam,strongswan"},
		{name: "env", env: map[string]string{"REPS": "2", "BOUND": "3s", "SCENARIOS": "a,d2", "CLIENTS": "roam"},
			reps: 2, bound: 3 * time.Second, scenarios: "a-link-down,d2-nat-address", clients: "roam"},
		{name: "flags beat env", args: []string{"-reps", "3", "-scenarios", "d"}, env: map[string]string{"REPS": "2"},
			reps: 3, bound: 10 * time.Second, scenarios: "d-nat-flushed", clients: "roam,strongswan"},
		{name: "full scenario name", args: []string{"-scenarios", "c-preferred-back"}, reps: 10, bound: 10 * time.Second,
			scenarios: "c-preferred-back", clients: "roam,strongswan"},
		{name: "bad reps", env: map[string]string{"REPS": "0"}, err: "REPS"},
		{name: "bad bound", args: []string{"-bound", "soon"}, err: "BOUND"},
		{name: "zero interval", args: []string{"-interval", "0s"}, err: "INTERVAL"},
		{name: "unknown scenario", args: []string{"-scenarios", "f"}, err: `unknown scenario "f"`},
		{name: "connect scenarios", args: []string{"-scenarios", "e,e2"}, reps: 10, bound: 10 * time.Second,
			scenarios: "e-connect,e2-connect-daemon", clients: "roam,strongswan"},
		{name: "roam gateway", env: map[string]string{"GATEWAY": "roam", "CLIENTS": "roam"}, reps: 10, bound: 10 * time.Second,
			scenarios: "a-link-down,b-address-removed,c-preferred-back,d-nat-flushed,d2-nat-address,e-connect,e2-connect-daemon", clients: "roam", gateway: "roam"},
		{name: "unknown gateway", args: []string{"-gateway", "libreswan"}, err: `GATEWAY/-gateway "libreswan"`},
		{name: "unknown client", args: []string{"-clients", "wireguard"}, err: `unknown client "wireguard"`},
		{name: "stray argument", args: []string{"now"}, err: "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseFlags(tc.args, func(k string) string { return tc.env[k] })
			if benchkit.WantErr(t, err, tc.err) {
				return
			}
			if cfg.reps != tc.reps || cfg.bound != tc.bound || names(cfg) != tc.scenarios || strings.Join(cfg.clients, ",") != tc.clients {
				t.Errorf("got reps %d bound %v scenarios %s clients %v", cfg.reps, cfg.bound, names(cfg), cfg.clients)
			}
			if want := cmp.Or(tc.gateway, swanGateway); cfg.gateway != want {
				t.Errorf("gateway %q, want %q", cfg.gateway, want)
			}
			if cfg.delay != 10*time.Millisecond || cfg.interval != 5*time.Millisecond {
				t.Errorf("delay %v interval %v", cfg.delay, cfg.interval)
			}
		})
	}
}

// TestReport checks that the table and the machine-readable lines say
// exactly what the runs measured: a side that never recovered has no
// median and no ratio, errors are counted apart, medians and the ratio are
// those of the recovered runs.
func TestReport(t *testing.T) {
	ms := time.Millisecond
	ok := func(d time.Duration, lost int) run {
		return run{res: probe.Result{Recovered: true, Recovery: d, Lost: lost, RTT: 22 * ms, SendGap: 5 * ms}, trigger: 5 * ms}
	}
	fail := func(lost int) run {
		return run{res: probe.Result{Lost: lost, RTT: 22 * ms, SendGap: 5 * ms}, trigger: 5 * ms}
	}
	cfg := config{reps: 2, bound: 10 * time.Second, delay: 10 * ms, interval: 5 * ms,
		scenarios: []scenario{allScenarios[0], allScenarios[3]}, clients: []string{roamClient, swanClient}, gateway: roamGateway}
	results := map[string]map[string][]run{
		"a-link-down": {
			roamClient: {ok(40*ms, 8), ok(60*ms, 10)},
			swanClient: {ok(200*ms, 35), fail(1990)},
		},
		"d-nat-flushed": {
			roamClient: {ok(900*ms, 180), {err: errors.New("connect failed")}},
			swanClient: {fail(1980), fail(1995)},
		},
	}
	var out bytes.Buffer
	report(&out, cfg, results, time.Minute, benchkit.Load{CPUs: 2, Start: "0.50 0.40 0.30", End: "1.50 0.60 0.35"})
	text := out.String()
	for _, want := range []string{"machine: 2 CPUs, load average 0.50 0.40 0.30 at start, 1.50 0.60 0.35 at end", "within 10s of the event counts as NOT recovered", "not recovered", "1/2 (1 err)", "0.25", "n/a", "gateway: roam gateway for both clients"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	var got []scenarioJSON
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "BENCH-ROAM "); ok {
			var sj scenarioJSON
			if err := json.Unmarshal([]byte(rest), &sj); err != nil {
				t.Fatalf("machine line %q: %v", line, err)
			}
			got = append(got, sj)
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d machine lines, want 2", len(got))
	}
	a, d := got[0], got[1]
	if a.Scenario != "a-link-down" || a.Gateway != roamGateway || a.Ratio == nil || *a.Ratio != 0.25 ||
		a.CPUs != 2 || a.LoadStart != "0.50 0.40 0.30" || a.LoadEnd != "1.50 0.60 0.35" {
		t.Errorf("a: %+v", a)
	}
	r, s := a.Clients[roamClient], a.Clients[swanClient]
	if r.Recovered != 2 || *r.MedianMS != 50 || *r.MaxMS != 60 || *r.LostMedian != 9 {
		t.Errorf("a roam: %+v", r)
	}
	if s.Recovered != 1 || *s.MedianMS != 200 || *s.LostMax != 1990 || len(s.RecoveryMS) != 1 {
		t.Errorf("a strongSwan: %+v", s)
	}
	if d.Ratio != nil {
		t.Errorf("d: ratio %v although strongSwan never recovered", *d.Ratio)
	}
	if ds := d.Clients[swanClient]; ds.Recovered != 0 || ds.MedianMS != nil || ds.MaxMS != nil || *ds.LostMedian != 1987 {
		t.Errorf("d strongSwan: %+v", ds)
	}
	if dr := d.Clients[roamClient]; dr.Runs != 2 || dr.Errors != 1 || dr.Recovered != 1 || len(dr.Lost) != 1 {
		t.Errorf("d roam: %+v", dr)
	}
}

func TestFailedRuns(t *testing.T) {
	setup := errors.New("nat-wlan: nft: not found")
	for _, tc := range []struct {
		name    string
		results map[string]map[string][]run
		want    string
	}{
		{"none", nil, ""},
		{"all measured, one not recovered", map[string]map[string][]run{
			"a": {"roam": {{rep: 1}, {rep: 2}}},
		}, ""},
		{"all failed", map[string]map[string][]run{
			"a": {"roam": {{rep: 1, err: setup}, {rep: 2, err: setup}}},
			"d": {"roam": {{rep: 1, err: setup}}},
		}, "3 of 3 runs failed (one: nat-wlan: nft: not found)"},
		{"one failed", map[string]map[string][]run{
			"a": {"roam": {{rep: 1}}, "strongswan": {{rep: 1, err: setup}}},
		}, "1 of 2 runs failed (one: nat-wlan: nft: not found)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := failedRuns(tc.results)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v for a bench that measured", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, setup)):
				t.Fatalf("error %v, want %q wrapping the run's", err, tc.want)
			}
		})
	}
}
