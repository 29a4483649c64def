package ike

import (
	"errors"
	"fmt"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// dpdState is the liveness check's: when the peer was last heard (an
// authenticated message), the timer of the next check, and whether checks
// are held back.
type dpdState struct {
	lastIn time.Time
	timer  Timer
	held   bool
}

// ErrDeadPeer ends an SA whose peer stopped answering liveness checks.
var ErrDeadPeer = errors.New("gateway not answering (dead peer detection)")

// Dead peer detection (RFC 7296 2.4): when nothing cryptographically
// protected has come from the peer for the DPD delay, an empty
// INFORMATIONAL request is sent, with the usual retransmissions; no answer
// ends the SA with ErrDeadPeer. Inbound ESP counts as a sign of life (the
// owner reports it through lastInbound), so a busy tunnel is never probed.

// armDPD (re)starts the DPD timer to fire after d.
func (sa *SA) armDPD(d time.Duration) {
	if sa.cfg.dpdDelay <= 0 || sa.state == stateDead {
		return
	}
	if sa.dpd.timer != nil {
		sa.dpd.timer.Stop()
	}
	sa.dpd.timer = sa.cfg.clock.AfterFunc(d, func() { sa.post(sa.dpdCheck) })
}

// lastSignOfLife is when the peer last proved it is there.
func (sa *SA) lastSignOfLife() time.Time {
	last := sa.dpd.lastIn
	if sa.cfg.lastInbound != nil {
		if esp := sa.cfg.lastInbound(); esp.After(last) {
			last = esp
		}
	}
	return last
}

func (sa *SA) dpdCheck() {
	if sa.state != stateEstablished {
		return
	}
	delay := sa.cfg.dpdDelay
	idle := sa.cfg.clock.Now().Sub(sa.lastSignOfLife())
	switch {
	case sa.dpd.held:
		// No usable network (the owner said so): a check could only
		// fail, and the SA is to survive the outage.
		sa.armDPD(delay)
		return
	case idle < delay:
		sa.armDPD(delay - idle)
		return
	case sa.out != nil:
		// An exchange is in flight; its retransmissions test the peer
		// already, and a MOBIKE update must not be killed by a check
		// queued behind it.
		sa.armDPD(delay)
		return
	}
	sa.log.Debug("dead peer detection: liveness check", "idle", idle.Round(time.Millisecond))
	sa.startRequest(wire.ExchangeInformational,
		func() []wire.Payload { return nil },
		func(wire.Header, []wire.Payload, []byte) { sa.armDPD(delay) },
		func(err error) { sa.die(fmt.Errorf("%w: %w", ErrDeadPeer, err)) })
}

// HoldDPD suspends (true) or resumes dead peer detection: while the host
// has no usable network, silence from the peer proves nothing.
func (sa *SA) HoldDPD(hold bool) {
	sa.post(func() {
		sa.dpd.held = hold
		if !hold {
			// Count from now: the peer could not reach us while held.
			sa.dpd.lastIn = sa.cfg.clock.Now()
			sa.armDPD(sa.cfg.dpdDelay)
		}
	})
}
