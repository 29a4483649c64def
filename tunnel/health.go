package tunnel

import (
	"context"
	"sync"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/report"
)

// connHealth is a connection's health, updated by checkHealth.
type connHealth struct {
	mu      sync.Mutex
	tracker ikeesp.HealthTracker
}

// ikeesp.HealthInput reads the connection's state and traffic times now.
func (c *conn) healthInput() ikeesp.HealthInput {
	c.mu.Lock()
	in := ikeesp.HealthInput{State: c.state, SuspendCause: c.suspendCause}
	if c.captive != nil {
		in.Captive = c.captive.location
	}
	peer := c.peer
	c.mu.Unlock()
	if peer != nil {
		in.ESPSent, in.ESPRecv = ikeesp.ESPActivity(peer)
	}
	if sa := c.sa.Load(); sa != nil {
		in.IKESent, in.IKERecv = sa.Activity()
	}
	if m := c.mover.Load(); m != nil {
		in.Testing = m.Testing()
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
	c.health.tracker.DeadAfter = c.deadAfter()
	state, reason, from, changed := c.health.tracker.Update(in, now)
	c.health.mu.Unlock()
	if changed && state != "" {
		c.emit(report.Event{Event: report.EventHealth, From: from, To: state, Reason: reason})
	}
}

// healthNow returns the health state and its reason of the last check.
func (c *conn) healthNow() (state, reason string) {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	return c.health.tracker.Current()
}

// watchHealth re-evaluates the health a few times per dead_after, until
// ctx ends: a state can change with time alone (traffic unanswered). The
// look reads a few atomics.
func (c *conn) watchHealth(ctx context.Context) {
	every := max(c.deadAfter()/5, 20*time.Millisecond)
	c.health.mu.Lock()
	c.health.tracker.LookEvery = every
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
func (c *conn) trafficStatus(st *report.Status, peer *esp.Peer) {
	st.Health, st.HealthReason = c.healthNow()
	ikeesp.FillTraffic(st, peer, c.sa.Load())
}
