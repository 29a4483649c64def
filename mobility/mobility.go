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
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// SA is what mobility needs of an IKE SA; the daemon adapts *ike.SA.
type SA interface {
	// PeerAddresses lists the peer's addresses, the current one first.
	PeerAddresses() []netip.Addr
	// Move sends UPDATE_SA_ADDRESSES over the paths in turn (one request,
	// retransmitted round-robin: the answer is the path test) and moves the
	// SA to the path that answered. A failed Move must leave the SA usable:
	// the Mover tries again later. A Move while another is in flight (only
	// for a switch) replaces that one's paths, sends over the first of
	// them at once, and both end with the same outcome.
	Move(ctx context.Context, paths []netpath.Path) (Probe, error)
}

// Probe is where a move landed.
type Probe struct {
	Path     netpath.Path // as the answer arrived
	NATLocal bool         // a NAT is in front of us on this path
}

// Conn is what a Mover asks of the connection whose path it moves.
type Conn interface {
	SA
	// Addresses returns the usable local addresses (netmon.Monitor.Addresses).
	Addresses() []netmon.Address
	// Traffic is the dataplane's account of the current path (esp.Peer);
	// nil disables dead-path detection.
	Traffic() Traffic
	// RTT returns the smoothed round-trip time and its variation of a
	// path (ike.SA.RTT); ok false: not measured, DeadAfter alone then
	// decides.
	RTT(netpath.Path) (srtt, rttvar time.Duration, ok bool)
	// Report tells the connection what the Mover did or found, for its
	// events, status and supervision. It must not block; Suspect comes
	// from a timer's goroutine, the others from Run's.
	Report(Report)
}

// Traffic is what dead-path detection reads of the dataplane, on its
// tick.
type Traffic interface {
	// Activity reports when ESP was last sent and received on the
	// current path.
	Activity() (sent, received time.Time)
	// TakeStray reports, once, a path on which authenticated ESP came
	// from the gateway's address but another port.
	TakeStray() (netpath.Path, bool)
}

// Report is one of Move, PathTest, NATRefresh, Suspend, Resume, Suspect
// and OutageEnd.
type Report interface{ report() }

// Move reports a completed path change.
type Move struct {
	From, To  netpath.Path
	Interface string
	NAT       bool
	Took      time.Duration // from the triggering event to the SA's update
	// Switched: the gateway asked for this move (SwitchTo).
	Switched bool
}

// PathTest reports the outcome of an update: Path is the first path it
// tried, over the uplink Interface; Err is nil when a path answered.
type PathTest struct {
	Path      netpath.Path
	Interface string
	Err       error
}

// NATRefresh reports an update sent on the same path after it went silent
// (a NAT that lost or changed its mapping).
type NATRefresh struct {
	Path netpath.Path
	Took time.Duration
}

// Suspend reports that no path works (every address gone, every candidate
// silent, or the system slept); the connection should stop sending until
// Resume (after the path is Set) says a path works again. The IKE SA is
// kept.
type Suspend struct{ Reason string }

// Resume reports that traffic flows again after an outage (Suspend).
type Resume struct {
	Path      netpath.Path
	Interface string
	// Took runs from the event that made a path available again (an
	// address appeared, the system woke up) to the SA's update.
	Took time.Duration
	// Outage is how long there was no working path, time spent suspended
	// included.
	Outage time.Duration
}

// Suspect reports that a test of the current path went unanswered for
// Config.SuspectAfter with no ESP from the gateway meanwhile (the
// liveness watch, see liveness): the gateway may have lost the SA.
type Suspect struct{ Reason string }

// OutageEnd reports that the outage lasted OutageLimit; the Mover has
// stopped and the connection should end with Err as its reason.
type OutageEnd struct{ Err error }

func (Move) report()       {}
func (PathTest) report()   {}
func (NATRefresh) report() {}
func (Suspend) report()    {}
func (Resume) report()     {}
func (Suspect) report()    {}
func (OutageEnd) report()  {}

// Config is a Mover's configuration: the profile's knobs.
type Config struct {
	// Interfaces is the profile's uplink preference, most preferred first;
	// empty means no preference (the current path is kept while it works).
	Interfaces []string
	// DeadAfter is how long traffic may go out with nothing coming back
	// before the current path is tested (default DefaultDeadAfter). With
	// an RTT it is the upper bound: a path with a measured RTT is tested
	// after SilenceWindow of it.
	DeadAfter time.Duration
	// OutageLimit is how long the connection may have no working path
	// before OutageEnd ends it (default DefaultOutageLimit).
	OutageLimit time.Duration
	// SuspectAfter is how long a test of the current path may go
	// unanswered, with no ESP from the gateway, before Suspect is
	// reported; 0 disables the liveness watch.
	SuspectAfter time.Duration
	// RejoinAfter is how long an update may go unanswered before a
	// change of the paths it would be planned with joins it at once
	// (rejoin; default DefaultRejoinAfter, past the engine's first
	// retransmission), as a packet was lost or the path does not work.
	RejoinAfter time.Duration
	Log         *slog.Logger
}

// DefaultDeadAfter is the longest silence that makes us test a path that
// has no interface event against it (a steady flow on a path with a
// measured RTT is tested sooner, see SilenceWindow): an upstream failure, a NAT that flushed its
// conntrack table or changed its public address. Recovery from those takes
// DeadAfter plus up to two ticks (DeadAfter/10 each, see Run) plus one RTT
// for the UPDATE_SA_ADDRESSES on the same path: about 0.6 s with a 21 ms
// RTT, inside the 1 s the issue asks for even when the first update is lost
// and retransmitted after ike.MoveRetransmit's 200 ms. Much shorter and
// ordinary jitter (a cellular uplink's RTT spikes to a few hundred ms)
// would test healthy paths; the backoff in checkSilence bounds what a false
// alarm costs.
const DefaultDeadAfter = 500 * time.Millisecond

