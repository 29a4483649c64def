package ike

import (
	"math"
	"time"
)

// Retransmit is the request retransmission schedule of RFC 7296 2.1: the
// n-th retransmission (0-based) waits Initial*Factor^n, capped at Max, and
// after Retries retransmissions without a reply the exchange fails once the
// last timeout has passed.
type Retransmit struct {
	Initial time.Duration
	Factor  float64
	Max     time.Duration // 0 = no cap
	Retries int
}

// DefaultRetransmit matches strongSwan's defaults (4 s * 1.8^n, 5 retries,
// about 165 s in total).
var DefaultRetransmit = Retransmit{Initial: 4 * time.Second, Factor: 1.8, Retries: 5}

// ConnectRetransmit is a schedule for an interactive connect: short first
// timeouts, so an unreachable gateway is reported within about 10 s.
var ConnectRetransmit = Retransmit{Initial: 500 * time.Millisecond, Factor: 2, Max: 3 * time.Second, Retries: 4}

func (r Retransmit) normalized() Retransmit {
	if r.Initial <= 0 {
		return DefaultRetransmit
	}
	if r.Factor < 1 {
		r.Factor = 1
	}
	if r.Retries < 0 {
		r.Retries = 0
	}
	return r
}

// Timeout returns how long to wait for a reply after transmission n, where
// n = 0 is the original send.
func (r Retransmit) Timeout(n int) time.Duration {
	r = r.normalized()
	d := float64(r.Initial) * math.Pow(r.Factor, float64(n))
	if r.Max > 0 && d > float64(r.Max) {
		return r.Max
	}
	if d > float64(math.MaxInt64/2) {
		return time.Duration(math.MaxInt64 / 2)
	}
	return time.Duration(d)
}

// Total returns the time from the first send until the exchange is given up.
func (r Retransmit) Total() time.Duration {
	r = r.normalized()
	var t time.Duration
	for n := 0; n <= r.Retries; n++ {
		t += r.Timeout(n)
	}
	return t
}
