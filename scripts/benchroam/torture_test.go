package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab/probe"
)

func TestParseTortureFlags(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		events   int
		duration time.Duration
		seed     uint64
		kinds    int
		err      string
	}{
		{name: "full", env: map[string]string{"TORTURE": "1"}, events: 60, duration: 10 * time.Minute, seed: 1, kinds: len(tortureKinds)},
		{name: "short", args: []string{"-torture", "short", "-seed", "7"}, events: len(tortureKinds), duration: 90 * time.Second, seed: 7, kinds: len(tortureKinds)},
		{name: "own count and kinds", env: map[string]string{"TORTURE": "1", "EVENTS": "5", "DURATION": "1m", "KINDS": "nat-flush,sigstop"},
			events: 5, duration: time.Minute, seed: 1, kinds: 2},
		{name: "bad mode", env: map[string]string{"TORTURE": "yes"}, err: "TORTURE"},
		{name: "bad events", env: map[string]string{"TORTURE": "1", "EVENTS": "0"}, err: "EVENTS"},
		{name: "bad seed", env: map[string]string{"TORTURE": "1", "SEED": "-1"}, err: "SEED"},
		{name: "bad duration", env: map[string]string{"TORTURE": "1", "DURATION": "long"}, err: "DURATION"},
		{name: "bad grace", env: map[string]string{"TORTURE": "1", "GRACE": "0s"}, err: "GRACE"},
		{name: "unknown kind", env: map[string]string{"TORTURE": "1", "KINDS": "earthquake"}, err: `unknown torture event kind "earthquake"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseFlags(tc.args, func(k string) string { return tc.env[k] })
			if benchkit.WantErr(t, err, tc.err) {
				return
			}
			tt := cfg.torture
			if tt == nil {
				t.Fatal("torture not selected")
			}
			if tt.events != tc.events || tt.duration != tc.duration || tt.seed != tc.seed || len(tt.kinds) != tc.kinds {
				t.Errorf("got events %d duration %v seed %d kinds %v", tt.events, tt.duration, tt.seed, tt.kinds)
			}
		})
	}
	cfg, err := parseFlags(nil, func(string) string { return "" })
	if err != nil || cfg.torture != nil {
		t.Errorf("without TORTURE: torture %v, err %v; want the scenarios", cfg.torture, err)
	}
}

func TestSequence(t *testing.T) {
	tc := tortureConfig{events: 60, seed: 1, kinds: tortureKinds, stops: []time.Duration{5 * time.Second, 35 * time.Second}}
	a, b := sequence(tc), sequence(tc)
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave two sequences")
	}
	count := map[string]int{}
	for i, ev := range a {
		if ev.Index != i+1 {
			t.Errorf("event %d has index %d", i, ev.Index)
		}
		count[ev.Kind]++
		if (ev.Kind == kStop) != (ev.Stop > 0) {
			t.Errorf("event %d: kind %s with stop %v", i, ev.Kind, ev.Stop)
		}
	}
	// Every kind equally often, rounded: 60 events of 9 kinds.
	for _, k := range tortureKinds {
		if n := count[k]; n < 6 || n > 7 {
			t.Errorf("kind %s drawn %d times, want 6 or 7", k, n)
		}
	}
	tc.seed = 2
	if slices.Equal(a, sequence(tc)) {
		t.Error("seeds 1 and 2 gave the same sequence")
	}
}

func TestJudgeStatus(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// A probe every 10 ms for 10 s; those sent from 3 s to 6 s get no echo.
	var recs []probe.Record
	for ms := 0; ms < 10000; ms += 10 {
		r := probe.Record{Seq: uint32(ms / 10), Sent: at(ms)}
		if ms < 3000 || ms >= 6000 {
			r.Recv = at(ms + 20)
		}
		recs = append(recs, r)
	}
	look := func(ms int, health string) statusSample {
		return statusSample{start: at(ms), end: at(ms + 30), health: health, state: "established"}
	}
	rs := []tresult{{at: at(0)}, {at: at(3000)}}
	samples := []statusSample{
		look(1000, "ok"),      // flowing, ok: fine
		look(3500, "ok"),      // 1 s into the silence, within the 2 s grace: not judged a lie
		look(5500, "ok"),      // 2.5 s of silence: a lie
		look(5600, "testing"), // silent and saying so
		look(5990, "ok"),      // the look ends after traffic is back: not a lie
		look(8500, "testing"), // flowing for 2.5 s and not ok: too gloomy
		{start: at(9000), end: at(9500), err: true},
	}
	judgeStatus(rs, recs, samples, 2*time.Second)
	if v := rs[0].status; v.Samples != 1 || v.Lies != 0 || v.Unsure != 0 {
		t.Errorf("first event: %+v, want one sample, no lie", v)
	}
	v := rs[1].status
	if v.Samples != 6 || v.Lies != 1 || v.Unsure != 1 || v.NoAns != 1 {
		t.Errorf("second event: %+v, want 6 samples, 1 lie, 1 not ok while flowing, 1 without reply", v)
	}
	if v.Seen["ok"] != 3 || v.Seen["testing"] != 2 {
		t.Errorf("seen %v", v.Seen)
	}
}

func TestTortureReport(t *testing.T) {
	d := func(ms int) *time.Duration { v := time.Duration(ms) * time.Millisecond; return &v }
	t0 := time.Now()
	ev := func(i int, k string) tevent { return tevent{Index: i, Kind: k} }
	results := map[string][]tresult{
		roamClient: {
			{ev: ev(1, kLinkDown), at: t0, restoreAt: t0.Add(3 * time.Second), during: d(60), after: d(30), recovered: true,
				status: statusVerdict{Samples: 10, Seen: map[string]int{"ok": 8, "testing": 2}}},
			{ev: ev(2, kLinkDown), at: t0, restoreAt: t0.Add(3 * time.Second), during: d(80), after: d(40), recovered: true},
			{ev: ev(3, kGWAddress), at: t0, restoreAt: t0.Add(3 * time.Second), during: d(90), recovered: false, reconnected: true,
				status: statusVerdict{Samples: 4, Lies: 2, Seen: map[string]int{"ok": 4}}},
		},
		swanClient: {
			{ev: ev(1, kLinkDown), at: t0, restoreAt: t0.Add(3 * time.Second), during: d(200), after: d(30), recovered: true},
			{ev: ev(2, kLinkDown), at: t0, restoreAt: t0.Add(3 * time.Second), recovered: false},
			{ev: ev(3, kGWAddress), na: notApplicable[swanClient][kGWAddress]},
		},
	}
	cfg := config{clients: []string{roamClient, swanClient}, delay: 10 * time.Millisecond}
	tc := tortureConfig{duration: time.Minute, seed: 3, kinds: []string{kLinkDown, kGWAddress}, grace: 2 * time.Second}
	var b strings.Builder
	tortureReport(&b, cfg, tc, []tevent{ev(1, kLinkDown), ev(2, kLinkDown), ev(3, kGWAddress)}, results, time.Minute, "1 1 1", "2 2 2")
	out := b.String()
	kinds := map[string]kindJSON{}
	totals := map[string]map[string]any{}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "BENCH-TORTURE "):
			var k kindJSON
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "BENCH-TORTURE ")), &k); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			kinds[k.Kind+"/"+k.Client] = k
		case strings.HasPrefix(line, "BENCH-TORTURE-TOTAL "):
			var m map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "BENCH-TORTURE-TOTAL ")), &m); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			totals[m["client"].(string)] = m
		}
	}
	if len(kinds) != 4 || len(totals) != 2 {
		t.Fatalf("%d kind lines, %d totals:\n%s", len(kinds), len(totals), out)
	}
	rl := kinds[kLinkDown+"/roam"]
	if rl.Events != 2 || rl.DuringN != 2 || *rl.DuringMedMS != 80 || *rl.AfterMaxMS != 40 || rl.NeverRec != 0 || rl.Seen["testing"] != 2 {
		t.Errorf("roam link-down: %+v", rl)
	}
	if g := kinds[kGWAddress+"/roam"]; g.NeverRec != 1 || g.StatusLies != 2 || g.AfterMedMS != nil {
		t.Errorf("roam gw-address-loss: %+v", g)
	}
	if g := kinds[kGWAddress+"/strongswan"]; g.NA == "" {
		t.Errorf("strongSwan gw-address-loss applies: %+v", g)
	}
	if s := kinds[kLinkDown+"/strongswan"]; s.NeverRec != 1 || s.DuringN != 1 {
		t.Errorf("strongSwan link-down: %+v", s)
	}
	if totals["roam"]["never_recovered"] != 1.0 || totals["strongswan"]["never_recovered"] != 1.0 || totals["strongswan"]["events"] != 2.0 {
		t.Errorf("totals %v", totals)
	}
	if !strings.Contains(out, "gw-address-loss does not apply to strongSwan") {
		t.Errorf("no note on what does not apply:\n%s", out)
	}
}

func TestCountLoss(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var recs []probe.Record
	for ms := 0; ms < 10000; ms += 10 { // no echo for those sent from 3 s to 6 s
		r := probe.Record{Seq: uint32(ms / 10), Sent: at(ms)}
		if ms < 3000 || ms >= 6000 {
			r.Recv = at(ms + 20)
		}
		recs = append(recs, r)
	}
	rs := []tresult{
		{at: at(2000), restoreAt: at(5000), end: at(7000)}, // 300 lost, 100 of them from the restore on
		{at: at(2000), restoreAt: at(2000), end: at(4000)}, // no restore step: 101 lost (both ends count), none after
		{at: at(7000), restoreAt: at(8000), end: at(9000)}, // nothing lost
		{}, // did not run (does not apply)
	}
	countLoss(rs, recs)
	for i, want := range [][2]int{{300, 100}, {101, 0}, {0, 0}, {0, 0}} {
		if rs[i].lost != want[0] || rs[i].lostAfter != want[1] {
			t.Errorf("event %d: lost %d, after restore %d; want %v", i, rs[i].lost, rs[i].lostAfter, want)
		}
	}
}
