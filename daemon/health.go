package daemon

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/mobility"
)

// Health states of a client connection (Status.Health, the health event;
// docs/roaming.md, "Is traffic flowing?"). They say whether traffic really flows,
// judged from what came back, not from the state of the SAs.
const (
	// HealthOK: established, no path test in flight, and nothing we sent
	// (ESP, or an IKE request) has gone unanswered for dead_after: an
	// inbound ESP packet or an answer to an IKE request followed it. An idle
	// tunnel stays ok; its liveness checks (DPD) are IKE requests, so an
	// unanswered one turns it to testing.
	HealthOK = "ok"
	// HealthTesting: whether traffic flows is open: a path test (MOBIKE
	// UPDATE_SA_ADDRESSES) that doubts the current path is in flight, traffic went out for dead_after
	// with nothing back, or an IKE SA is being negotiated (connecting,
	// reconnecting).
	HealthTesting = "testing"
	// HealthNoPath: nothing can flow: no usable local address, or no
	// candidate path answered a test. Outbound packets are dropped.
	HealthNoPath = "no-path"
	// HealthSuspended: the system slept or the daemon was stopped for
	// longer than a NAT mapping lives (netmon.Wake), and the path has not
	// yet been found dead since the wake-up; outbound waits for a path test.
	HealthSuspended = "suspended"
)

// EventHealth reports a change of Status.Health: from and to are states,
// reason why the new one holds.
const EventHealth = "health"

// healthInput is what the health of a connection is decided from, read at
// one moment.
type healthInput struct {
	state string // the connection's state
	// suspendCause is why the connection is suspended (mobility's reason,
	// or the error of the last failed path test since).
	suspendCause string
	testing      bool // a path test is in flight
	// captive is the login page of a captive portal holding the uplink
	// ("" none; captive.go).
	captive string
	// Last outbound and inbound: ESP packets (esp.Peer.Activity), our IKE
	// requests and the gateway's answers to them (ike.SA.Activity; a
	// request from the gateway proves nothing about our direction).
	espSent, espRecv time.Time
	ikeSent, ikeRecv time.Time
}

// healthTracker turns a sequence of inputs into a health state. It keeps
// when outbound traffic first went unanswered, as only successive looks
// tell (the inputs hold the last packet times only).
type healthTracker struct {
	deadAfter time.Duration
	// lookEvery is how often a watcher looks (0: only on request). A look
	// that comes much later than that means the process did not run
	// meanwhile (SIGSTOP, a starved machine): what it remembers is stale.
	lookEvery time.Duration
	lastLook  time.Time
	gapEnd    time.Time     // the first look after such a gap; zero: none pending
	gap       time.Duration // how long the process did not look

	seenIn     time.Time // the latest inbound looked at
	unanswered time.Time // the first outbound seen after seenIn; zero: none
	state      string
	reason     string
}

// update looks at in, taken at now, and reports the new state with its
// reason, and the previous state when it changed.
func (h *healthTracker) update(in healthInput, now time.Time) (state, reason, from string, changed bool) {
	if h.lookEvery > 0 && !h.lastLook.IsZero() {
		if gap := now.Sub(h.lastLook); gap > max(10*h.lookEvery, time.Second) {
			h.gapEnd, h.gap = now, gap
		}
	}
	h.lastLook = now
	inbound := later(in.espRecv, in.ikeRecv)
	outbound := later(in.espSent, in.ikeSent)
	if !inbound.Equal(h.seenIn) {
		h.seenIn, h.unanswered = inbound, time.Time{}
	}
	if outbound.After(inbound) {
		if h.unanswered.IsZero() {
			h.unanswered = outbound
		}
	} else {
		h.unanswered = time.Time{}
	}
	state, reason = h.decide(in, now)
	from = h.state
	changed = state != h.state
	h.state, h.reason = state, reason
	return state, reason, from, changed
}