// Dead-path detection in RTT time. Outbound traffic with nothing back for
// SilenceRTTs smoothed RTTs plus four variations (RFC 6298's retransmission
// timeout without its 1 s minimum, which is there for delayed ACKs) is
// suspicious. The estimate comes from IKE exchanges, whose answers include
// the gateway's crypto, so it errs long; a first estimate (rttvar half the
// sample) gives three RTTs; silenceFloor keeps a jittery or very short path from being
// tested on a scheduling hiccup, and DeadAfter caps the window. The short
// window only counts when at least silenceSends distinct sends were seen
// in it: on a path losing 5 % of packets each way a steady flow then
// needs three round trips lost in a row (about 1 in 1000 windows), while a
// sparse flow (one packet, then quiet) waits for DeadAfter as before.
//
// The floor is 70 ms. A NAT rebinding costs the window plus the round
// trips a gateway spends before its ESP reaches our new mapping (the
// update's way there, then strongSwan's Child SA rekey, then its ESP back:
// two; roam's gateway sends its ESP ahead with the update's answer, one),
// and about 25 ms of the NAT's flush and packets in flight: 70 ms keeps
// that under 150 ms at 21 ms RTT against either. With 60 ms, late ticks left out
// (checkSilence), the lab's healthy 1 ms path under a 10 ms ping was tested
// once in two runs at load average 20 (the answers themselves were late);
// 70 ms passed three runs at load average 5-7 on the 2-CPU machine (one path
// test in the lossy phase, none in the healthy one). The healed term below
// widens the window past the stalls a machine shows.
const (
	SilenceRTTs  = 1
	silenceFloor = 70 * time.Millisecond
	silenceSends = 3
	// healedMargin: the window is at least this many times the longest
	// recent silence that ended without a test.
	healedMargin = 2
	// silenceTick is how often the activity atomics are read.
	silenceTick = 10 * time.Millisecond
)

// SilenceWindow is how long outbound traffic may go unanswered on a path
// with the given RTT estimate before it is tested: max(SilenceRTTs*srtt +
// 4*rttvar, 70 ms), at most deadAfter.
func SilenceWindow(srtt, rttvar, deadAfter time.Duration) time.Duration {
	return min(max(SilenceRTTs*srtt+4*rttvar, silenceFloor), deadAfter)
}

// DefaultRejoinAfter is Config.RejoinAfter's default: past the first
// interval of ike.MoveRetransmit (200 ms), after which the engine has
// retransmitted, so a packet was lost or the path does not work. An
// update answered within it is left alone: its answer is on its way, and
// joining it would race that answer with a copy over the new path
// (against a gateway behind a NAT, one more round trip, see ike's
// "updating again"), where make-before-break after it costs one round
// trip over a path that works. The 100 ms past the retransmission are
// measured, not derived: joining at 200 ms, the moment of the engine's own
// retransmission, the joined copy went unanswered by strongSwan in 3 of 3
// lab runs of TestMOBIKEMoveTwiceAnswerLostStrongSwan (cause not found;
// the 3 s suspicion and a replacement SA recovered, 3.5-3.7 s), at 300 ms
// it was answered at once.
const DefaultRejoinAfter = 300 * time.Millisecond

// DefaultOutageLimit is how long a connection survives without a working
// path (every uplink down, or suspended) before it ends.
const DefaultOutageLimit = 30 * time.Minute

// Backoffs. After a silence check that found the path alive, the silence
// was not the path's fault (a one-way flow, a server that does not answer):
// the next check waits twice as long, up to maxSilenceBackoff, until ESP
// comes in again. While no path works but addresses exist (Wi-Fi associated,
// its upstream dead), all paths are retested after minRetry, doubling up to
// maxRetry; an address appearing or a wake-up retests at once.
const (
	maxSilenceBackoff = time.Minute
	minRetry          = 2 * time.Second
	maxRetry          = time.Minute
)

// ErrNoPath is returned when no candidate path answers.
var ErrNoPath = errors.New("mobility: no working path")

// ErrOutage is the reason a connection ends after OutageLimit without a
// working path.
var ErrOutage = errors.New("no usable network")

