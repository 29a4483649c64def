package ike

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// Round-trip times (RFC 6298's smoothing) and the last signs of traffic,
// for the owner's status: whether the gateway really answers, and how fast.
// Samples come from the exchanges the SA runs anyway: IKE_SA_INIT, liveness
// checks, MOBIKE updates, rekeys. IKE_AUTH's answer can wait for an EAP or
// certificate backend, so it only gives a provisional first estimate (after
// a reconnect whose IKE_SA_INIT was retransmitted there is no other), which
// the first real sample replaces. A request that was retransmitted gives no
// sample (Karn): which transmission was answered is unknown.

// maxRTTPaths bounds the per-path table; a path unused longest is dropped.
const maxRTTPaths = 8

// rttKey names a path by its addresses: a port change (the float to 4500,
// a NAT's new mapping) does not change the route.
type rttKey struct{ local, remote netip.Addr }

type rttEntry struct {
	srtt, rttvar time.Duration
	samples      int
	used         time.Time
	provisional  bool // only IKE_AUTH measured it
}

// rttTable is read by status from any goroutine; the SA goroutine writes.
// exchangeTimes is what status shows of the SA's exchanges: round-trip
// times by path, and when the last request was sent, the last answer
// received and the peer last heard (UnixNano). Status reads them from
// other goroutines.
type exchangeTimes struct {
	rtt         rttTable
	requestedAt atomic.Int64
	answeredAt  atomic.Int64
	heardAt     atomic.Int64
}

type rttTable struct {
	mu    sync.Mutex
	paths map[rttKey]*rttEntry
}

// PathRTT is the smoothed round-trip time of one path.
type PathRTT struct {
	SRTT, RTTVar time.Duration
	Samples      int
}

// add smooths sample into p's estimate. A provisional sample only makes a
// first estimate; a real one replaces a provisional estimate.
func (t *rttTable) add(p netpath.Path, sample time.Duration, provisional bool, now time.Time) {
	if sample < 0 {
		return
	}
	k := rttKey{p.Local.Addr(), p.Remote.Addr()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paths == nil {
		t.paths = make(map[rttKey]*rttEntry)
	}
	e := t.paths[k]
	switch {
	case e != nil && provisional:
		return
	case e != nil && e.provisional:
		delete(t.paths, k)
		e = nil
	}
	if e == nil {
		if len(t.paths) >= maxRTTPaths {
			var oldest rttKey
			var at time.Time
			for k, e := range t.paths {
				if at.IsZero() || e.used.Before(at) {
					oldest, at = k, e.used
				}
			}
			delete(t.paths, oldest)
		}
		e = &rttEntry{srtt: sample, rttvar: sample / 2, provisional: provisional}
		t.paths[k] = e
	} else {
		d := e.srtt - sample
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4
		e.srtt = (7*e.srtt + sample) / 8
	}
	e.samples++
	e.used = now
}

func (t *rttTable) get(p netpath.Path) (PathRTT, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.paths[rttKey{p.Local.Addr(), p.Remote.Addr()}]
	if e == nil {
		return PathRTT{}, false
	}
	return PathRTT{SRTT: e.srtt, RTTVar: e.rttvar, Samples: e.samples}, true
}

// noteAnswer records the RTT of r, answered now on path (the one it came
// back on: the local address we sent from may have been a wildcard).
func (sa *SA) noteAnswer(r *request, path netpath.Path) {
	now := sa.cfg.clock.Now()
	sa.times.answeredAt.Store(now.UnixNano())
	if r.sends != 1 || r.sentAt.IsZero() {
		return
	}
	sa.times.rtt.add(path, now.Sub(r.sentAt), r.exchange == wire.ExchangeIKEAuth, now)
}

// NoteRTT adds a round trip measured on p outside IKE: the tunnel's own
// traffic, whose requests and answers the dataplane pairs
// (esp.Peer.SetEchoRTT). Any goroutine may call it.
func (sa *SA) NoteRTT(p netpath.Path, sample time.Duration) {
	sa.times.rtt.add(p, sample, false, sa.cfg.clock.Now())
}

// noteHeard records an authenticated message from the peer.
func (sa *SA) noteHeard(now time.Time) {
	sa.dpd.lastIn = now
	sa.times.heardAt.Store(now.UnixNano())
	sa.heardOnce.Do(func() { close(sa.heard) })
}

// Heard is closed once the peer has been heard (LastHeard is no longer
// zero), so a wait for the first answer needs no polling.
func (sa *SA) Heard() <-chan struct{} { return sa.heard }

// RTT returns the smoothed round-trip time of p (ok: at least one sample).
func (sa *SA) RTT(p netpath.Path) (PathRTT, bool) { return sa.times.rtt.get(p) }

// Activity returns when we last sent a request (a retransmission counts)
// and when the peer last answered one; zero: never. An answer proves that
// what we send arrives, which a request from the peer does not.
func (sa *SA) Activity() (requested, answered time.Time) {
	return unixTime(&sa.times.requestedAt), unixTime(&sa.times.answeredAt)
}

// LastHeard returns when an authenticated message (request or response)
// last came from the peer; zero: never. Unlike the DPD timer's view, a
// pause of DPD does not make one up.
func (sa *SA) LastHeard() time.Time { return unixTime(&sa.times.heardAt) }

func unixTime(v *atomic.Int64) time.Time {
	n := v.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
