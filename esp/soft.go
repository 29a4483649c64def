package esp

import (
	"context"
	"sync/atomic"
)

// Packet-count soft lifetime. Without ESN an SA has 2^32-1 sequence
// numbers, about an hour at line rate, and then it can send nothing more
// (ErrSeqExhausted): the IKE side has to replace it well before. An
// outbound SA given a soft limit (ChildConfig.RekeyPackets) rings the
// dataplane's doorbell once, when its sequence number reaches the limit;
// the ring is a non-blocking send on a channel of one, so the packet path
// neither waits nor allocates. The dataplane's own goroutine then finds the
// children that crossed and calls their OnRekeyPackets, once each.

// DefaultRekeyPackets is the soft limit callers use when configured with
// none: three quarters of the sequence space without ESN, leaving a
// quarter (about 15 minutes at line rate) for the rekey to complete.
const DefaultRekeyPackets = 3 << 30

// softLimit is an outbound SA's packet-count soft lifetime.
type softLimit struct {
	at    uint64
	fired atomic.Bool
	bell  chan<- struct{}
}

// checkSoft rings the doorbell the first time seq reaches the limit.
func (sa *OutboundSA) checkSoft(seq uint64) {
	s := sa.soft
	if s == nil || seq < s.at || s.fired.Load() || !s.fired.CompareAndSwap(false, true) {
		return
	}
	select {
	case s.bell <- struct{}{}:
	default: // rung already; the loop scans every child
	}
}

// armSoft gives c's outbound SA its soft limit, from cfg.
func (d *Dataplane) armSoft(c *child, cfg ChildConfig) {
	if cfg.RekeyPackets == 0 || cfg.OnRekeyPackets == nil {
		return
	}
	c.onSoft = cfg.OnRekeyPackets
	cfg.Out.soft = &softLimit{at: cfg.RekeyPackets, bell: d.softBell}
}

// softLoop calls OnRekeyPackets of the children whose outbound SA crossed
// its soft limit.
func (d *Dataplane) softLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.softBell:
		}
		for _, c := range d.bySPI.all() {
			if s := c.out.soft; s != nil && s.fired.Load() && c.softReported.CompareAndSwap(false, true) {
				c.onSoft()
			}
		}
	}
}
