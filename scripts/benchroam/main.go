// Command benchroam is issue 3's handover benchmark (make bench-roam): in
// the netns lab, with a delay line of -delay each way on both uplinks, it
// moves the tunnel (link down, address removed, preferred uplink back, NAT
// conntrack flushed, NAT public address changed) -reps times per scenario,
// once with the roam client and once with strongSwan's own client (charon,
// kernel-libipsec, mobike=yes), both against the same strongSwan gateway
// configuration, in the same run; -gateway roam runs the same against
// `roam gateway` instead. A UDP prober in the client namespace
// sends a probe every -interval through the tunnel to a responder on the
// host behind the gateway; the delay lines see which uplink carries tunnel
// packets. It prints a table and one machine-readable line per scenario.
//
// It needs root and is not part of CI (it takes minutes).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

const psk = "bench-roam-psk-correct-horse"

type config struct {
	reps      int
	bound     time.Duration
	delay     time.Duration
	interval  time.Duration
	baseline  time.Duration
	after     time.Duration
	scenarios []scenario
	clients   []string
	// gateway is the gateway kind every run connects to (swanGateway or
	// roamGateway).
	gateway string
	logDir  string
	// keepLogs saves every run's logs (not only failures) into logDir,
	// with the roam client at debug level: the timeline of a handover.
	keepLogs bool
	roamBin  string
	delayBin string
	// torture, when set, runs the torture sequence (torture.go) instead
	// of the scenarios.
	torture *tortureConfig
}

// scenario is one move. The tunnel starts on wlan (or, after prepare, on
// prepareOn); trigger makes the change the benchmark times.
type scenario struct {
	name, desc string
	prepare    func(l *lab.Lab) error
	prepareOn  string // router the tunnel must use after prepare
	setup      func(l *lab.Lab) error
	trigger    func(l *lab.Lab) error
	oldRouter  string
	newRouter  string
	// connect: the scenario is the connect itself, from the start of the
	// command to the first echo through the new tunnel (no tunnel before):
	// connectSpawn lets `roam connect` start its daemon, connectDaemon
	// has `roam daemon` running already (as the systemd unit does). For
	// strongSwan's client both are `swanctl --initiate` to a running
	// charon.
	connect string
}

const (
	connectSpawn  = "spawn"
	connectDaemon = "daemon"
)

var allScenarios = []scenario{
	{
		name: "a-link-down", desc: "active uplink (wlan) link down",
		trigger:   func(l *lab.Lab) error { return l.LinkDown(lab.Client, lab.WLAN) },
		oldRouter: lab.NATWLAN, newRouter: lab.NATWWAN,
	},
	{
		name: "b-address-removed", desc: "active uplink's address removed",
		trigger:   func(l *lab.Lab) error { return l.DelAddr(lab.Client, lab.WLAN, lab.ClientWLAN) },
		oldRouter: lab.NATWLAN, newRouter: lab.NATWWAN,
	},
	{
		name: "c-preferred-back", desc: "preferred uplink (wlan) back while on wwan",
		prepare:   func(l *lab.Lab) error { return l.LinkDown(lab.Client, lab.WLAN) },
		prepareOn: lab.NATWWAN,
		// What a network manager does when Wi-Fi returns, in one command
		// so the event is one moment: link up, then its default route.
		trigger: func(l *lab.Lab) error {
			return l.Exec(lab.Client, "sh", "-c", fmt.Sprintf("ip link set %s up && ip route replace default via %s dev %s metric 100",
				lab.WLAN, lab.RouterWLAN.Addr(), lab.WLAN))
		},
		oldRouter: lab.NATWWAN, newRouter: lab.NATWLAN,
	},
	{
		name: "d-nat-flushed", desc: "active NAT's conntrack table flushed",
		trigger:   func(l *lab.Lab) error { return l.FlushConntrack(lab.NATWLAN) },
		oldRouter: lab.NATWLAN, newRouter: lab.NATWLAN,
	},
	{
		name: "d2-nat-address", desc: "active NAT's public address changed (and its mappings lost)",
		// The new address is routed to the NAT and its translation
		// switched to it beforehand: that alone changes nothing, since
		// nf_nat keeps an existing flow's mapping (the baseline second
		// after it checks the tunnel still runs on the old one). The
		// event is the loss of the mappings, the same command as
		// d-nat-flushed, after which the flow leaves from the new address
		// (what lab.ChangeNATAddress does in one step). Timing the
		// translation's switch too would time the benchmark's own shell
		// and nft start (about 18 ms), not a change on the path.
		setup: func(l *lab.Lab) error {
			a := lab.NewPublic[lab.NATWLAN].String()
			if err := l.Exec(lab.NATWLAN, "ip", "addr", "add", a+"/32", "dev", "wan"); err != nil {
				return err
			}
			if err := l.Exec(lab.Inet, "ip", "route", "replace", a+"/32", "dev", "to-"+lab.WLAN); err != nil {
				return err
			}
			return l.Exec(lab.NATWLAN, "nft", `flush chain ip nat post; add rule ip nat post oifname "wan" snat to `+a)
		},
		trigger:   func(l *lab.Lab) error { return l.FlushConntrack(lab.NATWLAN) },
		oldRouter: lab.NATWLAN, newRouter: lab.NATWLAN,
	},
	{
		name: "e-connect", desc: "connect: `roam connect` starting its daemon / `swanctl --initiate`",
		connect: connectSpawn, oldRouter: lab.NATWLAN, newRouter: lab.NATWLAN,
	},
	{
		name: "e2-connect-daemon", desc: "connect with `roam daemon` already running / `swanctl --initiate`",
		connect: connectDaemon, oldRouter: lab.NATWLAN, newRouter: lab.NATWLAN,
	},
}

