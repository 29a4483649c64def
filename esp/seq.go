package esp

// Sequence number hooks for HA (RFC 6311): a standby node continues a
// replicated Child SA from the counters the active node last reported, and
// a peer told to by IPSEC_REPLAY_COUNTER_SYNC skips ahead, so no sequence
// number is used twice under one key and the new node's replay window does
// not refuse fresh packets.

// applySeq starts cfg's SAs at the configured counters.
func applySeq(cfg ChildConfig) {
	if cfg.OutboundSeq > 0 {
		cfg.Out.seq.Store(cfg.OutboundSeq - 1)
	}
	if cfg.InboundSeq > 0 {
		cfg.In.mu.Lock()
		cfg.In.window.startAt(cfg.InboundSeq)
		cfg.In.mu.Unlock()
	}
}

// Advance skips delta sequence numbers: the next Seal uses Seq()+delta+1.
// It returns the new last sequence number (saturated at the maximum, after
// which Seal reports ErrSeqExhausted).
func (sa *OutboundSA) Advance(delta uint64) uint64 {
	for {
		cur := sa.seq.Load()
		next := cur + delta
		if next < cur {
			next = ^uint64(0)
		}
		if sa.seq.CompareAndSwap(cur, next) {
			return next
		}
	}
}

// Highest is the highest sequence number accepted so far.
func (sa *InboundSA) Highest() uint64 {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	return sa.window.top
}

// startAt resets the window as if every sequence number up to top had
// arrived: only packets above top pass.
func (w *replayWindow) startAt(top uint64) {
	w.top = top
	for i := range w.bitmap {
		w.bitmap[i] = ^uint64(0)
	}
	// Bits above top in its own block stand for numbers not yet seen; the
	// blocks after it are cleared as the window slides into them.
	bit := top % replayBits
	w.bitmap[(top/replayBits)%replayBlocks] = ^uint64(0) >> (replayBits - 1 - bit)
}

// ChildSeq returns the last sequence number sent on the child whose
// outbound SPI is spiOut (what an HA active node replicates).
func (d *Dataplane) ChildSeq(spiOut uint32) (uint64, bool) {
	if c := d.childByOut(spiOut); c != nil {
		return c.out.Seq(), true
	}
	return 0, false
}

// ChildOutboundSeq is ChildSeq for the child whose inbound SPI is spiIn:
// a lookup without a scan, and unambiguous where two peers chose the same
// outbound SPI (they choose it, we choose the inbound ones).
func (d *Dataplane) ChildOutboundSeq(spiIn uint32) (uint64, bool) {
	if c := d.child(spiIn); c != nil {
		return c.out.Seq(), true
	}
	return 0, false
}

// ChildInboundSeq returns the highest sequence number accepted on the
// child whose inbound SPI is spiIn.
func (d *Dataplane) ChildInboundSeq(spiIn uint32) (uint64, bool) {
	if c := d.child(spiIn); c != nil {
		return c.in.Highest(), true
	}
	return 0, false
}

// AdvanceSeq skips delta outbound sequence numbers on the child whose
// outbound SPI is spiOut (RFC 6311 IPSEC_REPLAY_COUNTER_SYNC); false when
// no such child is installed.
func (d *Dataplane) AdvanceSeq(spiOut uint32, delta uint64) bool {
	if c := d.childByOut(spiOut); c != nil {
		c.out.Advance(delta)
		return true
	}
	return false
}

func (d *Dataplane) childByOut(spiOut uint32) *child {
	for _, c := range d.bySPI.all() {
		if c.out.SPI() == spiOut {
			return c
		}
	}
	return nil
}
