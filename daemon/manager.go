package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/roam-vpn/roam/internal/undo"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
)

// Manager owns the connections of a daemon, one per profile name.
type Manager struct {
	dial DialFunc
	log  *slog.Logger
	// state is where connections record how to undo their changes.
	state undo.Dir
	hub   *hub

	mu     sync.Mutex
	conns  map[string]*entry
	closed bool
	idle   chan struct{}
	wg     sync.WaitGroup // watchers
}

// entry is a profile that is connecting (tunnel nil) or connected.
type entry struct {
	name    string
	gateway string
	cancel  context.CancelFunc // aborts the dial
	tunnel  Tunnel
	gone    chan struct{} // closed once the entry left the map
	// captive is the login page of a captive portal the connect waits
	// behind (its captive-portal event), under Manager.mu.
	captive string
}

// ManagerOption configures a Manager.
type ManagerOption func(*Manager)

// WithLogger sets the manager's logger (default slog.Default()).
func WithLogger(l *slog.Logger) ManagerOption { return func(m *Manager) { m.log = l } }

// WithClock sets the clock that stamps events (tests).
func WithClock(now func() time.Time) ManagerOption {
	return func(m *Manager) { m.hub.now = now }
}

// NewManager returns a manager that connects profiles with dial.
func NewManager(dial DialFunc, opts ...ManagerOption) *Manager {
	m := &Manager{
		dial:  dial,
		log:   slog.Default(),
		hub:   newHub(time.Now),
		conns: make(map[string]*entry),
		idle:  make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// ErrAlreadyConnected is returned by Connect for a profile that is connected
// or connecting.
var ErrAlreadyConnected = errors.New("already connected")

// ErrNotConnected is returned for a profile the manager does not hold.
var ErrNotConnected = errors.New("not connected")

// ErrShuttingDown is returned by Connect once Close has begun.
var ErrShuttingDown = errors.New("daemon is shutting down")

// Connect dials p and returns once the tunnel is established or has failed.
// progress, if not nil, receives the profile's events until Connect returns.
// ctx bounds only the establishment.
func (m *Manager) Connect(ctx context.Context, p *config.Profile, progress func(Event)) (Status, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Status{}, ErrShuttingDown
	}
	if _, ok := m.conns[p.Name]; ok {
		m.mu.Unlock()
		return Status{}, ErrAlreadyConnected
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e := &entry{name: p.Name, gateway: p.Gateway, cancel: cancel, gone: make(chan struct{})}
	m.conns[p.Name] = e
	m.mu.Unlock()

	// progress is only valid during this call; later events still go to
	// subscribers.
	var progMu sync.Mutex
	live := progress != nil
	emit := func(ev Event) {
		if ev.Profile == "" {
			ev.Profile = p.Name
		}
		if ev.Event == report.EventCaptivePortal {
			m.mu.Lock()
			e.captive = ev.To
			m.mu.Unlock()
		}
		ev = m.publish(ev)
		progMu.Lock()
		defer progMu.Unlock()
		if live {
			progress(ev)
		}
	}
	t, err := m.dial(report.WithLogger(report.WithStateDir(dctx, m.state), m.log), p, emit)
	progMu.Lock()
	live = false
	progMu.Unlock()
	if err == nil && dctx.Err() != nil {
		// Disconnect or shutdown raced with a dial that succeeded anyway.
		closeCtx, cancelClose := context.WithTimeout(context.Background(), closeGrace)
		t.Close(closeCtx)
		cancelClose()
		err = fmt.Errorf("connect cancelled: %w", context.Cause(dctx))
	}
	if err != nil {
		m.remove(e, Event{Profile: p.Name, Event: report.EventError, Reason: err.Error()})
		return Status{}, err
	}
	m.mu.Lock()
	e.tunnel = t
	m.wg.Add(1)
	m.mu.Unlock()
	go m.watch(e)
	return t.Status(), nil
}

func (m *Manager) publish(ev Event) Event {
	ev = m.hub.publish(ev)
	logEvent(m.log, ev)
	return ev
}

// closeGrace bounds the tear-down of one tunnel.
const closeGrace = 5 * time.Second

// watch waits for the tunnel to end, whoever ended it.
func (m *Manager) watch(e *entry) {
	defer m.wg.Done()
	<-e.tunnel.Done()
	ev := Event{Profile: e.name, Event: report.EventDisconnected}
	if err := e.tunnel.Err(); err != nil {
		ev.Reason = err.Error()
	}
	m.remove(e, ev)
}

// remove forgets the connection, then says why with last, then lets those
// waiting for it go. In that order: whoever hears last and asks for status
// no longer finds the connection, and an auto-exit daemon does not stop
// before last is out.
func (m *Manager) remove(e *entry, last Event) {
	m.mu.Lock()
	if m.conns[e.name] == e {
		delete(m.conns, e.name)
	}
	m.mu.Unlock()
	m.publish(last)
	m.mu.Lock()
	defer m.mu.Unlock()
	close(e.gone)
	if len(m.conns) == 0 {
		select {
		case m.idle <- struct{}{}:
		default:
		}
	}
}

// Idle receives a value each time the last connection (or connection
// attempt) ends; an auto-exit daemon stops then.
func (m *Manager) Idle() <-chan struct{} { return m.idle }

// Active is the number of connections, including those still connecting.
func (m *Manager) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}

// Disconnect closes the named connection (or aborts its dial) and waits
// until it is gone.
func (m *Manager) Disconnect(ctx context.Context, name string) error {
	m.mu.Lock()
	e, ok := m.conns[name]
	m.mu.Unlock()
	if !ok {
		return ErrNotConnected
	}
	return m.disconnect(ctx, e)
}

func (m *Manager) disconnect(ctx context.Context, e *entry) error {
	m.mu.Lock()
	t := e.tunnel
	m.mu.Unlock()
	if t == nil {
		e.cancel()
	} else if err := t.Close(ctx); err != nil {
		m.log.Warn("close", "profile", e.name, "err", err)
	}
	select {
	case <-e.gone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("still closing: %w", ctx.Err())
	}
}

// DisconnectAll closes every connection in parallel and returns the names
// it closed.
func (m *Manager) DisconnectAll(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	entries := make([]*entry, 0, len(m.conns))
	for _, e := range m.conns {
		entries = append(entries, e)
	}
	m.mu.Unlock()
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Go(func() {
			if err := m.disconnect(ctx, e); err != nil {
				errs[i] = fmt.Errorf("%s: %w", e.name, err)
			}
		})
	}
	wg.Wait()
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.name
	}
	sort.Strings(names)
	return names, errors.Join(errs...)
}

