package ike

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// PathUpdated reports (to a responder's owner) that the initiator moved the
// SA with UPDATE_SA_ADDRESSES: ESP must follow to Path.
type PathUpdated struct {
	SA        *SA
	Path      netpath.Path
	NATRemote bool
	// Unproved (responder with ResponderConfig.EarlyMove): the peer asked
	// for Path, which has not answered a return routability check yet.
	// ESP may go there within an amplification limit of what comes from
	// there (esp.Dataplane.SetUnprovedPath), the first Credit bytes (the
	// request that asked for it) included; the check's end follows as
	// another PathUpdated: to Path, proved, or back to the old path.
	Unproved bool
	Credit   int
	// Back: ESP returns to the SA's own path, unchanged, after going
	// ahead to a path whose check ended without a move there.
	Back bool
}

func (*PathUpdated) event() {}

// MoveResult is where a MOBIKE update landed.
type MoveResult struct {
	Path     netpath.Path // as the response arrived (local address and interface filled in)
	NATLocal bool         // a NAT is in front of us on this path
	RTT      time.Duration
}

// MoveRetransmit is the per-path schedule of UPDATE_SA_ADDRESSES: short, as
// a path that does not answer within a few RTTs is not worth waiting for
// while the user's traffic is stalled.
var MoveRetransmit = Retransmit{Initial: 200 * time.Millisecond, Factor: 1.5, Max: 2 * time.Second, Retries: 8}

// ErrNoMOBIKE is returned when the peer did not negotiate MOBIKE.
var ErrNoMOBIKE = errors.New("ike: the peer does not support MOBIKE")

// mobikeState is an SA's MOBIKE state (RFC 4555), owned by the SA
// goroutine.
type mobikeState struct {
	// peer: MOBIKE was negotiated (the peer sent MOBIKE_SUPPORTED to our
	// offer); peerData is the data of its notify (roam's capabilities,
	// switch.go).
	peer     bool
	peerData []byte
	// peerAddrs is the peer's address set (learnAddresses).
	peerAddrs []netip.Addr
	// Initiator: the address update in progress, and the last one that
	// got no answer (its message ID and COOKIE2 are reused).
	update *pendingUpdate
	failed *failedUpdate
	// lastRespMoved: the cached response accepted UPDATE_SA_ADDRESSES.
	lastRespMoved bool
	rr            routability // responder
}

// routability is a responder's return routability state (RFC 4555 3.7):
// the remote endpoints that proved it, the path the peer asked for while
// it is being checked, and whether a check is queued or outstanding.
type routability struct {
	verified []netip.AddrPort
	target   *netpath.Path
	running  bool
	early    bool // ESP went ahead to target (ResponderConfig.EarlyMove)
}

// failedUpdate remembers an UPDATE_SA_ADDRESSES that got no answer: the
// peer may have received it (and moved), or not. The next update reuses its
// message ID and COOKIE2, so either way the peer and we agree afterwards.
type failedUpdate struct {
	msgID   uint32
	cookie2 []byte
	// copies went out (sa.go transmit); the next update sends them again,
	// as a peer that took one of them answers only an identical copy.
	copies []sentCopy
}

type moveOutcome struct {
	res MoveResult
	err error
}

// pendingUpdate is the initiator's address update in progress. Candidate
// paths the peer refuses (UNACCEPTABLE_ADDRESSES, UNEXPECTED_NAT_DETECTED)
// leave paths; while any remain the update goes on with a new request.
type pendingUpdate struct {
	paths   []netpath.Path
	waiters []chan moveOutcome
	start   time.Time
	refused error // the last refusal, returned when no path is left
	// req is the request on the wire (nil while queued); its transmission
	// n goes over paths[(n-base) % len(paths)], so new paths start with
	// their first.
	req  *request
	base int
}

// Limits on address lists: strongSwan sends at most 8 ADDITIONAL_*
// notifies; we keep a few more of the peer's and remember a few verified
// endpoints per SA, so an authenticated peer cannot grow our state.
const (
	maxAnnounced     = 8
	maxPeerAddresses = 16
	maxVerified      = 8
)

