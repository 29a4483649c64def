package main

// The torture scenario (issue 15 item 7): one connection, one lab, and a
// seeded random sequence of events that a laptop's network does to a VPN
// over a working day, each measured for whether and when traffic flows
// again and, for roam, whether `roam status` told the truth meanwhile.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab"
	"github.com/roam-vpn/roam/scripts/lab/probe"
)

// tortureConfig holds the torture run's knobs (TORTURE=1 and the flags of
// parseTortureFlags).
type tortureConfig struct {
	events   int
	duration time.Duration
	seed     uint64
	kinds    []string
	// grace: status saying ok while no probe sent within the last grace
	// got an echo is a lie.
	grace time.Duration
	// bound: a step after which traffic has not flowed for this long did
	// not recover; after the restore step the connection is then set up
	// anew so the sequence can go on.
	bound    time.Duration
	interval time.Duration
	poll     time.Duration
	outage   time.Duration
	// stops are the SIGSTOP lengths the sequence picks from: one shorter
	// and one longer than roam's wake-up threshold (30 s).
	stops []time.Duration
}

// Event kinds.
const (
	kLinkDown  = "link-down"
	kAddrGone  = "addr-removed"
	kFlapBoth  = "flap-both"
	kNATFlush  = "nat-flush"
	kNATAddr   = "nat-address"
	kV6Only    = "v6-only"
	kNoUplink  = "no-uplink"
	kStop      = "sigstop"
	kGWAddress = "gw-address-loss"
)

var tortureKinds = []string{kLinkDown, kAddrGone, kFlapBoth, kNATFlush, kNATAddr, kV6Only, kNoUplink, kStop, kGWAddress}

var kindDesc = map[string]string{
	kLinkDown:  "the uplink in use set down for 3 s, then up with its routes",
	kAddrGone:  "the IPv4 address in use removed for 3 s, then back",
	kFlapBoth:  "both uplinks down and up again within 100 ms",
	kNATFlush:  "the NAT in use loses its mappings (conntrack -F)",
	kNATAddr:   "the NAT in use translates to another public address, mappings lost",
	kV6Only:    "wlan down and wwan's IPv4 address removed (IPv6 only) for 4 s, then both back",
	kNoUplink:  "both uplinks down for the outage (20 s), then up",
	kStop:      "the client process stopped (SIGSTOP) with the NAT flushed meanwhile, then SIGCONT",
	kGWAddress: "roam gateway loses the address the SA uses for 3 s",
}

// notApplicable says for each client which kinds do not apply and why.
var notApplicable = map[string]map[string]string{
	swanClient: {
		kGWAddress: "the strongSwan gateway, a MOBIKE responder, cannot move an SA to its other address (RFC 4555 lets only the initiator update addresses); only roam gateway switches on address loss",
	},
}

// tevent is one event of the sequence.
type tevent struct {
	Index int    `json:"index"`
	Kind  string `json:"kind"`
	// Stop is the SIGSTOP length of a sigstop event.
	Stop time.Duration `json:"-"`
}

// sequence draws n events: every kind equally often (rounded), in a
// random order from seed, so a short run still sees every kind and the
// same seed gives the same sequence to both clients.
func sequence(cfg tortureConfig) []tevent {
	r := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))
	var kinds []string
	for len(kinds) < cfg.events {
		kinds = append(kinds, cfg.kinds...)
	}
	r.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	kinds = kinds[:cfg.events]
	evs := make([]tevent, len(kinds))
	for i, k := range kinds {
		evs[i] = tevent{Index: i + 1, Kind: k}
		if k == kStop {
			evs[i].Stop = cfg.stops[r.IntN(len(cfg.stops))]
		}
	}
	return evs
}

// statusSample is one look at what the client says about its tunnel.
type statusSample struct {
	start, end time.Time
	health     string // roam's health; strongSwan: "established" or "down"
	state      string
	err        bool // no answer (the daemon stopped, a timeout)
}

// tenv is the running lab of one client's torture run.
type tenv struct {
	cfg    config
	tc     tortureConfig
	client string
	l      *lab.Lab
	delays lab.Delays
	snd    *probe.Sender
	roam   *lab.Roam // the roam client
	gw     *lab.Roam // roam gateway
	gwProc *lab.Proc
	swan   *lab.Charon // strongSwan's client
	swanGW *lab.Charon

	// natAddr: which public address each NAT translates to now (the
	// nat-address event alternates between two).
	natAddr map[string]netip.Addr
	// gwGone is the gateway address a gw-address-loss removed.
	gwGone netip.Addr

	mu      sync.Mutex
	samples []statusSample
}

