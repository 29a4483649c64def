package ikeesp

import (
	"fmt"
	"strings"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/report"
)

// HealthInput is what the health of a connection is decided from, read at
// one moment.
type HealthInput struct {
	State report.State // the connection's state
	// suspendCause is why the connection is suspended (mobility's reason,
	// or the error of the last failed path test since).
	SuspendCause string
	Testing      bool // a path test is in flight
	// captive is the login page of a captive portal holding the uplink
	// ("" none; captive.go).
	Captive string
	// Last outbound and inbound: ESP packets (esp.Peer.Activity), our IKE
	// requests and the gateway's answers to them (ike.SA.Activity; a
	// request from the gateway proves nothing about our direction).
	ESPSent, ESPRecv time.Time
	IKESent, IKERecv time.Time
}

// HealthTracker turns a sequence of inputs into a health state. It keeps
// when outbound traffic first went unanswered, as only successive looks
// tell (the inputs hold the last packet times only).
type HealthTracker struct {
	DeadAfter time.Duration
	// lookEvery is how often a watcher looks (0: only on request). A look
	// that comes much later than that means the process did not run
	// meanwhile (SIGSTOP, a starved machine): what it remembers is stale.
	LookEvery time.Duration
	lastLook  time.Time
	gapEnd    time.Time     // the first look after such a gap; zero: none pending
	gap       time.Duration // how long the process did not look

	seenIn     time.Time // the latest inbound looked at
	unanswered time.Time // the first outbound seen after seenIn; zero: none
	state      string
	reason     string
}

// Update looks at in, taken at now, and reports the new state with its
// reason, and the previous state when it changed.
func (h *HealthTracker) Update(in HealthInput, now time.Time) (state, reason, from string, changed bool) {
	if h.LookEvery > 0 && !h.lastLook.IsZero() {
		if gap := now.Sub(h.lastLook); gap > max(10*h.LookEvery, time.Second) {
			h.gapEnd, h.gap = now, gap
		}
	}
	h.lastLook = now
	inbound := Later(in.ESPRecv, in.IKERecv)
	outbound := Later(in.ESPSent, in.IKESent)
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

func (h *HealthTracker) decide(in HealthInput, now time.Time) (state, reason string) {
	if in.Captive != "" && (in.State != report.StateEstablished || in.Testing) && in.State != "" && in.State != report.StateDisconnected {
		return report.HealthCaptivePortal, report.CaptiveReason(in.Captive)
	}
	switch in.State {
	case report.StateConnecting:
		return report.HealthTesting, "negotiating the IKE SA"
	case report.StateReconnecting:
		return report.HealthTesting, "negotiating a new IKE SA"
	case report.StateSuspended:
		if strings.HasPrefix(in.SuspendCause, mobility.WakePrefix) {
			return report.HealthSuspended, in.SuspendCause
		}
		return report.HealthNoPath, in.SuspendCause
	case report.StateEstablished:
	default:
		return "", "" // disconnected: no tunnel to judge
	}
	if in.Testing {
		return report.HealthTesting, "path test in flight"
	}
	if !h.gapEnd.IsZero() {
		// After a gap, nothing says the path still works until the
		// gateway is heard again: a NAT may have forgotten us meanwhile.
		// A tunnel that stays idle is judged as any idle one after
		// dead_after; traffic sent meanwhile by the usual rule.
		if Later(in.ESPRecv, in.IKERecv).After(h.gapEnd) || now.Sub(h.gapEnd) >= h.DeadAfter {
			h.gapEnd = time.Time{}
		} else {
			return report.HealthTesting, fmt.Sprintf("not running for %v: waiting to hear from the other end", roundDuration(h.gap))
		}
	}
	if !h.unanswered.IsZero() {
		if silent := now.Sub(h.unanswered); silent >= h.DeadAfter {
			return report.HealthTesting, fmt.Sprintf("nothing received for %v since sending", roundDuration(silent))
		}
	}
	if h.state == report.HealthOK {
		return report.HealthOK, h.reason // keep the reason the state began with
	}
	if inbound := Later(in.ESPRecv, in.IKERecv); !inbound.IsZero() {
		return report.HealthOK, "the gateway answers"
	}
	return report.HealthTesting, "nothing received yet"
}

// Later is the later of a and b.
func Later(a, b time.Time) time.Time {
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

// FillTraffic fills the traffic times of a tunnel (either end) and its
// current path's RTT; peer and sa may be nil.
func FillTraffic(st *report.Status, peer *esp.Peer, sa *ike.SA) {
	stamp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	if peer != nil {
		sent, recv := ESPActivity(peer)
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

// ESPActivity is peer.Activity with never as the zero time (the dataplane
// reports the Unix epoch).
func ESPActivity(peer *esp.Peer) (sent, recv time.Time) {
	sent, recv = peer.Activity()
	if sent.UnixNano() <= 0 {
		sent = time.Time{}
	}
	if recv.UnixNano() <= 0 {
		recv = time.Time{}
	}
	return sent, recv
}

// Current is the state and reason the last Update decided.
func (h *HealthTracker) Current() (state, reason string) { return h.state, h.reason }