// PeerAddresses returns the peer's addresses: the current one first, then
// every other one it announced (ADDITIONAL_IP4/6_ADDRESS) or sent an
// announcement from, so the set does not shrink when the SA moves between
// them.
func (sa *SA) PeerAddresses() []netip.Addr {
	res := make(chan []netip.Addr, 1)
	if !sa.post(func() {
		out := []netip.Addr{sa.Path().Remote.Addr().Unmap()}
		for _, a := range sa.mobike.peerAddrs {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
		res <- out
	}) {
		return []netip.Addr{sa.Path().Remote.Addr()}
	}
	select {
	case a := <-res:
		return a
	case <-sa.done:
		return []netip.Addr{sa.Path().Remote.Addr()}
	}
}

// announceable reports whether a is worth telling a peer (or taking from
// one) as an address to reach us (it) at.
func announceable(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// addressNotifies announces addrs other than current (RFC 4555 3.4, 3.6):
// "additional" excludes the address the SA uses, and an empty list is said
// with NO_ADDITIONAL_ADDRESSES.
func addressNotifies(addrs []netip.Addr, current netip.Addr) []wire.Payload {
	var out []wire.Payload
	var seen []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !announceable(a) || a == current.Unmap() || slices.Contains(seen, a) {
			continue
		}
		seen = append(seen, a)
		t := wire.NotifyAdditionalIP4Address
		if a.Is6() {
			t = wire.NotifyAdditionalIP6Address
		}
		out = append(out, &wire.Notify{Type: t, Data: a.AsSlice()})
		if len(out) == maxAnnounced {
			break
		}
	}
	if len(out) == 0 {
		return []wire.Payload{&wire.Notify{Type: wire.NotifyNoAdditionalAddresses}}
	}
	return out
}

// learnAddresses records the peer's address set from its ADDITIONAL_* or
// NO_ADDITIONAL_ADDRESSES notifies: the announced addresses plus from, the
// address the announcement came from, which the list leaves out by
// definition. A message without such notifies changes nothing; notifies
// whose data is not an address of their family are dropped and counted.
func (sa *SA) learnAddresses(ps []wire.Payload, from netip.Addr) {
	var addrs []netip.Addr
	seen := false
	for _, n := range wire.NotifiesIn(ps) {
		switch n.Type {
		case wire.NotifyAdditionalIP4Address, wire.NotifyAdditionalIP6Address:
			want := 4
			if n.Type == wire.NotifyAdditionalIP6Address {
				want = 16
			}
			a, ok := netip.AddrFromSlice(n.Data)
			if !ok || len(n.Data) != want {
				sa.stats.badNotifies.Add(1)
				continue
			}
			seen = true
			if a = a.Unmap(); announceable(a) && !slices.Contains(addrs, a) && len(addrs) < maxPeerAddresses {
				addrs = append(addrs, a)
			}
		case wire.NotifyNoAdditionalAddresses:
			seen = true
		}
	}
	if !seen {
		return
	}
	if from = from.Unmap(); from.IsValid() && !slices.Contains(addrs, from) {
		addrs = append([]netip.Addr{from}, addrs...)
	}
	sa.mobike.peerAddrs = addrs
}

// noNATsData is the NO_NATS_ALLOWED data for a packet sent on path (RFC
// 4555 4.2): source address, destination address, source port, destination
// port, as the sender puts them in the IP and UDP headers.
func noNATsData(path netpath.Path) []byte {
	src, dst := path.Local.Addr().Unmap(), path.Remote.Addr().Unmap()
	if src.Is4() != dst.Is4() {
		return nil
	}
	b := append(src.AsSlice(), dst.AsSlice()...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, path.Local.Port()), path.Remote.Port())
}

