// Command benchtput is issue 10's throughput benchmark (make bench-tput).
// In the netns lab with no added delay, it runs iperf3 from the client
// namespace to the host behind the gateway through each kind of tunnel,
// all over the same namespaces (client, wlan NAT, inet, gateway):
//
//   - roam client <-> roam gateway,
//   - wireguard-go <-> wireguard-go (both userspace, built from the Go
//     module in go.mod, configured with wg),
//   - roam client -> strongSwan gateway (charon, kernel-libipsec), for
//     context.
//
// Repetitions are outermost and the kinds alternate inside each, so slow
// phases of the shared machine hit every kind alike. Each repetition of a
// kind gets a fresh lab and runs TCP upload and download with 1 and
// -streams streams, then UDP floods (iperf3 -b 0) of each -udp-sizes
// datagram size. For every run it also counts the CPU time of the tunnel
// processes on both ends (/proc/PID/stat) per GB delivered. It prints a
// table of medians with the ratio roam / wireguard-go, and one JSON line
// per figure.
//
// With -profile DIR it then runs one TCP upload and one download through
// roam <-> roam with ROAM_CPUPROFILE set on both ends and prints the top of
// each profile.
//
// It needs root and is not part of CI (it takes minutes).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab"
)

type config struct {
	reps       int
	duration   time.Duration
	kinds      []string
	streams    int
	udpSizes   []int
	udpDown    bool
	profileDir string
	logDir     string
	roamBase   string // ROAM_BASE: roam binary of the roam-base kind
	counts     bool   // perf stat system calls and context switches of each tunnel process
	// captureDir (CAPTURE), when set, gets packet captures of every
	// TCP download along its path, and the run's log a line per point
	// on where the inner stream's order broke.
	captureDir string
	// rps (RPS) turns on receive packet steering on every device of
	// the lab: a veth queues each packet on the backlog of the CPU that
	// sent it, so one flow sent from two CPUs (a TCP sender's system
	// calls and its ACK processing; a tunnel's sending thread that moved)
	// can arrive reordered; with RPS each flow's packets go to one CPU by
	// hash.
	rps bool
	// only, when not empty, names the tests to run (TESTS): an A/B of one
	// figure need not wait for all the others.
	only map[string]bool
}

func main() {
	// Subcommands the bench runs of itself: "udpq" samples the UDP
	// receive queues, "order FILE.pcap..." reports on captures kept from
	// an earlier CAPTURE run.
	if len(os.Args) > 1 && (os.Args[1] == "udpq" || os.Args[1] == "order") {
		var err error
		if os.Args[1] == "udpq" {
			err = udpqMain(os.Stdout)
		} else {
			err = orderFiles(os.Stdout, os.Args[2:])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-tput "+os.Args[1]+":", err)
			os.Exit(1)
		}
		return
	}
	benchkit.Main("bench-tput", parseFlags, func(cfg config) error {
		// An interrupt ends the run under way and tears its lab down.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return bench(ctx, cfg)
	})
}

