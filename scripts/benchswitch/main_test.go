package main

import (
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab/probe"
)

func TestParseFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c config)
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			if c.reps != 10 || c.delay != 10*time.Millisecond || c.interval != 5*time.Millisecond || c.bound != 10*time.Second || len(c.scenarios) != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{name: "env", env: map[string]string{"REPS": "2", "SCENARIOS": "switch"}, check: func(t *testing.T, c config) {
			if c.reps != 2 || !c.wanted(switchScenario) || c.wanted(reconnectScenario) {
				t.Errorf("%+v", c)
			}
		}},
		{name: "flag beats env", args: []string{"-reps", "3"}, env: map[string]string{"REPS": "2"}, check: func(t *testing.T, c config) {
			if c.reps != 3 {
				t.Errorf("reps %d", c.reps)
			}
		}},
		{name: "zero delay", args: []string{"-delay", "0"}, check: func(t *testing.T, c config) {
			if c.delay != 0 {
				t.Errorf("delay %v", c.delay)
			}
		}},
		{name: "bad reps", env: map[string]string{"REPS": "0"}, wantErr: "want a positive integer"},
		{name: "zero interval", args: []string{"-interval", "0"}, wantErr: "INTERVAL"},
		{name: "unknown scenario", args: []string{"-scenarios", "switch,teleport"}, wantErr: `unknown scenario "teleport" (have switch, address-gone, reconnect`},
		{name: "argument", args: []string{"x"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, env(tt.env))
			if benchkit.WantErr(t, err, tt.wantErr) {
				return
			}
			tt.check(t, c)
		})
	}
}

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	runs := []run{
		{firstPkt: 30 * ms, res: probe.Result{RTT: 21 * ms, Lost: 0, Recovered: true, Recovery: 35 * ms}, trigger: 25 * ms},
		{firstPkt: 50 * ms, res: probe.Result{RTT: 22 * ms, Lost: 2, Recovered: true, Recovery: 55 * ms}, trigger: 40 * ms},
		{firstPkt: 40 * ms, res: probe.Result{RTT: 20 * ms, Lost: 1, Recovered: true, Recovery: 45 * ms}, trigger: 30 * ms},
		{res: probe.Result{RTT: 21 * ms, Lost: 9}}, // never on the new path
		{err: errTest},
	}
	s := summarize(switchScenario, runs)
	if s.Runs != 5 || s.Errors != 1 || s.Recovered != 3 || *s.MedianMS != 40 || *s.MaxMS != 50 || *s.RTTMS != 21 {
		t.Errorf("summary %+v", s)
	}
	if *s.TargetMS != 52 || !*s.MeetsGoal {
		t.Errorf("target %v met %v, want 52 met (2*21+10)", *s.TargetMS, *s.MeetsGoal)
	}
	if *s.LostMax != 9 || len(s.Lost) != 4 || len(s.FirstMS) != 3 {
		t.Errorf("lost %v first %v", s.Lost, s.FirstMS)
	}
	if r := summarize(reconnectScenario, runs); r.TargetMS != nil {
		t.Errorf("the anchor has a target: %v", *r.TargetMS)
	}
	if s := summarize(switchScenario, runs[4:]); s.MedianMS != nil || s.MeetsGoal != nil {
		t.Errorf("no run measured, yet %+v", s)
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("lab broke")