// checkNoNATs compares a received NO_NATS_ALLOWED with the headers of the
// packet that carried it (from: Remote its source, Local its destination):
// 0 when they match, UNEXPECTED_NAT_DETECTED when not, INVALID_SYNTAX when
// the data is no such address pair.
func checkNoNATs(data []byte, from netpath.Path) wire.NotifyType {
	var n int
	switch len(data) {
	case 12:
		n = 4
	case 36:
		n = 16
	default:
		return wire.NotifyInvalidSyntax
	}
	src, _ := netip.AddrFromSlice(data[:n])
	dst, _ := netip.AddrFromSlice(data[n : 2*n])
	sport := binary.BigEndian.Uint16(data[2*n:])
	dport := binary.BigEndian.Uint16(data[2*n+2:])
	if netip.AddrPortFrom(src, sport) != unmapPort(from.Remote) || netip.AddrPortFrom(dst, dport) != unmapPort(from.Local) {
		return wire.NotifyUnexpectedNATDetected
	}
	return 0
}

func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// samePath compares the endpoints of two paths (not the interface).
func samePath(a, b netpath.Path) bool {
	return unmapPort(a.Local) == unmapPort(b.Local) && unmapPort(a.Remote) == unmapPort(b.Remote)
}

// natdFor returns the NAT detection notifies for a path. With forced UDP
// encapsulation the source hash stays deliberately wrong, as in IKE_SA_INIT.
func (sa *SA) natdFor(path netpath.Path) []wire.Payload {
	spii, spir := sa.SPIs()
	src := natHash(spii, spir, path.Local)
	if sa.nat.forced {
		src = sa.randBytes(len(src))
	}
	return []wire.Payload{
		&wire.Notify{Type: wire.NotifyNATDetectionSourceIP, Data: src},
		&wire.Notify{Type: wire.NotifyNATDetectionDestinationIP, Data: natHash(spii, spir, path.Remote)},
	}
}

// UpdateAddresses moves the SA to the first of paths over which the peer
// answers an UPDATE_SA_ADDRESSES (RFC 4555 3.5). One request is sent and
// retransmitted round-robin over the paths, each retransmission with the
// NAT detection payloads of its own path, so the answer itself is the path
// test. On success the SA's path is the one the answer arrived on.
//
// A path the peer refuses (UNACCEPTABLE_ADDRESSES, or UNEXPECTED_NAT_DETECTED
// when InitiatorConfig.ForbidNAT is set; with ForbidNAT a NAT we detect
// ourselves counts the same) is dropped and the update goes on over the
// rest; when none is left the error is a *NotifyError matching
// ErrUnacceptableAddresses or ErrUnexpectedNAT. A call while an update is
// in progress replaces its paths (the newest addresses win) and gets the
// same outcome.
func (sa *SA) UpdateAddresses(ctx context.Context, paths []netpath.Path) (MoveResult, error) {
	if len(paths) == 0 {
		return MoveResult{}, errors.New("ike: no path to update to")
	}
	paths = slices.Clone(paths)
	done := make(chan moveOutcome, 1)
	ok := sa.post(func() {
		if !sa.initiator {
			done <- moveOutcome{err: errors.New("ike: only the initiator updates addresses")}
			return
		}
		if sa.state != stateEstablished {
			done <- moveOutcome{err: fmt.Errorf("ike: address update in state %s", sa.state)}
			return
		}
		if !sa.mobike.peer {
			done <- moveOutcome{err: ErrNoMOBIKE}
			return
		}
		if u := sa.mobike.update; u != nil {
			u.paths = paths
			u.refused = nil
			u.waiters = append(u.waiters, done)
			if u.req != sa.out {
				sa.sendOutstandingAhead(u) // queued behind it
			}
			sa.resendUpdate(u)
			return
		}
		u := &pendingUpdate{paths: paths, waiters: []chan moveOutcome{done}, start: time.Now()}
		sa.mobike.update = u
		sa.sendUpdate(u)
	})
	if !ok {
		return MoveResult{}, ErrClosed
	}
	select {
	case o := <-done:
		return o.res, o.err
	case <-sa.done:
		return MoveResult{}, ErrClosed
	case <-ctx.Done():
		return MoveResult{}, ctx.Err()
	}
}