// tresult is what one event did.
type tresult struct {
	ev tevent
	at time.Time // the event began
	// during: recovery while the event holds (link down, IPv6 only...):
	// from the event to the first echo of a probe sent after the change.
	during   *time.Duration
	duringNA bool // nothing can flow while the event holds (no uplink, stopped)
	// after: from the restore (SIGCONT, uplinks back) to the first echo
	// of a probe sent after it; nil when it did not come within the bound.
	after       *time.Duration
	restoreAt   time.Time
	end         time.Time
	recovered   bool // traffic flowed again before the next event
	reconnected bool // it did not, and the connection was set up anew
	na          string
	err         error
	on          string // uplink in use when the event began
	status      statusVerdict
	trigger     time.Duration // how long the event's command took
	// lost: probes sent from the event to its end without an echo;
	// lostAfter: of those, the ones sent from the restore on (a return
	// of the preferred uplink should lose none).
	lost, lostAfter int
}

// countLoss fills each event's lost probes from the records.
func countLoss(rs []tresult, recs []probe.Record) {
	for i := range rs {
		r := &rs[i]
		if r.at.IsZero() || r.end.IsZero() {
			continue
		}
		lo, _ := slices.BinarySearchFunc(recs, r.at, func(p probe.Record, t time.Time) int { return p.Sent.Compare(t) })
		for _, p := range recs[lo:] {
			if p.Sent.After(r.end) {
				break
			}
			if !p.Answered() {
				r.lost++
				if r.restoreAt != r.at && !p.Sent.Before(r.restoreAt) {
					r.lostAfter++
				}
			}
		}
	}
}

func parseTortureFlags(cfg *config, events, duration, seed, kinds, grace, outage string) (tortureConfig, error) {
	tc := tortureConfig{
		bound: 30 * time.Second, poll: 250 * time.Millisecond,
		stops: []time.Duration{5 * time.Second, 35 * time.Second},
	}
	var err error
	if _, err = fmt.Sscan(events, &tc.events); err != nil || tc.events < 1 {
		return tc, fmt.Errorf("EVENTS/-events %q: want a positive integer", events)
	}
	if _, err = fmt.Sscan(seed, &tc.seed); err != nil {
		return tc, fmt.Errorf("SEED/-seed %q: want an unsigned integer", seed)
	}
	for _, d := range []struct {
		name, s string
		to      *time.Duration
	}{{"DURATION/-duration", duration, &tc.duration}, {"GRACE/-grace", grace, &tc.grace}, {"OUTAGE/-outage", outage, &tc.outage}} {
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 {
			return tc, fmt.Errorf("%s %q: want a duration such as 10m or 2s", d.name, d.s)
		}
		*d.to = v
	}
	if kinds == "" {
		tc.kinds = tortureKinds
	} else {
		for _, k := range strings.Split(kinds, ",") {
			k = strings.TrimSpace(k)
			if !slices.Contains(tortureKinds, k) {
				return tc, fmt.Errorf("unknown torture event kind %q (have %s)", k, strings.Join(tortureKinds, ", "))
			}
			tc.kinds = append(tc.kinds, k)
		}
	}
	// The scenarios' 5 ms probes would be 120000 records in 10 minutes;
	// 10 ms is precise enough for recoveries counted in tens of ms.
	tc.interval = max(cfg.interval, 10*time.Millisecond)
	return tc, nil
}

// torture runs the sequence against each client in turn and reports.
func torture(cfg config, tc tortureConfig) error {
	bin, err := benchkit.BuildLab("bench-roam", "bench-torture")
	if err != nil {
		return err
	}
	defer bin.Remove()
	cfg.roamBin, cfg.delayBin = bin.Roam, bin.Delay
	seq := sequence(tc)
	started := time.Now()
	load0 := benchkit.Loadavg()
	results := map[string][]tresult{}
	for _, cl := range cfg.clients {
		rs, err := tortureClient(cfg, tc, cl, seq)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench-roam: torture %s: %v\n", clientLabel[cl], err)
		}
		results[cl] = rs
	}
	tortureReport(os.Stdout, cfg, tc, seq, results, time.Since(started), load0, benchkit.Loadavg())
	return nil
}

