package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/captive"
	"github.com/roam-vpn/roam/report"
	"github.com/roam-vpn/roam/tun"
)

// Captive portal pacing. Once IKE has gone unanswered for
// captiveStuckAfter (a connect or reconnect attempt, a path test: a
// healthy path answers within a few RTTs) the probe runs, and again after
// captiveProbeFirst, doubling up to captiveProbeMax while it finds no
// portal. Once a portal is found it is probed every captiveProbeFirst, so
// that its letting us through (the probe's 204) retries IKE at once.
const (
	captiveLook       = 250 * time.Millisecond
	captiveStuckAfter = 2 * time.Second
	captiveProbeFirst = 2 * time.Second
	captiveProbeMax   = 30 * time.Second
)

// captiveState is a portal found on the uplink, under conn.mu.
type captiveState struct {
	location string // the login page
	iface    string // the uplink the probe left by
	addrs    []netip.Addr
	aside    bool // the full-tunnel routes are stepped aside
}

// captiveProber is the profile's probe from the tunnel's marked sockets:
// the full tunnel's rules leave it on the uplink, lockdown lets it out.
func (c *conn) captiveProber() (captive.Prober, bool) {
	u := c.profile.Captive.Probe
	return captive.Prober{URL: u, Mark: tun.DefaultMark}, u != ""
}

// probePort is the TCP port of the probe URL (lockdown lets the marked
// probe out to it).
func probePort(probe string) uint16 {
	u, err := url.Parse(probe)
	if err != nil || probe == "" {
		return 0
	}
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil && p > 0 {
		return uint16(p)
	}
	return 80
}

// stuck reports whether IKE gets no answer while an uplink has addresses:
// a first connect or a reconnect under way, a path test in flight that
// doubts the current path, or a suspension after one failed. That is when
// a portal may be in the way.
func (c *conn) stuck() bool {
	c.mu.Lock()
	state, cause := c.state, c.suspendCause
	c.mu.Unlock()
	switch state {
	case report.StateReconnecting, report.StateConnecting:
		return true
	case report.StateSuspended:
		return cause != "" && cause != noAddressCause
	case report.StateEstablished:
		m := c.mover.Load()
		return m != nil && m.Testing()
	}
	return false
}

// passed reports whether IKE answers again: established, and no path test
// in doubt.
func (c *conn) passed() bool {
	c.mu.Lock()
	state := c.state
	c.mu.Unlock()
	if state != report.StateEstablished {
		return false
	}
	m := c.mover.Load()
	return m == nil || !m.Testing()
}

// noAddressCause is mobility's suspension reason without any address: no
// uplink to probe.
const noAddressCause = "no usable network address"

// probeCaptive runs the probe once and names the uplink it left by.
func (c *conn) probeCaptive(ctx context.Context, pr captive.Prober) (captive.Result, string, error) {
	r, err := pr.Probe(ctx)
	if err != nil {
		return r, "", err
	}
	iface := ""
	if len(r.Addrs) > 0 {
		if rt, err := c.host.RouteTo(r.Addrs[0], tun.DefaultMark); err == nil {
			iface = rt.IfName
		}
	}
	return r, iface, nil
}

// watchCaptive looks for a captive portal while IKE gets no answer, from
// the first connect on, and steps back into the tunnel once IKE passes
// again; it ends with ctx.
func (c *conn) watchCaptive(ctx context.Context) {
	pr, ok := c.captiveProber()
	if !ok {
		return
	}
	defer func() {
		// The teardown takes the routes and lockdown away with the rest.
		c.mu.Lock()
		c.captive = nil
		c.mu.Unlock()
	}()
	t := time.NewTicker(captiveLook)
	defer t.Stop()
	var since, next time.Time
	delay := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			found := c.captive != nil
			c.mu.Unlock()
			if found && c.passed() {
				c.leaveCaptive("IKE answers again")
			}
			if !c.stuck() {
				since, next, delay = time.Time{}, time.Time{}, 0
				continue
			}
			if since.IsZero() {
				since = now
			}
			if now.Sub(since) < captiveStuckAfter || now.Before(next) {
				continue
			}
			r, iface, err := c.probeCaptive(ctx, pr)
			if ctx.Err() != nil {
				return
			}
			switch {
			case found:
				delay = captiveProbeFirst
				c.followCaptive(r, iface, err)
			case err != nil:
				c.log.Debug("captive portal probe: no answer either", "err", err)
				delay = min(max(2*delay, captiveProbeFirst), captiveProbeMax)
			case r.Portal:
				c.enterCaptive(r, iface)
				delay = captiveProbeFirst
			default:
				// HTTP passes and IKE does not: a firewall, or the
				// gateway is away; said once per stuck spell.
				if delay == 0 {
					c.log.Info("IKE gets no answer, yet the captive portal probe passes", "status", r.Status)
				}
				delay = min(max(2*delay, captiveProbeFirst), captiveProbeMax)
			}
			next = time.Now().Add(delay)
		}
	}
}

