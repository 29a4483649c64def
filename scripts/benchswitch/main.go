// Command benchswitch is issue 5's benchmark (make bench-switch): in the
// netns lab, with a delay line of -delay each way on the client's uplinks,
// roam gateway moves a roam client behind nat-wlan between its addresses
// R1 and R2 with `roam gateway switch` (SWITCH_TO_IP_ADDRESS), -reps times,
// and by itself when the address the SA uses is removed from its
// interface; in the same lab and interleaved with them, the client makes a full
// reconnect (roam disconnect + roam connect) as the anchor. A UDP prober in
// the client namespace sends a probe every -interval through the tunnel to
// a responder behind the gateway; the delay line of nat-wlan tells which
// gateway address each tunnel packet comes from.
//
// The figure is the time from the command to the first tunnel packet
// through the new gateway address (released toward the client); the
// target for the switch is 2 RTT + 10 ms. It prints per-scenario median and
// max, the switch/reconnect ratio, and one machine-readable line per
// scenario. It needs root and is not part of CI.
//
// Scenarios come in groups that share one lab (setup once, repetitions
// interleaved): the HA failover of issue 5 (kill the active node, first
// packet through the standby) is a group of its own with a two-node
// setup; see groups below.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab"
	"github.com/roam-vpn/roam/scripts/lab/probe"
)

const psk = "bench-switch-psk-correct-horse"

type config struct {
	reps      int
	bound     time.Duration
	delay     time.Duration
	interval  time.Duration
	scenarios map[string]bool // empty: all
	roamBin   string
	delayBin  string
	logDir    string
	// haDeadAfter is the HA nodes' dead_after (0: roam's default).
	haDeadAfter time.Duration
}

// env is one group's lab with the client connected and probing.
type env struct {
	l      *lab.Lab
	delays lab.Delays
	client *lab.Roam
	gw     *lab.Roam // roam gateway's control socket (a group may leave it nil)
	gwProc *lab.Proc
	snd    *probe.Sender
	// cur is the gateway address the tunnel uses now; a trigger updates it.
	cur netip.Addr
	// removed is a gateway address a trigger took away, for restore.
	removed netip.Addr
	// router is the client's NAT router (its delay line sees the tunnel).
	router string
	logs   func() map[string]string
	// ha is the HA group's node pair (failover.go).
	ha *haPair
}

// move is what a trigger did, for the measurement.
type move struct {
	to netip.Addr // the gateway address the tunnel must come through afterwards
	// since: tunnel packets from to before this are not the new path's
	// (a reconnect to the same address: the old SA's last packets).
	since time.Time
	// applied: the change is certainly in effect (probes sent from here on
	// can prove recovery).
	applied time.Time
}

// scenario is one kind of move, repeated -reps times in its group's lab.
type scenario struct {
	name, desc string
	// trigger makes the move for repetition rep (1-based), starting at
	// event (already taken: the benchmark's clock starts before it).
	trigger func(cfg config, e *env, rep int, event time.Time) (move, error)
	// target, when set, is the scenario's goal for the median, from the
	// tunnel RTT measured before the event.
	target func(rtt time.Duration) time.Duration
	// anchor marks the scenario the others are compared with.
	anchor bool
	// restore, when set, runs after the measurement (outside the timed
	// window) to undo what the trigger broke.
	restore func(e *env) error
}

// group is scenarios sharing one lab: setup builds it and connects the
// client (e.cur set), then the scenarios' repetitions interleave.
type group struct {
	name      string
	setup     func(cfg config, e *env) error
	scenarios []scenario
	// ha builds the lab with the second gateway node (lab.Options.HA).
	ha bool
}

var groups = []group{
	{name: "roam-gateway", setup: setupRoamGateway, scenarios: []scenario{switchScenario, addressGoneScenario, reconnectScenario}},
	// Issue 5's HA failover: two gateway nodes, the active one killed
	// (failover.go).
	{name: "ha-pair", setup: setupHAPair, scenarios: []scenario{failoverScenario}, ha: true},
}