// tortureClient builds the lab, connects, and runs the sequence.
func tortureClient(cfg config, tc tortureConfig, client string, seq []tevent) ([]tresult, error) {
	e := &tenv{cfg: cfg, tc: tc, client: client, delays: lab.Delays{}, natAddr: map[string]netip.Addr{
		lab.NATWLAN: lab.PublicWLAN.Addr(), lab.NATWWAN: lab.PublicWWAN.Addr(),
	}}
	var err error
	e.l, err = lab.New(lab.Options{OnUplink: lab.DelayUplinks(cfg.delayBin, cfg.delay, e.delays)})
	if err != nil {
		return nil, err
	}
	defer e.l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := benchkit.ServeProbes(ctx, e.l); err != nil {
		return nil, err
	}
	for _, a := range []netip.Addr{lab.NewPublic[lab.NATWLAN], lab.NewPublic[lab.NATWWAN]} {
		// Routed to its NAT beforehand: the event is only the switch of
		// the translation (and the loss of the mappings).
		router := lab.NATWLAN
		if a == lab.NewPublic[lab.NATWWAN] {
			router = lab.NATWWAN
		}
		up := lab.WLAN
		if router == lab.NATWWAN {
			up = lab.WWAN
		}
		if err := e.l.Exec(router, "ip", "addr", "add", a.String()+"/32", "dev", "wan"); err != nil {
			return nil, err
		}
		if err := e.l.Exec(lab.Inet, "ip", "route", "replace", a.String()+"/32", "dev", "to-"+up); err != nil {
			return nil, err
		}
	}
	if err := e.connect(); err != nil {
		e.saveLogs("connect")
		return nil, err
	}
	prober, err := benchkit.StartProber(ctx, e.l, tc.interval)
	if err != nil {
		return nil, err
	}
	e.snd = prober.Sender
	pctx, stopPoll := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() {
		e.pollStatus(pctx)
		close(pdone)
	}()
	if err := e.waitFlow(time.Now(), 20*time.Second); err != nil {
		stopPoll()
		prober.Stop()
		<-pdone
		e.saveLogs("first-traffic")
		return nil, fmt.Errorf("no traffic through the new tunnel: %w", err)
	}
	start := time.Now()
	slot := tc.duration / time.Duration(len(seq))
	var out []tresult
	for i, ev := range seq {
		if at := start.Add(time.Duration(i) * slot); time.Until(at) > 0 {
			time.Sleep(time.Until(at))
		}
		r := e.runEvent(ev)
		out = append(out, r)
		fmt.Fprintf(os.Stderr, "[%s %d/%d] %s\n", clientLabel[client], ev.Index, len(seq), describeEvent(r))
		if r.err == nil && r.na == "" && !r.recovered {
			e.saveLogs(fmt.Sprintf("event%02d-%s", ev.Index, ev.Kind))
		}
		// A second of traffic before the next event, so each starts from
		// a tunnel that works (and the NAT has its mapping again).
		time.Sleep(time.Second)
	}
	stopPoll()
	<-pdone
	prober.Stop()
	e.saveLogs("end") // the whole run's logs, for reading what happened
	recs := e.snd.Records()
	e.mu.Lock()
	samples := append([]statusSample(nil), e.samples...)
	e.mu.Unlock()
	judgeStatus(out, recs, samples, tc.grace)
	countLoss(out, recs)
	for _, r := range out {
		for _, s := range r.status.lieAt {
			fmt.Fprintf(os.Stderr, "[%s %d] status lie: %s (state %s) asked %s, answered %s; event began %s, restored %s\n",
				clientLabel[client], r.ev.Index, s.health, s.state, s.start.Format("15:04:05.000"), s.end.Format("15:04:05.000"),
				r.at.Format("15:04:05.000"), r.restoreAt.Format("15:04:05.000"))
		}
	}
	return out, nil
}

func (e *tenv) saveLogs(name string) {
	if e.cfg.logDir == "" {
		return
	}
	m := map[string]string{}
	switch e.client {
	case roamClient:
		benchkit.AddLogFile(m, "roam.log", filepath.Join(e.l.Dir, "roam", "roam.log"))
		if e.gwProc != nil {
			m["gateway.out"] = e.gwProc.Output()
		}
		benchkit.AddStatus(m, "roam-status.json", e.roam)
		if e.gw != nil {
			benchkit.AddStatus(m, "gateway-status.json", e.gw)
		}
	case swanClient:
		if e.swan != nil {
			m["client-charon.log"] = e.swan.Log()
			if s, err := e.swan.Swanctl("--list-sas"); err == nil {
				m["client-sas.txt"] = s
			}
		}
		if e.swanGW != nil {
			m["gateway-charon.log"] = e.swanGW.Log()
		}
	}
	saveLogs(e.cfg.logDir, fmt.Sprintf("torture-%s-%s", e.client, name), m)
}

