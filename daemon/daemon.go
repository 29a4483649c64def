// Package daemon is roam's long-running process: the control socket, the
// connection manager that owns one tunnel per profile, and the control
// socket of a gateway. It sees the connections only through
// report.Tunnel and report.GatewayHandle (package tunnel dials the
// client's, package gateway runs the responder), so it is tested with
// fakes; it never speaks IKE or ESP.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/internal/undo"
	"github.com/roam-vpn/roam/report"
	"github.com/roam-vpn/roam/tun"
)

// DefaultSocket is where the client daemon listens unless told otherwise.
const DefaultSocket = "/run/roam/roam.sock"

// DefaultGatewaySocket is the gateway's control socket, apart from a client
// daemon's on the same machine.
const DefaultGatewaySocket = "/run/roam/gateway.sock"

// LogFile is where a daemon spawned for socket writes its output: next to
// the socket, so tests and users find it without configuration.
func LogFile(socket string) string {
	return filepath.Join(filepath.Dir(socket), "roam.log")
}

// shutdownGrace bounds closing every tunnel at exit; requestGrace is the
// time requests in flight get to send their last line.
const (
	shutdownGrace = 5 * time.Second
	requestGrace  = 2 * time.Second
)

// Options configure a client daemon.
type Options struct {
	Socket string
	Dial   DialFunc
	// AutoExit stops the daemon when its last connection (or connection
	// attempt) ends, so a daemon that `roam connect` spawned does not
	// outlive the tunnel.
	AutoExit bool
	// IdleTimeout, with AutoExit, stops a daemon that has no connection
	// this long after it started: the connect that spawned it died before
	// asking. Default 30 s.
	IdleTimeout time.Duration
	// SocketGroup, when set, lets that group's members open the control
	// socket (and its directory), for status and events only.
	SocketGroup string
	Log         *slog.Logger
}

// Daemon is a client daemon: a Manager behind a control socket.
type Daemon struct {
	m           *Manager
	srv         *server
	autoExit    bool
	idleTimeout time.Duration
	log         *slog.Logger
}