// Mover runs the initiator's MOBIKE decisions for one SA. It is the one
// that decides the connection's netpath.Current (the SA's own, which the
// SA confirms as an update's answer arrives): it names the path after the
// SA accepted an update (Set), and, when the current path is gone (its
// address or uplink went away), moves ESP at once to the first path the
// update tries (Try, see kick); the dataplane and the interface monitor
// follow it. Its other
// state belongs to the goroutine running Run; Current may be called from
// any goroutine.
type Mover struct {
	cfg  Config
	conn Conn
	log  *slog.Logger
	cur  *netpath.Current
	// traffic is conn's Traffic (nil: no dead-path detection).
	traffic Traffic

	mu sync.Mutex
	// switchTo is the gateway address SwitchTo asked for, taken by Run
	// when switchWake fires.
	switchTo   netip.Addr
	switchWake chan struct{}
	// retestWake asks Run to retest every path now (Retest).
	retestWake chan struct{}
	// testing mirrors moving for Testing (status, from any goroutine).
	testing atomic.Bool

	// At most one update is in flight (moving); triggers that arrive
	// meanwhile are merged into pending and run after it, with the
	// addresses of that moment. The exception is a gateway's switch
	// request: it joins the update in flight at once (the engine then
	// retransmits that update over the switch's paths), because the
	// gateway that asks may be about to lose its old address, and a path
	// test of it can take seconds. moveGen numbers the updates started, so
	// the result of one that was joined is not taken twice; movingReq is
	// what the update in flight was started for.
	moving    bool
	moveGen   uint64
	movingReq request
	pending   *request
	// movingKind and movingCands are what the update in flight is for
	// and tries, movingSent when it last went out over a new list (its
	// start, or the last join).
	movingKind  kind
	movingCands []candidate
	movingSent  time.Time
	// movingStranded: a snapshot since movingSent lacked the address the
	// update first went out from, so an answer to it may have been lost
	// even if the address is back (a flap of every uplink).
	movingStranded bool
	// rejoinAt: a snapshot came while an update was in flight (the
	// earliest since; zero: none), so the paths that update would be
	// planned with may have changed; rejoin checks once the update is
	// late, rejoinTimer wakes Run for that.
	rejoinAt    time.Time
	rejoinTimer *time.Timer

	// broken: no path works; outbound traffic is stopped (Suspend) and
	// every trigger retests all candidates. outageStart is when it began,
	// asleep how much suspended time the monotonic clock missed since.
	broken      bool
	outageStart time.Time
	asleep      time.Duration
	outage      *time.Timer
	retry       *time.Timer
	retryDelay  time.Duration

	// Dead-path detection (checkSilence).
	seenRecv   time.Time // the last inbound ESP time we saw
	unanswered time.Time // first outbound seen after seenRecv; zero: none
	lastCheck  time.Time
	backoff    time.Duration
	lastSent   time.Time // the last outbound time seen
	sends      int       // distinct outbound times seen since unanswered
	// lastTick is when checkSilence last ran, tickEvery the ticker's
	// period: a tick much later than that means this process was not
	// running (stalled, see checkSilence).
	lastTick  time.Time
	tickEvery time.Duration
	// healed is the longest recent silence of a flow that ended by
	// itself (an answer came without a test): the path's (or the
	// machine's) own jitter, which the window must outlast. It decays by
	// an eighth with every healed silence.
	healed time.Duration
}

// request is one reason to test paths.
type request struct {
	at time.Time // the earliest triggering event
	// lost: the current address (gone) or uplink (goneIf) went away. Both
	// are excluded from candidates, as the monitor's address list may lag
	// behind the event that reported the loss.
	lost   bool
	gone   []netip.Addr
	goneIf []int
	// refresh: test the current path first (silence, wake-up).
	refresh bool
	// better: a preferred uplink may be usable (make-before-break).
	better bool
	// retry: no path works; test them all.
	retry bool
	// via: the peer's traffic arrives from another port of its address
	// (a NAT in front of it moved): test that path first.
	via *netpath.Path
	// switchTo: the gateway asked us to move to this address of its
	// (SWITCH_TO_IP_ADDRESS): the newest request wins.
	switchTo netip.Addr
}

func (r *request) merge(o request) {
	if o.at.Before(r.at) {
		r.at = o.at
	}
	r.lost = r.lost || o.lost
	r.gone = append(r.gone, o.gone...)
	r.goneIf = append(r.goneIf, o.goneIf...)
	r.refresh = r.refresh || o.refresh
	r.better = r.better || o.better
	r.retry = r.retry || o.retry
	if o.via != nil {
		r.via = o.via
	}
	if o.switchTo.IsValid() {
		r.switchTo = o.switchTo
	}
}

type candidate struct {
	path   netpath.Path
	ifname string
}

// result is a finished update, handed back to Run.
type result struct {
	kind  kind
	gen   uint64    // Mover.moveGen when it started
	at    time.Time // the triggering event
	from  netpath.Path
	cands []candidate
	probe Probe
	err   error
	// early: ESP was moved to cands[0] when the update started (kick).
	early bool
}

// New makes a Mover of conn's SA that owns cur, which holds the SA's path
// now.
func New(cfg Config, conn Conn, cur *netpath.Current) *Mover {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mover{cfg: cfg, conn: conn, traffic: conn.Traffic(), log: log, cur: cur, switchWake: make(chan struct{}, 1),
		retestWake: make(chan struct{}, 1)}
}

// SwitchTo moves the SA to the gateway's address to (same port) at once,
// as the gateway asked with SWITCH_TO_IP_ADDRESS and the SA accepted: the
// path from the current local address is tested first, then those from
// the other addresses. It does not block; it joins an update in flight
// (SA.Move must then replace that update's paths, as the engine does), and
// of several requests the newest wins. Should to not answer,
// the current path and the others are tested as after a silence.
func (m *Mover) SwitchTo(to netip.Addr) {
	m.mu.Lock()
	m.switchTo = to.Unmap()
	m.mu.Unlock()
	select {
	case m.switchWake <- struct{}{}:
	default:
	}
}

// takeSwitch turns the address SwitchTo left into a request.
func (m *Mover) takeSwitch(now time.Time) {
	m.mu.Lock()
	to := m.switchTo
	m.switchTo = netip.Addr{}
	m.mu.Unlock()
	if to.IsValid() {
		m.log.Info("gateway asks to switch", "to", to)
		m.want(request{at: now, switchTo: to})
	}
}

// Retest tests every path now instead of at the next retry, while no
// path works: something outside IKE says the network may have opened (a
// captive portal let us through). It does not block; it does nothing while
// a path works.
func (m *Mover) Retest() {
	select {
	case m.retestWake <- struct{}{}:
	default:
	}
}