var switchScenario = scenario{
	name: "switch", desc: "roam gateway switch --to the other address (SWITCH_TO_IP_ADDRESS)",
	trigger: func(cfg config, e *env, rep int, event time.Time) (move, error) {
		to := lab.GatewayAddr2.Addr()
		if e.cur == to {
			to = lab.GatewayAddr1.Addr()
		}
		out, err := e.gw.GatewaySwitch(lab.ClientID, to, cfg.bound)
		if err != nil {
			return move{}, fmt.Errorf("%w: %s", err, strings.TrimSpace(out))
		}
		e.cur = to
		return move{to: to, since: event, applied: event}, nil
	},
	target: func(rtt time.Duration) time.Duration { return 2*rtt + 10*time.Millisecond },
}

var addressGoneScenario = scenario{
	name: "address-gone", desc: "the address the SA uses removed from the gateway (automatic switch)",
	trigger: func(cfg config, e *env, rep int, event time.Time) (move, error) {
		gone := e.cur
		to := lab.GatewayAddr2.Addr()
		if gone == to {
			to = lab.GatewayAddr1.Addr()
		}
		if err := e.l.RemoveGatewayAddr(gone); err != nil {
			return move{}, err
		}
		e.cur, e.removed = to, gone
		return move{to: to, since: event, applied: event}, nil
	},
	restore: func(e *env) error {
		if !e.removed.IsValid() {
			return nil
		}
		gone := e.removed
		e.removed = netip.Addr{}
		return e.l.RestoreGatewayAddr(gone)
	},
}

var reconnectScenario = scenario{
	name: "reconnect", desc: "roam disconnect + roam connect (a new IKE SA, the anchor)", anchor: true,
	trigger: func(cfg config, e *env, rep int, event time.Time) (move, error) {
		if out, err := e.client.Disconnect("corp"); err != nil {
			return move{}, fmt.Errorf("disconnect: %w: %s", err, out)
		}
		// The old SA is gone on both sides once disconnect returned: the
		// gateway answered its DELETE.
		since := time.Now()
		if out, err := e.client.Connect("corp", cfg.bound); err != nil {
			return move{}, fmt.Errorf("connect: %w: %s", err, out)
		}
		e.cur = lab.GatewayAddr1.Addr() // the profile's gateway
		return move{to: e.cur, since: since, applied: since}, nil
	},
}

type run struct {
	rep      int
	res      probe.Result
	firstPkt time.Duration // event to the first tunnel packet from the new address
	trigger  time.Duration // how long the command took
	// lostSpan: send times of the first and last lost probe in the
	// window, relative to the event (where the loss sits, for diagnosis).
	lostSpan [2]time.Duration
	err      error
}

func main() { benchkit.Main("bench-switch", parseFlags, bench) }