// connect starts the gateway (once) and the client's connection: roam
// client to roam gateway (whose address loss is one of the events), or
// strongSwan's client to a strongSwan gateway as in the scenarios.
func (e *tenv) connect() error {
	switch e.client {
	case roamClient:
		if e.gw == nil {
			var err error
			e.gw, err = lab.NewRoamGateway(e.l, lab.Gateway, e.cfg.roamBin, filepath.Join(e.l.Dir, "gw"), lab.RoamGatewayConfig{Auth: "psk", PSK: psk})
			if err != nil {
				return err
			}
			if e.cfg.keepLogs {
				e.gw.Env = []string{"ROAM_LOG_LEVEL=debug"}
			}
			if e.gwProc, err = e.gw.StartGateway(); err != nil {
				return err
			}
			e.roam, err = lab.NewRoamClient(e.l, e.cfg.roamBin, filepath.Join(e.l.Dir, "roam"), lab.LabProfile("psk", psk, nil, nil))
			if err != nil {
				return err
			}
			if e.cfg.keepLogs {
				e.roam.Env = []string{"ROAM_LOG_LEVEL=debug"}
			}
		}
		return e.roam.ConnectRetry("corp")
	case swanClient:
		if e.swanGW == nil {
			gw, err := e.l.StartCharon(lab.Gateway, lab.CharonOptions{
				Conns:            []lab.SwanConn{lab.GatewayConn("psk", psk, nil, nil)},
				InterfacesIgnore: []string{"lan"},
			})
			if err != nil {
				return fmt.Errorf("strongSwan gateway: %w", err)
			}
			e.swanGW = gw
			cl, err := e.l.StartCharon(lab.Client, lab.CharonOptions{
				Conns: []lab.SwanConn{lab.ClientConn("psk", psk, lab.GatewayAddr1.Addr(), nil, nil)},
			})
			if err != nil {
				return fmt.Errorf("strongSwan client: %w", err)
			}
			e.swan = cl
		}
		return e.swan.Initiate("home", 20*time.Second)
	}
	return fmt.Errorf("unknown client %q", e.client)
}

// reconnect sets the connection up anew after it did not recover.
func (e *tenv) reconnect() error {
	switch e.client {
	case roamClient:
		e.roam.Disconnect("corp") // may fail: the connection may be gone
	case swanClient:
		e.swan.Terminate("home")
	}
	return e.connect()
}