// Current returns the path in use and its interface name.
func (m *Mover) Current() (netpath.Path, string) {
	s := m.cur.Load()
	return s.Path, s.IfName
}

// Testing reports whether a path test (an UPDATE_SA_ADDRESSES) that puts
// the current path in doubt is in flight: until it is answered, whether the
// tunnel works is not known. A test of a preferred uplink while the current
// path works (make-before-break) does not count.
func (m *Mover) Testing() bool { return m.testing.Load() }

// Run follows the monitor's events until ctx ends, events closes, or the
// outage limit ends the connection.
func (m *Mover) Run(ctx context.Context, events <-chan netmon.Event) {
	// The tick only reads two atomics (and the RTT under a short lock);
	// silenceTick keeps the detection delay within the RTT window plus
	// two ticks.
	var tick <-chan time.Time
	if m.traffic != nil {
		m.tickEvery = min(max(m.deadAfter()/10, 10*time.Millisecond), silenceTick)
		t := time.NewTicker(m.tickEvery)
		defer t.Stop()
		tick = t.C
	}
	defer func() {
		stopTimer(m.outage)
		stopTimer(m.retry)
		stopTimer(m.rejoinTimer)
		m.testing.Store(false) // an update in flight ends with Run
	}()
	results := make(chan result, 1)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if m.handle(ev) {
				return
			}
		case now := <-tick:
			m.checkSilence(now)
			m.checkStray(now)
		case r := <-results:
			m.finish(ctx, r)
		case <-timerC(m.outage):
			if m.outageOver() {
				return
			}
		case now := <-timerC(m.retry):
			m.want(request{at: now, retry: true})
		case <-timerC(m.rejoinTimer):
			m.rejoinTimer = nil // rejoin, in kick below
		case <-m.switchWake:
			m.takeSwitch(time.Now())
		case <-m.retestWake:
			if m.broken {
				m.want(request{at: time.Now(), retry: true})
			}
		}
		m.kick(ctx, results)
	}
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (m *Mover) deadAfter() time.Duration {
	if m.cfg.DeadAfter > 0 {
		return m.cfg.DeadAfter
	}
	return DefaultDeadAfter
}

func (m *Mover) outageLimit() time.Duration {
	if m.cfg.OutageLimit > 0 {
		return m.cfg.OutageLimit
	}
	return DefaultOutageLimit
}

// want records a reason to test paths; kick acts on it.
func (m *Mover) want(r request) {
	if m.pending == nil {
		m.pending = &r
		return
	}
	m.pending.merge(r)
}

// handle turns one monitor event into requests; it reports whether the
// outage limit ended the connection.
func (m *Mover) handle(ev netmon.Event) (ended bool) {
	cur, _ := m.Current()
	switch e := ev.(type) {
	// The monitor's Current flag describes the path when the event was
	// made; after a move it can be stale (the link-down and the address
	// removal of one uplink arrive one after the other), so the Mover's
	// own path decides.
	case netmon.AddressRemoved:
		if e.Addr == cur.Local.Addr() {
			m.want(request{at: e.At, lost: true, gone: []netip.Addr{e.Addr}})
		}
	case netmon.LinkDown:
		if e.IfIndex == cur.IfIndex {
			m.want(request{at: e.At, lost: true, goneIf: []int{e.IfIndex}})
		}
	case netmon.Snapshot:
		// The snapshot is the monitor's whole view: exclusions made for
		// its earlier events are moot (the uplink may be back already).
		if m.pending != nil {
			m.pending.gone, m.pending.goneIf = nil, nil
		}
		switch {
		case len(m.conn.Addresses()) == 0:
			m.suspend("no usable network address", e.At)
		case m.broken:
			// Retest; should the update in flight land on a less
			// preferred uplink meanwhile, better moves on afterwards.
			m.want(request{at: e.At, retry: true, better: true})
		case m.preferredAvailable() || m.preferredOverUpdate():
			// A new or returning uplink preferred over ours, or over the
			// one the update in flight moves us to: move while the old
			// path keeps working (make-before-break).
			m.want(request{at: e.At, better: true})
		}
		if m.moving && m.rejoinAt.IsZero() {
			m.rejoinAt = e.At
		}
		if m.moving && m.firstCopyStranded() {
			m.movingStranded = true
		}
	case netmon.Wake:
		return m.wake(e)
	}
	return false
}

// WakePrefix starts the Suspend reason after a wake-up (see wake).
const WakePrefix = "woke up: "

// wake handles a wake-up: the system was suspended or the process stopped
// for longer than a NAT mapping lives (netmon.Wake). Every NAT binding may
// be gone, so the current path is tested before anything else is sent.
// Time suspended counts towards the outage limit, which the monotonic
// timers did not see pass; time stopped they did see.
func (m *Mover) wake(e netmon.Wake) (ended bool) {
	if !m.broken {
		var why string
		switch {
		case e.Suspended > 0 && e.Stopped > 0:
			why = fmt.Sprintf("system suspended for %v, process stopped for %v", roundDuration(e.Suspended), roundDuration(e.Stopped))
		case e.Suspended > 0:
			why = fmt.Sprintf("system suspended for %v", roundDuration(e.Suspended))
		default:
			why = fmt.Sprintf("process stopped for %v", roundDuration(e.Stopped))
		}
		m.suspend(WakePrefix+why, time.Now())
	}
	if e.Suspended > 0 {
		m.asleep += e.Suspended
		if m.outageOver() {
			return true
		}
	}
	m.want(request{at: e.At, refresh: true})
	return false
}