// parseFlags reads flags, each defaulting to its environment variable.
func parseFlags(args []string, getenv func(string) string) (config, error) {
	cfg := config{scenarios: map[string]bool{}}
	fs := benchkit.NewFlags("bench-switch", getenv)
	reps := fs.Env("reps", "REPS", "10", "repetitions per scenario (env REPS)")
	bound := fs.Env("bound", "BOUND", "10s", "a move whose first packet on the new path is later than this counts as not recovered (env BOUND)")
	delay := fs.Env("delay", "DELAY", "10ms", "one-way delay added on each client uplink (env DELAY)")
	interval := fs.Env("interval", "INTERVAL", "5ms", "probe interval (env INTERVAL)")
	scen := fs.Env("scenarios", "SCENARIOS", "", "comma-separated scenario names; empty = all (env SCENARIOS)")
	logDir := fs.Env("logs", "LOGS", "", "save logs of failed runs into this directory (env LOGS)")
	deadAfter := fs.Env("dead-after", "DEAD_AFTER", "0", "the HA nodes' dead_after; 0: roam's default (env DEAD_AFTER)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.logDir = *logDir
	var err error
	if cfg.reps, err = benchkit.Int("REPS/-reps", *reps, 1, 0); err != nil {
		return cfg, err
	}
	if err := benchkit.ParseDurations(benchkit.Duration{Label: "BOUND/-bound", Value: *bound, To: &cfg.bound},
		benchkit.Duration{Label: "DELAY/-delay", Value: *delay, To: &cfg.delay, ZeroOK: true},
		benchkit.Duration{Label: "INTERVAL/-interval", Value: *interval, To: &cfg.interval},
		benchkit.Duration{Label: "DEAD_AFTER/-dead-after", Value: *deadAfter, To: &cfg.haDeadAfter, ZeroOK: true}); err != nil {
		return cfg, err
	}
	known := map[string]bool{}
	var names []string
	for _, g := range groups {
		for _, s := range g.scenarios {
			known[s.name] = true
			names = append(names, s.name)
		}
	}
	for _, s := range strings.Split(*scen, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !known[s] {
			return cfg, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(names, ", "))
		}
		cfg.scenarios[s] = true
	}
	return cfg, nil
}

func (cfg config) wanted(s scenario) bool { return len(cfg.scenarios) == 0 || cfg.scenarios[s.name] }

func bench(cfg config) error {
	bin, err := benchkit.BuildLab("bench-switch", "bench-switch")
	if err != nil {
		return err
	}
	defer bin.Remove()
	cfg.roamBin, cfg.delayBin = bin.Roam, bin.Delay
	started := time.Now()
	load := benchkit.StartLoad()
	results := map[string][]run{}
	var order []scenario
	for _, g := range groups {
		var ss []scenario
		for _, s := range g.scenarios {
			if cfg.wanted(s) {
				ss = append(ss, s)
			}
		}
		if len(ss) == 0 {
			continue
		}
		order = append(order, ss...)
		if err := runGroup(cfg, g, ss, results); err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
	}
	load.Finish()
	report(os.Stdout, cfg, order, results, time.Since(started), load)
	return nil
}

// runGroup builds the group's lab once and runs its scenarios' repetitions
// interleaved, so slow phases of the shared machine hit them alike.
func runGroup(cfg config, g group, ss []scenario, results map[string][]run) error {
	e := &env{delays: lab.Delays{}, router: lab.NATWLAN}
	l, err := lab.New(lab.Options{OnUplink: lab.DelayUplinks(cfg.delayBin, cfg.delay, e.delays), HA: g.ha})
	if err != nil {
		return err
	}
	defer l.Close()
	e.l = l
	if err := benchkit.KeepClientIPv4(l); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := benchkit.ServeProbes(ctx, l); err != nil {
		return err
	}
	if err := g.setup(cfg, e); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	prober, err := benchkit.StartProber(ctx, l, cfg.interval)
	if err != nil {
		return err
	}
	defer prober.Stop()
	e.snd = prober.Sender
	total := cfg.reps * len(ss)
	n := 0
	for rep := 1; rep <= cfg.reps; rep++ {
		for _, s := range ss {
			n++
			r := measure(cfg, e, s, rep)
			if s.restore != nil {
				if err := s.restore(e); err != nil && r.err == nil {
					r.err = fmt.Errorf("restore: %w", err)
				}
			}
			results[s.name] = append(results[s.name], r)
			fmt.Fprintf(os.Stderr, "[%d/%d] %s rep %d: %s\n", n, total, s.name, rep, describe(r))
			if r.err != nil && cfg.logDir != "" && e.logs != nil {
				saveLogs(cfg.logDir, fmt.Sprintf("%s-%d", s.name, rep), e.logs())
			}
		}
	}
	return nil
}