// finishUpdate reports the update's outcome to everyone waiting for it.
func (sa *SA) finishUpdate(u *pendingUpdate, o moveOutcome) {
	if sa.mobike.update == u {
		sa.mobike.update = nil
	}
	for _, w := range u.waiters {
		w <- o
	}
}

// sendUpdate sends (or queues) one UPDATE_SA_ADDRESSES request for u.
func (sa *SA) sendUpdate(u *pendingUpdate) {
	cookie2 := sa.randBytes(16)
	msgID := sa.nextMsgID
	var copies []sentCopy
	if f := sa.mobike.failed; f != nil {
		cookie2, msgID, copies = f.cookie2, f.msgID, f.copies
	}
	sa.mobike.failed = nil
	build := func(path netpath.Path) []wire.Payload {
		ps := []wire.Payload{&wire.Notify{Type: wire.NotifyUpdateSAAddresses}}
		ps = append(ps, sa.natdFor(path)...)
		if sa.icfg.ForbidNAT {
			if d := noNATsData(path); d != nil {
				ps = append(ps, &wire.Notify{Type: wire.NotifyNoNATsAllowed, Data: d})
			}
		}
		return append(ps, &wire.Notify{Type: wire.NotifyCookie2, Data: cookie2})
	}
	paths := func(n int) (netpath.Path, bool) { return u.paths[(n-u.base)%len(u.paths)], true }
	r := &request{exchange: wire.ExchangeInformational, msgID: msgID, keepSA: true, sched: &MoveRetransmit, paths: paths, copies: copies}
	u.req, u.base = r, 0
	r.rebuild = func(path netpath.Path) ([]byte, error) {
		return sa.seal(sa.header(wire.ExchangeInformational, msgID, false), build(path))
	}
	r.onResponse = func(_ wire.Header, ps []wire.Payload, _ []byte) { sa.handleUpdateResponse(u, r, ps, cookie2) }
	r.onTimeout = func(err error) {
		sa.mobike.failed = &failedUpdate{msgID: msgID, cookie2: cookie2, copies: r.copies}
		if u.refused != nil {
			err = fmt.Errorf("%w; before that: %w", err, u.refused)
		}
		sa.finishUpdate(u, moveOutcome{err: err})
	}
	send := func() {
		if sa.nextMsgID == msgID {
			sa.nextMsgID++
		}
		sa.sendRequest(r)
	}
	if sa.busy() {
		sa.queue = append([]func(){send}, sa.queue...)
		sa.sendOutstandingAhead(u)
		return
	}
	send()
}

// sendOutstandingAhead retransmits our request in flight, which keeps the
// window from the queued update u, over u's first path at once and from
// then on alternately over it and the SA's path (RFC 4555 3.5 has
// outstanding requests retransmitted over the new addresses). The same
// message with the same ID, so the peer answers it where it came from
// (RFC 7296 2.11) whether it took it before or not; left on a path that
// has gone, it would run out of retransmissions and end the SA, with the
// update never sent. The SA's path keeps its turn, as u's may not work.
func (sa *SA) sendOutstandingAhead(u *pendingUpdate) {
	o := sa.out
	if o == nil || o == u.req || o.paths != nil || o.timer == nil || len(u.paths) == 0 || samePath(o.sentOn, u.paths[0]) {
		return
	}
	base := o.sends
	o.paths = func(n int) (netpath.Path, bool) {
		if v := sa.mobike.update; v != nil && v.req != sa.out && len(v.paths) > 0 && (n-base)%2 == 0 {
			return v.paths[0], true
		}
		return sa.Path(), true
	}
	o.timer.Stop()
	sa.log.Info("moving while a request is outstanding; retransmitting it over the new path", "exchange", o.exchange, "msgid", o.msgID, "to", u.paths[0].Remote.String())
	sa.transmit(o)
}

