package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/daemon"
)

// spawnTimeout bounds waiting for a freshly started daemon to answer.
const spawnTimeout = 5 * time.Second

func connectCommand(e engines) *cli.Command {
	return &cli.Command{
		Name:      "connect",
		Usage:     "connect a profile; starts the daemon if none is running",
		ArgsUsage: "PROFILE",
		Flags: []cli.Flag{
			configFlag(),
			socketFlag(),
			&cli.BoolFlag{Name: "foreground", Usage: "run the daemon in this process until interrupted"},
			logLevelFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print the connection as one JSON object (as in roam status --json) with its connect_budget instead of progress lines"},
		},
		BashComplete: completeProfiles,
		Action: func(c *cli.Context) error {
			start := time.Now()
			if c.NArg() != 1 {
				return usageError(c, "want exactly one PROFILE")
			}
			name := c.Args().First()
			cfg, err := filepath.Abs(c.String("config"))
			if err != nil {
				return err
			}
			// A broken profile is reported before any daemon is started;
			// other profiles in the file being broken does not matter.
			f, err := config.ReadProfiles(cfg)
			var p *config.Profile
			if err == nil {
				p, err = f.Profile(name)
			}
			if errors.Is(err, fs.ErrPermission) {
				return withCode(exitPermission, fmt.Errorf("connect %s: %w (roam connect needs root: sudo roam connect %s)", name, err, name))
			}
			if err != nil {
				return withCode(exitConfig, fmt.Errorf("connect %s: %w", name, err))
			}
			var password []byte
			if p.NeedsPassword() {
				if password, err = askPassword(ttyPath, p); err != nil {
					return fmt.Errorf("connect %s: %w", name, err)
				}
			}
			w := c.App.Writer
			asJSON := c.Bool("json")
			progress := func(ev daemon.Event) { fmt.Fprintln(w, formatEvent(ev, false)) }
			if asJSON {
				progress = nil
			}
			if c.Bool("foreground") {
				p.Password = password
				level := f.LogLevel
				if c.IsSet("log-level") {
					level = c.String("log-level")
				}
				return connectForeground(c, e, p, f.SocketGroup, level, progress, start)
			}
			socket := c.String("socket")
			client := daemon.Client{Socket: socket}
			// The request itself finds out whether a daemon runs: a refused
			// or missing socket means the request never reached one, so it
			// is sent again to the daemon started for it.
			var daemonStart time.Duration
			st, err := client.ConnectPassword(c.Context, name, cfg, password, progress)
			if errors.Is(err, daemon.ErrNoDaemon) {
				st, daemonStart, err = spawnConnect(c.Context, e, client, p, cfg, c.String("log-level"), password, progress)
				var se *spawnError
				if errors.As(err, &se) {
					return fmt.Errorf("connect %s: %w", name, se.err)
				}
			}
			if errors.Is(err, fs.ErrPermission) {
				return fmt.Errorf("connect %s: %w", name, socketDenied(socket, err))
			}
			if err != nil {
				return fmt.Errorf("connect %s: %w", name, connectFailure(oneLine(err)))
			}
			return printConnected(w, st, asJSON, daemonStart, time.Since(start))
		},
	}
}

// spawnError is a daemon that could not be started, as against a connect
// it refused.
type spawnError struct{ err error }

func (e *spawnError) Error() string { return e.err.Error() }
func (e *spawnError) Unwrap() error { return e.err }

// spawnConnect starts a daemon and connects p through it; daemonStart is
// how long the daemon took to answer. While the daemon starts (a process
// start, tens of milliseconds on a slow machine), this process resolves
// the gateway, opens the tunnel's sockets and sends IKE_SA_INIT
// (e.presend), and hands them to the daemon with the request: the daemon
// goes on from the gateway's answer, so its start overlaps the first
// round trip instead of preceding it. Whatever presend cannot do is left
// to the daemon, which then connects as it always did.
func spawnConnect(ctx context.Context, e engines, client daemon.Client, p *config.Profile, cfg, logLevel string, password []byte, progress func(daemon.Event)) (daemon.Status, time.Duration, error) {
	spawned := time.Now()
	started := make(chan error, 1)
	go func() { started <- spawnDaemon(ctx, client.Socket, cfg, logLevel) }()
	var h handoff
	if e.presend != nil {
		h, _ = e.presend(ctx, p) // the daemon's own connect says what failed
	}
	err := <-started
	daemonStart := time.Since(spawned)
	if err != nil {
		if h != nil {
			h.Close()
		}
		return daemon.Status{}, 0, &spawnError{err}
	}
	if h != nil {
		state, files, merr := h.Marshal()
		// Our descriptors go; the duplicates keep the sockets open
		// until the daemon has its own.
		h.Close()
		if merr == nil {
			defer func() {
				for _, f := range files {
					f.Close()
				}
			}()
			st, err := client.ConnectHandoff(ctx, p.Name, cfg, password, state, files, progress)
			return st, daemonStart, err
		}
	}
	st, err := client.ConnectPassword(ctx, p.Name, cfg, password, progress)
	return st, daemonStart, err
}