// setupRoamGateway starts roam gateway (listening on R1 and R2) and
// connects the roam client to R1 through nat-wlan.
func setupRoamGateway(cfg config, e *env) error {
	var err error
	e.gw, err = lab.NewRoamGateway(e.l, lab.Gateway, cfg.roamBin, filepath.Join(e.l.Dir, "gw"), lab.RoamGatewayConfig{Auth: "psk", PSK: psk})
	if err != nil {
		return err
	}
	if e.gwProc, err = e.gw.StartGateway(); err != nil {
		return err
	}
	cdir, err := e.newClient(cfg)
	if err != nil {
		return err
	}
	e.logs = func() map[string]string {
		m := map[string]string{"gateway.out": e.gwProc.Output()}
		benchkit.AddLogFile(m, "roam.log", filepath.Join(cdir, "roam.log"))
		benchkit.AddStatus(m, "gateway-status.json", e.gw)
		return m
	}
	if err := e.client.ConnectRetry("corp"); err != nil {
		return err
	}
	e.cur = lab.GatewayAddr1.Addr()
	return nil
}

// newClient writes the client's profile (PSK, as the gateways use) and
// makes e.client its CLI handle; it returns the client's directory, where
// its daemon writes roam.log.
func (e *env) newClient(cfg config) (string, error) {
	cdir := filepath.Join(e.l.Dir, "roam")
	var err error
	if e.client, err = lab.NewRoamClient(e.l, cfg.roamBin, cdir, lab.LabProfile("psk", psk, nil, nil)); err != nil {
		return "", err
	}
	return cdir, nil
}

