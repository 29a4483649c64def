package esp

import (
	"context"
	"sync/atomic"
	"time"
)

// Ending a new path's GSO pause early. A new path sends one datagram per
// packet for up to pmtuProbe so that its packets carry DF and a smaller
// link on the way answers with ICMP (mtu.go). Two seconds of that cost
// every connect and every move a large share of their throughput: without
// GSO each packet crosses the sender's stack on its own. The pause is
// only needed until a datagram as large as the segments GSO would send has
// gone out with DF and had time to draw an ICMP: the send stage records
// the largest single datagram it sent, and the probe loop, pmtuProbeRTT
// later, derives the path MTU again. If the kernel learnt nothing smaller,
// segments up to that size may go out with GSO at once.

// pmtuProbeRTT is how long a datagram sent with DF is given to draw an
// ICMP "fragmentation needed" from a router on the path: a round trip to
// that router on all but satellite paths. An ICMP that comes later still
// reaches the kernel, whose next segmented send of that size it refuses;
// the socket then falls back to one datagram per packet.
const pmtuProbeRTT = 250 * time.Millisecond

// probeQueue bounds the probes waiting for their check; a probe that does
// not fit keeps the pause to its full pmtuProbe.
const probeQueue = 256

// gsoProbe is one path's probe. The TUN loop's send stage is the only
// writer of sentSize and sentAt; the probe loop writes proven.
type gsoProbe struct {
	peer     *Peer
	check    chan<- *gsoProbe // the dataplane's probe loop
	sentSize atomic.Int64     // largest datagram sent alone during the pause
	sentAt   atomic.Int64     // unix ns when it was sent
	proven   atomic.Int64     // GSO may send segments up to this size
	queued   atomic.Bool      // waiting in the probe loop
}

func (d *Dataplane) newProbe(p *Peer) *gsoProbe {
	return &gsoProbe{peer: p, check: d.probes}
}

// gsoLimit is the largest segment a GSO datagram on pp may carry at now.
func (pp *peerPath) gsoLimit(now int64) int {
	if pp.noGSOUntil <= now {
		return maxPacket
	}
	if pp.probe == nil {
		return 0
	}
	return int(pp.probe.proven.Load())
}

// sentAlone records a datagram of size bytes sent on its own (with DF)
// while pp's pause lasts, and queues the probe's check when it is the
// largest so far. Called by the send stage only.
func (pp *peerPath) sentAlone(size int, now int64) {
	pr := pp.probe
	if pr == nil || pp.noGSOUntil <= now || int64(size) <= pr.sentSize.Load() {
		return
	}
	pr.sentSize.Store(int64(size))
	pr.sentAt.Store(now)
	if pr.queued.CompareAndSwap(false, true) {
		select {
		case pr.check <- pr:
		default:
			pr.queued.Store(false) // the pause runs its full length
		}
	}
}

// probeLoop checks probes in the order they came, each once its largest
// datagram has been out for pmtuProbeRTT. They come in the order of their
// sends, so waiting for one never delays another past its own time by
// more than the probes ahead of it take.
func (d *Dataplane) probeLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var pr *gsoProbe
		select {
		case <-ctx.Done():
			return
		case pr = <-d.probes:
		}
		for {
			size, at := pr.sentSize.Load(), pr.sentAt.Load()
			wait := time.Until(time.Unix(0, at).Add(pmtuProbeRTT))
			if wait > 0 {
				t.Reset(wait)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				continue // a larger datagram may have gone out meanwhile
			}
			d.refreshMTU(pr.peer)
			// A smaller MTU gave the peer a new path and probe; this one
			// proves nothing then.
			if pr.peer.path.Load().probe == pr {
				pr.proven.Store(size)
			}
			pr.queued.Store(false)
			if pr.sentSize.Load() == size || !pr.queued.CompareAndSwap(false, true) {
				break
			}
			// A larger datagram went out after the check began: check again.
		}
	}
}