// parseFlags reads flags, each defaulting to its environment variable.
func parseFlags(args []string, getenv func(string) string) (config, error) {
	var cfg config
	fs := benchkit.NewFlags("bench-tput", getenv)
	reps := fs.Env("reps", "REPS", "3", "repetitions (env REPS)")
	duration := fs.Env("duration", "DURATION", "8s", "length of each iperf3 run, whole seconds (env DURATION)")
	kinds := fs.Env("kinds", "KINDS", "roam,wireguard,strongswan,roam-tcp", "tunnel kinds to run: roam, wireguard, strongswan, roam-tcp, roam-base (env KINDS)")
	streams := fs.Env("streams", "STREAMS", "4", "TCP streams of the multi-stream runs (env STREAMS)")
	sizes := fs.Env("udp-sizes", "UDP_SIZES", "64,1372", "UDP datagram payload sizes (env UDP_SIZES)")
	udpDown := fs.Env("udp-down", "UDP_DOWN", "1", "also flood UDP from the host to the client: 1 or 0 (env UDP_DOWN)")
	rps := fs.Env("rps", "RPS", "0", "receive packet steering on every lab device, which then keeps each flow's order: 1 or 0 (env RPS)")
	profileDir := fs.Env("profile", "BENCH_PROFILE", "", "write CPU profiles of both roam ends during one TCP upload and one download into this directory (env BENCH_PROFILE)")
	countsFlag := fs.Env("counts", "COUNTS", "0", "count system calls and context switches of each tunnel process with perf stat: 1 or 0 (env COUNTS)")
	only := fs.Env("tests", "TESTS", "", "run only these tests, such as tcp-up-1,udp-up-64 (env TESTS; default all)")
	roamBase := fs.Env("roam-base", "ROAM_BASE", "", "roam binary the roam-base kind runs, such as a build of main for an A/B (env ROAM_BASE)")
	captureDir := fs.Env("capture", "CAPTURE", "", "capture packet headers of TCP downloads at every hop into this directory and report where order broke; needs tcpdump, costs CPU (env CAPTURE)")
	logDir := fs.Env("logs", "LOGS", "", "save the tunnel logs of failed runs into this directory (env LOGS)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.profileDir, cfg.roamBase, cfg.logDir, cfg.captureDir = *profileDir, *roamBase, *logDir, *captureDir
	var err error
	if cfg.reps, err = benchkit.Int("REPS/-reps", *reps, 1, 50); err != nil {
		return cfg, err
	}
	if cfg.duration, err = time.ParseDuration(*duration); err != nil || cfg.duration < time.Second || cfg.duration > 10*time.Minute ||
		cfg.duration%time.Second != 0 {
		return cfg, fmt.Errorf("DURATION/-duration %q: want whole seconds from 1s to 10m, such as 8s", *duration)
	}
	if cfg.streams, err = benchkit.Int("STREAMS/-streams", *streams, 1, 128); err != nil {
		return cfg, err
	}
	seen := map[string]bool{}
	for _, k := range strings.Split(*kinds, ",") {
		k = strings.TrimSpace(k)
		if _, ok := kindLabel[k]; !ok {
			return cfg, fmt.Errorf("KINDS/-kinds: unknown kind %q (have roam, wireguard, strongswan, roam-tcp, roam-base)", k)
		}
		if !seen[k] {
			seen[k] = true
			cfg.kinds = append(cfg.kinds, k)
		}
	}
	if *sizes != "" {
		for _, s := range strings.Split(*sizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			// iperf3 needs room for its own 16-byte header; 65507 is
			// the largest UDP payload over IPv4.
			if err != nil || n < 16 || n > 65507 {
				return cfg, fmt.Errorf("UDP_SIZES/-udp-sizes: %q is not a datagram size from 16 to 65507", s)
			}
			cfg.udpSizes = append(cfg.udpSizes, n)
		}
	}
	if cfg.counts, err = benchkit.Bool("COUNTS/-counts", *countsFlag); err != nil {
		return cfg, err
	}
	if cfg.rps, err = benchkit.Bool("RPS/-rps", *rps); err != nil {
		return cfg, err
	}
	if cfg.udpDown, err = benchkit.Bool("UDP_DOWN/-udp-down", *udpDown); err != nil {
		return cfg, err
	}
	if seen[kindRoamBase] && cfg.roamBase == "" {
		return cfg, errors.New("KINDS/-kinds: roam-base needs ROAM_BASE/-roam-base, a roam binary")
	}
	if *only != "" {
		known := map[string]bool{}
		for _, t := range tests(cfg.streams, cfg.udpSizes, cfg.udpDown) {
			known[t.name] = true
		}
		cfg.only = map[string]bool{}
		for _, name := range strings.Split(*only, ",") {
			name = strings.TrimSpace(name)
			if !known[name] {
				return cfg, fmt.Errorf("TESTS/-tests: unknown test %q", name)
			}
			cfg.only[name] = true
		}
	}
	return cfg, nil
}

// run is one kind's repetition: a result per test (missing when it
// failed), or the error that stopped it.
type run struct {
	rep     int
	mtu     int
	results map[string]measurement
	errs    []error
}

// measurement is one test's iperf3 result and the tunnel's CPU time.
type measurement struct {
	result
	cpu time.Duration // tunnel processes, both ends, during the test
	// drops is what the kernels of the client and the gateway namespace
	// dropped at UDP sockets during the test: the tunnel's sockets, and
	// in UDP tests iperf3's own socket in the client namespace too.
	drops udpDrops
	// devDrops: what every lab namespace's devices dropped during the
	// test, by device.
	devDrops devDrops
	// tcpExt: how the TCP ends (client and host namespace) saw the
	// test, TcpExt counters that moved (tcpExtKeys).
	tcpExt tcpExt
	// roamDrops: the roam ends' drop counters that moved (roam kinds).
	roamDrops tcpExt
	// counts: perf stat of each tunnel process (COUNTS=1), in pids order.
	counts []counts
	// rxPeak: the largest receive queue, in bytes, of any UDP socket in
	// the client's and in the gateway's namespace, sampled every
	// millisecond during the test.
	rxPeak [2]int64
}

func bench(ctx context.Context, cfg config) error {
	if err := benchkit.NeedRoot("bench-tput"); err != nil {
		return err
	}
	for _, tool := range []string{"iperf3", "wg"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run scripts/install-deps.sh (packages iperf3, wireguard-tools)", tool)
		}
	}
	if cfg.captureDir != "" {
		if _, err := exec.LookPath("tcpdump"); err != nil {
			return errors.New("CAPTURE needs tcpdump (apt-get install tcpdump)")
		}
		dir, err := filepath.Abs(cfg.captureDir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cfg.captureDir = dir
	}
	binDir, err := os.MkdirTemp("", "bench-tput-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	var bin binaries
	if bin.roam, err = lab.BuildRoam(binDir); err != nil {
		return err
	}
	bin.roamBase = cfg.roamBase
	if bin.wireguardGo, err = buildWireGuardGo(binDir); err != nil {
		return err
	}
	m := machine{nproc: nproc(), loadStart: benchkit.Loadavg(), perf: perfNote()}
	started := time.Now()
	ts := tests(cfg.streams, cfg.udpSizes, cfg.udpDown)
	if cfg.only != nil {
		kept := ts[:0]
		for _, t := range ts {
			if cfg.only[t.name] {
				kept = append(kept, t)
			}
		}
		ts = kept
	}
	runs := map[string][]run{}
	n := 0
	for rep := 1; rep <= cfg.reps && ctx.Err() == nil; rep++ {
		for _, kind := range cfg.kinds {
			if ctx.Err() != nil {
				break
			}
			n++
			r := runKind(ctx, cfg, bin, kind, rep, n, ts)
			runs[kind] = append(runs[kind], r)
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	m.loadEnd = benchkit.Loadavg()
	report(os.Stdout, cfg, m, ts, runs, time.Since(started))
	if cfg.profileDir != "" {
		if err := profileRoam(ctx, cfg, bin, n); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	return failedRuns(runs)
}

// failedRuns says how many runs met errors (a lab that would not build, a
// tunnel that would not come up, an iperf3 that failed), so that a bench
// that measured nothing does not exit 0. The table is printed before.
func failedRuns(runs map[string][]run) error {
	var failed, all int
	var first error
	for _, rs := range runs {
		for _, r := range rs {
			all++
			if len(r.errs) > 0 {
				failed++
				if first == nil {
					first = r.errs[0]
				}
			}
		}
	}
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d runs had errors (one: %w)", failed, all, first)
}

// buildWireGuardGo builds wireguard-go's main package from the module
// go.mod already requires (its root is package main).
func buildWireGuardGo(dir string) (string, error) {
	root, err := lab.ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "wireguard-go")
	cmd := exec.Command("go", "build", "-o", out, "golang.zx2c4.com/wireguard")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build wireguard-go: %w: %s", err, b)
	}
	return out, nil
}

// runKind builds a lab, brings up one kind's tunnel and runs every test
// through it. The lab and its processes are gone when it returns.
func runKind(ctx context.Context, cfg config, bin binaries, kind string, rep, n int, ts []test) run {
	out := run{rep: rep, results: map[string]measurement{}}
	fail := func(err error) run {
		out.errs = append(out.errs, err)
		fmt.Fprintf(os.Stderr, "rep %d %s: ERROR %v\n", rep, kindLabel[kind], err)
		return out
	}
	l, err := lab.New(lab.Options{})
	if err != nil {
		return fail(err)
	}
	defer l.Close()
	if cfg.rps {
		if err := steerLab(l); err != nil {
			return fail(err)
		}
	}
	t, err := startTunnel(l, kind, bin, n, profile{})
	if t != nil && cfg.logDir != "" {
		defer func() {
			if len(out.errs) > 0 && t.logs != nil {
				if err := lab.SaveLogs(cfg.logDir, fmt.Sprintf("%s-%d", kind, rep), t.logs()); err != nil {
					fmt.Fprintln(os.Stderr, "bench-tput:", err)
				}
			}
		}()
	}
	if err != nil {
		return fail(err)
	}
	out.mtu = t.mtu
	for _, tt := range ts {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		capture := ""
		if cfg.captureDir != "" && !tt.udp && tt.reverse {
			capture = fmt.Sprintf("%s-%d-%s", kind, rep, tt.name)
		}
		m, err := measure(ctx, l, t, tt, cfg, capture)
		if err != nil {
			out.errs = append(out.errs, err)
			fmt.Fprintf(os.Stderr, "rep %d %s %s: ERROR %v\n", rep, kindLabel[kind], tt.name, err)
			continue
		}
		out.results[tt.name] = m
		fmt.Fprintf(os.Stderr, "rep %d %s %s: %s\n", rep, kindLabel[kind], tt.name, describe(tt, m))
		if cfg.counts {
			fmt.Fprintf(os.Stderr, "rep %d %s %s: %s\n", rep, kindLabel[kind], tt.name, describeCounts(tt, m, []string{"gateway", "client"}))
		}
	}
	return out
}

// measure runs one test against a fresh one-off iperf3 server, so that a
// run that hung cannot leave the server busy for the next.
// A non-empty capture names the packet captures of this test in
// cfg.captureDir.
func measure(ctx context.Context, l *lab.Lab, t *tunnel, tt test, cfg config, capture string) (measurement, error) {
	d, count := cfg.duration, cfg.counts
	srv, err := l.Start(lab.Host, "iperf3", "-s", "-1", "-B", lab.HostAddr.Addr().String())
	if err != nil {
		return measurement{}, err
	}
	defer srv.Stop()
	kernelBefore, err := readKernelCounts(l)
	if err != nil {
		return measurement{}, err
	}
	var roamBefore tcpExt
	if t.roamDrops != nil {
		roamBefore = tcpExt(t.roamDrops())
	}
	before, err := cpuOf(t.pids)
	if err != nil {
		return measurement{}, err
	}
	var counters []*perfCounter
	if count {
		for _, pid := range t.pids {
			c, err := startCounter(pid)
			if err != nil {
				return measurement{}, err
			}
			counters = append(counters, c)
		}
	}
	sampler, err := startQueueSampler(l)
	if err != nil {
		return measurement{}, err
	}
	var caps *captures
	if capture != "" {
		if caps, err = startCaptures(l, t, cfg.captureDir, capture); err != nil {
			return measurement{}, err
		}
	}
	r, err := runIperf(ctx, l, tt, d)
	rxPeak, serr := sampler.stop()
	if serr != nil && err == nil {
		err = serr
	}
	if caps != nil {
		caps.stop()
		if rerr := caps.report(os.Stderr, capture); rerr != nil && err == nil {
			err = rerr
		}
	}
	var cs []counts
	for _, c := range counters {
		v, cerr := c.stop()
		if cerr != nil && err == nil {
			err = cerr
		}
		cs = append(cs, v)
	}
	if err != nil {
		srv.Stop()
		if o := strings.TrimSpace(srv.Output()); o != "" {
			err = fmt.Errorf("%w; server: %s", err, lastLines(o, 3))
		}
		return measurement{}, err
	}
	after, err := cpuOf(t.pids)
	if err != nil {
		return measurement{}, err
	}
	kernelAfter, err := readKernelCounts(l)
	if err != nil {
		return measurement{}, err
	}
	m := measurement{result: r, cpu: after - before, drops: kernelAfter.udp.sub(kernelBefore.udp),
		devDrops: kernelAfter.dev.sub(kernelBefore.dev), tcpExt: kernelAfter.ext.sub(kernelBefore.ext), counts: cs, rxPeak: rxPeak}
	if t.roamDrops != nil {
		m.roamDrops = tcpExt(t.roamDrops()).sub(roamBefore)
	}
	return m, nil
}

// steerLab turns on receive packet steering over all CPUs on every
// device of every lab namespace but lo.
func steerLab(l *lab.Lab) error {
	script := fmt.Sprintf(`for f in /sys/class/net/*/queues/rx-*/rps_cpus; do
	case $f in /sys/class/net/lo/*) continue;; esac
	echo %x > "$f" || exit 1
done`, 1<<nproc()-1)
	for _, ns := range lab.Roles {
		// ip netns exec mounts the namespace's own /sys.
		if err := l.Exec(ns, "sh", "-c", script); err != nil {
			return fmt.Errorf("RPS in %s: %w", ns, err)
		}
	}
	return nil
}

// kernelCounts is what the lab's kernels counted that a measurement
// reports as the difference from before to after its run.
type kernelCounts struct {
	udp udpDrops
	dev devDrops
	ext tcpExt
}

func readKernelCounts(l *lab.Lab) (kernelCounts, error) {
	var k kernelCounts
	var err error
	if k.udp, err = tunnelDrops(l); err != nil {
		return k, err
	}
	if k.dev, err = labDevDrops(l); err != nil {
		return k, err
	}
	if k.ext, err = labTCPExt(l); err != nil {
		return k, err
	}
	return k, nil
}

// eachNamespace reads file in each namespace of nss and hands its text to
// parse; an error names the namespace.
func eachNamespace(l *lab.Lab, nss []string, file string, parse func(ns, text string) error) error {
	for _, ns := range nss {
		out, err := l.Output(ns, "cat", file)
		if err != nil {
			return err
		}
		if err := parse(ns, out); err != nil {
			return fmt.Errorf("%s: %w", ns, err)
		}
	}
	return nil
}

// labTCPExt reads the TcpExt counters of the namespaces iperf3 runs in.
func labTCPExt(l *lab.Lab) (tcpExt, error) {
	t := tcpExt{}
	err := eachNamespace(l, []string{lab.Client, lab.Host}, "/proc/net/netstat", func(ns, text string) error {
		return parseTCPExt(ns, text, t)
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// labDevDrops reads the drop counters of every device in the lab's
// namespaces.
func labDevDrops(l *lab.Lab) (devDrops, error) {
	d := devDrops{}
	err := eachNamespace(l, lab.Roles, "/proc/net/dev", func(ns, text string) error {
		return parseDevDrops(ns, text, d)
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// tunnelDrops sums the UDP socket drops of the client and the gateway
// namespace's kernels.
func tunnelDrops(l *lab.Lab) (udpDrops, error) {
	var sum udpDrops
	err := eachNamespace(l, []string{lab.Client, lab.Gateway}, "/proc/net/snmp", func(_, text string) error {
		d, err := parseUDPDrops(text)
		if err != nil {
			return err
		}
		sum.rcvbuf += d.rcvbuf
		sum.sndbuf += d.sndbuf
		return nil
	})
	if err != nil {
		return udpDrops{}, err
	}
	return sum, nil
}

func describe(t test, m measurement) string {
	s := fmt.Sprintf("%.0f Mbit/s, tunnel CPU %.2f s (%.2f s/GB), UDP socket drops: %d receive buffer, %d send buffer, peak UDP receive queue: client %d KiB, gateway %d KiB, device drops: %s",
		m.Mbps, m.cpu.Seconds(), cpuPerGB(m), m.drops.rcvbuf, m.drops.sndbuf, m.rxPeak[0]>>10, m.rxPeak[1]>>10, m.devDrops)
	if m.roamDrops != nil {
		s += fmt.Sprintf(", roam drops: %s", m.roamDrops)
	}
	if t.udp {
		return fmt.Sprintf("%.0f datagrams/s delivered, %.1f %% lost, %s", m.PPS, m.LostPercent, s)
	}
	return fmt.Sprintf("%s, %d retransmits, TCP: %s", s, m.Retransmits, m.tcpExt)
}

// cpuPerGB is the tunnel's CPU seconds per 10^9 payload bytes delivered.
func cpuPerGB(m measurement) float64 {
	if m.Bytes <= 0 {
		return 0
	}
	return m.cpu.Seconds() / (float64(m.Bytes) / 1e9)
}

// machine is what the report says about the machine the run shared.
type machine struct {
	nproc              int
	loadStart, loadEnd string
	perf               string
}

func nproc() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// perfNote says whether perf can count hardware events here (a VM often
// cannot; software events such as cpu-clock still work).
func perfNote() string {
	if _, err := exec.LookPath("perf"); err != nil {
		return "perf not installed"
	}
	out, err := exec.Command("perf", "stat", "-e", "instructions", "true").CombinedOutput()
	switch {
	case err != nil:
		return fmt.Sprintf("perf stat fails (%v)", err)
	case strings.Contains(string(out), "not supported"):
		return "perf: no hardware counters here (instructions <not supported>); software events only"
	default:
		return "perf: hardware counters available"
	}
}

// lastLines is the end of a process's output, for an error message.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}