// suspend enters the outage state; nothing is sent until a path answers.
// since is when the last path was lost (the triggering event).
func (m *Mover) suspend(reason string, since time.Time) {
	if m.broken {
		return
	}
	now := time.Now()
	if since.IsZero() || since.After(now) {
		since = now
	}
	m.broken = true
	m.outageStart = since
	m.asleep = 0
	m.retryDelay = minRetry
	stopTimer(m.outage)
	m.outage = time.NewTimer(max(m.outageLimit()-now.Sub(since), 0))
	m.log.Info("no working path", "reason", reason)
	m.conn.Report(Suspend{Reason: reason})
}

func (m *Mover) outageElapsed() time.Duration {
	return time.Since(m.outageStart) + m.asleep
}

// outageOver ends the connection when the outage has lasted the limit, or
// re-arms the timer for the rest (time asleep shortens it).
func (m *Mover) outageOver() bool {
	if !m.broken {
		return false
	}
	elapsed, limit := m.outageElapsed(), m.outageLimit()
	if elapsed < limit {
		stopTimer(m.outage)
		m.outage = time.NewTimer(limit - elapsed)
		return false
	}
	err := fmt.Errorf("%w for %v", ErrOutage, roundDuration(elapsed))
	m.log.Warn("giving up", "err", err)
	m.conn.Report(OutageEnd{Err: err})
	return true
}

