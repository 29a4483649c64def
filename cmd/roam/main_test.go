package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/internal/poll"
	"github.com/roam-vpn/roam/internal/syncbuf"
	"github.com/roam-vpn/roam/report"
	"golang.org/x/sys/unix"
)

// fakeDaemonEnv makes the test binary act as `roam` with fake engines, so
// connect can spawn it as its daemon.
const fakeDaemonEnv = "ROAM_TEST_FAKE_ENGINES"

// failDaemonEnv makes that fake daemon exit at once with this line.
const failDaemonEnv = "ROAM_TEST_DAEMON_FAILS"

func TestMain(m *testing.M) {
	if line := os.Getenv(failDaemonEnv); line != "" && len(os.Args) > 1 && os.Args[1] == "daemon" {
		fmt.Fprintln(os.Stderr, line)
		os.Exit(1)
	}
	if os.Getenv(fakeDaemonEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args, os.Stdout, os.Stderr, fakeEngines())
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// versionRE is the version line's shape: roam <version> (<commit>, <go>).
var versionRE = regexp.MustCompile(`^roam \S+ \([^,]+, go\S+\)\n$`)

const authFailure = "authentication failed: gateway sent AUTHENTICATION_FAILED"

func fakeEngines() engines { return engines{dial: fakeDial, presend: fakePresend} }

// fakePresend stands for tunnel.Presend without a packet: the handoff is
// a loopback UDP socket and the profile's name, which fakeDial checks
// arrived whole in the daemon it spawned.
func fakePresend(_ context.Context, p *config.Profile) (handoff, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	return &fakeHandoff{profile: p.Name, conn: c}, nil
}

type fakeHandoff struct {
	profile string
	conn    *net.UDPConn
}

type fakeHandoffState struct {
	Profile string `json:"profile"`
	Port    int    `json:"port"`
}

func (h *fakeHandoff) Marshal() ([]byte, []*os.File, error) {
	f, err := h.conn.File()
	if err != nil {
		return nil, nil, err
	}
	state, err := json.Marshal(fakeHandoffState{Profile: h.profile, Port: h.conn.LocalAddr().(*net.UDPAddr).Port})
	return state, []*os.File{f}, err
}

func (h *fakeHandoff) Close() { h.conn.Close() }

// handedOver names the interface of a tunnel whose dial got roam
// connect's handoff: the state and a socket bound to the port it names.
func handedOver(ctx context.Context, p *config.Profile) (string, error) {
	h, ok := report.HandoffFrom(ctx)
	if !ok {
		return "wlan0", nil
	}
	var st fakeHandoffState
	if err := json.Unmarshal(h.State, &st); err != nil {
		return "", err
	}
	if st.Profile != p.Name || len(h.Files) != 1 {
		return "", fmt.Errorf("handoff for %q with %d files", st.Profile, len(h.Files))
	}
	sa, err := unix.Getsockname(int(h.Files[0].Fd()))
	if in4, ok := sa.(*unix.SockaddrInet4); err != nil || !ok || in4.Port != st.Port {
		return "", fmt.Errorf("passed socket %v (%v), want port %d", sa, err, st.Port)
	}
	return "handoff", nil
}

// fakeDial connects any profile except "bad".
func fakeDial(ctx context.Context, p *config.Profile, emit func(daemon.Event)) (daemon.Tunnel, error) {
	emit(daemon.Event{Event: report.EventConnecting, To: p.Gateway + ":500", Interface: "wlan0"})
	if p.Name == "bad" {
		return nil, errors.New(authFailure)
	}
	iface, err := handedOver(ctx, p)
	if err != nil {
		return nil, err
	}
	emit(daemon.Event{Event: report.EventEstablished, To: p.Gateway + ":4500", VirtualIP: "10.99.200.7"})
	return &fakeTunnel{name: p.Name, gateway: p.Gateway, iface: iface, done: make(chan struct{})}, nil
}

type fakeTunnel struct {
	name, gateway, iface string
	done                 chan struct{}
	once                 sync.Once
}

func (t *fakeTunnel) Status() daemon.Status {
	return daemon.Status{Name: t.name, State: "established", Gateway: t.gateway + ":4500", Interface: t.iface,
		VirtualIP: "10.99.200.7", EstablishedAt: time.Now(),
		Children:      []daemon.ChildStatus{{SPIIn: "c0000001", SPIOut: "d0000001", Proposal: "aes256gcm16"}},
		ConnectBudget: &daemon.ConnectBudget{IKEMS: 42.5, TotalMS: 44}}
}
func (t *fakeTunnel) Close(context.Context) error { t.once.Do(func() { close(t.done) }); return nil }
func (t *fakeTunnel) Done() <-chan struct{}       { return t.done }
func (t *fakeTunnel) Err() error                  { return nil }

type result struct {
	code           int
	stdout, stderr string
}

func roam(ctx context.Context, args ...string) result {
	var out, errb syncbuf.Buffer
	code := run(ctx, append([]string{"roam"}, args...), &out, &errb, fakeEngines())
	return result{code, out.String(), errb.String()}
}

// setup writes a profile file with profiles corp and bad and returns it
// with a socket path in a fresh directory.
func setup(t *testing.T) (cfg, socket string) {
	t.Helper()
	dir := t.TempDir()
	psk := filepath.Join(dir, "corp.psk")
	if err := os.WriteFile(psk, []byte("test-secret-not-real"), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, n := range []string{"corp", "bad"} {
		fmt.Fprintf(&b, "[profiles.%s]\ngateway = \"198.51.100.1\"\nlocal_id = \"alice@example.com\"\nremote_id = \"vpn.example.com\"\nauth = \"psk\"\npsk_file = %q\n\n", n, psk)
	}
	cfg = filepath.Join(dir, "roam.toml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, filepath.Join(dir, "run", "roam.sock")
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	poll.Until(t, 10*time.Second, "the daemon to exit and remove "+path, func() bool {
		_, err := os.Lstat(path)
		return errors.Is(err, os.ErrNotExist)
	})
}

func TestHelpAndVersion(t *testing.T) {
	ctx := testCtx(t)
	r := roam(ctx, "--help")
	if r.code != 0 {
		t.Fatalf("--help: %+v", r)
	}
	for _, cmd := range []string{"connect", "disconnect", "status", "events", "gateway", "version"} {
		if !strings.Contains(r.stdout, "   "+cmd+" ") {
			t.Errorf("--help does not list %s:\n%s", cmd, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "   daemon") {
		t.Errorf("--help lists the hidden daemon command:\n%s", r.stdout)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := roam(ctx, args...)
		if r.code != 0 || !versionRE.MatchString(r.stdout) {
			t.Errorf("%v: %+v, want %s", args, r, versionRE)
		}
	}
}

// TestConnectSpawnsDaemon runs the whole client path as a user would: the
// first connect starts a daemon (this test binary with fake engines), the
// last disconnect makes it exit.
func TestConnectSpawnsDaemon(t *testing.T) {
	t.Setenv(fakeDaemonEnv, "1")
	cfg, socket := setup(t)
	ctx := testCtx(t)

	r := roam(ctx, "connect", "--socket", socket, "--config", cfg, "corp")
	if r.code != 0 {
		t.Fatalf("connect: %+v\nlog: %s", r, readFile(daemon.LogFile(socket)))
	}
	// The daemon it started got the sockets and state connect made meanwhile.
	for _, want := range []string{"corp: connecting", "corp: established", "corp: connected to 198.51.100.1:4500, virtual IP 10.99.200.7, via handoff"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("connect output lacks %q:\n%s", want, r.stdout)
		}
	}
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v, %v: want mode 0600", fi, err)
	}

	r = roam(ctx, "connect", "--socket", socket, "--config", cfg, "corp")
	if r.code == 0 || r.stderr != "roam: connect corp: already connected\n" {
		t.Errorf("second connect: %+v", r)
	}
	r = roam(ctx, "connect", "--socket", socket, "--config", cfg, "bad")
	if r.code == 0 || r.stderr != "roam: connect bad: "+authFailure+"\n" {
		t.Errorf("failing connect: %+v", r)
	}

	t.Setenv("ROAM_SOCKET", socket) // status and disconnect find it through the environment
	r = roam(ctx, "status", "--json")
	if r.code != 0 {
		t.Fatalf("status --json: %+v", r)
	}
	var st []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not a JSON array: %v\n%s", err, r.stdout)
	}
	if len(st) != 1 || st[0]["name"] != "corp" || st[0]["state"] != "established" || st[0]["virtual_ip"] != "10.99.200.7" {
		t.Errorf("status --json: %s", r.stdout)
	}
	r = roam(ctx, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "NAME") || !strings.Contains(r.stdout, "corp") || !strings.Contains(r.stdout, "aes256gcm16") {
		t.Errorf("status: %+v", r)
	}

	r = roam(ctx, "disconnect", "corp")
	if r.code != 0 || r.stdout != "corp: disconnected\n" {
		t.Errorf("disconnect: %+v", r)
	}
	waitGone(t, socket)
	// The socket goes before the daemon's last record: give the
	// exiting process a moment to write it.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(readFile(daemon.LogFile(socket)), "daemon stopped"); {
		if time.Now().After(deadline) {
			t.Errorf("daemon log:\n%s", readFile(daemon.LogFile(socket)))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connect that fails leaves no daemon behind.
func TestConnectFailureStopsSpawnedDaemon(t *testing.T) {
	t.Setenv(fakeDaemonEnv, "1")
	cfg, socket := setup(t)
	ctx := testCtx(t)
	start := time.Now()
	r := roam(ctx, "connect", "--socket", socket, "--config", cfg, "bad")
	if r.code == 0 {
		t.Fatalf("connect bad succeeded: %+v", r)
	}
	if r.stderr != "roam: connect bad: "+authFailure+"\n" {
		t.Errorf("stderr %q, want the one-line reason", r.stderr)
	}
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("failing took %v", took)
	}
	waitGone(t, socket)
}

func TestCLIErrors(t *testing.T) {
	cfg, socket := setup(t)
	ctx := testCtx(t)
	tests := []struct {
		args   []string
		stdout string
		stderr string // substring; "" means none expected
		code   int
	}{
		{[]string{"connect", "--socket", socket, "--config", cfg}, "", "want exactly one PROFILE", 2},
		{[]string{"connect", "--socket", socket, "--config", cfg, "nope"}, "", `roam: connect nope: ` + cfg + `: no profile "nope"`, 3},
		{[]string{"connect", "--socket", socket, "--config", cfg + ".missing", "corp"}, "", "no such file", 3},
		{[]string{"status", "--socket", socket, "--json"}, "[]\n", "", 0},
		{[]string{"status", "--socket", socket}, "no connections\n", "", 0},
		{[]string{"status", "--socket", socket, "corp"}, "", "roam: corp: not connected", 1},
		{[]string{"disconnect", "--socket", socket, "corp"}, "", "roam: disconnect corp: not connected", 1},
		{[]string{"disconnect", "--socket", socket, "--all"}, "", "", 0},
		{[]string{"disconnect", "--socket", socket}, "", "want one PROFILE or --all", 2},
		{[]string{"events", "--socket", socket}, "", "no daemon", 1},
		{[]string{"gateway", "--socket", socket, "--config", cfg + ".missing"}, "", "no such file", 3},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[:1], " "), func(t *testing.T) {
			r := roam(ctx, tt.args...)
			if r.code != tt.code || tt.stdout != "" && r.stdout != tt.stdout || tt.stderr == "" && r.stderr != "" || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("roam %v: %+v", tt.args, r)
			}
			if strings.Count(r.stderr, "\n") > 1 {
				t.Errorf("error is more than one line: %q", r.stderr)
			}
		})
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed command left a daemon socket behind")
	}
}

