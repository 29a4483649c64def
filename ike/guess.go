package ike

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// Online guessing (RFC 7296 leaves it to implementations): every failed
// authentication of an initiator counts against its source address and
// against the identity it claimed. Past a few failures each further try
// waits for a backoff that doubles per failure, so a PSK or an MSCHAPv2
// password cannot be guessed at line rate; while one is in backoff, IKE_AUTH
// is refused without checking the AUTH (the answer says nothing about
// whether the guess was right). A success clears both counts, and a count
// left alone for guessForget is forgotten.
const (
	guessFree   = 3                // failures before any wait
	guessFirst  = time.Second      // the first wait
	guessMax    = 2 * time.Minute  // the longest
	guessForget = 15 * time.Minute // quiet time after which failures are forgotten
	// guessPrune: above this many tracked keys, forgotten ones are removed
	// on the next failure, so a spread of sources cannot grow the map for
	// ever.
	guessPrune = 4096
)

type guessState struct {
	failures int
	last     time.Time // of the last failure
	until    time.Time // no try before this
}

// guessGuard counts failed authentications by source and by identity.
type guessGuard struct {
	mu sync.Mutex
	m  map[string]*guessState
}

func guessSourceKey(a netip.Addr) string { return "src " + a.Unmap().String() }
func guessIDKey(id string) string        { return "id " + id }

// wait returns how long the keys must still wait, zero when a try is
// allowed now.
func (g *guessGuard) wait(now time.Time, keys ...string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	var d time.Duration
	for _, k := range keys {
		if s := g.m[k]; s != nil && now.Before(s.until) {
			d = max(d, s.until.Sub(now))
		}
	}
	return d
}

// fail counts one failure against each key and returns the backoff now in
// force.
func (g *guessGuard) fail(now time.Time, keys ...string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]*guessState{}
	}
	if len(g.m) > guessPrune {
		for k, s := range g.m {
			if now.Sub(s.last) > guessForget {
				delete(g.m, k)
			}
		}
	}
	var worst time.Duration
	for _, k := range keys {
		s := g.m[k]
		if s == nil || now.Sub(s.last) > guessForget {
			s = &guessState{}
			g.m[k] = s
		}
		s.failures++
		s.last = now
		if s.failures > guessFree {
			d := guessMax
			if n := s.failures - guessFree - 1; n < 8 {
				d = min(guessFirst<<n, guessMax)
			}
			s.until = now.Add(d)
			worst = max(worst, d)
		}
	}
	return worst
}

// succeed clears the keys.
func (g *guessGuard) succeed(keys ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		delete(g.m, k)
	}
}

// guessKeys are what a failure of sa's initiator counts against: its source
// and, once known, the identity it claimed.
func (sa *SA) guessKeys(idi *wire.Identification) []string {
	keys := []string{guessSourceKey(sa.Path().Remote.Addr())}
	if idi != nil {
		keys = append(keys, guessIDKey(poolKey(idi)))
	}
	return keys
}

// authFailed counts and logs one failed authentication: one line with the
// source and the identity (err never holds a secret).
func (sa *SA) authFailed(idi *wire.Identification, err error) {
	r := sa.resp
	r.authFailures.Add(1)
	id := ""
	if idi != nil {
		id = identityString(idi)
	}
	backoff := r.guess.fail(sa.cfg.clock.Now(), sa.guessKeys(idi)...)
	sa.log.Warn("initiator authentication failed", "remote", sa.Path().Remote.String(), "identity", id, "err", err, "backoff", backoff)
}

// errAuthBackoff refuses an IKE_AUTH during a backoff.
var errAuthBackoff = errors.New("too many failed authentications from this source or for this identity; try again later")

// authThrottled refuses an IKE_AUTH without checking it.
func (sa *SA) authThrottled(idi *wire.Identification, wait time.Duration) ([]wire.Payload, func()) {
	r := sa.resp
	r.authThrottled.Add(1)
	id := ""
	if idi != nil {
		id = identityString(idi)
	}
	r.unauthLog.log(sa.cfg.clock.Now(), sa.log, slog.LevelWarn, "IKE_AUTH refused: backing off after failed authentications",
		"remote", sa.Path().Remote.String(), "identity", id, "retry_in", wait.Round(time.Second))
	e := &NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: wire.ExchangeIKEAuth, Err: errAuthBackoff}
	return []wire.Payload{&wire.Notify{Type: wire.NotifyAuthenticationFailed}}, func() { sa.die(e) }
}