// measure runs one repetition: steady state on e.cur, a second of
// baseline, the trigger, then the first tunnel packet from the new address
// and the probes around it.
func measure(cfg config, e *env, s scenario, rep int) run {
	out := run{rep: rep}
	if err := steady(e, 15*time.Second); err != nil {
		out.err = fmt.Errorf("before the move: %w", err)
		return out
	}
	window := time.Now()
	time.Sleep(time.Second)
	event := time.Now()
	mv, err := s.trigger(cfg, e, rep, event)
	out.trigger = time.Since(event)
	if err != nil {
		out.err = fmt.Errorf("trigger: %w", err)
		return out
	}
	var newPath time.Time
	deadline := event.Add(cfg.bound)
	for time.Now().Before(deadline) {
		if p, ok := firstInFrom(e, mv.since, mv.to); ok {
			newPath = p.Release
			out.firstPkt = p.Release.Sub(event)
			// A second of probes after the move: losses right after it count.
			if until := time.Now().Add(time.Second); until.Before(deadline) {
				deadline = until
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for r, dl := range e.delays {
		if !dl.Running() {
			out.err = fmt.Errorf("delay line of %s died: %s", r, dl.Output())
			return out
		}
	}
	// Probes still in flight at the end of the window are not lost: wait
	// for their echoes and leave later probes out.
	end := time.Now()
	time.Sleep(300 * time.Millisecond)
	var recs []probe.Record
	for _, r := range e.snd.Records() {
		if !r.Sent.After(end) {
			recs = append(recs, r)
		}
	}
	first := true
	for _, r := range recs {
		if r.Sent.Before(window) || r.Answered() {
			continue
		}
		if first {
			out.lostSpan[0], first = r.Sent.Sub(event), false
		}
		out.lostSpan[1] = r.Sent.Sub(event)
	}
	out.res = probe.Analyze(recs, probe.Move{Event: event, Applied: mv.applied, NewPath: newPath, WindowStart: window, Bound: cfg.bound})
	if newPath.IsZero() {
		out.firstPkt = 0
	}
	return out
}

// steady waits until probes are answered and the tunnel's packets toward
// the client come from e.cur.
func steady(e *env, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		since := time.Now().Add(-300 * time.Millisecond)
		_, answered := e.snd.Answered(since, since)
		p, ok := lastIn(e)
		if answered && ok && p.Peer == e.cur && p.Release.After(since) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tunnel not carrying probes from %s after %v", e.cur, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func describe(r run) string {
	if r.err != nil {
		return "ERROR " + r.err.Error()
	}
	s := fmt.Sprintf("command %s, sent %d, lost %d, longest silence %s, rtt %s", ms(r.trigger), r.res.Sent, r.res.Lost, ms(r.res.Gap), ms(r.res.RTT))
	if r.lostSpan != [2]time.Duration{} {
		s += fmt.Sprintf(", lost probes sent %s to %s from the command", ms(r.lostSpan[0]), ms(r.lostSpan[1]))
	}
	if r.firstPkt > 0 {
		return fmt.Sprintf("first packet on the new path after %s; %s", ms(r.firstPkt), s)
	}
	return "no packet on the new path within the bound; " + s
}

func ms(d time.Duration) string { return benchkit.MS(d) }

func msf(d time.Duration) float64 { return benchkit.MSF(d) }

// saveLogs keeps a run's logs; failing to is worth a line, not the run.
func saveLogs(dir, name string, files map[string]string) {
	benchkit.SaveLogs("bench-switch", dir, name, files)
}

// summary of one scenario's runs.
type summary struct {
	Scenario   string    `json:"scenario"`
	Runs       int       `json:"runs"`
	Errors     int       `json:"errors"`
	Recovered  int       `json:"recovered"`
	MedianMS   *float64  `json:"median_ms"` // first packet on the new path
	MaxMS      *float64  `json:"max_ms"`
	EchoMS     *float64  `json:"echo_median_ms"` // first probe echo on the new path
	RTTMS      *float64  `json:"rtt_ms"`
	TargetMS   *float64  `json:"target_ms,omitempty"`
	MeetsGoal  *bool     `json:"meets_target,omitempty"`
	LostMedian *int      `json:"lost_median"`
	LostMax    *int      `json:"lost_max"`
	CommandMS  *float64  `json:"command_median_ms"`
	Ratio      *float64  `json:"ratio_to_anchor,omitempty"`
	FirstMS    []float64 `json:"first_packet_ms"`
	Lost       []int     `json:"lost"`
	median     time.Duration
}

func ptr[T any](v T) *T { return benchkit.Ptr(v) }

func summarize(s scenario, runs []run) summary {
	sum := summary{Scenario: s.name, Runs: len(runs), FirstMS: []float64{}, Lost: []int{}}
	var first, cmd []time.Duration
	var rs []probe.Result
	for _, r := range runs {
		if r.err != nil {
			sum.Errors++
			continue
		}
		rs = append(rs, r.res)
		cmd = append(cmd, r.trigger)
		sum.Lost = append(sum.Lost, r.res.Lost)
		if r.firstPkt > 0 {
			first = append(first, r.firstPkt)
			sum.FirstMS = append(sum.FirstMS, msf(r.firstPkt))
		}
	}
	sum.Recovered = len(first)
	ps := probe.Summarize(rs)
	if len(first) > 0 {
		sum.median = probe.Median(first)
		sum.MedianMS, sum.MaxMS = ptr(msf(sum.median)), ptr(msf(slices.Max(first)))
	}
	if ps.Recovered > 0 {
		sum.EchoMS = ptr(msf(ps.Median))
	}
	if ps.RTT > 0 {
		sum.RTTMS = ptr(msf(ps.RTT))
		if s.target != nil {
			tg := s.target(ps.RTT)
			sum.TargetMS = ptr(msf(tg))
			if len(first) > 0 {
				sum.MeetsGoal = ptr(sum.median <= tg)
			}
		}
	}
	if len(rs) > 0 {
		sum.LostMedian, sum.LostMax = ptr(ps.LostMed), ptr(ps.LostMax)
	}
	if len(cmd) > 0 {
		sum.CommandMS = ptr(msf(probe.Median(cmd)))
	}
	return sum
}

func report(w io.Writer, cfg config, order []scenario, results map[string][]run, took time.Duration, load benchkit.Load) {
	fmt.Fprintf(w, "\nbench-switch: gateway-initiated moves vs a full reconnect (roam client behind nat-wlan, roam gateway)\n")
	fmt.Fprintf(w, "%v one-way delay on each client uplink; a probe every %v through the tunnel; %d repetitions per scenario, interleaved in one lab per group; took %v\n%v\n\n",
		cfg.delay, cfg.interval, cfg.reps, took.Round(time.Second), load)
	sums := map[string]summary{}
	var anchor *summary
	for _, s := range order {
		sum := summarize(s, results[s.name])
		sums[s.name] = sum
		if s.anchor {
			a := sum
			anchor = &a
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\trecovered\tmedian ms\tmax ms\techo med ms\tRTT ms\ttarget ms\tlost med\tlost max\tcommand ms\tratio\t")
	var lines []string
	for _, s := range order {
		sum := sums[s.name]
		if anchor != nil && !s.anchor && sum.Recovered > 0 && anchor.Recovered > 0 && anchor.median > 0 {
			sum.Ratio = ptr(float64(sum.median) / float64(anchor.median))
		}
		f := func(p *float64) string {
			if p == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f", *p)
		}
		d := func(p *int) string {
			if p == nil {
				return "-"
			}
			return strconv.Itoa(*p)
		}
		rec := fmt.Sprintf("%d/%d", sum.Recovered, sum.Runs)
		if sum.Errors > 0 {
			rec += fmt.Sprintf(" (%d err)", sum.Errors)
		}
		target := f(sum.TargetMS)
		if sum.MeetsGoal != nil {
			if *sum.MeetsGoal {
				target += " met"
			} else {
				target += " MISSED"
			}
		}
		ratio := "-"
		if s.anchor {
			ratio = "anchor"
		} else if sum.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *sum.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.name, rec, f(sum.MedianMS), f(sum.MaxMS), f(sum.EchoMS), f(sum.RTTMS),
			target, d(sum.LostMedian), d(sum.LostMax), f(sum.CommandMS), ratio)
		b, _ := json.Marshal(sum)
		lines = append(lines, "BENCH-SWITCH "+string(b))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, s := range order {
		fmt.Fprintf(w, "  %-10s %s\n", s.name, s.desc)
	}
	fmt.Fprintln(w, `
median/max: from the start of the command to the first tunnel packet from the new
gateway address that the client's NAT router forwarded to the client (a reconnect:
the first of the new SA). echo med: to the first probe echo over the new path.
target: 2 RTT + 10 ms for the switch command (RTT: the probes' before it);
address-gone has none: it adds netmon's report and the probes already on
their way to the vanished address.
lost: probes without an echo from 1 s before the command to 1 s after the first
packet. command: how long the CLI command(s) took. ratio: median / the anchor's.`)
	fmt.Fprintln(w)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// firstInFrom is the earliest tunnel packet from peer toward the client at
// or after t on any uplink: after a failover the client may come back on
// its other uplink (its own dead-path test can run first).
func firstInFrom(e *env, t time.Time, peer netip.Addr) (lab.TunnelPacket, bool) {
	var first lab.TunnelPacket
	found := false
	for _, dl := range e.delays {
		if p, ok := dl.FirstInFrom(t, peer); ok && (!found || p.Release.Before(first.Release)) {
			first, found = p, true
		}
	}
	return first, found
}

// lastIn is the latest tunnel packet toward the client on any uplink.
func lastIn(e *env) (lab.TunnelPacket, bool) {
	var last lab.TunnelPacket
	found := false
	for _, dl := range e.delays {
		if p, ok := dl.LastIn(); ok && (!found || p.Release.After(last.Release)) {
			last, found = p, true
		}
	}
	return last, found
}