// Start opens the control socket and starts answering on it. Run must
// follow, to serve until the end and clean up.
func Start(opts Options) (*Daemon, error) {
	if opts.Dial == nil {
		return nil, errors.New("daemon: no DialFunc")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	ln, err := ListenControl(opts.Socket)
	if err != nil {
		return nil, err
	}
	if opts.SocketGroup != "" {
		if err := ShareControl(opts.Socket, opts.SocketGroup); err != nil {
			ln.Close()
			os.Remove(opts.Socket)
			return nil, err
		}
	}
	state := StateDir(opts.Socket)
	m := NewManager(opts.Dial, WithLogger(log), WithStateDir(state))
	// A daemon killed on this socket left its rules, routes and lockdown
	// (fail closed); this one has no connection yet, so they are nobody's.
	recoverLeftovers(state, log)
	restoreLeftoverDNS(log)
	d := &Daemon{m: m, autoExit: opts.AutoExit, idleTimeout: opts.IdleTimeout, log: log}
	if d.idleTimeout <= 0 {
		d.idleTimeout = 30 * time.Second
	}
	d.srv = newServer(ln, managerBackend{m: m, state: state, log: log}, log)
	return d, nil
}

// Manager is the daemon's connection manager, for connecting in-process
// (`roam connect --foreground`).
func (d *Daemon) Manager() *Manager { return d.m }

// Run serves until ctx ends or, with AutoExit, the last connection ends;
// then it closes every tunnel (bounded) and removes the socket.
func (d *Daemon) Run(ctx context.Context) error {
	var idle <-chan struct{}
	var unused <-chan time.Time
	if d.autoExit {
		idle = d.m.Idle()
		t := time.NewTimer(d.idleTimeout)
		defer t.Stop()
		unused = t.C
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-idle:
			// A connect may have slipped in since the signal.
			done = d.m.Active() == 0
		case <-unused:
			done = d.m.Active() == 0
		}
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	err := d.m.Close(closeCtx)
	cancel()
	if err != nil {
		d.log.Error("closing tunnels", "err", err)
	}
	reqCtx, cancel := context.WithTimeout(context.Background(), requestGrace)
	d.srv.shutdown(reqCtx)
	cancel()
	return err
}

// managerBackend serves a client daemon's control socket.
type managerBackend struct {
	m     *Manager
	state undo.Dir
	log   *slog.Logger
}

func (b managerBackend) connect(ctx context.Context, profile, configPath string, password []byte, progress func(Event)) (Status, error) {
	if profile == "" {
		return Status{}, errors.New("no profile named")
	}
	if !filepath.IsAbs(configPath) {
		return Status{}, fmt.Errorf("config path %q is not absolute", configPath)
	}
	p, err := config.LoadProfile(configPath, profile)
	if err != nil {
		return Status{}, err
	}
	if err := usePassword(p, password); err != nil {
		return Status{}, err
	}
	return b.m.Connect(ctx, p, progress)
}

func (b managerBackend) disconnect(ctx context.Context, name string, all bool) ([]string, error) {
	if all {
		names, err := b.m.DisconnectAll(ctx)
		if b.m.Active() == 0 {
			recoverLeftovers(b.state, b.log)
		}
		return names, err
	}
	if name == "" {
		return nil, errors.New("no profile named")
	}
	if err := b.m.Disconnect(ctx, name); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return []string{name}, nil
}

func (b managerBackend) status(name string) ([]Status, error) {
	st, err := b.m.Status(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return st, nil
}

func (b managerBackend) events(ctx context.Context) <-chan Event { return b.m.Subscribe(ctx) }

// GatewayOptions configure ServeGateway.
type GatewayOptions struct {
	Socket string
	Run    GatewayFunc
	Log    *slog.Logger
	// Ready, when set, is called once the engine runs and the control
	// socket serves: the moment a service manager may call it started.
	Ready func()
}

// gatewayStopGrace bounds waiting for the engine after ctx ends.
const gatewayStopGrace = 10 * time.Second

// ServeGateway runs the responder for g with a control socket for status
// and events until ctx ends or the engine stops by itself.
func ServeGateway(ctx context.Context, g *config.Gateway, opts GatewayOptions) error {
	if opts.Run == nil {
		return errors.New("gateway: no GatewayFunc")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	ln, err := ListenControl(opts.Socket)
	if err != nil {
		return err
	}
	h := newHub(time.Now)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	handle, err := opts.Run(report.WithLogger(gctx, log), g, func(ev Event) { logEvent(log, h.publish(ev)) })
	if err != nil {
		ln.Close()
		os.Remove(opts.Socket)
		return fmt.Errorf("gateway: %w", err)
	}
	srv := newServer(ln, gatewayBackend{handle: handle, hub: h}, log)
	if opts.Ready != nil {
		opts.Ready()
	}
	waited := make(chan error, 1)
	go func() { waited <- handle.Wait() }()
	select {
	case <-ctx.Done():
		cancel()
		select {
		case err = <-waited:
		case <-time.After(gatewayStopGrace):
			err = errors.New("gateway: engine did not stop in time")
		}
	case err = <-waited:
		if err == nil {
			err = errors.New("gateway: engine stopped")
		}
	}
	reqCtx, cancelReq := context.WithTimeout(context.Background(), requestGrace)
	srv.shutdown(reqCtx)
	cancelReq()
	return err
}

// gatewayBackend serves the gateway's control socket: read-only.
type gatewayBackend struct {
	handle GatewayHandle
	hub    *hub
}

var errGatewayOnly = errors.New("this control socket belongs to a gateway, which does not connect or disconnect profiles")

func (b gatewayBackend) connect(context.Context, string, string, []byte, func(Event)) (Status, error) {
	return Status{}, errGatewayOnly
}

func (b gatewayBackend) disconnect(context.Context, string, bool) ([]string, error) {
	return nil, errGatewayOnly
}

func (b gatewayBackend) status(name string) ([]Status, error) {
	if b.handle == nil {
		return nil, nil
	}
	var out []Status
	for _, st := range b.handle.Status() {
		if name == "" || st.Name == name {
			out = append(out, st)
		}
	}
	if name != "" && len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrNotConnected)
	}
	return out, nil
}

func (b gatewayBackend) events(ctx context.Context) <-chan Event { return b.hub.subscribe(ctx) }

// logEvent records ev in the daemon's log, which is all a spawned daemon
// leaves behind for later diagnosis.
func logEvent(log *slog.Logger, ev Event) {
	attrs := []any{"profile", ev.Profile}
	for _, kv := range [][2]string{{"from", ev.From}, {"to", ev.To}, {"interface", ev.Interface}, {"reason", ev.Reason}, {"virtual_ip", ev.VirtualIP}, {"proposal", ev.Proposal}} {
		if kv[1] != "" {
			attrs = append(attrs, kv[0], kv[1])
		}
	}
	if ev.TookMS != 0 {
		attrs = append(attrs, "took_ms", ev.TookMS)
	}
	// A failed connection is what `journalctl -p err` is asked for.
	level := slog.LevelInfo
	if ev.Event == report.EventError {
		level = slog.LevelError
	}
	log.Log(context.Background(), level, ev.Event, attrs...)
}

// restoreLeftoverDNS undoes the DNS settings of a daemon that died without
// cleaning up (its resolv.conf rewrite, its resolvconf record).
func restoreLeftoverDNS(log *slog.Logger) {
	done, err := tun.RestoreDNS(tun.DefaultStateDir)
	for _, p := range done {
		log.Info("DNS settings of an earlier run restored", "state", p)
	}
	switch {
	case err == nil:
	case errors.Is(err, os.ErrPermission):
		log.Debug("DNS leftovers not checked", "err", err)
	default:
		log.Warn("DNS leftovers", "err", err)
	}
}
