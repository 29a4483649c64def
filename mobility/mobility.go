// Package mobility decides when and where an IKE SA moves (RFC 4555: the
// initiator decides). It turns interface events into candidate paths, tests
// them through the IKE SA, and moves the SA and its ESP traffic to the first
// that answers. It owns no socket: probes and updates go through the SA.
package mobility

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/netmon"
)

// SA is what mobility needs of an IKE SA; the daemon adapts *ike.SA.
type SA interface {
	// PeerAddresses lists the peer's addresses, the current one first.
	PeerAddresses() []netip.Addr
	// Move sends UPDATE_SA_ADDRESSES over the paths in turn (one request,
	// retransmitted round-robin: the answer is the path test) and moves the
	// SA to the path that answered.
	Move(ctx context.Context, paths []esp.Path) (Probe, error)
}

// Probe is where a move landed.
type Probe struct {
	Path     esp.Path // as the answer arrived
	NATLocal bool     // a NAT is in front of us on this path
}

// Move reports a completed path change.
type Move struct {
	From, To  esp.Path
	Interface string
	NAT       bool
	Took      time.Duration // from the triggering event to the SA's update
}

// Config wires a Mover to its SA and the rest of the connection.
type Config struct {
	SA SA
	// Addresses returns the usable local addresses (netmon.Monitor.Addresses).
	Addresses func() []netmon.Address
	// SetPath moves ESP (and NAT keepalives) to the path; called after the
	// SA accepted the update.
	SetPath func(esp.Path)
	// SetCurrent tells the monitor which address and uplink to watch for an
	// immediate loss.
	SetCurrent func(addr netip.Addr, ifindex int)
	// Interfaces is the profile's uplink preference, most preferred first;
	// empty means no preference (the current path is kept while it works).
	Interfaces []string
	// Activity reports when ESP was last sent and received on the current
	// path (esp.Peer.Activity); nil disables dead-path detection.
	Activity func() (sent, received time.Time)
	// DeadAfter is how long traffic may go out with nothing coming back
	// before the current path is tested (default DefaultDeadAfter).
	DeadAfter time.Duration
	// OnNATRefresh reports an update sent on the same path after it went
	// silent (a NAT that lost or changed its mapping); may be nil.
	OnNATRefresh func(path esp.Path, took time.Duration)
	// OnMove and OnProbe report for events and status; may be nil.
	OnMove  func(Move)
	OnProbe func(path esp.Path, ifname string, err error)
	Log     *slog.Logger
}

// DefaultDeadAfter is the silence that makes us test a path that has no
// interface event against it; about 40 RTTs of a typical uplink, short
// enough that a user sees a hiccup rather than an outage.
const DefaultDeadAfter = time.Second

// Mover runs the initiator's MOBIKE decisions for one SA.
type Mover struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	current esp.Path
	ifname  string
	// broken: the current path was lost and no other answered yet; the
	// next address that appears is tried at once.
	broken bool
	// lastCheck is when the current path was last tested for silence.
	lastCheck time.Time
}

// New makes a Mover; start is the SA's path now and ifname its uplink.
func New(cfg Config, start esp.Path, ifname string) *Mover {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mover{cfg: cfg, log: log, current: start, ifname: ifname}
}

// Current returns the path in use and its interface name.
func (m *Mover) Current() (esp.Path, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current, m.ifname
}

// Run follows the monitor's events until ctx ends or events closes.
func (m *Mover) Run(ctx context.Context, events <-chan netmon.Event) {
	cur, _ := m.Current()
	if m.cfg.SetCurrent != nil {
		m.cfg.SetCurrent(cur.Local.Addr(), cur.IfIndex)
	}
	var tick <-chan time.Time
	if m.cfg.Activity != nil {
		t := time.NewTicker(m.deadAfter() / 5)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			m.handle(ctx, ev)
		case now := <-tick:
			m.checkSilence(ctx, now)
		}
	}
}

func (m *Mover) deadAfter() time.Duration {
	if m.cfg.DeadAfter > 0 {
		return m.cfg.DeadAfter
	}
	return DefaultDeadAfter
}

// checkSilence tests the current path when traffic has been going out with
// nothing coming back for longer than DeadAfter: an upstream failure or a
// NAT that lost our mapping gives no interface event. If the path still
// answers, an UPDATE_SA_ADDRESSES from it tells the gateway our (possibly
// new) NAT mapping; if not, the other paths are tried.
func (m *Mover) checkSilence(ctx context.Context, now time.Time) {
	sent, received := m.cfg.Activity()
	window := m.deadAfter()
	m.mu.Lock()
	last := m.lastCheck
	m.mu.Unlock()
	if sent.Sub(received) < window || now.Sub(sent) > window || sent.Sub(last) < window {
		return
	}
	m.mu.Lock()
	m.lastCheck = now
	m.mu.Unlock()
	// The current path first: if it answers, the update tells the gateway
	// our NAT mapping as it is now; otherwise the others are tried.
	cur, curIf := m.Current()
	cands := []candidate{{path: cur, ifname: curIf}}
	for _, c := range m.candidates(true) {
		cands = append(cands, c)
	}
	m.moveTo(ctx, time.Now(), cur, cands)
}