func (h *healthTracker) decide(in healthInput, now time.Time) (state, reason string) {
	if in.captive != "" && (in.state != "established" || in.testing) && in.state != "" && in.state != "disconnected" {
		return HealthCaptivePortal, captiveReason(in.captive)
	}
	switch in.state {
	case "connecting":
		return HealthTesting, "negotiating the IKE SA"
	case stateReconnecting:
		return HealthTesting, "negotiating a new IKE SA"
	case stateSuspended:
		if strings.HasPrefix(in.suspendCause, mobility.WakePrefix) {
			return HealthSuspended, in.suspendCause
		}
		return HealthNoPath, in.suspendCause
	case "established":
	default:
		return "", "" // disconnected: no tunnel to judge
	}
	if in.testing {
		return HealthTesting, "path test in flight"
	}
	if !h.gapEnd.IsZero() {
		// After a gap, nothing says the path still works until the
		// gateway is heard again: a NAT may have forgotten us meanwhile.
		// A tunnel that stays idle is judged as any idle one after
		// dead_after; traffic sent meanwhile by the usual rule.
		if later(in.espRecv, in.ikeRecv).After(h.gapEnd) || now.Sub(h.gapEnd) >= h.deadAfter {
			h.gapEnd = time.Time{}
		} else {
			return HealthTesting, fmt.Sprintf("not running for %v: waiting to hear from the other end", roundDuration(h.gap))
		}
	}
	if !h.unanswered.IsZero() {
		if silent := now.Sub(h.unanswered); silent >= h.deadAfter {
			return HealthTesting, fmt.Sprintf("nothing received for %v since sending", roundDuration(silent))
		}
	}
	if h.state == HealthOK {
		return HealthOK, h.reason // keep the reason the state began with
	}
	if inbound := later(in.espRecv, in.ikeRecv); !inbound.IsZero() {
		return HealthOK, "the gateway answers"
	}
	return HealthTesting, "nothing received yet"
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func roundDuration(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// connHealth is a connection's health, updated by checkHealth.
type connHealth struct {
	mu      sync.Mutex
	tracker healthTracker
}

// healthInput reads the connection's state and traffic times now.
func (c *conn) healthInput() healthInput {
	c.mu.Lock()
	in := healthInput{state: c.state, suspendCause: c.suspendCause}
	if c.captive != nil {
		in.captive = c.captive.location
	}
	peer := c.peer
	c.mu.Unlock()
	if peer != nil {
		in.espSent, in.espRecv = espActivity(peer)
	}
	if sa := c.sa.Load(); sa != nil {
		in.ikeSent, in.ikeRecv = sa.Activity()
	}
	if m := c.mover.Load(); m != nil {
		in.testing = m.Testing()
	}
	return in
}

// deadAfter is the profile's silence limit (mobility's default when unset).
func (c *conn) deadAfter() time.Duration {
	if c.profile.DeadAfter > 0 {
		return c.profile.DeadAfter
	}
	return mobility.DefaultDeadAfter
}

// checkHealth updates the health from the connection as it is now and
// reports a change as an event. The watcher and Status call it.
func (c *conn) checkHealth(now time.Time) {
	in := c.healthInput()
	c.health.mu.Lock()
	c.health.tracker.deadAfter = c.deadAfter()
	state, reason, from, changed := c.health.tracker.update(in, now)
	c.health.mu.Unlock()
	if changed && state != "" {
		c.emit(Event{Event: EventHealth, From: from, To: state, Reason: reason})
	}
}

// healthNow returns the health state and its reason of the last check.
func (c *conn) healthNow() (state, reason string) {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	return c.health.tracker.state, c.health.tracker.reason
}

// watchHealth re-evaluates the health a few times per dead_after, until
// ctx ends: a state can change with time alone (traffic unanswered). The
// look reads a few atomics.
func (c *conn) watchHealth(ctx context.Context) {
	every := max(c.deadAfter()/5, 20*time.Millisecond)
	c.health.mu.Lock()
	c.health.tracker.lookEvery = every
	c.health.mu.Unlock()
	c.checkHealth(time.Now())
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.checkHealth(now)
		}
	}
}

// trafficStatus fills the health, the traffic times and the RTT.
func (c *conn) trafficStatus(st *Status, peer *esp.Peer) {
	st.Health, st.HealthReason = c.healthNow()
	fillTraffic(st, peer, c.sa.Load())
}

// fillTraffic fills the traffic times of a tunnel (either end) and its
// current path's RTT; peer and sa may be nil.
func fillTraffic(st *Status, peer *esp.Peer, sa *ike.SA) {
	stamp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	if peer != nil {
		sent, recv := espActivity(peer)
		st.LastInboundESP, st.LastOutboundESP = stamp(recv), stamp(sent)
	}
	if sa != nil {
		st.LastInboundIKE = stamp(sa.LastHeard())
		if r, ok := sa.RTT(sa.Path()); ok {
			st.RTTMS = float64(r.SRTT.Microseconds()) / 1000
			st.RTTVarMS = float64(r.RTTVar.Microseconds()) / 1000
			st.RTTSamples = r.Samples
		}
	}
}

// espActivity is peer.Activity with never as the zero time (the dataplane
// reports the Unix epoch).
func espActivity(peer *esp.Peer) (sent, recv time.Time) {
	sent, recv = peer.Activity()
	if sent.UnixNano() <= 0 {
		sent = time.Time{}
	}
	if recv.UnixNano() <= 0 {
		recv = time.Time{}
	}
	return sent, recv
}