func (sa *SA) handleUpdateResponse(u *pendingUpdate, r *request, ps []wire.Payload, cookie2 []byte) {
	n := wire.FindNotify(ps, wire.NotifyCookie2)
	if n == nil || subtle.ConstantTimeCompare(n.Data, cookie2) != 1 {
		// An authenticated answer with the wrong cookie: the peer is broken
		// or worse, and RFC 4555 3.7 says to close the IKE SA.
		err := &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeInformational, Remote: true,
			Err: errors.New("COOKIE2 missing or wrong in the UPDATE_SA_ADDRESSES response")}
		sa.finishUpdate(u, moveOutcome{err: err})
		sa.failAfterAuth(err, true)
		return
	}
	path := sa.respPath
	path.IfIndex = r.sentOn.IfIndex
	spii, spir := sa.SPIs()
	dstOK, _ := natMatches(ps, wire.NotifyNATDetectionDestinationIP, spii, spir, path.Local)
	srcOK, srcPresent := natMatches(ps, wire.NotifyNATDetectionSourceIP, spii, spir, path.Remote)
	if len(r.copies) > 1 && !(dstOK && srcOK) {
		// Copies built for other paths went out with this one, and the
		// answer's NAT detection hashes are not this path's: it may be
		// the peer's stored answer to a copy it took earlier over another
		// path, the peer still there (strongSwan answers a bitwise
		// retransmission from its cache and moves nothing). The path
		// works; whether the peer follows is asked with a new request
		// (the next message ID, a fresh COOKIE2) over it alone, whose
		// answer is unambiguous (RFC 4555 3.5: an address change during
		// the update starts it again).
		sa.log.Info("update answered for another path's copy; updating again", "local", path.Local.Addr(), "remote", path.Remote, "msgid", r.msgID)
		u.paths = []netpath.Path{path}
		sa.mobike.failed = nil
		sa.sendUpdate(u)
		return
	}
	if e := wire.FirstError(ps); e != nil {
		if e.Type != wire.NotifyUnacceptableAddresses && e.Type != wire.NotifyUnexpectedNATDetected {
			sa.finishUpdate(u, moveOutcome{err: &NotifyError{Type: e.Type, Exchange: wire.ExchangeInformational, Remote: true}})
			return
		}
		sa.refusePath(u, path, &NotifyError{Type: e.Type, Exchange: wire.ExchangeInformational, Remote: true,
			Err: fmt.Errorf("path %s - %s", path.Local.Addr(), path.Remote)})
		return
	}
	if sa.icfg.ForbidNAT && (!dstOK || (srcPresent && !srcOK)) {
		// The peer may not have checked (NO_NATS_ALLOWED is optional to
		// implement) and has moved; the next update, if any path is left,
		// moves it again.
		sa.refusePath(u, path, &NotifyError{Type: wire.NotifyUnexpectedNATDetected, Exchange: wire.ExchangeInformational,
			Err: fmt.Errorf("NAT on path %s - %s, and the profile forbids NAT", path.Local.Addr(), path.Remote)})
		return
	}
	sa.setPath(path)
	sa.nat.local = !dstOK
	sa.learnAddresses(ps, path.Remote.Addr())
	sa.finishUpdate(u, moveOutcome{res: MoveResult{Path: path, NATLocal: !dstOK, RTT: time.Since(u.start)}})
}