// enterCaptive reports the portal, and with captive_portal = "step-aside"
// takes the full-tunnel routes out of the way and lets the portal's
// HTTP and HTTPS through lockdown, for the user's browser.
func (c *conn) enterCaptive(r captive.Result, iface string) {
	st := &captiveState{location: r.Location, iface: iface, addrs: r.Addrs}
	reason := fmt.Sprintf("IKE gets no answer and the HTTP probe got %d", r.Status)
	if c.profile.Captive.Mode == config.CaptiveStepAside {
		st.aside = c.stepAside(r.Addrs)
		if st.aside {
			reason += "; routes stepped aside for the login"
		}
	}
	c.mu.Lock()
	c.captive = st
	c.mu.Unlock()
	c.log.Warn("captive portal", "location", r.Location, "interface", iface, "addrs", r.Addrs, "step_aside", st.aside)
	c.emit(report.Event{Event: report.EventCaptivePortal, To: r.Location, Interface: iface, Reason: reason})
	c.checkHealth(time.Now())
}

// stepAside takes the routes aside and opens lockdown for the portal.
func (c *conn) stepAside(addrs []netip.Addr) bool {
	// A portal may be seen while the device is still being made.
	if err := c.lateTUN.wait(); err != nil {
		c.log.Error("captive portal: routes not stepped aside", "err", err)
		return false
	}
	if err := c.dev.StepAside(true); err != nil {
		c.log.Error("captive portal: routes not stepped aside", "err", err)
		return false
	}
	if c.lock != nil {
		if err := c.lock.AllowPortal(addrs...); err != nil {
			c.log.Error("captive portal: lockdown not opened for the portal", "addrs", addrs, "err", err)
		}
	}
	return true
}

// followCaptive takes a later probe's word while the portal holds us: its
// 204 means the portal let us through, so IKE is retried at once; another
// portal address is let through lockdown instead of the old one.
func (c *conn) followCaptive(r captive.Result, iface string, err error) {
	if err != nil {
		return
	}
	if !r.Portal {
		c.log.Info("captive portal lets us through: retrying IKE")
		c.retryNow()
		return
	}
	c.mu.Lock()
	st := c.captive
	changed := st != nil && (st.location != r.Location || !slices.Equal(st.addrs, r.Addrs))
	if changed {
		st.location, st.addrs = r.Location, r.Addrs
		if iface != "" {
			st.iface = iface
		}
	}
	aside := st != nil && st.aside
	c.mu.Unlock()
	if changed && aside && c.lock != nil {
		if err := c.lock.AllowPortal(r.Addrs...); err != nil {
			c.log.Error("captive portal: lockdown not opened for the portal", "addrs", r.Addrs, "err", err)
		}
	}
}

// retryNow retries IKE at once: the installed SA's mover retests its
// paths (an answer also calls off a replacement negotiated alongside);
// without one, a connect or reconnect attempt that waits starts now.
func (c *conn) retryNow() {
	if m := c.mover.Load(); m != nil && c.curPeer() != nil {
		m.Retest()
		return
	}
	select {
	case c.captiveRetry <- struct{}{}:
	default:
	}
}

// leaveCaptive puts the full-tunnel routes and the full lockdown back.
func (c *conn) leaveCaptive(why string) {
	c.mu.Lock()
	st := c.captive
	c.captive = nil
	c.mu.Unlock()
	if st == nil {
		return
	}
	if st.aside && !c.closing.Load() {
		if err := c.dev.StepAside(false); err != nil {
			c.log.Error("captive portal: routes not restored", "err", err)
		}
		if c.lock != nil {
			if err := c.lock.AllowPortal(); err != nil {
				c.log.Error("captive portal: lockdown not closed to the portal", "err", err)
			}
		}
	}
	c.log.Info("captive portal left", "reason", why, "routes_restored", st.aside)
	c.checkHealth(time.Now())
}

// captiveStatus fills the portal fields of `roam status`.
func (c *conn) captiveStatus(st *report.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.captive == nil {
		return
	}
	st.CaptivePortal = c.captive.location
	st.CaptiveStepAside = c.captive.aside
}

// unanswered reports a connect that got no answer from the gateway (as
// opposed to a refusal or a local failure).
func unanswered(err error) bool {
	return errors.Is(err, ike.ErrUnreachable) || strings.Contains(err.Error(), "gateway unreachable: no response")
}

// connectThroughPortal is connect for the first SA. Behind a captive
// portal (watchCaptive found one while the attempt went unanswered) it
// goes on, one attempt after another, while the user logs in, bounded by
// the caller's ctx; the portal letting us through starts a new attempt at
// once. It returns once the tunnel is up.
func (c *conn) connectThroughPortal(ctx context.Context, budget *connectBudget) error {
	if _, ok := c.captiveProber(); !ok {
		return c.connect(ctx, budget)
	}
	for {
		actx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- c.connect(actx, budget) }()
		var err error
		retry := false
		select {
		case err = <-errc:
		case <-c.captiveRetry:
			// The attempt under way may be in a long retransmission
			// wait; a fresh one is answered in a round trip.
			cancel()
			err, retry = <-errc, true
		}
		cancel()
		if err == nil {
			// The tunnel's routes and lockdown before the caller is told.
			c.leaveCaptive("IKE answers")
			return nil
		}
		c.mu.Lock()
		behind := c.captive != nil
		c.mu.Unlock()
		if !behind || permanent(err) || ctx.Err() != nil || !(retry || unanswered(err)) {
			return err
		}
		reason := "behind a captive portal: " + err.Error()
		if retry {
			reason = "the captive portal lets us through"
		}
		c.emit(report.Event{Event: report.EventConnecting, To: c.gw.String(), Reason: reason})
		if !retry {
			select {
			case <-ctx.Done():
				return err
			case <-c.captiveRetry:
			case <-time.After(captiveProbeFirst):
			}
		}
	}
}