// Client kinds.
const (
	roamClient = "roam"
	swanClient = "strongswan"
)

var clientLabel = map[string]string{roamClient: "roam", swanClient: "strongSwan"}

// Gateway kinds.
const (
	swanGateway = "strongswan"
	roamGateway = "roam"
)

var gatewayLabel = map[string]string{
	swanGateway: "strongSwan 5.9.8 (kernel-libipsec)",
	roamGateway: "roam gateway",
}

type run struct {
	rep     int
	res     probe.Result
	trigger time.Duration
	err     error
	// budget: `roam connect --json`'s connect_budget (connect scenarios).
	budget map[string]float64
	// firstOut (connect scenarios): from the start of the command to the
	// first tunnel packet the client sent, as the uplink's delay line took
	// it: when traffic flows, one round trip before its first echo.
	firstOut time.Duration
}

func main() {
	benchkit.Main("bench-roam", parseFlags, func(cfg config) error {
		if cfg.torture != nil {
			return torture(cfg, *cfg.torture)
		}
		return bench(cfg)
	})
}

// parseFlags reads flags, each defaulting to its environment variable.
func parseFlags(args []string, getenv func(string) string) (config, error) {
	var cfg config
	flag := benchkit.NewFlags("bench-roam", getenv)
	reps := flag.Env("reps", "REPS", "10", "repetitions per scenario and client (env REPS)")
	bound := flag.Env("bound", "BOUND", "10s", "a run not recovered this long after the event counts as not recovered (env BOUND)")
	delay := flag.Env("delay", "DELAY", "10ms", "one-way delay added on each uplink (env DELAY)")
	interval := flag.Env("interval", "INTERVAL", "5ms", "probe interval (env INTERVAL)")
	scen := flag.Env("scenarios", "SCENARIOS", "", "comma-separated scenario names or letters (a,b,c,d,d2,e,e2); empty = all (env SCENARIOS)")
	clients := flag.Env("clients", "CLIENTS", "roam,strongswan", "clients to run (env CLIENTS)")
	gateway := flag.Env("gateway", "GATEWAY", swanGateway, "gateway both clients connect to: strongswan or roam (env GATEWAY)")
	logDir := flag.Env("logs", "LOGS", "", "save client and gateway logs of runs that did not recover into this directory (env LOGS)")
	keep := flag.Env("keep-logs", "KEEPLOGS", "", "with -logs: save every run's logs, the roam client logging at debug level (env KEEPLOGS=1)")
	tort := flag.Env("torture", "TORTURE", "", "run the torture sequence instead of the scenarios: 1, or short for a quick one (env TORTURE)")
	events := flag.Env("events", "EVENTS", "", "torture: number of events (env EVENTS; 60, short 9)")
	duration := flag.Env("duration", "DURATION", "", "torture: the sequence spreads over about this long (env DURATION; 10m, short 90s)")
	seed := flag.Env("seed", "SEED", "1", "torture: seed of the event sequence (env SEED)")
	kinds := flag.Env("kinds", "KINDS", "", "torture: comma-separated event kinds; empty = all (env KINDS)")
	grace := flag.Env("grace", "GRACE", "2s", "torture: status saying ok while nothing flowed for this long is a lie (env GRACE)")
	outage := flag.Env("outage", "OUTAGE", "20s", "torture: how long the no-uplink event holds (env OUTAGE)")
	if err := flag.Parse(args); err != nil {
		return cfg, err
	}
	cfg.logDir = *logDir
	var err error
	switch *keep {
	case "", "0":
	case "1":
		if cfg.logDir == "" {
			return cfg, errors.New("KEEPLOGS/-keep-logs needs LOGS/-logs (the directory)")
		}
		cfg.keepLogs = true
	default:
		return cfg, fmt.Errorf("KEEPLOGS/-keep-logs %q: want 1", *keep)
	}
	if cfg.reps, err = benchkit.Int("REPS/-reps", *reps, 1, 0); err != nil {
		return cfg, err
	}
	if err := benchkit.ParseDurations(benchkit.Duration{Label: "BOUND/-bound", Value: *bound, To: &cfg.bound},
		benchkit.Duration{Label: "DELAY/-delay", Value: *delay, To: &cfg.delay, ZeroOK: true},
		benchkit.Duration{Label: "INTERVAL/-interval", Value: *interval, To: &cfg.interval}); err != nil {
		return cfg, err
	}
	cfg.baseline = time.Second
	cfg.after = time.Second
	if *scen == "" {
		cfg.scenarios = allScenarios
	} else {
		for _, want := range strings.Split(*scen, ",") {
			want = strings.TrimSpace(want)
			found := false
			for _, s := range allScenarios {
				if s.name == want || strings.HasPrefix(s.name, want+"-") {
					cfg.scenarios = append(cfg.scenarios, s)
					found = true
				}
			}
			if !found {
				return cfg, fmt.Errorf("unknown scenario %q (have a-link-down, b-address-removed, c-preferred-back, d-nat-flushed, d2-nat-address, e-connect, e2-connect-daemon)", want)
			}
		}
	}
	switch *tort {
	case "", "0":
	case "1", "short":
		ev, dur := "60", "10m"
		if *tort == "short" {
			ev, dur = strconv.Itoa(len(tortureKinds)), "90s"
		}
		if *events == "" {
			*events = ev
		}
		if *duration == "" {
			*duration = dur
		}
		tc, err := parseTortureFlags(&cfg, *events, *duration, *seed, *kinds, *grace, *outage)
		if err != nil {
			return cfg, err
		}
		cfg.torture = &tc
	default:
		return cfg, fmt.Errorf("TORTURE/-torture %q: want 1 or short", *tort)
	}
	switch *gateway {
	case swanGateway, roamGateway:
		cfg.gateway = *gateway
	default:
		return cfg, fmt.Errorf("GATEWAY/-gateway %q: want strongswan or roam", *gateway)
	}
	for _, c := range strings.Split(*clients, ",") {
		c = strings.TrimSpace(c)
		if c != roamClient && c != swanClient {
			return cfg, fmt.Errorf("unknown client %q (have roam, strongswan)", c)
		}
		cfg.clients = append(cfg.clients, c)
	}
	return cfg, nil
}