func TestEventsJSON(t *testing.T) {
	cfg, socket := setup(t)
	ctx := testCtx(t)
	d, err := daemon.Start(daemon.Options{Socket: socket, Dial: fakeDial, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	dctx, stopDaemon := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- d.Run(dctx) }()
	defer func() { stopDaemon(); <-ran }()

	ectx, stopEvents := context.WithCancel(ctx)
	var out, errb syncbuf.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ectx, []string{"roam", "events", "--socket", socket, "--json"}, &out, &errb, fakeEngines())
	}()
	// Connect until the stream has seen it: the stream may subscribe late.
	client := daemon.Client{Socket: socket}
	for i := 0; !strings.Contains(out.String(), `"established"`); i++ {
		if i%50 == 0 {
			client.Disconnect(ctx, "corp")
			if _, err := client.Connect(ctx, "corp", cfg, nil); err != nil {
				t.Fatal(err)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no established event:\n%s%s", out.String(), errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopEvents()
	if code := <-exited; code != 0 {
		t.Errorf("events exited %d: %s", code, errb.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ev["profile"] != "corp" || ev["event"] == nil {
			t.Errorf("event %s", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, ev["time"].(string)); err != nil {
			t.Errorf("time in %s: %v", line, err)
		}
	}
}

func TestConnectForeground(t *testing.T) {
	cfg, socket := setup(t)
	ctx := testCtx(t)
	fctx, stop := context.WithCancel(ctx)
	var out, errb syncbuf.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(fctx, []string{"roam", "connect", "--foreground", "--socket", socket, "--config", cfg, "corp"}, &out, &errb, fakeEngines())
	}()
	for !strings.Contains(out.String(), "corp: connected") {
		select {
		case code := <-exited:
			t.Fatalf("foreground connect exited %d: %s%s", code, out.String(), errb.String())
		case <-ctx.Done():
			t.Fatalf("not connected: %s%s", out.String(), errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if r := roam(ctx, "status", "--socket", socket, "--json"); !strings.Contains(r.stdout, `"name": "corp"`) {
		t.Errorf("status of the foreground daemon: %+v", r)
	}
	// Unlike a spawned daemon, this one outlives its connection.
	if r := roam(ctx, "disconnect", "--socket", socket, "corp"); r.code != 0 {
		t.Errorf("disconnect: %+v", r)
	}
	if r := roam(ctx, "status", "--socket", socket); r.stdout != "no connections\n" {
		t.Errorf("status after disconnect: %+v", r)
	}
	stop() // SIGINT
	if code := <-exited; code != 0 {
		t.Errorf("foreground exited %d: %s", code, errb.String())
	}
	waitGone(t, socket)

	// A failed connect ends the foreground run with the reason.
	r := roam(ctx, "connect", "--foreground", "--socket", socket, "--config", cfg, "bad")
	if r.code != exitAuth || !strings.HasSuffix(r.stderr, "roam: connect bad: "+authFailure+"\n") {
		t.Errorf("foreground bad: %+v", r)
	}
	waitGone(t, socket)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestConnectJSON: connect --json prints the connection as one object with
// the daemon's budget and the CLI's own figures, and no progress lines;
// daemon_start_ms only when this connect started the daemon.
func TestConnectJSON(t *testing.T) {
	t.Setenv(fakeDaemonEnv, "1")
	cfg, socket := setup(t)
	ctx := testCtx(t)
	type budget struct {
		IKEMS         float64  `json:"ike_ms"`
		TotalMS       float64  `json:"total_ms"`
		DaemonStartMS *float64 `json:"daemon_start_ms"`
		CommandMS     float64  `json:"command_ms"`
	}
	type status struct {
		Name   string  `json:"name"`
		State  string  `json:"state"`
		Budget *budget `json:"connect_budget"`
	}
	connect := func(profile string, spawns bool) {
		t.Helper()
		r := roam(ctx, "connect", "--json", "--socket", socket, "--config", cfg, profile)
		if r.code != 0 {
			t.Fatalf("connect --json %s: %+v", profile, r)
		}
		var st status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("connect --json is not one JSON object: %v\n%s", err, r.stdout)
		}
		b := st.Budget
		if st.Name != profile || st.State != "established" || b == nil || b.IKEMS != 42.5 || b.TotalMS != 44 || b.CommandMS <= 0 {
			t.Fatalf("connect --json %s: %s", profile, r.stdout)
		}
		if spawns != (b.DaemonStartMS != nil) || spawns && (*b.DaemonStartMS <= 0 || *b.DaemonStartMS > b.CommandMS) {
			t.Fatalf("daemon_start_ms (this connect started the daemon: %v): %s", spawns, r.stdout)
		}
	}
	connect("corp", true)
	// A second profile through the running daemon.
	cfg2 := strings.Replace(readFile(cfg), "profiles.bad", "profiles.home", 1)
	if err := os.WriteFile(cfg, []byte(cfg2), 0o600); err != nil {
		t.Fatal(err)
	}
	connect("home", false)
	t.Setenv("ROAM_SOCKET", socket)
	if r := roam(ctx, "disconnect", "--all"); r.code != 0 {
		t.Fatalf("disconnect --all: %+v", r)
	}
	waitGone(t, socket)
}

// TestConnectSpawnFails: a daemon that connect started and that exits
// before it listens (its ready pipe closes without a word) is reported at
// once, with the last line of its log.
func TestConnectSpawnFails(t *testing.T) {
	tests := []struct {
		name, line string
	}{
		{"exits at start", "roam: the socket directory is not ours"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(fakeDaemonEnv, "1")
			t.Setenv(failDaemonEnv, tt.line)
			cfg, socket := setup(t)
			r := roam(testCtx(t), "connect", "--socket", socket, "--config", cfg, "corp")
			if r.code == 0 || !strings.Contains(r.stderr, "the daemon exited") || !strings.Contains(r.stderr, tt.line) {
				t.Fatalf("connect with a daemon that cannot start: %+v", r)
			}
		})
	}
}
