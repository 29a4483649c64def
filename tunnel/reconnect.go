package tunnel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/report"
)

// Reconnect pacing. The first attempt starts within firstAttemptSpread, so
// the clients of a restarted gateway do not all arrive in the same
// millisecond; attempt n > 1 waits reconnectBase*2^(n-2), capped by the
// profile's reconnect_max_delay, of which a random half is taken off. Each
// unanswered attempt also costs ike.ConnectRetransmit's ten seconds.
const (
	firstAttemptSpread = 500 * time.Millisecond
	reconnectBase      = time.Second
)

// reconnectDelay is the wait before attempt n (from 1); jitter is in [0, 1).
func reconnectDelay(n int, maxDelay time.Duration, jitter float64) time.Duration {
	if n <= 1 {
		return time.Duration(jitter * float64(firstAttemptSpread))
	}
	d := maxDelay
	if shift := n - 2; shift < 32 && reconnectBase<<shift < maxDelay {
		d = reconnectBase << shift
	}
	return d/2 + time.Duration(jitter*float64(d/2))
}

// maxRefusals is how many refusals in a row a reconnect accepts before it
// believes them; with the backoff they span about four seconds.
const maxRefusals = 3

// permanent reports failures a new attempt would only repeat: the
// gateway refuses us (authentication, proposals, selectors, no CP), as
// opposed to not answering or having lost our SA.
func permanent(err error) bool {
	return errors.Is(err, ike.ErrAuthenticationFailed) || errors.Is(err, ike.ErrNoProposalChosen) ||
		errors.Is(err, ike.ErrTSUnacceptable) || errors.Is(err, ike.ErrFailedCPRequired)
}

// attempts is a reconnect loop running in its own goroutine.
type attempts struct {
	cancel context.CancelFunc
	done   chan attemptResult
	// reauth: a reauthentication (reauth.go) while the old SA works.
	reauth bool
}

type attemptResult struct {
	s   *session
	err error
}

// supervise follows the connection's IKE SA for its whole life. When the SA
// is lost (the gateway restarted or stopped answering, or deleted it) it
// is replaced by a new one on the same TUN device and dataplane
// (break-before-make: the old one is gone). When mobility's path tests go
// unanswered (mobike.go), the gateway may have lost the SA without telling
// us (a restarted strongSwan stays silent to an unknown SPI), so a
// replacement is negotiated while the old SA is kept (make-before-break):
// if the old SA answers first the attempts stop, else the replacement
// wins. An IKE SA that the gateway did not authenticate replaces nothing,
// so an unauthenticated packet can at most make us try.
func (c *conn) supervise(s *session) {
	var run *attempts
	stop := func() {
		if run != nil {
			run.cancel()
			c.discard(<-run.done)
			run = nil
		}
	}
	defer stop()
	for {
		var events <-chan ike.Event
		if s != nil {
			events = s.events
		}
		var results <-chan attemptResult
		if run != nil {
			results = run.done
		}
		select {
		case <-c.life.Done():
			return
		case ev := <-events:
			d, ok := ev.(*ike.Deleted)
			if !ok {
				c.handleChildEvent(s, ev)
				continue
			}
			reason := d.Reason
			if c.closing.Load() || errors.Is(reason, ike.ErrClosed) {
				return // Close tears the connection down
			}
			c.retire(s, true)
			s = nil
			c.stopReauth()
			if run != nil && run.reauth {
				stop() // from now on it is a reconnect
			}
			if !c.reconnectable(reason) {
				stop()
				c.teardown(userError(reason))
				return
			}
			c.log.Warn("IKE SA lost", "reason", reason)
			if run == nil {
				run = c.startAttempts(reason, false)
			}
		case reason := <-c.suspect:
			if s != nil && run == nil && c.reconnectable(errors.New(reason)) {
				c.log.Warn("the gateway does not answer for the IKE SA: negotiating a replacement alongside", "reason", reason)
				run = c.startAttempts(fmt.Errorf("gateway not answering for the IKE SA: %s", reason), true)
			}
		case rs := <-c.ra.due:
			if rs == s && run == nil {
				run = c.startReauth(s)
			}
		case <-c.resume:
			// A doubt raised before this answer is answered by it.
			select {
			case <-c.suspect:
			default:
			}
			if s != nil && run != nil && !run.reauth {
				// The old SA answers again: it was the network.
				stop()
				c.mu.Lock()
				if c.state == report.StateReconnecting {
					c.state = report.StateEstablished
				}
				c.attempt, c.lastErr = 0, ""
				c.mu.Unlock()
			}
		case r := <-results:
			reauth := run.reauth
			run = nil
			if reauth && r.err != nil {
				c.reauthFailed(r.err)
				continue
			}
			if r.err != nil {
				if c.closing.Load() {
					return
				}
				if s != nil {
					c.retire(s, false)
				}
				c.teardown(userError(r.err))
				return
			}
			if err := c.install(r.s); err != nil {
				r.s.cancel()
				if s != nil {
					c.retire(s, false)
				}
				c.teardown(err)
				return
			}
			if s != nil && reauth {
				c.retireReplaced(s)
			} else if s != nil {
				c.retire(s, false)
			}
			s = r.s
		}
	}
}