func bench(cfg config) error {
	bin, err := benchkit.BuildLab("bench-roam", "bench-roam")
	if err != nil {
		return err
	}
	defer bin.Remove()
	cfg.roamBin, cfg.delayBin = bin.Roam, bin.Delay
	started := time.Now()
	load := benchkit.StartLoad()
	results := map[string]map[string][]run{}
	total := cfg.reps * len(cfg.scenarios) * len(cfg.clients)
	n := 0
	// Repetitions outermost, clients alternating: slow phases of the
	// shared machine hit both clients alike.
	for rep := 1; rep <= cfg.reps; rep++ {
		for _, sc := range cfg.scenarios {
			for _, cl := range cfg.clients {
				n++
				r := runOnce(cfg, sc, cl, rep)
				if results[sc.name] == nil {
					results[sc.name] = map[string][]run{}
				}
				results[sc.name][cl] = append(results[sc.name][cl], r)
				fmt.Fprintf(os.Stderr, "[%d/%d] %s %s rep %d: %s\n", n, total, sc.name, clientLabel[cl], rep, describe(r))
			}
		}
	}
	load.Finish()
	report(os.Stdout, cfg, results, time.Since(started), load)
	return failedRuns(results)
}

// failedRuns says how many runs the bench could not carry out (a lab that
// would not build, a client that would not start), so that a bench whose
// runs all failed does not exit 0 as if it had measured something. A run
// that did not recover is a measurement, not a failure.
func failedRuns(results map[string]map[string][]run) error {
	var failed, all int
	var first error
	for _, byClient := range results {
		for _, runs := range byClient {
			for _, r := range runs {
				all++
				if r.err != nil {
					failed++
					if first == nil {
						first = r.err
					}
				}
			}
		}
	}
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d runs failed (one: %w)", failed, all, first)
}