func (m *Mover) handle(ctx context.Context, ev netmon.Event) {
	cur, _ := m.Current()
	switch e := ev.(type) {
	// The monitor's Current flag describes the path when the event was
	// made; after a move it can be stale (the link-down and the address
	// removal of one uplink arrive one after the other), so the Mover's
	// own path decides.
	case netmon.AddressRemoved:
		if e.Addr == cur.Local.Addr() {
			m.reselect(ctx, e.At, true)
		}
	case netmon.LinkDown:
		if e.IfIndex == cur.IfIndex {
			m.reselect(ctx, e.At, true)
		}
	case netmon.Snapshot:
		m.mu.Lock()
		broken := m.broken
		m.mu.Unlock()
		if broken {
			m.reselect(ctx, e.At, true)
			return
		}
		// A new or returning uplink: move if it is preferred over ours
		// (make-before-break: the old path keeps working meanwhile).
		if m.preferredAvailable() {
			m.reselect(ctx, e.At, false)
		}
	case netmon.ClockJump:
		// After a suspend every NAT binding may be gone; test where we are.
		m.reselect(ctx, e.At, false)
	}
}

// preferredAvailable reports whether a usable address sits on an uplink the
// profile prefers over the current one.
func (m *Mover) preferredAvailable() bool {
	_, ifname := m.Current()
	curRank := m.rank(ifname)
	for _, a := range m.cfg.Addresses() {
		if m.rank(a.IfName) < curRank {
			return true
		}
	}
	return false
}

// rank orders interfaces by the profile's preference; unlisted ones come
// after listed ones, all equal.
func (m *Mover) rank(ifname string) int {
	if i := slices.Index(m.cfg.Interfaces, ifname); i >= 0 {
		return i
	}
	return len(m.cfg.Interfaces)
}

type candidate struct {
	path   esp.Path
	ifname string
}

// candidates lists every usable local address with every peer address of
// the same family, preferred uplinks first; the current path's remote port
// is kept (4500 after the float).
func (m *Mover) candidates(lost bool) []candidate {
	cur, curIf := m.Current()
	peers := m.cfg.SA.PeerAddresses()
	if len(peers) == 0 {
		peers = []netip.Addr{cur.Remote.Addr()}
	}
	var out []candidate
	for _, a := range m.cfg.Addresses() {
		for _, p := range peers {
			// Only global unicast peer addresses make paths: an announced
			// link-local or loopback address cannot be reached from here.
			if a.Addr.Is4() != p.Is4() || !p.IsGlobalUnicast() {
				continue
			}
			path := esp.Path{
				Local:   netip.AddrPortFrom(a.Addr, cur.Local.Port()),
				Remote:  netip.AddrPortFrom(p, cur.Remote.Port()),
				IfIndex: a.IfIndex,
			}
			if lost && path.Local.Addr() == cur.Local.Addr() && path.IfIndex == cur.IfIndex && path.Remote == cur.Remote {
				continue // the path that just broke
			}
			out = append(out, candidate{path: path, ifname: a.IfName})
		}
	}
	slices.SortStableFunc(out, func(a, b candidate) int {
		ra, rb := m.rank(a.ifname), m.rank(b.ifname)
		if ra != rb {
			return ra - rb
		}
		// Without a preference, stay on the current uplink when possible.
		if (a.ifname == curIf) != (b.ifname == curIf) {
			if a.ifname == curIf {
				return -1
			}
			return 1
		}
		return 0
	})
	return out
}

// ErrNoPath is returned when no candidate path answers.
var ErrNoPath = errors.New("mobility: no working path")

// reselect moves the SA to the best candidate path that answers. lost says
// the current path is gone; otherwise only uplinks preferred over the
// current one are candidates.
func (m *Mover) reselect(ctx context.Context, trigger time.Time, lost bool) error {
	cur, curIf := m.Current()
	var cands []candidate
	for _, c := range m.candidates(lost) {
		if !lost && m.rank(c.ifname) >= m.rank(curIf) {
			break
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		if lost {
			m.markBroken()
			return ErrNoPath
		}
		return nil
	}
	return m.moveTo(ctx, trigger, cur, cands)
}

func (m *Mover) markBroken() {
	m.mu.Lock()
	m.broken = true
	m.mu.Unlock()
}

// moveTo runs one update over the candidates and adopts the path that
// answered.
func (m *Mover) moveTo(ctx context.Context, trigger time.Time, cur esp.Path, cands []candidate) error {
	paths := make([]esp.Path, len(cands))
	for i, c := range cands {
		paths[i] = c.path
	}
	res, err := m.cfg.SA.Move(ctx, paths)
	if m.cfg.OnProbe != nil {
		m.cfg.OnProbe(cands[0].path, cands[0].ifname, err)
	}
	if err != nil {
		m.log.Info("no candidate path answered", "candidates", len(cands), "err", err)
		m.markBroken()
		return fmt.Errorf("%w: %v", ErrNoPath, err)
	}
	to := res.Path
	ifname := cands[0].ifname
	for _, c := range cands {
		if c.path.IfIndex == to.IfIndex && c.path.Local.Addr() == to.Local.Addr() {
			ifname = c.ifname
			break
		}
	}
	m.cfg.SetPath(to)
	if m.cfg.SetCurrent != nil {
		m.cfg.SetCurrent(to.Local.Addr(), to.IfIndex)
	}
	m.mu.Lock()
	m.current, m.ifname, m.broken = to, ifname, false
	m.mu.Unlock()
	if to == cur {
		if m.cfg.OnNATRefresh != nil {
			m.cfg.OnNATRefresh(to, time.Since(trigger))
		}
		return nil
	}
	if m.cfg.OnMove != nil {
		m.cfg.OnMove(Move{From: cur, To: to, Interface: ifname, NAT: res.NATLocal, Took: time.Since(trigger)})
	}
	return nil
}