// Status reports the named connection, or all of them (name "") sorted by
// name.
func (m *Manager) Status(name string) ([]Status, error) {
	m.mu.Lock()
	var entries []*entry
	for n, e := range m.conns {
		if name == "" || n == name {
			entries = append(entries, e)
		}
	}
	tunnels := make([]Tunnel, len(entries))
	captives := make([]string, len(entries))
	for i, e := range entries {
		tunnels[i], captives[i] = e.tunnel, e.captive
	}
	m.mu.Unlock()
	if name != "" && len(entries) == 0 {
		return nil, ErrNotConnected
	}
	out := make([]Status, len(entries))
	for i, e := range entries {
		if tunnels[i] == nil {
			out[i] = Status{Name: e.name, State: report.StateConnecting, Gateway: e.gateway}
			if captives[i] != "" {
				// The connect waits behind a portal (captive.go).
				out[i].CaptivePortal = captives[i]
				out[i].Health, out[i].HealthReason = report.HealthCaptivePortal, report.CaptiveReason(captives[i])
			}
			continue
		}
		out[i] = tunnels[i].Status()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Subscribe streams every event from now on until ctx ends. A reader that
// falls far behind loses events rather than stalling the tunnels.
func (m *Manager) Subscribe(ctx context.Context) <-chan Event { return m.hub.subscribe(ctx) }

// Close refuses new connections, closes every tunnel and waits for them,
// bounded by ctx.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	_, err := m.DisconnectAll(ctx)
	if !waitOrDone(ctx, &m.wg) {
		return fmt.Errorf("tunnels still closing: %w", ctx.Err())
	}
	return err
}

// waitOrDone waits for wg or for ctx to end, whichever comes first, and
// reports whether wg's goroutines finished.
func waitOrDone(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