func roundDuration(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// checkSilence tests the current path when traffic has been going out with
// nothing coming back for DeadAfter: an upstream failure or a NAT that lost
// our mapping gives no interface event. If the path still answers, the
// update from it tells the gateway our (possibly new) NAT mapping; if not,
// the other paths are tried.
//
// An idle tunnel never triggers a check: only outbound ESP sent after the
// last inbound one starts the window, the first reply resets it, and the
// traffic must still be going out when the window ends. A check that found
// the path alive doubles the wait before the next one until ESP comes in
// again, so a one-way flow costs a few updates, not a storm.
func (m *Mover) checkSilence(now time.Time) {
	// A tick that comes more than a period late means this process was
	// not running: the gateway's answers may be waiting unread in the
	// socket, and the receiving goroutine catches up as we run again. So
	// the silence is judged at the next tick, not this one. On the shared
	// lab machine such stalls of 60 ms and more are common, and without
	// this they alone tested healthy paths. Counting the stall out of the
	// silence instead stretched the window on a busy machine by its load
	// (NAT rebinding found after dead_after instead of the window).
	late := !m.lastTick.IsZero() && m.tickEvery > 0 && now.Sub(m.lastTick) > 2*m.tickEvery
	m.lastTick = now
	if m.broken || m.moving || late {
		return // retests are driven by events and the retry timer
	}
	sent, recv := m.traffic.Activity()
	dead := m.deadAfter()
	window := m.silenceWindow()
	if m.backoff < dead {
		m.backoff = dead
	}
	if !recv.Equal(m.seenRecv) {
		if !m.unanswered.IsZero() && m.sends >= silenceSends {
			m.healed = max(recv.Sub(m.unanswered), m.healed-m.healed/8)
		}
		m.seenRecv, m.unanswered, m.backoff = recv, time.Time{}, dead
	}
	if !sent.After(recv) {
		m.unanswered, m.sends = time.Time{}, 0
		return
	}
	if m.unanswered.IsZero() {
		m.unanswered, m.sends = sent, 0
	}
	if !sent.Equal(m.lastSent) {
		m.lastSent = sent
		m.sends++
	}
	silent := now.Sub(m.unanswered)
	// The RTT window needs a flow (several sends); DeadAfter the legacy
	// evidence of two.
	due := (silent >= window && m.sends >= silenceSends) || (silent >= dead && m.sends >= 2)
	if !due || now.Sub(sent) >= dead || now.Sub(m.lastCheck) < m.backoff {
		return
	}
	m.lastCheck = now
	m.backoff = min(2*m.backoff, maxSilenceBackoff)
	// The window's terms, so a log tells whether the RTT estimate or the
	// machine's healed stalls widened it past the floor.
	m.log.Info("path silent", "since", m.unanswered, "last_received", recv, "window", window, "sends", m.sends, "healed", m.healed)
	m.want(request{at: now, refresh: true})
}

// silenceWindow is the current path's RTT window (SilenceWindow), or
// DeadAfter when its RTT is not known.
func (m *Mover) silenceWindow() time.Duration {
	dead := m.deadAfter()
	cur, _ := m.Current()
	srtt, rttvar, ok := m.conn.RTT(cur)
	if !ok {
		return dead
	}
	return min(max(SilenceWindow(srtt, rttvar, dead), healedMargin*m.healed), dead)
}

// checkStray follows a NAT in front of the gateway that changed its
// mapping: authenticated ESP arriving from another port of the gateway's
// address is where our updates should go now.
func (m *Mover) checkStray(now time.Time) {
	if m.traffic == nil || m.broken || m.moving {
		return
	}
	p, ok := m.traffic.TakeStray()
	if !ok {
		return
	}
	cur, _ := m.Current()
	if p.Remote == cur.Remote || p.Remote.Addr() != cur.Remote.Addr() {
		return
	}
	via := cur
	via.Remote = p.Remote
	m.log.Info("gateway's traffic comes from another port", "from", p.Remote.String(), "expected", cur.Remote.String())
	m.want(request{at: now, refresh: true, via: &via})
}

// kick joins a late update in flight to a changed list of paths (rejoin)
// and starts the pending request unless an update is in flight.
func (m *Mover) kick(ctx context.Context, results chan<- result) {
	if ctx.Err() != nil {
		return
	}
	m.rejoin(ctx, results)
	if m.pending == nil {
		return
	}
	if m.moving && !m.pending.switchTo.IsValid() && !m.lossJoins() {
		return
	}
	req := *m.pending
	m.pending = nil
	if m.moving {
		// A switch or a loss joins the update in flight: what made that
		// one start (an address or uplink gone) still holds for the new
		// paths.
		req.gone = append(req.gone, m.movingReq.gone...)
		req.goneIf = append(req.goneIf, m.movingReq.goneIf...)
	}
	k, cands := m.plan(req)
	if len(cands) == 0 {
		if k == kindLost {
			m.suspend("no usable network address", req.at)
		}
		return
	}
	m.start(ctx, results, k, req, cands)
}

// start sends an update for req over cands, or joins the one in flight
// with them (SA.Move replaces its paths): the result of the newest is the
// one taken.
func (m *Mover) start(ctx context.Context, results chan<- result, k kind, req request, cands []candidate) {
	cur, _ := m.Current()
	m.moving = true
	m.testing.Store(k != kindBetter)
	m.moveGen++
	m.movingReq = req
	m.movingKind, m.movingCands, m.movingSent = k, cands, time.Now()
	m.movingStranded = false
	m.rejoinAt = time.Time{}
	stopTimer(m.rejoinTimer)
	m.rejoinTimer = nil
	gen := m.moveGen
	paths := make([]netpath.Path, len(cands))
	for i, c := range cands {
		paths[i] = c.path
	}
	// The current path is gone: ESP follows the update onto the first
	// path it tries instead of waiting a round trip for the answer. The
	// update goes out first and its answer is the return routability
	// check (RFC 4555 3.5): until the gateway has taken it, its ESP still
	// goes to the lost path, so nothing is lost that waiting would have
	// saved, and the gateway finds the SPI of our ESP whatever the source.
	// Should another path answer, finish moves ESP there.
	early := k == kindLost && !m.broken
	watch := m.watchLiveness(cur, paths)
	go func() {
		p, err := m.conn.Move(ctx, paths)
		watch.stop()
		// Several may be in flight (a switch joins one); none may outlive
		// Run.
		select {
		case results <- result{kind: k, gen: gen, at: req.at, from: cur, cands: cands, probe: p, err: err, early: early}:
		case <-ctx.Done():
		}
	}()
	if early {
		m.log.Debug("current path gone: ESP on the first candidate at once", "path", paths[0].Local.String(), "gateway", paths[0].Remote.String())
		m.cur.Try(paths[0])
	}
}

// rejoin joins the update in flight when the paths it would be planned
// with now differ from those it tries (an uplink came back or appeared,
// one of its paths went), once it is late: unanswered for RejoinAfter,
// its answers lost or its uplink blackholed. It is called again with the
// new list (SA.Move: the engine retransmits the update, same message ID,
// over the new first path at once), so a returning preferred uplink is
// taken one round trip after it appeared rather than after the ten
// seconds the old update takes to fail. Updates for a loss, a retest
// and make-before-break join; a silence check (the current path first)
// and a switch do not.
func (m *Mover) rejoin(ctx context.Context, results chan<- result) {
	if !m.moving || m.rejoinAt.IsZero() {
		return
	}
	if m.rejoinTimer != nil {
		// An earlier snapshot set the wait; this one may have taken the
		// first copy's address (see below).
		if !m.movingStranded {
			return
		}
		stopTimer(m.rejoinTimer)
		m.rejoinTimer = nil
	}
	if m.movingKind != kindLost && m.movingKind != kindRetry && m.movingKind != kindBetter {
		m.rejoinAt = time.Time{}
		return
	}
	// An update whose first copy left from an address that has gone since
	// cannot be answered there (an uplink's IPv4 removed as the update to
	// it went out, leaving its IPv6), and if the address is back, the
	// answer may have come while it was away: nothing is on its way that
	// the wait would let arrive, so it joins, or goes out again, at once.
	if wait := m.rejoinAfter() - time.Since(m.movingSent); wait > 0 && !m.movingStranded {
		m.rejoinTimer = time.NewTimer(wait)
		return
	}
	at := m.rejoinAt
	m.rejoinAt = time.Time{}
	cands := m.candidates(m.conn.Addresses())
	if m.movingKind == kindBetter {
		_, curIf := m.Current()
		cands = slices.DeleteFunc(cands, func(c candidate) bool { return m.rank(c.ifname) >= m.rank(curIf) })
	}
	if len(cands) == 0 {
		return
	}
	if slices.EqualFunc(cands, m.movingCands, func(a, b candidate) bool { return a.path == b.path }) && !m.movingStranded {
		return
	}
	// The snapshot is the monitor's whole view: the exclusions of the
	// loss that started the update are in it. The outcome is timed from
	// the snapshot that brought the new list.
	req := m.movingReq
	req.at, req.gone, req.goneIf = at, nil, nil
	msg := "paths changed while the update is unanswered; joining it"
	if slices.EqualFunc(cands, m.movingCands, func(a, b candidate) bool { return a.path == b.path }) {
		msg = "the update's address was gone and is back; sending it again"
	}
	m.log.Info(msg, "first", cands[0].path.Local.String(),
		"was", m.movingCands[0].path.Local.String(), "candidates", len(cands), "unanswered", time.Since(m.movingSent))
	m.start(ctx, results, m.movingKind, req, cands)
}

// firstCopyStranded says whether the local address of the path the update
// in flight first went out on is no longer among the usable addresses.
func (m *Mover) firstCopyStranded() bool {
	if len(m.movingCands) == 0 {
		return false
	}
	first := m.movingCands[0].path
	for _, a := range m.conn.Addresses() {
		if a.Addr == first.Local.Addr() && a.IfIndex == first.IfIndex {
			return false
		}
	}
	return true
}

func (m *Mover) rejoinAfter() time.Duration {
	if m.cfg.RejoinAfter > 0 {
		return m.cfg.RejoinAfter
	}
	return DefaultRejoinAfter
}

// liveness watches one update that tests the current path: unanswered
// for SuspectAfter, with no ESP from the gateway since it started, it
// suggests the gateway has lost the SA (a restarted gateway ignores an
// unknown SPI), and Suspect is reported so that the connection can
// negotiate a replacement alongside. An update that tests only other
// paths (a preferred uplink, make-before-break) says nothing about the
// SA: that uplink may just have no upstream.
type liveness struct{ t *time.Timer }

// watchLiveness starts the watch of an update over paths from cur; it is
// inert when the update does not test cur or SuspectAfter is 0.
func (m *Mover) watchLiveness(cur netpath.Path, paths []netpath.Path) liveness {
	if m.cfg.SuspectAfter <= 0 || !testsCurrent(cur, paths) {
		return liveness{}
	}
	start, after := time.Now(), m.cfg.SuspectAfter
	return liveness{t: time.AfterFunc(after, func() {
		if m.traffic != nil {
			if _, recv := m.traffic.Activity(); recv.After(start) {
				return
			}
		}
		m.conn.Report(Suspect{Reason: fmt.Sprintf("path test unanswered for %v", after)})
	})}
}

// testsCurrent reports whether paths include cur (the interface index may
// not be known yet).
func testsCurrent(cur netpath.Path, paths []netpath.Path) bool {
	return slices.ContainsFunc(paths, func(p netpath.Path) bool {
		return p.Local == cur.Local && p.Remote == cur.Remote
	})
}

// stop ends the watch: the update returned.
func (l liveness) stop() {
	if l.t != nil {
		l.t.Stop()
	}
}

// lossJoins reports whether the pending request, the loss of the current
// path, should join the update in flight rather than wait for it: that
// update is a silence check, which tries the current path first and the
// others only after a retransmission interval (ike.MoveRetransmit), and
// the path it doubted is now known gone. On a loaded machine the silence
// is often noticed before the interface event arrives.
func (m *Mover) lossJoins() bool {
	p := m.pending
	if m.broken || !m.movingReq.refresh || m.movingReq.lost || !p.lost || p.refresh || p.better || p.retry || p.via != nil {
		return false
	}
	cur, _ := m.Current()
	return slices.Contains(p.gone, cur.Local.Addr()) || slices.Contains(p.goneIf, cur.IfIndex)
}

// kind is what an update is for.
type kind int

const (
	kindNone    kind = iota
	kindRetry        // no path works: test them all
	kindLost         // the current path is gone
	kindRefresh      // the current path went silent or the system woke up
	kindBetter       // a preferred uplink appeared
	kindSwitch       // the gateway asked us to move to another address of its
)

// plan decides what req calls for now (a loss may be stale by the time an
// earlier update finished) and lists the paths to test, in order.
func (m *Mover) plan(req request) (kind, []candidate) {
	cur, curIf := m.Current()
	addrs := slices.DeleteFunc(m.conn.Addresses(), func(a netmon.Address) bool {
		return slices.Contains(req.gone, a.Addr) || slices.Contains(req.goneIf, a.IfIndex)
	})
	if req.switchTo.IsValid() {
		return kindSwitch, m.switchCandidates(req, addrs)
	}
	all := m.candidates(addrs)
	switch {
	case m.broken:
		// Everything, the current path too: the same address may be
		// back after a link flap.
		return kindRetry, all
	case req.lost && (slices.Contains(req.gone, cur.Local.Addr()) || slices.Contains(req.goneIf, cur.IfIndex)):
		return kindLost, all
	case req.refresh:
		var out []candidate
		if req.via != nil {
			out = append(out, candidate{path: *req.via, ifname: curIf})
		}
		out = append(out, candidate{path: cur, ifname: curIf})
		for _, c := range all {
			if c.path != cur && (req.via == nil || c.path != *req.via) {
				out = append(out, c)
			}
		}
		return kindRefresh, out
	case req.better:
		var out []candidate
		for _, c := range all {
			if m.rank(c.ifname) < m.rank(curIf) {
				out = append(out, c)
			}
		}
		return kindBetter, out
	}
	return kindNone, nil
}

// finish adopts the outcome of an update.
func (m *Mover) finish(ctx context.Context, r result) {
	if r.gen != m.moveGen {
		return // a switch joined this update; its own result follows
	}
	m.moving = false
	m.testing.Store(false)
	m.rejoinAt = time.Time{}
	stopTimer(m.rejoinTimer)
	m.rejoinTimer = nil
	m.conn.Report(PathTest{Path: r.cands[0].path, Interface: r.cands[0].ifname, Err: r.err})
	if r.err != nil {
		if ctx.Err() != nil {
			return
		}
		m.log.Info("no candidate path answered", "candidates", len(r.cands), "err", r.err)
		if r.kind == kindBetter && !m.broken {
			return // the current path still works; the new one does not
		}
		if r.kind == kindSwitch {
			// The gateway's new address does not answer; its old one,
			// or another it announced, may.
			m.want(request{at: r.at, refresh: true})
			return
		}
		if r.early {
			// ESP went ahead on a path that never answered; the outage
			// is reported for the path that was lost.
			m.cur.Try(r.from)
		}
		m.suspend(fmt.Sprintf("%v: %v", ErrNoPath, r.err), r.at)
		if len(m.conn.Addresses()) > 0 {
			stopTimer(m.retry)
			m.retry = time.NewTimer(m.retryDelay)
			m.retryDelay = min(2*m.retryDelay, maxRetry)
		}
		return
	}
	to := r.probe.Path
	ifname := r.cands[0].ifname
	for _, c := range r.cands {
		if c.path.IfIndex == to.IfIndex && c.path.Local.Addr() == to.Local.Addr() {
			ifname = c.ifname
			break
		}
	}
	// After an early move to to, ESP is there already (State.Kept); an
	// SA that shares cur (ike.SA.Current) confirmed to when the answer
	// came, and Set only names the uplink.
	m.cur.Set(to, ifname)
	// The path starts a new silence window; a new path or the end of an
	// outage also forgets the backoff earned by a one-way flow.
	m.unanswered, m.lastCheck = time.Time{}, time.Now()
	if to != r.from || m.broken {
		m.backoff, m.healed = 0, 0
	}
	took := time.Since(r.at)
	wasBroken := m.broken
	// Only the gateway's port moved: a NAT change, not an uplink move.
	portOnly := to.Local == r.from.Local && to.IfIndex == r.from.IfIndex && to.Remote.Addr() == r.from.Remote.Addr()
	if to != r.from && !portOnly {
		m.conn.Report(Move{From: r.from, To: to, Interface: ifname, NAT: r.probe.NATLocal, Took: took, Switched: r.kind == kindSwitch})
	} else if r.kind == kindRefresh {
		m.conn.Report(NATRefresh{Path: to, Took: took})
	}
	if wasBroken {
		outage := m.outageElapsed()
		m.broken = false
		stopTimer(m.outage)
		stopTimer(m.retry)
		m.outage, m.retry = nil, nil
		m.log.Info("path works again", "path", to.Local.String(), "outage", outage)
		m.conn.Report(Resume{Path: to, Interface: ifname, Took: took, Outage: outage})
	}
}

// preferredAvailable reports whether a usable address sits on an uplink the
// profile prefers over the current one.
func (m *Mover) preferredAvailable() bool {
	_, ifname := m.Current()
	curRank := m.rank(ifname)
	for _, a := range m.conn.Addresses() {
		if m.rank(a.IfName) < curRank {
			return true
		}
	}
	return false
}

// preferredOverUpdate reports whether a usable address sits on an uplink
// the profile prefers over the one the update in flight tries first (after
// a loss the current uplink is the lost one, so preferredAvailable does
// not see it come back).
func (m *Mover) preferredOverUpdate() bool {
	if !m.moving || len(m.movingCands) == 0 {
		return false
	}
	rank := m.rank(m.movingCands[0].ifname)
	return slices.ContainsFunc(m.conn.Addresses(), func(a netmon.Address) bool { return m.rank(a.IfName) < rank })
}

// rank orders interfaces by the profile's preference; unlisted ones come
// after listed ones, all equal.
func (m *Mover) rank(ifname string) int {
	if i := slices.Index(m.cfg.Interfaces, ifname); i >= 0 {
		return i
	}
	return len(m.cfg.Interfaces)
}

// switchCandidates lists the paths to the gateway address req.switchTo:
// from the current local address first (the gateway reached us there, and
// the SA answered it from there), then from the other usable addresses.
func (m *Mover) switchCandidates(req request, addrs []netmon.Address) []candidate {
	cur, curIf := m.Current()
	to := netip.AddrPortFrom(req.switchTo, cur.Remote.Port())
	var out []candidate
	if !slices.Contains(req.gone, cur.Local.Addr()) && !slices.Contains(req.goneIf, cur.IfIndex) &&
		cur.Local.Addr().Unmap().Is4() == to.Addr().Is4() {
		p := cur
		p.Remote = to
		out = append(out, candidate{path: p, ifname: curIf})
	}
	for _, c := range m.candidatesTo(addrs, []netip.Addr{to.Addr()}) {
		if c.path.Local != cur.Local || c.path.IfIndex != cur.IfIndex {
			out = append(out, c)
		}
	}
	return out
}

// candidates pairs every address with every peer address of the same
// family, preferred uplinks first; the current path's ports are kept (4500
// after the float).
func (m *Mover) candidates(addrs []netmon.Address) []candidate {
	cur, _ := m.Current()
	peers := m.conn.PeerAddresses()
	if len(peers) == 0 {
		peers = []netip.Addr{cur.Remote.Addr()}
	}
	return m.candidatesTo(addrs, peers)
}

// candidatesTo pairs addrs with peers (see candidates).
func (m *Mover) candidatesTo(addrs []netmon.Address, peers []netip.Addr) []candidate {
	cur, curIf := m.Current()
	var out []candidate
	for _, a := range addrs {
		for _, p := range peers {
			// Only global unicast peer addresses make paths: an announced
			// link-local or loopback address cannot be reached from here.
			if a.Addr.Is4() != p.Is4() || !p.IsGlobalUnicast() {
				continue
			}
			out = append(out, candidate{ifname: a.IfName, path: netpath.Path{
				Local:   netip.AddrPortFrom(a.Addr, cur.Local.Port()),
				Remote:  netip.AddrPortFrom(p, cur.Remote.Port()),
				IfIndex: a.IfIndex,
			}})
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