// resendUpdate sends the update in flight over the first of its new paths
// now rather than at its next retransmission: the caller had a reason to
// change them (a gateway asking to switch, an address gone), and the
// schedule may be seconds away. The message ID and COOKIE2 stay, so
// whichever copy the peer answers, the answer is the update's.
func (sa *SA) resendUpdate(u *pendingUpdate) {
	r := u.req
	if r == nil || sa.out != r || len(u.paths) == 0 || samePath(r.sentOn, u.paths[0]) {
		return // queued (it will go out with the new paths), or no change
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	u.base = r.sends
	sa.transmit(r)
}

// refusePath drops the candidate the peer refused (matched by where the
// answer came from) and goes on with the others.
func (sa *SA) refusePath(u *pendingUpdate, path netpath.Path, err error) {
	sa.log.Info("path refused", "local", path.Local.Addr(), "remote", path.Remote, "err", err)
	n := len(u.paths)
	u.paths = slices.DeleteFunc(u.paths, func(c netpath.Path) bool {
		return unmapPort(c.Remote) == unmapPort(path.Remote) && c.Local.Addr().Unmap() == path.Local.Addr().Unmap()
	})
	u.refused = err
	if len(u.paths) == 0 || len(u.paths) == n {
		sa.finishUpdate(u, moveOutcome{err: err})
		return
	}
	sa.sendUpdate(u)
}

// handleMOBIKERequest handles the MOBIKE parts of an INFORMATIONAL request:
// NAT detection payloads are answered in kind, COOKIE2 echoed, address
// lists learnt, and an UPDATE_SA_ADDRESSES from the initiator that passes
// our policy moves the SA to the path it came from (after the return
// routability check, see peerMoved).
func (sa *SA) handleMOBIKERequest(ps []wire.Payload, from netpath.Path, size int) (resp []wire.Payload, moved bool) {
	if wire.FindNotify(ps, wire.NotifyNATDetectionSourceIP) != nil {
		spii, spir := sa.SPIs()
		resp = append(resp,
			&wire.Notify{Type: wire.NotifyNATDetectionSourceIP, Data: natHash(spii, spir, from.Local)},
			&wire.Notify{Type: wire.NotifyNATDetectionDestinationIP, Data: natHash(spii, spir, from.Remote)})
	}
	if c := wire.FindNotify(ps, wire.NotifyCookie2); c != nil {
		resp = append(resp, &wire.Notify{Type: wire.NotifyCookie2, Data: slices.Clone(c.Data)})
	}
	if !sa.mobike.peer {
		return resp, false
	}
	sa.learnAddresses(ps, from.Remote.Addr())
	if wire.FindNotify(ps, wire.NotifyUpdateSAAddresses) == nil || sa.initiator {
		return resp, false
	}
	if t := sa.refuseUpdate(ps, from); t != 0 {
		sa.stats.refusedUpdates.Add(1)
		sa.log.Info("address update refused", "remote", from.Remote, "local", from.Local, "notify", t)
		return append(resp, &wire.Notify{Type: t}), false
	}
	sa.peerMoved(from, false, size)
	return resp, true
}

// refuseUpdate applies the responder's policy to an UPDATE_SA_ADDRESSES
// that came over from: the error notify to answer with, or 0.
func (sa *SA) refuseUpdate(ps []wire.Payload, from netpath.Path) wire.NotifyType {
	if f := sa.resp.cfg.AcceptPeerAddress; f != nil && !f(from.Remote.Addr().Unmap()) {
		return wire.NotifyUnacceptableAddresses
	}
	if n := wire.FindNotify(ps, wire.NotifyNoNATsAllowed); n != nil {
		t := checkNoNATs(n.Data, from)
		if t == wire.NotifyInvalidSyntax {
			sa.stats.badNotifies.Add(1)
		}
		return t
	}
	return 0
}

// peerMoved follows the initiator to p: at once when p is known to reach
// it (or the check is off), else after a return routability check. Until
// then IKE stays on the current path, which keeps a make-before-break
// move lossless, and so does ESP unless EarlyMove sends it ahead within
// the dataplane's amplification limit (size: the request's bytes, the
// first the peer sent from p). A duplicate (a retransmitted
// UPDATE_SA_ADDRESSES, or a replay of it by anyone who saw it) is checked
// even at an address proved before: the peer may have left it, and the
// replay proves nothing.
func (sa *SA) peerMoved(p netpath.Path, duplicate bool, size int) {
	if samePath(p, sa.Path()) {
		if sa.mobike.rr.target != nil {
			sa.log.Info("peer moved back before the return routability check ended", "to", p.Remote.String())
		}
		sa.mobike.rr.target = nil
		sa.endEarlyMove()
		return
	}
	if sa.mobike.rr.target != nil && samePath(*sa.mobike.rr.target, p) {
		return
	}
	if sa.resp.cfg.NoReturnRoutability || (!duplicate && (sa.isVerified(p.Remote) || sa.switchSkipsCheck(p))) {
		sa.mobike.rr.target = nil
		sa.mobike.rr.early = false
		sa.movePath(p)
		return
	}
	sa.mobike.rr.target = &p
	if sa.resp.cfg.EarlyMove {
		sa.mobike.rr.early = true
		sa.log.Info("ESP goes ahead to the unproved path within the amplification limit", "to", p.Remote.String())
		sa.emit(&PathUpdated{SA: sa, Path: p, NATRemote: sa.nat.remote, Unproved: true, Credit: size})
	}
	sa.redirectOutstanding()
	sa.startRoutabilityCheck()
}

// endEarlyMove brings ESP that went ahead to an unproved path back to the
// SA's path, when that path's check ended without a move there.
func (sa *SA) endEarlyMove() {
	if !sa.mobike.rr.early {
		return
	}
	sa.mobike.rr.early = false
	sa.emit(&PathUpdated{SA: sa, Path: sa.Path(), NATRemote: sa.nat.remote, Back: true})
}

// redirectOutstanding sends our own request in flight, if it went to a
// path other than the one under test, after the peer: a liveness check sent while
// a client slept or its NAT forgot it cannot be answered there, and the
// routability check queues behind it, so ESP would stay on the dead path
// until dead peer detection gave up on the SA. It is retransmitted at once
// to the path under test (the same authenticated message, so a forged
// source gains an attacker one packet per retransmission, no more); its
// answer frees the window for the check. The request may have gone out
// before the SA's latest move, to a path the peer left even earlier: an
// update from a proved address moves the SA at once, and its
// retransmission from an unproved one, moments later, starts the check.
func (sa *SA) redirectOutstanding() {
	o := sa.out
	if o == nil || o.paths != nil || o.timer == nil || sa.mobike.rr.target == nil || samePath(o.sentOn, *sa.mobike.rr.target) {
		return
	}
	o.paths = func(int) (netpath.Path, bool) {
		if sa.mobike.rr.target != nil {
			return *sa.mobike.rr.target, true
		}
		return sa.Path(), true
	}
	o.timer.Stop()
	sa.log.Info("peer moved while a request was outstanding; retransmitting it there", "exchange", o.exchange, "to", sa.mobike.rr.target.Remote.String())
	sa.transmit(o)
}

// movePath moves a responder's SA (and, through PathUpdated, its ESP) to
// the path an UPDATE_SA_ADDRESSES came from.
func (sa *SA) movePath(p netpath.Path) {
	old := sa.Path()
	sa.setPath(p)
	sa.log.Info("peer moved", "from", old.Remote.String(), "to", p.Remote.String())
	sa.emit(&PathUpdated{SA: sa, Path: p, NATRemote: sa.nat.remote})
	sa.switchLanded(p)
}

func (sa *SA) isVerified(ap netip.AddrPort) bool {
	return slices.Contains(sa.mobike.rr.verified, unmapPort(ap))
}

// addVerified remembers an endpoint the peer proved to receive at; the
// oldest is forgotten beyond maxVerified.
func (sa *SA) addVerified(ap netip.AddrPort) {
	ap = unmapPort(ap)
	if slices.Contains(sa.mobike.rr.verified, ap) {
		return
	}
	if len(sa.mobike.rr.verified) == maxVerified {
		sa.mobike.rr.verified = slices.Delete(sa.mobike.rr.verified, 0, 1)
	}
	sa.mobike.rr.verified = append(sa.mobike.rr.verified, ap)
}

// startRoutabilityCheck sends an INFORMATIONAL request with a fresh COOKIE2
// to sa.mobike.rr.target (RFC 4555 3.7). One check runs at a time; a newer target
// takes over its retransmissions, and an answer from an older one starts
// another check.
func (sa *SA) startRoutabilityCheck() {
	if sa.mobike.rr.running {
		return
	}
	sa.mobike.rr.running = true
	send := func() {
		if sa.mobike.rr.target == nil || sa.state != stateEstablished {
			sa.mobike.rr.running = false
			sa.completeRequest()
			return
		}
		cookie := sa.randBytes(16)
		msgID := sa.nextMsgID
		pkt, err := sa.seal(sa.header(wire.ExchangeInformational, msgID, false),
			[]wire.Payload{&wire.Notify{Type: wire.NotifyCookie2, Data: cookie}})
		if err != nil {
			sa.log.Error("cannot build return routability check", "err", err)
			sa.mobike.rr.running = false
			sa.completeRequest()
			return
		}
		sa.nextMsgID++
		sa.stats.rrChecks.Add(1)
		last := *sa.mobike.rr.target
		sched := sa.resp.cfg.RoutabilityRetransmit
		if sched.Initial <= 0 {
			sched = MoveRetransmit
		}
		r := &request{exchange: wire.ExchangeInformational, msgID: msgID, pkt: pkt, keepSA: true, sched: &sched,
			paths: func(int) (netpath.Path, bool) {
				if sa.mobike.rr.target != nil {
					last = *sa.mobike.rr.target
				}
				return last, true
			}}
		sa.log.Info("checking return routability", "to", last.Remote.String())
		r.onResponse = func(_ wire.Header, ps []wire.Payload, _ []byte) { sa.handleRoutabilityResponse(ps, cookie) }
		r.onTimeout = func(err error) {
			sa.mobike.rr.running = false
			sa.routabilityFailed(err)
		}
		sa.sendRequest(r)
	}
	if sa.busy() {
		sa.queue = append([]func(){send}, sa.queue...)
		return
	}
	send()
}

// handleRoutabilityResponse takes the answer to a check: the endpoint it
// came from is verified, and ESP follows if that is where the peer wants
// it. An authenticated answer with the wrong cookie closes the IKE SA
// (RFC 4555 3.7).
func (sa *SA) handleRoutabilityResponse(ps []wire.Payload, cookie []byte) {
	sa.mobike.rr.running = false
	c := wire.FindNotify(ps, wire.NotifyCookie2)
	if c == nil || subtle.ConstantTimeCompare(c.Data, cookie) != 1 {
		err := &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeInformational, Remote: true,
			Err: errors.New("COOKIE2 missing or wrong in the answer to the return routability check")}
		sa.routabilityFailed(err)
		sa.failAfterAuth(err, true)
		return
	}
	from := sa.respPath
	sa.addVerified(from.Remote)
	t := sa.mobike.rr.target
	switch {
	case t == nil:
	case unmapPort(t.Remote) == unmapPort(from.Remote):
		sa.mobike.rr.target = nil
		sa.mobike.rr.early = false
		sa.movePath(*t)
	default:
		sa.startRoutabilityCheck()
	}
}

// routabilityFailed ends a failed check: the SA and its ESP stay where
// they are; the peer may try again with another UPDATE_SA_ADDRESSES.
func (sa *SA) routabilityFailed(err error) {
	sa.stats.rrFailures.Add(1)
	to := ""
	if sa.mobike.rr.target != nil {
		to = sa.mobike.rr.target.Remote.String()
	}
	sa.log.Warn("return routability check failed, traffic stays on the current path", "to", to, "current", sa.Path().Remote.String(), "err", err)
	sa.mobike.rr.target = nil
	sa.endEarlyMove()
}

// AcceptRoutable returns an AcceptPeerAddress policy for a gateway whose
// own addresses are own: it refuses addresses a peer cannot usefully be
// reached at from here (unspecified, loopback, multicast, link-local) and
// those of a family we have no address of.
func AcceptRoutable(own []netip.Addr) func(netip.Addr) bool {
	var v4, v6 bool
	for _, a := range own {
		a = a.Unmap()
		v4 = v4 || a.Is4()
		v6 = v6 || a.Is6()
	}
	return func(a netip.Addr) bool {
		a = a.Unmap()
		if !announceable(a) || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
			return false
		}
		return (a.Is4() && v4) || (a.Is6() && v6)
	}
}