func describe(r run) string {
	if r.err != nil {
		return "ERROR " + r.err.Error()
	}
	s := fmt.Sprintf("sent %d, lost %d, longest silence %s, rtt %s, trigger %s, longest send gap %s",
		r.res.Sent, r.res.Lost, ms(r.res.Gap), ms(r.res.RTT), ms(r.trigger), ms(r.res.SendGap))
	if r.firstOut > 0 {
		s += ", first tunnel packet out " + ms(r.firstOut)
	}
	if len(r.budget) > 0 {
		s += "; roam's budget:"
		for _, k := range budgetKeys {
			if v, ok := r.budget[k]; ok {
				s += fmt.Sprintf(" %s %.1f", k, v)
			}
		}
	}
	if r.res.Recovered {
		return fmt.Sprintf("recovered after %s; %s", ms(r.res.Recovery), s)
	}
	return "NOT recovered within the bound; " + s
}

func ms(d time.Duration) string { return benchkit.MS(d) }

// budgetKeys are the connect_budget figures shown per run, in order.
var budgetKeys = []string{"command_ms", "daemon_start_ms", "total_ms", "ike_ms", "tun_ms", "tun_wait_ms", "install_ms"}

// runOnce builds a fresh lab, connects the client, makes the move and
// measures it. The lab (and every process in it) is gone when it returns.
func runOnce(cfg config, sc scenario, client string, rep int) run {
	out := run{rep: rep}
	delays := lab.Delays{}
	l, err := lab.New(lab.Options{OnUplink: lab.DelayUplinks(cfg.delayBin, cfg.delay, delays)})
	if err != nil {
		out.err = err
		return out
	}
	defer l.Close()
	// The scenarios are IPv4 moves.
	if err := benchkit.KeepClientIPv4(l); err != nil {
		out.err = err
		return out
	}
	var logs func() map[string]string
	defer func() {
		if cfg.logDir != "" && logs != nil && (cfg.keepLogs || out.err != nil || !out.res.Recovered) {
			saveLogs(cfg.logDir, fmt.Sprintf("%s-%s-%d", sc.name, client, rep), logs())
		}
	}()
	if logs, err = startGateway(cfg, l); err != nil {
		out.err = err
		return out
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := benchkit.ServeProbes(ctx, l); err != nil {
		out.err = err
		return out
	}

	var connectNow func() (map[string]float64, error)
	switch client {
	case roamClient:
		dir := filepath.Join(l.Dir, "roam")
		cfgPath, err := lab.WriteRoamConfig(dir, lab.LabProfile("psk", psk, nil, nil))
		if err != nil {
			out.err = err
			return out
		}
		r := &lab.Roam{Lab: l, NS: lab.Client, Bin: cfg.roamBin, Config: cfgPath, Socket: filepath.Join(dir, "roam.sock")}
		daemonArgs := []string{cfg.roamBin, "daemon", "--socket", r.Socket, "--config", cfgPath}
		if cfg.keepLogs {
			r.Env = []string{"ROAM_LOG_LEVEL=debug"}
			daemonArgs = append(daemonArgs, "--log-level", "debug")
		}
		prev := logs
		logs = func() map[string]string {
			m := prev()
			benchkit.AddLogFile(m, "roam.log", filepath.Join(dir, "roam.log"))
			benchkit.AddStatus(m, "roam-status.json", r)
			return m
		}
		switch sc.connect {
		case "":
			// A roam gateway started just before may still be binding.
			if err := r.ConnectRetry("corp"); err != nil {
				out.err = err
				return out
			}
		case connectDaemon:
			// As the systemd unit runs it: no --auto-exit.
			if _, err := l.Start(lab.Client, daemonArgs...); err != nil {
				out.err = fmt.Errorf("roam daemon: %w", err)
				return out
			}
			if err := waitDaemon(r, 10*time.Second); err != nil {
				out.err = err
				return out
			}
		}
		connectNow = func() (map[string]float64, error) {
			o, err := r.Run(30*time.Second, "connect", "--json", "corp")
			if err != nil {
				return nil, fmt.Errorf("roam connect: %w", err)
			}
			var st struct {
				Budget map[string]float64 `json:"connect_budget"`
			}
			if err := json.Unmarshal([]byte(o), &st); err != nil {
				return nil, fmt.Errorf("roam connect --json: %w: %s", err, o)
			}
			return st.Budget, nil
		}
	case swanClient:
		cl, err := l.StartCharon(lab.Client, lab.CharonOptions{
			Conns: []lab.SwanConn{lab.ClientConn("psk", psk, lab.GatewayAddr1.Addr(), nil, nil)},
		})
		if err != nil {
			out.err = fmt.Errorf("strongSwan client: %w", err)
			return out
		}
		prev := logs
		logs = func() map[string]string {
			m := prev()
			m["client-charon.log"] = cl.Log()
			if s, err := cl.Swanctl("--list-sas"); err == nil {
				m["client-sas.txt"] = s
			}
			return m
		}
		connectNow = func() (map[string]float64, error) {
			if err := cl.Initiate("home", 20*time.Second); err != nil {
				return nil, fmt.Errorf("strongSwan client initiate: %w", err)
			}
			return nil, nil
		}
		if sc.connect == "" {
			if _, err := connectNow(); err != nil {
				out.err = err
				return out
			}
		}
	}

	prober, err := benchkit.StartProber(ctx, l, cfg.interval)
	if err != nil {
		out.err = err
		return out
	}
	defer prober.Stop()
	snd := prober.Sender

	if sc.connect != "" {
		return measureConnect(cfg, sc, out, prober, delays, connectNow)
	}
	onRouter := lab.NATWLAN
	if sc.prepare != nil {
		if err := waitOn(snd, delays, onRouter, 15*time.Second); err != nil {
			out.err = fmt.Errorf("before preparing: %w", err)
			return out
		}
		if err := sc.prepare(l); err != nil {
			out.err = fmt.Errorf("prepare: %w", err)
			return out
		}
		onRouter = sc.prepareOn
	}
	if sc.setup != nil {
		if err := sc.setup(l); err != nil {
			out.err = fmt.Errorf("setup: %w", err)
			return out
		}
	}
	if onRouter != sc.oldRouter {
		out.err = fmt.Errorf("scenario %s: tunnel on %s before the event, expected %s", sc.name, onRouter, sc.oldRouter)
		return out
	}
	if err := waitOn(snd, delays, onRouter, 15*time.Second); err != nil {
		out.err = err
		return out
	}
	window := time.Now()
	time.Sleep(cfg.baseline)
	if err := onlyOn(delays, onRouter, window); err != nil {
		out.err = fmt.Errorf("baseline: %w", err)
		return out
	}

	event := time.Now()
	terr := sc.trigger(l)
	applied := time.Now()
	out.trigger = applied.Sub(event)
	if terr != nil {
		out.err = fmt.Errorf("trigger: %w", terr)
		return out
	}
	newPath := awaitNewPath(cfg, snd, delays[sc.newRouter], event, applied)
	if newPath.IsZero() {
		// Recovered at the very end of the bound, or not at all.
		if p, ok := delays[sc.newRouter].FirstIn(applied); ok {
			newPath = p.Release
		}
	}
	prober.Stop()
	for r, d := range delays {
		if !d.Running() {
			out.err = fmt.Errorf("delay line of %s died: %s", r, d.Output())
			return out
		}
	}
	out.res = probe.Analyze(snd.Records(), probe.Move{
		Event: event, Applied: applied, NewPath: newPath, WindowStart: window, Bound: cfg.bound,
	})
	return out
}

// startGateway starts cfg's gateway in the lab's gateway namespace; logs
// returns its logs (and, for roam's gateway, its status).
func startGateway(cfg config, l *lab.Lab) (logs func() map[string]string, err error) {
	if cfg.gateway == roamGateway {
		dir := filepath.Join(l.Dir, "gw")
		gw, err := lab.NewRoamGateway(l, lab.Gateway, cfg.roamBin, dir, lab.RoamGatewayConfig{Auth: "psk", PSK: psk})
		if err != nil {
			return nil, err
		}
		if cfg.keepLogs {
			gw.Env = []string{"ROAM_LOG_LEVEL=debug"}
		}
		proc, err := gw.StartGateway()
		if err != nil {
			return nil, fmt.Errorf("roam gateway: %w", err)
		}
		return func() map[string]string {
			m := map[string]string{"gateway.out": proc.Output()}
			benchkit.AddStatus(m, "gateway-status.json", gw)
			return m
		}, nil
	}
	gw, err := l.StartCharon(lab.Gateway, lab.CharonOptions{
		Conns:            []lab.SwanConn{lab.GatewayConn("psk", psk, nil, nil)},
		InterfacesIgnore: []string{"lan"},
	})
	if err != nil {
		return nil, fmt.Errorf("strongSwan gateway: %w", err)
	}
	return func() map[string]string { return map[string]string{"gateway-charon.log": gw.Log()} }, nil
}

// measureConnect times a connect scenario: with the prober running and no
// tunnel yet (nothing may be answered), from the start of the connect
// command to the first echo of a probe sent after it that came back
// through the tunnel. trigger is how long the command took: roam connect
// returns once the tunnel carries traffic, swanctl once the SA is up.
func measureConnect(cfg config, sc scenario, out run, prober *benchkit.Prober, delays lab.Delays, connectNow func() (map[string]float64, error)) run {
	snd := prober.Sender
	window := time.Now()
	time.Sleep(500 * time.Millisecond)
	if _, ok := snd.Answered(window, window); ok {
		out.err = errors.New("probes answered before the tunnel was up")
		return out
	}
	event := time.Now()
	budget, err := connectNow()
	applied := time.Now()
	out.trigger, out.budget = applied.Sub(event), budget
	if err != nil {
		out.err = err
		return out
	}
	newPath := awaitNewPath(cfg, snd, delays[sc.newRouter], event, event)
	if p, ok := delays[sc.newRouter].FirstOut(event); ok {
		out.firstOut = p.Enter.Sub(event)
	}
	prober.Stop()
	out.res = probe.Analyze(snd.Records(), probe.Move{
		Event: event, Applied: event, NewPath: newPath, WindowStart: event, Bound: cfg.bound,
	})
	return out
}

// awaitNewPath waits, within cfg.bound of event, for the first tunnel
// packet through d released after since whose probe is answered, and
// returns its release (zero when none came). Then it keeps probing
// cfg.after more, still within the bound: losses right after the first
// echo (a flapping path) count too.
func awaitNewPath(cfg config, snd *probe.Sender, d *lab.Delay, event, since time.Time) time.Time {
	var newPath time.Time
	deadline := event.Add(cfg.bound)
	for time.Now().Before(deadline) {
		if p, ok := d.FirstIn(since); ok {
			if at, ok := snd.Answered(since, p.Release); ok {
				newPath = p.Release
				if until := at.Add(cfg.after); until.Before(deadline) {
					deadline = until
				}
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return newPath
}

// waitDaemon waits until a started `roam daemon` answers on its socket.
func waitDaemon(r *lab.Roam, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, _, err := r.Status()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("roam daemon not answering after %v: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitOn waits until probes are answered and the tunnel's inbound packets
// come through router only.
func waitOn(snd *probe.Sender, delays lab.Delays, router string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		since := time.Now().Add(-300 * time.Millisecond)
		_, answered := snd.Answered(since, since)
		p, ok := delays[router].LastIn()
		if answered && ok && p.Release.After(since) && onlyOn(delays, router, since) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tunnel not carrying probes through %s after %v", router, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// onlyOn fails when another router forwarded tunnel packets toward the
// client since t.
func onlyOn(delays lab.Delays, router string, t time.Time) error {
	for r, d := range delays {
		if r == router {
			continue
		}
		if p, ok := d.FirstIn(t); ok {
			return fmt.Errorf("tunnel packets also through %s (at %s) while expected only on %s", r, p.Enter.Format("15:04:05.000"), router)
		}
	}
	return nil
}

// saveLogs keeps a run's logs; failing to is worth a line, not the run.
func saveLogs(dir, name string, files map[string]string) {
	benchkit.SaveLogs("bench-roam", dir, name, files)
}

// clientJSON is one client's figures in the machine-readable line.
type clientJSON struct {
	Runs       int       `json:"runs"`
	Errors     int       `json:"errors"`
	Recovered  int       `json:"recovered"`
	MedianMS   *float64  `json:"median_ms"`
	MaxMS      *float64  `json:"max_ms"`
	LostMedian *int      `json:"lost_median"`
	LostMax    *int      `json:"lost_max"`
	RTTMS      *float64  `json:"rtt_ms"`
	TriggerMS  *float64  `json:"trigger_median_ms"`
	SendGapMS  *float64  `json:"send_gap_max_ms"`
	RecoveryMS []float64 `json:"recovery_ms"` // recovered runs, in run order
	Lost       []int     `json:"lost"`        // every measured run
	// Budgets: roam connect's connect_budget of every measured run
	// (connect scenarios).
	Budgets []map[string]float64 `json:"connect_budgets,omitempty"`
	// FirstOutMS (connect scenarios): the start of the command to the
	// client's first tunnel packet, every measured run that sent one, and
	// their median: "connect to traffic".
	FirstOutMS       []float64 `json:"first_out_ms,omitempty"`
	FirstOutMedianMS *float64  `json:"first_out_median_ms,omitempty"`
}

type scenarioJSON struct {
	Scenario  string                `json:"scenario"`
	Gateway   string                `json:"gateway"`
	Reps      int                   `json:"reps"`
	BoundMS   float64               `json:"bound_ms"`
	DelayMS   float64               `json:"delay_ms"`
	Interval  float64               `json:"interval_ms"`
	CPUs      int                   `json:"cpus"`
	LoadStart string                `json:"load_start"`
	LoadEnd   string                `json:"load_end"`
	Clients   map[string]clientJSON `json:"clients"`
	Ratio     *float64              `json:"ratio_roam_strongswan"`
}

func msf(d time.Duration) float64 { return benchkit.MSF(d) }

func ptr[T any](v T) *T { return benchkit.Ptr(v) }

func report(w io.Writer, cfg config, results map[string]map[string][]run, took time.Duration, load benchkit.Load) {
	fmt.Fprintf(w, "\nbench-roam: MOBIKE handover, roam vs strongSwan 5.9.8 client (kernel-libipsec, mobike=yes)\n")
	fmt.Fprintf(w, "gateway: %s for both clients; %v one-way delay on each uplink; a probe every %v through the tunnel\n", gatewayLabel[cfg.gateway], cfg.delay, cfg.interval)
	fmt.Fprintf(w, "%d repetitions per scenario and client, fresh lab each; a run not recovered within %v of the event counts as NOT recovered; took %v\n",
		cfg.reps, cfg.bound, took.Round(time.Second))
	fmt.Fprintf(w, "%v\n\n", load)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tclient\trecovered\tmedian ms\tmax ms\tlost med\tlost max\tRTT ms\ttrigger ms\troam/sS\t")
	var lines []string
	allRTT := map[string][]time.Duration{}
	stalled, maxStall := 0, time.Duration(0)
	var firstOut []string
	for _, sc := range cfg.scenarios {
		sj := scenarioJSON{Scenario: sc.name, Gateway: cfg.gateway, Reps: cfg.reps, BoundMS: msf(cfg.bound), DelayMS: msf(cfg.delay), Interval: msf(cfg.interval),
			CPUs: load.CPUs, LoadStart: load.Start, LoadEnd: load.End, Clients: map[string]clientJSON{}}
		sums := map[string]probe.Summary{}
		for _, cl := range cfg.clients {
			var rs []probe.Result
			var trig []time.Duration
			cj := clientJSON{Runs: len(results[sc.name][cl]), RecoveryMS: []float64{}, Lost: []int{}}
			for _, r := range results[sc.name][cl] {
				if r.err != nil {
					cj.Errors++
					continue
				}
				rs = append(rs, r.res)
				trig = append(trig, r.trigger)
				cj.Lost = append(cj.Lost, r.res.Lost)
				if r.budget != nil {
					cj.Budgets = append(cj.Budgets, r.budget)
				}
				if r.firstOut > 0 {
					cj.FirstOutMS = append(cj.FirstOutMS, msf(r.firstOut))
				}
				if cj.SendGapMS == nil || msf(r.res.SendGap) > *cj.SendGapMS {
					cj.SendGapMS = ptr(msf(r.res.SendGap))
				}
				if r.res.SendGap > 10*cfg.interval {
					stalled++
					maxStall = max(maxStall, r.res.SendGap)
				}
				if r.res.Recovered {
					cj.RecoveryMS = append(cj.RecoveryMS, msf(r.res.Recovery))
				}
			}
			s := probe.Summarize(rs)
			sums[cl] = s
			cj.Recovered = s.Recovered
			if s.RTT > 0 {
				cj.RTTMS = ptr(msf(s.RTT))
				allRTT[cl] = append(allRTT[cl], s.RTT)
			}
			if len(trig) > 0 {
				slices.Sort(trig)
				cj.TriggerMS = ptr(msf(trig[len(trig)/2]))
			}
			if s.Recovered > 0 {
				cj.MedianMS, cj.MaxMS = ptr(msf(s.Median)), ptr(msf(s.Max))
			}
			if len(rs) > 0 {
				cj.LostMedian, cj.LostMax = ptr(s.LostMed), ptr(s.LostMax)
			}
			if n := len(cj.FirstOutMS); n > 0 {
				v := slices.Clone(cj.FirstOutMS)
				slices.Sort(v)
				cj.FirstOutMedianMS = ptr(v[n/2])
				firstOut = append(firstOut, fmt.Sprintf("%s %s: median %.1f ms (%d runs)", sc.name, clientLabel[cl], v[n/2], n))
			}
			sj.Clients[cl] = cj
			rec := fmt.Sprintf("%d/%d", s.Recovered, cj.Runs)
			if cj.Errors > 0 {
				rec += fmt.Sprintf(" (%d err)", cj.Errors)
			}
			med, mx := "not recovered", "-"
			if s.Recovered > 0 {
				med, mx = fmt.Sprintf("%.1f", msf(s.Median)), fmt.Sprintf("%.1f", msf(s.Max))
			}
			lm, lx := "-", "-"
			if len(rs) > 0 {
				lm, lx = strconv.Itoa(s.LostMed), strconv.Itoa(s.LostMax)
			}
			rtt, tg := "-", "-"
			if cj.RTTMS != nil {
				rtt = fmt.Sprintf("%.1f", *cj.RTTMS)
			}
			if cj.TriggerMS != nil {
				tg = fmt.Sprintf("%.1f", *cj.TriggerMS)
			}
			name := ""
			if cl == cfg.clients[0] {
				name = sc.name
			}
			ratio := ""
			if cl == cfg.clients[len(cfg.clients)-1] && len(cfg.clients) == 2 {
				if r, ok := probe.Ratio(sums[roamClient], sums[swanClient]); ok {
					ratio = fmt.Sprintf("%.2f", r)
					sj.Ratio = ptr(r)
				} else {
					ratio = "n/a"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, clientLabel[cl], rec, med, mx, lm, lx, rtt, tg, ratio)
		}
		b, _ := json.Marshal(sj)
		lines = append(lines, "BENCH-ROAM "+string(b))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, cl := range cfg.clients {
		if v := allRTT[cl]; len(v) > 0 {
			slices.Sort(v)
			fmt.Fprintf(w, "measured tunnel RTT (%s, median of the scenarios' medians): %.1f ms\n", clientLabel[cl], msf(v[len(v)/2]))
		}
	}
	for _, f := range firstOut {
		fmt.Fprintf(w, "connect to traffic (the client's first tunnel packet), %s\n", f)
	}
	if stalled > 0 {
		fmt.Fprintf(w, "warning: in %d runs the prober itself was starved of CPU (up to %s between two probes): their loss counts and times are less precise\n",
			stalled, ms(maxStall))
	}
	fmt.Fprintln(w, `
median/max: time from the event (the benchmark starting the command that makes the
change) to the first probe echo that arrived over the new path, over recovered runs.
lost: probes without an echo from 1 s before the event to 1 s after recovery (or to
the bound). trigger: how long the command itself took. roam/sS: ratio of the medians
(n/a when either side never recovered). c-preferred-back: "recovered" means the tunnel
moved to the returning uplink; the loss column is the make-before-break figure.
e-connect, e2-connect-daemon: from the start of the connect command to the first
echo through the new tunnel; trigger is how long the command took (roam connect
returns once the tunnel carries traffic); lost counts the probes sent meanwhile.
connect to traffic: from the start of the command to the client's first tunnel
packet on its uplink (a probe goes every interval), one round trip before its echo.`)
	fmt.Fprintln(w)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