// printConnected reports an established connection: one line, or with
// --json the status object whose connect_budget gains the CLI's own
// figures (the daemon's start, when this command started it, and the
// whole command up to the daemon's reply).
func printConnected(w io.Writer, st daemon.Status, asJSON bool, daemonStart, command time.Duration) error {
	if !asJSON {
		fmt.Fprintln(w, connectedLine(st))
		return nil
	}
	if st.ConnectBudget == nil {
		st.ConnectBudget = &daemon.ConnectBudget{}
	}
	st.ConnectBudget.DaemonStartMS = msOf(daemonStart)
	st.ConnectBudget.CommandMS = msOf(command)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(w, string(b))
	return nil
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// connectForeground runs the daemon in this process, connects the profile
// through it, and serves until interrupted.
func connectForeground(c *cli.Context, e engines, p *config.Profile, group, level string, progress func(daemon.Event), start time.Time) error {
	log, closeLog, err := newLogger(c.App.ErrWriter, level)
	if err != nil {
		return err
	}
	defer closeLog()
	d, err := daemon.Start(daemon.Options{Socket: c.String("socket"), Dial: e.dial, SocketGroup: group, Log: log})
	if err != nil {
		return fmt.Errorf("connect %s: %w", p.Name, err)
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	st, err := d.Manager().Connect(ctx, p, progress)
	if err != nil {
		cancel()
		<-ran
		return fmt.Errorf("connect %s: %w", p.Name, connectFailure(oneLine(err)))
	}
	if err := printConnected(c.App.Writer, st, c.Bool("json"), 0, time.Since(start)); err != nil {
		cancel()
		<-ran
		return err
	}
	return <-ran
}

func connectedLine(st daemon.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: connected to %s", st.Name, st.Gateway)
	if st.VirtualIP != "" {
		fmt.Fprintf(&b, ", virtual IP %s", st.VirtualIP)
	}
	if st.Interface != "" {
		fmt.Fprintf(&b, ", via %s", st.Interface)
	}
	return b.String()
}

// oneLine keeps a failure to the single line the user reads.
func oneLine(err error) error {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return errors.New(strings.TrimSpace(s[:i]))
	}
	return err
}

// spawnPoll is how often spawnDaemon looks for the new daemon's socket once
// the daemon's ready pipe closed without a word (it exited: another
// connect's daemon may hold the socket). A failed connect to a missing
// unix socket costs microseconds.
const spawnPoll = 2 * time.Millisecond

// spawnDaemon starts `roam daemon --auto-exit` in its own session, with its
// output in the log file beside the socket, and waits until it answers.
// The daemon reads socket_group and log_level from the profile file at cfg;
// logLevel, when set, overrides the latter.
func spawnDaemon(ctx context.Context, socket, cfg, logLevel string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	logPath := daemon.LogFile(socket)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	// The daemon says it listens by writing a byte into this pipe (its
	// fd 3), so the wait ends the moment it does.
	ready, readyW, err := os.Pipe()
	if err != nil {
		logf.Close()
		return fmt.Errorf("starting the daemon: %w", err)
	}
	defer ready.Close()
	args := []string{"daemon", "--socket", socket, "--config", cfg, "--auto-exit", "--ready-fd", "3"}
	if logLevel != "" {
		args = append(args, "--log-level", logLevel)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	said := make(chan bool, 1)
	go func() {
		var b [1]byte
		n, _ := ready.Read(b[:])
		said <- n == 1
	}()

	ctx, cancel := context.WithTimeout(ctx, spawnTimeout)
	defer cancel()
	select {
	case ok := <-said:
		if ok {
			return nil
		}
		// Closed without a word: the daemon exited (below, as it was
		// before the pipe), or another connect's daemon won the socket.
	case <-ctx.Done():
		return fmt.Errorf("the daemon did not answer on %s within %v (log: %s)", socket, spawnTimeout, logPath)
	}
	client := daemon.Client{Socket: socket}
	tick := time.NewTicker(spawnPoll)
	defer tick.Stop()
	for {
		pingCtx, cancelPing := context.WithTimeout(ctx, time.Second)
		err := client.Ping(pingCtx)
		cancelPing()
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			// Another connect may have won the race to the socket.
			if client.Ping(ctx) == nil {
				return nil
			}
			return fmt.Errorf("the daemon exited (%v): %s", werr, lastLine(logPath))
		case <-ctx.Done():
			return fmt.Errorf("the daemon did not answer on %s within %v (log: %s)", socket, spawnTimeout, logPath)
		case <-tick.C:
		}
	}
}

// lastLine returns the last line of the daemon's log, which says why it
// could not start.
func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "see " + path
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 4096 {
		f.Seek(fi.Size()-4096, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
