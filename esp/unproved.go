package esp

import "sync/atomic"

// Amplification is how many bytes of ESP the dataplane sends to a peer's
// unproved address for every byte of authentic ESP (or IKE, through the
// initial credit) that came from there. A peer's new address is unproved
// until it answers a return routability check (RFC 4555 3.7); until then
// the address may be anyone's, put there by the peer itself, so what goes
// there is held to what comes from there. Three is the limit QUIC puts on
// an address it has not validated (RFC 9000 8.1): an authenticated peer
// that names a third party gains at most three times the bytes it sends
// (with the third party's source address) itself.
const Amplification = 3

// unprovedOverhead is what sealing adds to an inner packet, counted
// against the credit: the ESP header, IV, ICV, padding and trailer (8 + 8
// + 16 + up to 5, see the path MTU notes), rounded up.
const unprovedOverhead = 40

// SetUnprovedPath moves the peer's ESP to path before the peer has proved
// that it receives there: the dataplane sends at most Amplification times
// credit bytes plus as much again of the authentic ESP that arrives from
// path's remote address, and what would go beyond that goes on the path in
// use now (whose own proof still stands). SetPath ends it: with path once
// the proof came, with the old path when it failed. credit is what the
// peer sent from there already (the UPDATE_SA_ADDRESSES itself).
func (d *Dataplane) SetUnprovedPath(p *Peer, path Path, credit int) {
	fallback := p.path.Load()
	if fallback != nil && fallback.credit != nil {
		fallback = fallback.fallback
	}
	pp := d.resolvePathMTU(p, path)
	pp.credit = new(atomic.Int64)
	pp.credit.Store(Amplification * int64(credit))
	pp.fallback = fallback
	p.path.Store(pp)
}

// Unproved reports whether the peer's ESP goes to an unproved path
// (SetUnprovedPath), and the bytes it may still send there.
func (p *Peer) Unproved() (credit int64, ok bool) {
	pp := p.path.Load()
	if pp == nil || pp.credit == nil {
		return 0, false
	}
	return pp.credit.Load(), true
}

// spend takes n inner bytes' worth of credit on an unproved path, or
// returns the path to send on instead.
func (pp *peerPath) spend(n int) *peerPath {
	cost := int64(n + unprovedOverhead)
	if pp.credit.Add(-cost) >= 0 {
		return pp
	}
	pp.credit.Add(cost)
	return pp.fallback
}

// earn credits authentic ESP of n bytes that arrived from from.
func (pp *peerPath) earn(from Path, n int) {
	if from.Remote == pp.Remote {
		pp.credit.Add(Amplification * int64(n))
	}
}
