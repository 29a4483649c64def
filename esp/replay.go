package esp

// replayWindow is an RFC 6479-style anti-replay window: a ring of 64-bit
// blocks, so sliding forward clears whole words instead of shifting bits.
// One block is kept spare, making the usable window (blocks-1)*64 = 8128
// (as wireguard-go's): at gigabit rates a GSO burst alone is 64 packets,
// and a path move or a busy peer can reorder more than a 2K window holds.
type replayWindow struct {
	top    uint64 // highest sequence number accepted (full 64 bits)
	bitmap [replayBlocks]uint64
}

const (
	replayBlocks = 128
	replayBits   = 64
	// ReplayWindow is how far behind the newest packet a packet may arrive.
	ReplayWindow = (replayBlocks - 1) * replayBits
)

// check returns the full sequence number for the received low 32 bits
// (inferring the high bits with ESN, RFC 4303 appendix A2) and whether it
// is new and within the window. It does not change the window.
func (w *replayWindow) check(seqLow uint32, esn bool) (uint64, bool) {
	seq := uint64(seqLow)
	if esn {
		seq = inferESN(w.top, seqLow)
	}
	if seq == 0 {
		return 0, false // sequence numbers start at 1
	}
	if seq > w.top {
		return seq, true
	}
	if w.top-seq >= ReplayWindow {
		return seq, false
	}
	block := (seq / replayBits) % replayBlocks
	return seq, w.bitmap[block]&(1<<(seq%replayBits)) == 0
}

// left reports whether seq is left of the window: older than the newest
// accepted by ReplayWindow or more, so it can no longer be told apart from
// a replay. Sequence number 0 is never valid and not left of it.
func (w *replayWindow) left(seq uint64) bool {
	return seq != 0 && seq <= w.top && w.top-seq >= ReplayWindow
}

// update marks seq as received, sliding the window when seq is the newest.
// It reports false if seq was already marked.
func (w *replayWindow) update(seq uint64) bool {
	if seq > w.top {
		cur := w.top / replayBits
		next := seq / replayBits
		diff := next - cur
		if diff > replayBlocks {
			diff = replayBlocks
		}
		for i := uint64(1); i <= diff; i++ {
			w.bitmap[(cur+i)%replayBlocks] = 0
		}
		w.top = seq
	} else if w.top-seq >= ReplayWindow {
		return false
	}
	block := (seq / replayBits) % replayBlocks
	bit := uint64(1) << (seq % replayBits)
	if w.bitmap[block]&bit != 0 {
		return false
	}
	w.bitmap[block] |= bit
	return true
}

// inferESN reconstructs a 64-bit sequence number from its low half, given
// the highest one seen (RFC 4303 A2.2, with W = ReplayWindow).
func inferESN(top uint64, seqLow uint32) uint64 {
	th, tl := uint32(top>>32), uint32(top)
	const w = ReplayWindow
	if tl >= w-1 {
		// Window within one subspace.
		if seqLow >= tl-(w-1) {
			return uint64(th)<<32 | uint64(seqLow)
		}
		return uint64(th+1)<<32 | uint64(seqLow)
	}
	// Window spans two subspaces.
	if seqLow >= tl-(w-1) { // wraps: seqLow in the previous subspace's tail
		if th == 0 {
			return uint64(seqLow)
		}
		return uint64(th-1)<<32 | uint64(seqLow)
	}
	return uint64(th)<<32 | uint64(seqLow)
}
