package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/report"
)

// Reauthentication (RFC 4478): before the gateway's AUTH_LIFETIME runs
// out, or when the profile's reauth_time says so, the connection makes a
// new IKE SA from scratch (IKE_SA_INIT + IKE_AUTH, EAP included) alongside
// the installed one, through the same machinery as a replacement for a
// lost SA (reconnect.go: a pending SA, installed by install). The new
// IKE_AUTH carries no INITIAL_CONTACT, or the gateway would drop the old
// SA before the new one works, and asks for the inner addresses the TUN
// device has. Once it is up, outbound ESP moves to its Child SAs, the old
// ones stay for inbound stragglers a moment longer, and the old IKE SA is
// deleted (its DELETE takes its Child SAs at the gateway). A failed
// attempt leaves the old SA in place and is retried with the reconnect
// backoff until the old SA ends; a refusal is reported and not retried.
//
// An EAP-MSCHAPv2 password typed into `roam connect` stays in memory (in
// the connection's authenticator) for the life of the connection for
// this: asking again every few hours would need a terminal the daemon
// does not have.

// Reauthentication timing. A gateway's lifetime is met with a margin of a
// tenth of it (at least reauthMinMargin, at most reauthMaxMargin), plus a
// random part of as much again, so the clients of one gateway spread out;
// the profile's reauth_time is taken less a random tenth.
// A gateway's lifetime too short for its margin is answered no sooner
// than reauthFloor after the authentication, so a gateway announcing 0
// cannot make the client reauthenticate without pause.
const (
	reauthMinMargin = time.Second
	reauthMaxMargin = 5 * time.Minute
	reauthFloor     = 2 * time.Second
)

// reauthState is what a connection knows about its next reauthentication
// (guarded by conn.mu, but for due).
type reauthState struct {
	// due receives the session whose time has come (a stale one, of an SA
	// replaced meanwhile, is ignored).
	due   chan *session
	timer *time.Timer
	next  time.Time
	count int
}

// reauthDelay is when an SA authenticated at authAt must be replaced:
// profile is reauth_time (0: none), gwDeadline the gateway's AUTH_LIFETIME
// deadline (zero: none) with lifetime its length; jitter is in [0, 1).
// ok is false when neither asks.
func reauthDelay(now, authAt time.Time, profile time.Duration, gwDeadline time.Time, lifetime time.Duration, jitter float64) (d time.Duration, cause string, ok bool) {
	if profile > 0 {
		d = authAt.Add(profile - time.Duration(jitter*float64(profile/10))).Sub(now)
		cause, ok = fmt.Sprintf("reauth_time %v", profile), true
	}
	if !gwDeadline.IsZero() {
		margin := min(max(lifetime/10, reauthMinMargin), reauthMaxMargin)
		g := gwDeadline.Add(-margin - time.Duration(jitter*float64(margin))).Sub(now)
		if !ok || g < d {
			d, cause, ok = g, fmt.Sprintf("gateway's AUTH_LIFETIME %v", lifetime), true
		}
	}
	if !ok {
		return 0, "", false
	}
	return max(d, authAt.Add(reauthFloor).Sub(now), 0), cause, true
}

// scheduleReauth (re)arms the reauthentication of session s. gwLifetime is
// an AUTH_LIFETIME the gateway just sent (0: none now); the profile's
// reauth_time counts from s's authentication.
func (c *conn) scheduleReauth(s *session, gwLifetime time.Duration) {
	now := time.Now()
	if gwLifetime > 0 {
		s.gwReauthDeadline, s.gwLifetime = now.Add(gwLifetime), gwLifetime
	}
	d, cause, ok := reauthDelay(now, s.authAt, c.profile.ReauthTime, s.gwReauthDeadline, s.gwLifetime, c.jitter())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.disarmReauth()
	if !ok {
		return
	}
	s.reauthCause = cause
	c.ra.next = now.Add(d)
	c.ra.timer = time.AfterFunc(d, func() {
		select {
		case c.ra.due <- s:
		default:
		}
	})
	c.log.Info("reauthentication scheduled", "in", d.Round(time.Millisecond), "cause", cause)
}

// stopReauth cancels the timer (the connection ends, or its SA is lost).
func (c *conn) stopReauth() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.disarmReauth()
}

// disarmReauth stops the timer and clears the next time; c.mu is held.
func (c *conn) disarmReauth() {
	if c.ra.timer != nil {
		c.ra.timer.Stop()
		c.ra.timer = nil
	}
	c.ra.next = time.Time{}
}

// startReauth begins the reauthentication of the installed session s.
func (c *conn) startReauth(s *session) *attempts {
	ctx, cancel := context.WithCancel(c.life)
	a := &attempts{cancel: cancel, done: make(chan attemptResult, 1), reauth: true}
	c.log.Info("reauthenticating: a new IKE SA alongside the current one", "cause", s.reauthCause)
	go func() {
		ns, err := c.reauthLoop(ctx, s.reauthCause)
		a.done <- attemptResult{ns, err}
	}()
	return a
}