// pollStatus looks at the client's own view of the tunnel every poll.
func (e *tenv) pollStatus(ctx context.Context) {
	t := time.NewTicker(e.tc.poll)
	defer t.Stop()
	for {
		s := statusSample{start: time.Now()}
		switch e.client {
		case roamClient:
			out, err := e.roam.Run(5*time.Second, "status", "--json")
			st, perr := lab.ParseStatus([]byte(out))
			if err != nil || perr != nil || len(st) == 0 {
				s.err = true
				break
			}
			var full []struct {
				Health string `json:"health"`
			}
			if perr := json.Unmarshal([]byte(strings.TrimSpace(out)), &full); perr == nil && len(full) > 0 {
				s.health = full[0].Health
			} else {
				var one struct {
					Health string `json:"health"`
				}
				json.NewDecoder(strings.NewReader(out)).Decode(&one)
				s.health = one.Health
			}
			s.state = st[0].State
		case swanClient:
			ctx5, cancel := context.WithTimeout(ctx, 5*time.Second)
			out, err := e.swan.SwanctlContext(ctx5, "--list-sas")
			cancel()
			if err != nil {
				s.err = true
				break
			}
			sas, _ := lab.ParseListSAs(out)
			s.health, s.state = "down", "none"
			for _, sa := range sas {
				s.state = sa.State
				if lab.Established(sa) {
					// What a user of strongSwan sees as "connected".
					s.health = "established"
				}
			}
		}
		s.end = time.Now()
		e.mu.Lock()
		e.samples = append(e.samples, s)
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitFlow waits until a probe sent at or after since is answered; it
// returns the time from since to that echo.
func (e *tenv) waitFlowFor(since time.Time, bound time.Duration) (time.Duration, bool) {
	deadline := since.Add(bound)
	for {
		if at, ok := e.snd.FirstEchoSince(since); ok {
			return at.Sub(since), true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *tenv) waitFlow(since time.Time, bound time.Duration) error {
	if _, ok := e.waitFlowFor(since, bound); !ok {
		return fmt.Errorf("no probe sent after %s answered within %v", since.Format("15:04:05.000"), bound)
	}
	return nil
}

// active is the uplink that carried the last tunnel packets toward the
// client: the delay lines see IPv4 only, so none within the last second
// means the tunnel runs over wwan's IPv6.
func (e *tenv) active() (u lab.Uplink, v6 bool) {
	var bestAt time.Time
	for _, up := range e.l.Uplinks {
		if p, ok := e.delays[up.Router].LastIn(); ok && p.Release.After(bestAt) {
			u, bestAt = up, p.Release
		}
	}
	if bestAt.IsZero() || time.Since(bestAt) > time.Second {
		return e.l.Uplinks[1], true
	}
	return u, false
}

// restoreCmd brings an uplink back as a network manager would: link up,
// its addresses (IPv6 addresses go with the link) and default routes.
func restoreCmd(u lab.Uplink) string {
	s := fmt.Sprintf("ip link set %[1]s up && ip addr replace %[2]s dev %[1]s && ip route replace default via %[3]s dev %[1]s metric %[4]d",
		u.Name, u.Client, u.Gate.Addr(), u.Metric)
	if u.Client6.IsValid() {
		s += fmt.Sprintf(" && ip -6 addr replace %[2]s dev %[1]s nodad && ip -6 route replace default via %[3]s dev %[1]s metric %[4]d",
			u.Name, u.Client6, u.Gate6.Addr(), u.Metric)
	}
	return s
}

// gatewayInUse is the gateway address of the client's SA (roam status).
func (e *tenv) gatewayInUse() (netip.Addr, error) {
	st, _, err := e.roam.Status()
	if err != nil {
		return netip.Addr{}, err
	}
	if len(st) == 0 {
		return netip.Addr{}, errors.New("no connection in status")
	}
	ap, err := netip.ParseAddrPort(st[0].Remote)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("status remote %q: %w", st[0].Remote, err)
	}
	return ap.Addr().Unmap(), nil
}

// clientPID is the process a sigstop event stops.
func (e *tenv) clientPID() (int, error) {
	if e.client == swanClient {
		return e.swan.PID(), nil
	}
	// The status poller runs the same binary: the daemon is the one
	// started as `roam daemon`.
	var daemons []int
	for _, pid := range e.roam.Processes() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if args := strings.Split(string(b), "\x00"); err == nil && len(args) > 1 && args[1] == "daemon" {
			daemons = append(daemons, pid)
		}
	}
	if len(daemons) != 1 {
		return 0, fmt.Errorf("want one roam daemon in the client namespace, have %v", daemons)
	}
	return daemons[0], nil
}

// runEvent applies one event, measures it, and restores the lab.
func (e *tenv) runEvent(ev tevent) tresult {
	r := tresult{ev: ev}
	if why, ok := notApplicable[e.client][ev.Kind]; ok {
		r.na = why
		return r
	}
	u, v6 := e.active()
	r.on = u.Name
	if v6 {
		r.on = "wwan-v6"
	}
	var restore func() error
	var disturb func() error
	holds := true // traffic can flow while the event holds
	hold := 3 * time.Second
	switch ev.Kind {
	case kLinkDown:
		disturb = func() error { return e.l.LinkDown(lab.Client, u.Name) }
		restore = func() error { return e.l.Exec(lab.Client, "sh", "-c", restoreCmd(u)) }
	case kAddrGone:
		disturb = func() error { return e.l.DelAddr(lab.Client, u.Name, u.Client) }
		restore = func() error { return e.l.Exec(lab.Client, "sh", "-c", restoreCmd(u)) }
		if r.on == "wwan-v6" {
			disturb = func() error { return e.l.DelAddr(lab.Client, u.Name, u.Client6) }
		}
	case kFlapBoth:
		w, c := e.l.Uplinks[0], e.l.Uplinks[1]
		disturb = func() error {
			return e.l.Exec(lab.Client, "sh", "-c", fmt.Sprintf("ip link set %s down && ip link set %s down && sleep 0.05 && %s && %s",
				w.Name, c.Name, restoreCmd(w), restoreCmd(c)))
		}
		hold = 0
	case kNATFlush:
		router := u.Router
		disturb = func() error { return e.l.FlushConntrack(router) }
		hold = 0
	case kNATAddr:
		if r.on == "wwan-v6" {
			u = e.l.Uplinks[0] // IPv6 has no NAT here: change wlan's for later
		}
		router := u.Router
		to := lab.NewPublic[router]
		if e.natAddr[router] == to {
			to = u.Public.Addr()
		}
		disturb = func() error {
			err := e.l.Exec(router, "sh", "-c",
				`nft 'flush chain ip nat post; add rule ip nat post oifname "wan" snat to `+to.String()+`' && conntrack -F 2>/dev/null`)
			if err == nil {
				e.natAddr[router] = to
			}
			return err
		}
		hold = 0
	case kV6Only:
		w, c := e.l.Uplinks[0], e.l.Uplinks[1]
		disturb = func() error {
			return e.l.Exec(lab.Client, "sh", "-c", fmt.Sprintf("ip link set %s down && ip addr del %s dev %s", w.Name, c.Client, c.Name))
		}
		restore = func() error {
			return e.l.Exec(lab.Client, "sh", "-c", restoreCmd(c)+" && "+restoreCmd(w))
		}
		hold = 4 * time.Second
	case kNoUplink:
		w, c := e.l.Uplinks[0], e.l.Uplinks[1]
		disturb = func() error {
			return e.l.Exec(lab.Client, "sh", "-c", fmt.Sprintf("ip link set %s down && ip link set %s down", w.Name, c.Name))
		}
		restore = func() error { return e.l.Exec(lab.Client, "sh", "-c", restoreCmd(w)+" && "+restoreCmd(c)) }
		holds, hold = false, e.tc.outage
	case kStop:
		pid, err := e.clientPID()
		if err != nil {
			r.err = err
			return r
		}
		router := u.Router
		disturb = func() error {
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				return err
			}
			// The NAT forgets the mapping while the client sleeps, as
			// one does in 30 s to a few minutes.
			return e.l.FlushConntrack(router)
		}
		restore = func() error { return syscall.Kill(pid, syscall.SIGCONT) }
		holds, hold = false, ev.Stop
	case kGWAddress:
		gone, err := e.gatewayInUse()
		if err != nil {
			r.err = err
			return r
		}
		disturb = func() error { return e.l.RemoveGatewayAddr(gone) }
		restore = func() error { return e.l.RestoreGatewayAddr(gone) }
	}
	r.at = time.Now()
	if err := disturb(); err != nil {
		r.err = fmt.Errorf("%s: %w", ev.Kind, err)
		if restore != nil {
			restore()
		}
		return r
	}
	applied := time.Now()
	r.trigger = applied.Sub(r.at)
	if holds {
		if d, ok := e.waitFlowFor(applied, max(hold, e.tc.bound)); ok {
			d += applied.Sub(r.at)
			r.during = &d
		}
	} else {
		r.duringNA = true
	}
	if restore == nil {
		r.restoreAt = r.at
		r.after = r.during
	} else {
		if rest := time.Until(r.at.Add(hold)); rest > 0 {
			time.Sleep(rest)
		}
		r.restoreAt = time.Now()
		if err := restore(); err != nil {
			r.err = fmt.Errorf("%s restore: %w", ev.Kind, err)
			return r
		}
		restored := time.Now()
		if d, ok := e.waitFlowFor(restored, e.tc.bound); ok {
			d += restored.Sub(r.restoreAt)
			r.after = &d
		}
	}
	r.recovered = r.after != nil
	r.end = time.Now()
	if !r.recovered {
		e.saveLogs(fmt.Sprintf("event%02d-%s", ev.Index, ev.Kind))
		if err := e.reconnect(); err != nil {
			r.err = fmt.Errorf("reconnect after no recovery: %w", err)
		} else {
			r.reconnected = true
			e.waitFlow(time.Now(), 10*time.Second)
		}
		r.end = time.Now()
	}
	return r
}

func describeEvent(r tresult) string {
	s := fmt.Sprintf("%s", r.ev.Kind)
	if r.ev.Kind == kStop {
		s += fmt.Sprintf(" (%v)", r.ev.Stop)
	}
	if r.na != "" {
		return s + ": does not apply"
	}
	if r.err != nil {
		return s + ": ERROR " + r.err.Error()
	}
	s += " on " + r.on + ":"
	if r.during != nil {
		s += " flowing " + ms(*r.during) + " after the event;"
	} else if !r.duringNA {
		s += " NOT flowing while it held;"
	}
	switch {
	case r.after != nil && r.restoreAt != r.at:
		s += " flowing " + ms(*r.after) + " after the restore"
	case r.after != nil:
	case r.recovered:
		s += " flowing again"
	default:
		s += " NEVER recovered"
	}
	if r.reconnected {
		s += " (connection set up anew)"
	}
	return s
}

// statusVerdict counts what the client said during one event.
type statusVerdict struct {
	Samples int            `json:"samples"`
	Lies    int            `json:"lies"`     // "ok" while nothing flowed for the grace window
	Unsure  int            `json:"not_ok"`   // not ok while traffic flowed
	NoAns   int            `json:"no_reply"` // status did not answer
	Seen    map[string]int `json:"seen"`     // health values seen
	lieAt   []statusSample
}

// judgeStatus checks each sample against the probes: a sample saying ok
// (strongSwan: an established SA) is a lie when no probe sent from grace
// before the look until its end was ever answered; a sample saying
// anything else while every such probe was answered is counted too (a
// status too gloomy, the lesser fault).
func judgeStatus(rs []tresult, recs []probe.Record, samples []statusSample, grace time.Duration) {
	verdicts := make([]statusVerdict, len(rs))
	for i := range verdicts {
		verdicts[i].Seen = map[string]int{}
	}
	for _, s := range samples {
		// The event the sample belongs to: the last one begun before it.
		idx := -1
		for i, r := range rs {
			if !r.at.IsZero() && !r.at.After(s.start) {
				idx = i
			}
		}
		if idx < 0 {
			continue
		}
		v := &verdicts[idx]
		v.Samples++
		if s.err {
			v.NoAns++
			v.Seen["(no reply)"]++
			continue
		}
		v.Seen[s.health]++
		from, to := s.start.Add(-grace), s.end
		lo, _ := slices.BinarySearchFunc(recs, from, func(r probe.Record, t time.Time) int { return r.Sent.Compare(t) })
		sent, answered := 0, 0
		for _, r := range recs[lo:] {
			if r.Sent.After(to) {
				break
			}
			sent++
			if r.Answered() {
				answered++
			}
		}
		if sent < 2 {
			continue // the prober itself starved: no verdict
		}
		ok := s.health == "ok" || s.health == "established"
		if ok && answered == 0 {
			v.Lies++
			v.lieAt = append(v.lieAt, s)
		}
		if !ok && answered == sent {
			v.Unsure++
		}
	}
	for i := range rs {
		rs[i].status = verdicts[i]
	}
}

// kindJSON is one event kind's figures for one client.
type kindJSON struct {
	Kind         string         `json:"kind"`
	Client       string         `json:"client"`
	Events       int            `json:"events"`
	Errors       int            `json:"errors"`
	NA           string         `json:"not_applicable,omitempty"`
	DuringN      int            `json:"flowing_during"` // events after which traffic flowed while it held
	DuringMedMS  *float64       `json:"during_median_ms"`
	DuringMaxMS  *float64       `json:"during_max_ms"`
	AfterMedMS   *float64       `json:"after_restore_median_ms"`
	AfterMaxMS   *float64       `json:"after_restore_max_ms"`
	NeverRec     int            `json:"never_recovered"`
	StatusLies   int            `json:"status_lies"`
	StatusNotOK  int            `json:"status_not_ok_while_flowing"`
	StatusNoAns  int            `json:"status_no_reply"`
	Samples      int            `json:"status_samples"`
	Seen         map[string]int `json:"status_seen"`
	TriggerMedMS *float64       `json:"trigger_median_ms"`
	Lost         []int          `json:"lost"`               // per event
	LostAfter    []int          `json:"lost_after_restore"` // per event with a restore
	DuringMS     []float64      `json:"during_ms"`
	AfterMS      []float64      `json:"after_restore_ms"`
	SeedSequence uint64         `json:"seed"`
}

func medianMax(v []float64) (*float64, *float64) {
	if len(v) == 0 {
		return nil, nil
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return ptr(s[len(s)/2]), ptr(s[len(s)-1])
}

func medianInt(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprint(s[len(s)/2])
}

func fmtMS(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", *p)
}

func tortureReport(w io.Writer, cfg config, tc tortureConfig, seq []tevent, results map[string][]tresult, took time.Duration, load0, load1 string) {
	fmt.Fprintf(w, "\nbench-roam torture: %d events over about %v, seed %d; %v one-way delay on each uplink; a probe every %v\n",
		len(seq), tc.duration, tc.seed, cfg.delay, tc.interval)
	fmt.Fprintf(w, "roam client -> roam gateway; strongSwan's client -> strongSwan gateway (kernel-libipsec, mobike=yes)\n")
	fmt.Fprintf(w, "status polled every %v (roam: health; strongSwan: an ESTABLISHED SA with an INSTALLED child); grace %v; bound %v; took %v; load average %s at start, %s at end\n\n",
		tc.poll, tc.grace, tc.bound, took.Round(time.Second), load0, load1)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tclient\tevents\tflowing during\tduring med ms\tduring max ms\tafter restore med ms\tmax ms\tlost med\tlost after restore med\tnever recovered\tstatus lies\tnot ok while flowing\ttrigger ms\tstatus seen\t")
	var lines []string
	kinds := tc.kinds
	for _, k := range kinds {
		for ci, cl := range cfg.clients {
			kj := kindJSON{Kind: k, Client: cl, Seen: map[string]int{}, DuringMS: []float64{}, AfterMS: []float64{}, SeedSequence: tc.seed,
				Lost: []int{}, LostAfter: []int{}}
			var triggers []float64
			for _, r := range results[cl] {
				if r.ev.Kind != k {
					continue
				}
				kj.Events++
				if r.na != "" {
					kj.NA = r.na
					continue
				}
				if r.err != nil {
					kj.Errors++
					continue
				}
				triggers = append(triggers, msf(r.trigger))
				kj.Lost = append(kj.Lost, r.lost)
				if r.restoreAt != r.at {
					kj.LostAfter = append(kj.LostAfter, r.lostAfter)
				}
				if r.during != nil {
					kj.DuringN++
					kj.DuringMS = append(kj.DuringMS, msf(*r.during))
				}
				if r.after != nil && r.restoreAt != r.at {
					kj.AfterMS = append(kj.AfterMS, msf(*r.after))
				}
				if !r.recovered {
					kj.NeverRec++
				}
				kj.StatusLies += r.status.Lies
				kj.StatusNotOK += r.status.Unsure
				kj.StatusNoAns += r.status.NoAns
				kj.Samples += r.status.Samples
				for s, n := range r.status.Seen {
					kj.Seen[s] += n
				}
			}
			kj.DuringMedMS, kj.DuringMaxMS = medianMax(kj.DuringMS)
			kj.AfterMedMS, kj.AfterMaxMS = medianMax(kj.AfterMS)
			kj.TriggerMedMS, _ = medianMax(triggers)
			name := ""
			if ci == 0 {
				name = k
			}
			if kj.NA != "" {
				fmt.Fprintf(tw, "%s\t%s\t%d\tdoes not apply\t\t\t\t\t\t\t\t\t\t\t\t\n", name, clientLabel[cl], kj.Events)
			} else {
				during := fmt.Sprintf("%d/%d", kj.DuringN, kj.Events-kj.Errors)
				if slices.Contains([]string{kNoUplink, kStop}, k) {
					during = "n/a"
				}
				if kj.Errors > 0 {
					during += fmt.Sprintf(" (%d err)", kj.Errors)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t\n", name, clientLabel[cl], kj.Events, during,
					fmtMS(kj.DuringMedMS), fmtMS(kj.DuringMaxMS), fmtMS(kj.AfterMedMS), fmtMS(kj.AfterMaxMS),
					medianInt(kj.Lost), medianInt(kj.LostAfter), kj.NeverRec, kj.StatusLies, kj.StatusNotOK, fmtMS(kj.TriggerMedMS), seenString(kj.Seen))
			}
			b, _ := json.Marshal(kj)
			lines = append(lines, "BENCH-TORTURE "+string(b))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, cl := range cfg.clients {
		never, lies, n := 0, 0, 0
		for _, r := range results[cl] {
			if r.na != "" || r.err != nil {
				continue
			}
			n++
			if !r.recovered {
				never++
			}
			lies += r.status.Lies
		}
		fmt.Fprintf(w, "%s: %d events measured, %d after which the tunnel never recovered, %d status samples that said ok while nothing flowed\n",
			clientLabel[cl], n, never, lies)
		b, _ := json.Marshal(map[string]any{"client": cl, "events": n, "never_recovered": never, "status_lies": lies, "seed": tc.seed})
		lines = append(lines, "BENCH-TORTURE-TOTAL "+string(b))
	}
	fmt.Fprintln(w, `
during: from the event to the first echo of a probe sent after it, while the event
holds (the tunnel must find the remaining path); n/a when nothing can flow (no uplink,
the client stopped). after restore: from the restore (uplinks back, SIGCONT, address
back) to the first echo of a probe sent after it. never recovered: no echo within the
bound after the restore (the connection is then set up anew). status lies: looks at the
client's status that said ok (strongSwan: established) while no probe sent from the
grace window before the look to its end was ever answered. not ok while flowing: looks
that said anything else while every probe of that window was answered. lost: probes
sent from the event to its end without an echo (after restore: from the restore on).
trigger: how
long the event's commands took (starting processes in the namespaces of a loaded
machine; the figures above include it).`)
	for k, why := range notApplicable[swanClient] {
		if slices.Contains(cfg.clients, swanClient) && slices.Contains(kinds, k) {
			fmt.Fprintf(w, "%s does not apply to strongSwan: %s.\n", k, why)
		}
	}
	fmt.Fprintln(w)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

func seenString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b []string
	for _, k := range keys {
		b = append(b, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(b, " ")
}