// reconnectable reports whether losing the SA for reason calls for a new
// one rather than the end of the connection.
func (c *conn) reconnectable(reason error) bool {
	if !c.profile.Reconnect || c.closing.Load() {
		return false
	}
	c.mu.Lock()
	ending := c.ending
	c.mu.Unlock()
	return ending == nil && !permanent(reason)
}

// retire removes an SA's Child SAs from the dataplane and stops its
// mobility; a live SA (replaced, not lost) is deleted at the gateway too.
func (c *conn) retire(s *session, dead bool) {
	if s.stopMobility != nil {
		s.stopMobility()
	}
	c.dp.RemovePeer(s.peer)
	c.mu.Lock()
	if c.peer == s.peer {
		c.peer = nil
	}
	c.mu.Unlock()
	if dead || s.sa == nil {
		s.cancel()
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ikeesp.CloseTimeout)
		defer cancel()
		s.sa.Close(ctx)
		s.cancel()
	}()
}

func (c *conn) startAttempts(cause error, pending bool) *attempts {
	ctx, cancel := context.WithCancel(c.life)
	a := &attempts{cancel: cancel, done: make(chan attemptResult, 1)}
	go func() {
		s, err := c.reconnectLoop(ctx, cause, pending)
		a.done <- attemptResult{s, err}
	}()
	return a
}

// errReconnectStopped ends a reconnect loop that was called off.
var errReconnectStopped = errors.New("reconnect stopped")

// reconnectLoop negotiates new IKE SAs with backoff until one is
// established, the gateway refuses us, the outage limit passes, or ctx
// ends. cause is why the last SA was lost.
func (c *conn) reconnectLoop(ctx context.Context, cause error, pending bool) (*session, error) {
	start := time.Now()
	return c.retry(ctx, backoff{
		waitFirst: true,
		wake:      c.captiveRetry, // a captive portal let us through
		// A gateway that accepted this profile before and refuses it now
		// is most likely restarting (strongSwan answers NO_PROPOSAL_CHOSEN
		// until its connections are loaded): a few refusals in a row are
		// retried, more end the connection.
		believeRefusal: maxRefusals,
		before: func(n int) {
			c.mu.Lock()
			if ctx.Err() == nil {
				c.state, c.attempt, c.lastErr = report.StateReconnecting, n, cause.Error()
			}
			c.mu.Unlock()
		},
		ready: func(n int) error {
			if limit := c.profile.OutageLimit; limit > 0 && time.Since(start) >= limit {
				return fmt.Errorf("gateway lost for %v: %w", roundOutage(time.Since(start)), cause)
			}
			c.emit(report.Event{Event: report.EventConnecting, To: c.gw.String(), Reason: fmt.Sprintf("reconnect attempt %d: %v", n, cause)})
			return nil
		},
		failed: func(n int, err error) {
			c.log.Info("reconnect attempt failed", "attempt", n, "err", err)
			cause = err
		},
	}, func(ctx context.Context) (*session, error) { return c.establish(ctx, pending) })
}

// backoff is what tells one loop of attempts from another (reconnect,
// reauthentication); the pacing is reconnectDelay for both.
type backoff struct {
	// waitFirst: the first attempt waits too (firstAttemptSpread).
	waitFirst bool
	// wake cuts a wait short (nil: nothing does).
	wake <-chan struct{}
	// believeRefusal is how many refusals in a row (permanent) end the
	// loop; 1 believes the first.
	believeRefusal int
	// before runs ahead of each wait, ready after it (an error from ready
	// ends the loop with it), failed after each failed attempt; any may be
	// nil.
	before func(n int)
	ready  func(n int) error
	failed func(n int, err error)
}

// retry runs attempt (attempt n from 1) paced by b until one succeeds, the
// gateway's refusals are believed, ready says stop, or ctx ends or the
// connection closes (errReconnectStopped).
func (c *conn) retry(ctx context.Context, b backoff, attempt func(context.Context) (*session, error)) (*session, error) {
	refusals := 0
	for n := 1; ; n++ {
		if b.before != nil {
			b.before(n)
		}
		if n > 1 || b.waitFirst {
			t := time.NewTimer(reconnectDelay(n, c.profile.ReconnectMaxDelay, c.jitter()))
			select {
			case <-t.C:
			case <-b.wake:
				t.Stop()
			case <-ctx.Done():
				t.Stop()
				return nil, errReconnectStopped
			}
		}
		if c.closing.Load() || ctx.Err() != nil {
			return nil, errReconnectStopped
		}
		if b.ready != nil {
			if err := b.ready(n); err != nil {
				return nil, err
			}
		}
		s, err := attempt(ctx)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, errReconnectStopped
		}
		if permanent(err) {
			if refusals++; refusals >= b.believeRefusal {
				return nil, err
			}
		} else {
			refusals = 0
		}
		if b.failed != nil {
			b.failed(n, err)
		}
	}
}

func roundOutage(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d
}