// reauthLoop negotiates the new SA, retrying with the reconnect backoff
// until one is established, the gateway refuses us, or ctx ends (the old
// SA was lost, or the connection closes). The state stays established:
// the old SA carries the traffic meanwhile.
func (c *conn) reauthLoop(ctx context.Context, cause string) (*session, error) {
	ctx = context.WithValue(ctx, dialOptionsKey{}, dialOptions{reauth: true})
	s, err := c.retry(ctx, backoff{
		believeRefusal: 1,
		failed: func(n int, err error) {
			c.log.Info("reauthentication attempt failed; the current IKE SA stays", "attempt", n, "err", err)
		},
	}, func(ctx context.Context) (*session, error) { return c.establish(ctx, true) })
	if err != nil {
		return nil, err
	}
	s.reauth, s.reauthCause = true, cause
	return s, nil
}

// reauthFailed reports a reauthentication the gateway refused. The old SA
// stays until the gateway ends it; the reconnect that follows reports the
// refusal again, as the end of the connection.
func (c *conn) reauthFailed(err error) {
	c.stopReauth()
	if err == errReconnectStopped {
		return
	}
	c.log.Warn("reauthentication refused; the current IKE SA stays until it expires", "err", err)
	c.emit(report.Event{Event: report.EventError, Profile: c.profile.Name,
		Reason: fmt.Sprintf("reauthentication refused: %v (the current IKE SA stays until it expires)", userError(err))})
}

// reauthEvent turns install's established event for a reauthenticated
// session into the reauthenticated one.
func (c *conn) reauthEvent(ev report.Event, s *session, prev *ike.Established, oldVIPs []string) report.Event {
	c.mu.Lock()
	c.ra.count++
	n := c.ra.count
	c.mu.Unlock()
	ev.Event = report.EventReauthenticated
	ev.Reason = fmt.Sprintf("reauthentication %d (%s): IKE SA %016x_i replaces %016x_i", n, s.reauthCause, s.est.SPIi, prevSPI(prev))
	if now := c.vipStrings(); len(oldVIPs) > 0 && !slices.Equal(oldVIPs, now) {
		ev.Reason += fmt.Sprintf("; virtual IP changed from %s to %s", strings.Join(oldVIPs, ","), strings.Join(now, ","))
		c.log.Warn("the gateway gave another inner address on reauthentication", "from", oldVIPs, "to", now)
	}
	return ev
}

func prevSPI(e *ike.Established) uint64 {
	if e == nil {
		return 0
	}
	return e.SPIi
}

// retireReplaced takes a reauthenticated-away SA out: its Child SAs carry
// no more outbound traffic from now on but take inbound packets still in
// flight for esp.RetireGrace, and the IKE SA is deleted at the gateway
// (which removes its Child SAs there). Its IKE messages keep reaching it
// (handleIKE) until the DELETE is answered.
func (c *conn) retireReplaced(s *session) {
	if s.stopMobility != nil {
		s.stopMobility()
	}
	c.binder().RetirePeer(s.peer)
	if s.sa == nil {
		s.cancel()
		return
	}
	c.retiring.Store(s.sa)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ikeesp.CloseTimeout)
		defer cancel()
		if err := s.sa.Close(ctx); err != nil {
			c.log.Info("the replaced IKE SA's DELETE went unanswered", "err", err)
		}
		s.cancel()
		c.retiring.CompareAndSwap(s.sa, nil)
	}()
}

// discard deletes the SA of an attempt called off just after it had
// succeeded, so the gateway does not keep it until dead peer detection.
func (c *conn) discard(r attemptResult) {
	if r.s == nil {
		return
	}
	if r.s.sa == nil {
		r.s.cancel()
		return
	}
	c.pending.CompareAndSwap(r.s.sa, nil)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ikeesp.CloseTimeout)
		defer cancel()
		r.s.sa.Close(ctx)
		r.s.cancel()
	}()
}

// dialOptions travel with the context of one negotiation to dialGateway,
// so the dial function's signature (faked by tests) stays the same.
type dialOptions struct {
	// reauth: leave INITIAL_CONTACT out (the old SA must survive).
	reauth bool
}

type dialOptionsKey struct{}

func dialOptionsOf(ctx context.Context) dialOptions {
	o, _ := ctx.Value(dialOptionsKey{}).(dialOptions)
	return o
}

// requestVIPs are the inner addresses the TUN device has: a new SA asks
// for them again (CP), so a reauthentication or a reconnect keeps them
// when the gateway's pool allows.
func (c *conn) requestVIPs() []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]netip.Addr, 0, len(c.vips))
	for _, p := range c.vips {
		out = append(out, p.Addr())
	}
	return out
}

// reauthStatus adds the reauthentication count and time to st.
func (c *conn) reauthStatus(st *report.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Reauthentications = c.ra.count
	if !c.ra.next.IsZero() {
		next := c.ra.next
		st.NextReauth = &next
	}
}
