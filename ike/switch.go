package ike

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// Responder-initiated address update (draft-smyslov-ipsecme-ikev2-r-mobike):
// the gateway asks the client, over the path the SA uses, to move to another
// gateway address, and the client then moves the SA with an ordinary
// UPDATE_SA_ADDRESSES (RFC 4555). The client advertises support with the
// single octet 'R' in MOBIKE_SUPPORTED. Where the client answers the request
// depends on the draft's revision (SwitchRevision): at the new address in
// -00 to -02, which opens the mappings of NATs and firewalls in front of it
// before the update, at the old one from -03 on, where the update itself
// opens them.

// DefaultSwitchNotify is the status notify type of SWITCH_TO_IP_ADDRESS.
// The draft leaves the number to IANA; this one is from the private-use
// range and clear of strongSwan's own private notifies (40501, 40961-40969).
const DefaultSwitchNotify wire.NotifyType = 41042

// Bounds of the private-use status notify range (RFC 7296 3.10.1) a
// configured SwitchNotify must lie in.
const (
	minSwitchNotify wire.NotifyType = 40960
	maxSwitchNotify wire.NotifyType = 65535
)

// switchCapability is the MOBIKE_SUPPORTED data announcing the extension.
const switchCapability = 'R'

// SwitchPolicy is which addresses a client accepts to switch to.
type SwitchPolicy int

const (
	// SwitchAnnounced: only addresses the gateway announced in
	// ADDITIONAL_IP4/6_ADDRESS (the draft's "definitely appropriate").
	SwitchAnnounced SwitchPolicy = iota
	// SwitchAny: any routable unicast address of the path's family.
	SwitchAny
)

func (p SwitchPolicy) String() string {
	switch p {
	case SwitchAnnounced:
		return "announced"
	case SwitchAny:
		return "any"
	}
	return fmt.Sprintf("SwitchPolicy(%d)", int(p))
}

// SwitchRevision is the revision of the draft whose rules a switch follows.
// The notify formats are the same in all of them; they differ in where the
// initiator sends its answer (docs/r-mobike.md).
type SwitchRevision int

const (
	// SwitchRev00 (drafts -00 to -02): an accepted switch is answered at
	// the new address, a refused one at the old; the responder reads the
	// answer's arrival address as yes or no.
	SwitchRev00 SwitchRevision = iota
	// SwitchRev03 (drafts -03 to -09): every answer goes to the old
	// address, as RFC 7296 2.11 has it; only the UPDATE_SA_ADDRESSES that
	// follows, at the new address, says yes. A responder under these rules
	// also takes an answer at the new address (a -00 client) as yes.
	SwitchRev03
)

func (r SwitchRevision) String() string {
	switch r {
	case SwitchRev00:
		return "00"
	case SwitchRev03:
		return "03"
	}
	return fmt.Sprintf("SwitchRevision(%d)", int(r))
}

// SwitchRetransmit is the default schedule of a switch request: a path that
// does not answer within about ten seconds is not coming back, and the
// gateway that asks usually has a reason not to wait (its address is going).
var SwitchRetransmit = MoveRetransmit

// Errors of RequestSwitch.
var (
	// ErrSwitchRefused: the client answered at the old address, which is
	// how revisions -00 to -02 of the draft say no.
	ErrSwitchRefused = errors.New("ike: the peer refused to switch")
	// ErrNotSwitchCapable: the client did not send 'R' in MOBIKE_SUPPORTED
	// (or no MOBIKE at all); the draft forbids asking it.
	ErrNotSwitchCapable = errors.New("ike: the peer does not support SWITCH_TO_IP_ADDRESS")
)

// SwitchOptions tune one RequestSwitch.
type SwitchOptions struct {
	// OldGone: the address the SA uses now is going away. If the switch
	// then fails and no other address of ours was announced to the peer,
	// the SA is torn down (draft section 4.2); otherwise it is kept.
	OldGone bool
	// Extra payloads go into the same request after the switch notify
	// (RFC 6311 sync notifies on an HA failover).
	Extra []wire.Payload
	// MessageID0 sends the request with Message ID 0 and leaves our
	// Message ID counter alone, as RFC 6311 requires of its sync exchange.
	MessageID0 bool
	// OnResponse, when set, sees the response's payloads on the SA's
	// goroutine before the switch counts as answered; an error fails it.
	OnResponse func(ps []wire.Payload) error
	// Retransmit schedules the request (zero: SwitchRetransmit).
	Retransmit Retransmit
}

// SwitchRequested reports (to the initiator's owner) a gateway's request
// to switch, after the answer went out: to To when Accepted, and then the
// owner moves the SA there at once with UpdateAddresses; to From (the
// address the request came from) when refused, and then a liveness check
// on the old path is under way.
type SwitchRequested struct {
	SA       *SA
	From, To netip.Addr
	Accepted bool
	Reason   string // why it was refused
}

// SwitchSent reports (to the responder's owner) a switch request's first
// transmission, from the address From the SA used.
type SwitchSent struct {
	SA       *SA
	From, To netip.Addr
}

// SwitchDone reports the end of a switch: the client's UPDATE_SA_ADDRESSES
// arrived at To and the SA (with a PathUpdated before this) moved there.
// Took runs from the request to the move.
type SwitchDone struct {
	SA       *SA
	From, To netip.Addr
	Took     time.Duration
}

// SwitchFailed reports a switch refused or unanswered; TornDown says the SA
// was ended because of it (a Deleted follows).
type SwitchFailed struct {
	SA       *SA
	To       netip.Addr
	Err      error
	TornDown bool
}

func (*SwitchRequested) event() {}
func (*SwitchSent) event()      {}
func (*SwitchDone) event()      {}
func (*SwitchFailed) event()    {}

// pendingSwitch is the responder's switch in progress: requested, maybe
// answered, until the UPDATE_SA_ADDRESSES lands on to.
type pendingSwitch struct {
	to       netip.Addr
	from     netip.Addr // our address the SA used when we asked
	start    time.Time
	answered bool
	req      *request // the switch request while it is outstanding
}

// checkSwitchConfig validates a configured notify type (0: the default)
// and revision.
func checkSwitchConfig(t wire.NotifyType, r SwitchRevision) error {
	if t != 0 && (t < minSwitchNotify || t > maxSwitchNotify) {
		return fmt.Errorf("ike: SWITCH_TO_IP_ADDRESS notify type %d is outside the private-use range %d-%d",
			uint16(t), uint16(minSwitchNotify), uint16(maxSwitchNotify))
	}
	if r != SwitchRev00 && r != SwitchRev03 {
		return fmt.Errorf("ike: unknown SWITCH_TO_IP_ADDRESS rules %v", r)
	}
	return nil
}

// switchType is the notify type this SA uses for SWITCH_TO_IP_ADDRESS.
func (sa *SA) switchType() wire.NotifyType {
	var t wire.NotifyType
	switch {
	case sa.icfg != nil:
		t = sa.icfg.SwitchNotify
	case sa.resp != nil:
		t = sa.resp.cfg.SwitchNotify
	}
	if t == 0 {
		t = DefaultSwitchNotify
	}
	return t
}

// switchRevision is the draft revision this SA's switches follow.
func (sa *SA) switchRevision() SwitchRevision {
	switch {
	case sa.icfg != nil:
		return sa.icfg.SwitchRevision
	case sa.resp != nil:
		return sa.resp.cfg.SwitchRevision
	}
	return SwitchRev00
}

// switchNotify builds the notify asking to switch to a.
func switchNotify(t wire.NotifyType, a netip.Addr) *wire.Notify {
	return &wire.Notify{Type: t, Data: a.Unmap().AsSlice()}
}

// parseSwitchNotify returns the address a SWITCH_TO_IP_ADDRESS notify
// carries: 4 octets (IPv4) or 16 (IPv6), Protocol ID and SPI size zero.
func parseSwitchNotify(n *wire.Notify) (netip.Addr, error) {
	if n.Protocol != 0 || len(n.SPI) != 0 {
		return netip.Addr{}, fmt.Errorf("protocol %d and SPI of %d octets, want none", n.Protocol, len(n.SPI))
	}
	if len(n.Data) != 4 && len(n.Data) != 16 {
		return netip.Addr{}, fmt.Errorf("%d octets of data, want 4 or 16", len(n.Data))
	}
	a, _ := netip.AddrFromSlice(n.Data)
	return a.Unmap(), nil
}

// SwitchCapable reports whether the initiator advertised the extension
// ('R' in its MOBIKE_SUPPORTED); only then may RequestSwitch ask it.
func (sa *SA) SwitchCapable() bool {
	res := make(chan bool, 1)
	if !sa.post(func() { res <- sa.switchCapable() }) {
		return false
	}
	select {
	case ok := <-res:
		return ok
	case <-sa.done:
		return false
	}
}

func (sa *SA) switchCapable() bool {
	return !sa.initiator && sa.mobike.peer && bytes.IndexByte(sa.mobike.peerData, switchCapability) >= 0
}

// RequestSwitch asks the initiator to move the SA to our address to (same
// port): INFORMATIONAL{N(SWITCH_TO_IP_ADDRESS(to))} goes out on the path
// the SA uses, and the caller must already receive on to. It returns nil
// when the answer arrived at to (under SwitchRev03: anywhere, as a refusal
// cannot be told from the answer there); ErrSwitchRefused when it arrived
// elsewhere (the old address, SwitchRev00); an *UnreachableError after the
// retransmissions; ErrNotSwitchCapable for a client without 'R'. The SA
// itself moves only when the client's UPDATE_SA_ADDRESSES arrives at to
// (PathUpdated, then SwitchDone), without the return routability check
// unless ResponderConfig.SwitchReturnRoutability. A failure with
// opt.OldGone and no other address announced tears the SA down.
//
// ctx bounds the wait only: the exchange, once started, runs to its end.
func (sa *SA) RequestSwitch(ctx context.Context, to netip.Addr, opt SwitchOptions) error {
	to = to.Unmap()
	return sa.await(ctx, func(res chan<- error) { sa.startSwitch(to, opt, res) })
}

func (sa *SA) startSwitch(to netip.Addr, opt SwitchOptions, res chan<- error) {
	old := sa.Path().Local.Addr().Unmap()
	switch {
	case sa.initiator:
		res <- errors.New("ike: only the responder asks for a switch")
		return
	case sa.state != stateEstablished:
		res <- fmt.Errorf("ike: switch in state %s", sa.state)
		return
	case !sa.switchCapable():
		res <- ErrNotSwitchCapable
		return
	case !announceable(to) || to.IsLinkLocalUnicast():
		res <- fmt.Errorf("ike: cannot switch to %s: not a routable unicast address", to)
		return
	case to == old:
		res <- fmt.Errorf("ike: the SA already uses %s", to)
		return
	case old.IsValid() && !old.IsUnspecified() && to.Is4() != old.Is4():
		// The client answers from the socket of the SA's path.
		res <- fmt.Errorf("ike: cannot switch from %s to %s: another address family", old, to)
		return
	case sa.sw != nil && !sa.sw.answered:
		res <- fmt.Errorf("ike: a switch to %s is in progress", sa.sw.to)
		return
	}
	sched := opt.Retransmit
	if sched.Initial <= 0 {
		sched = SwitchRetransmit
	}
	sched = sched.normalized()
	sw := &pendingSwitch{to: to, from: old, start: sa.cfg.clock.Now()}
	sa.sw = sw
	ps := append([]wire.Payload{switchNotify(sa.switchType(), to)}, opt.Extra...)
	send := func() {
		if sa.state != stateEstablished || sa.sw != sw {
			// Queued behind another request, and overtaken meanwhile.
			if sa.sw == sw {
				sa.sw = nil
			}
			if sa.state == stateEstablished && sa.Path().Local.Addr().Unmap() == to {
				res <- nil // the peer moved there by itself
			} else {
				res <- fmt.Errorf("ike: switch to %s abandoned in state %s", to, sa.state)
			}
			sa.completeRequest()
			return
		}
		msgID := sa.nextMsgID
		if opt.MessageID0 {
			msgID = 0
		}
		pkt, frags, err := sa.sealOut(sa.header(wire.ExchangeInformational, msgID, false), ps)
		if err != nil {
			sa.sw = nil
			sa.completeRequest()
			res <- fmt.Errorf("ike: building the switch request: %w", err)
			return
		}
		if !opt.MessageID0 {
			sa.nextMsgID++
		}
		r := &request{exchange: wire.ExchangeInformational, msgID: msgID, pkt: pkt, frags: frags, keepSA: true, sched: &sched}
		r.onResponse = func(_ wire.Header, ps []wire.Payload, _ []byte) {
			sw.req = nil
			sa.handleSwitchResponse(sw, opt, ps, res)
		}
		r.onTimeout = func(err error) {
			sw.req = nil
			if opt.OldGone && !opt.MessageID0 && sa.nextMsgID == msgID+1 {
				// With our old address gone the request most likely
				// never reached the peer, which then still expects this
				// Message ID: the SA we keep would be deaf to everything
				// we send next. (Had it arrived, the peer answers a reuse
				// with its cached response.) With the old path working,
				// the request arrived and only the answer was lost.
				sa.nextMsgID = msgID
			}
			sa.switchFailed(sw, opt, fmt.Errorf("ike: no answer to SWITCH_TO_IP_ADDRESS(%s): %w", to, err), res)
		}
		from := sa.Path()
		sa.log.Info("asking the peer to switch", "from", from.Local.Addr(), "to", to, "remote", from.Remote.String())
		sw.req = r
		sa.sendRequest(r)
		sa.emit(&SwitchSent{SA: sa, From: old, To: to})
	}
	if sa.out != nil {
		// Next after the outstanding request (the window is one): the
		// address we ask the peer to leave may be going away.
		sa.queue = append([]func(){send}, sa.queue...)
		return
	}
	send()
}

// handleSwitchResponse takes the answer: where it arrived says yes or no.
func (sa *SA) handleSwitchResponse(sw *pendingSwitch, opt SwitchOptions, ps []wire.Payload, res chan<- error) {
	at := sa.respPath.Local.Addr().Unmap()
	if opt.OnResponse != nil {
		if err := opt.OnResponse(ps); err != nil {
			sa.switchFailed(sw, opt, fmt.Errorf("ike: switch to %s: %w", sw.to, err), res)
			return
		}
	}
	if n := wire.FirstError(ps); n != nil {
		sa.switchFailed(sw, opt, &NotifyError{Type: n.Type, Exchange: wire.ExchangeInformational, Remote: true,
			Err: fmt.Errorf("answering SWITCH_TO_IP_ADDRESS(%s)", sw.to)}, res)
		return
	}
	if at != sw.to && sa.switchRevision() == SwitchRev00 {
		sa.switchFailed(sw, opt, fmt.Errorf("%w: answer to SWITCH_TO_IP_ADDRESS(%s) came to %s", ErrSwitchRefused, sw.to, at), res)
		return
	}
	sw.answered = true
	if at == sw.to {
		sa.log.Info("peer accepted the switch", "to", sw.to)
	} else {
		// Revision -03: the update to sw.to, or none, will tell.
		sa.log.Info("peer answered the switch at the old address", "to", sw.to, "at", at)
	}
	res <- nil
}

// switchFailed ends a switch that was refused or not answered: the SA
// stays, unless our old address is gone and the peer knows no other.
func (sa *SA) switchFailed(sw *pendingSwitch, opt SwitchOptions, err error, res chan<- error) {
	if sa.sw == sw {
		sa.sw = nil
	}
	tear := opt.OldGone && !sa.hasAlternative(sw.from)
	sa.log.Warn("switch failed", "to", sw.to, "err", err, "torn_down", tear)
	sa.emit(&SwitchFailed{SA: sa, To: sw.to, Err: err, TornDown: tear})
	res <- err
	if tear && sa.state != stateDead {
		sa.die(fmt.Errorf("ike: SA torn down: %w; our address %s is gone and no other was announced", err, sw.from))
	}
}

// hasAlternative reports whether we announced an address other than old
// to the peer (ADDITIONAL_* in IKE_AUTH): it can move there by itself.
func (sa *SA) hasAlternative(old netip.Addr) bool {
	if sa.resp == nil || !sa.mobike.peer {
		return false
	}
	for _, a := range sa.resp.cfg.Addresses {
		if a = a.Unmap(); announceable(a) && a != old.Unmap() {
			return true
		}
	}
	return false
}

// switchSkipsCheck reports whether an UPDATE_SA_ADDRESSES that came over p
// lands where we asked the peer to switch to: the answer at that address
// already proved the path (draft section 4.2), so no return routability
// check, unless the policy wants one anyway.
func (sa *SA) switchSkipsCheck(p netpath.Path) bool {
	return sa.sw != nil && p.Local.Addr().Unmap() == sa.sw.to && !sa.resp.cfg.SwitchReturnRoutability
}

// switchLanded follows a move of the SA: on to, the switch is done; a move
// elsewhere after the answer supersedes it.
func (sa *SA) switchLanded(p netpath.Path) {
	sw := sa.sw
	if sw == nil {
		return
	}
	if p.Local.Addr().Unmap() != sw.to {
		if sw.answered {
			sa.sw = nil
		}
		return
	}
	sa.sw = nil
	if r := sw.req; r != nil && sa.out == r {
		// The peer moved before its answer reached us: under revision -03
		// the answer goes to the old address, which may be gone. Asking
		// again over the new path gets it (or the cached copy) at once.
		if r.timer != nil {
			r.timer.Stop()
		}
		sa.transmit(r)
	}
	took := sa.cfg.clock.Now().Sub(sw.start)
	sa.log.Info("switch done", "from", sw.from, "to", sw.to, "took", took)
	sa.emit(&SwitchDone{SA: sa, From: sw.from, To: sw.to, Took: took})
}

// handleSwitchRequest takes the SWITCH_TO_IP_ADDRESS in an INFORMATIONAL
// request that came over from: the path to send the (otherwise ordinary,
// here empty) answer on, and what to do once it is sent. Under SwitchRev00,
// or when atNew (the RFC 6311 failover of revisions -00 to -02, whose
// answer could not reach the failed node at from), the initiator answers at
// the new address when it accepts (deliberately against RFC 7296 2.11, as
// those revisions require); under SwitchRev03 at from. A refusal is
// answered at from and followed by a check of the old path. A responder
// takes no action (draft section 4.2).
func (sa *SA) handleSwitchRequest(ps []wire.Payload, from netpath.Path, atNew bool) (answer netpath.Path, after func()) {
	n := wire.FindNotify(ps, sa.switchType())
	if n == nil {
		return from, nil
	}
	if !sa.initiator {
		sa.stats.unexpected.Add(1)
		sa.log.Info("ignoring a switch request from the initiator", "remote", from.Remote.String())
		return from, nil
	}
	if !sa.icfg.Switch {
		// We did not advertise the extension: an unknown status notify.
		return from, nil
	}
	to, err := parseSwitchNotify(n)
	if err != nil {
		sa.stats.badNotifies.Add(1)
		sa.log.Info("malformed switch request dropped", "remote", from.Remote.String(), "err", err)
		return from, nil
	}
	old := from.Remote.Addr().Unmap()
	if reason := sa.refuseSwitch(to, from); reason != "" {
		sa.log.Info("switch refused", "to", to, "reason", reason)
		ev := &SwitchRequested{SA: sa, From: old, To: to, Reason: reason}
		return from, func() {
			if sa.state != stateEstablished {
				return // the same request deleted the SA
			}
			sa.emit(ev)
			// The draft recommends making sure the old address still works.
			sa.startRequest(wire.ExchangeInformational, func() []wire.Payload { return nil },
				func(wire.Header, []wire.Payload, []byte) {}, nil)
		}
	}
	answer = from
	if atNew || sa.icfg.SwitchRevision == SwitchRev00 {
		answer.Remote = netip.AddrPortFrom(to, from.Remote.Port())
	}
	sa.log.Info("switch accepted", "from", old, "to", to, "answered_to", answer.Remote.Addr())
	ev := &SwitchRequested{SA: sa, From: old, To: to, Accepted: true}
	return answer, func() {
		if sa.state == stateEstablished {
			sa.emit(ev)
		}
	}
}

// refuseSwitch applies the initiator's policy to a switch to to over path
// from: the reason to refuse, or "".
func (sa *SA) refuseSwitch(to netip.Addr, from netpath.Path) string {
	local := from.Local.Addr().Unmap()
	switch {
	case !sa.mobike.peer:
		return "MOBIKE was not negotiated"
	case !announceable(to) || to.IsLinkLocalUnicast():
		return "not a routable unicast address"
	case local.IsValid() && to.Is4() != local.Is4():
		return "another address family than the path's"
	case to == local || sa.ownAddress(to):
		return "our own address"
	case to == from.Remote.Addr().Unmap():
		return "" // where the SA is already
	case !slices.Contains(sa.mobike.peerAddrs, to) && sa.icfg.AcceptSwitch != SwitchAny:
		return "not announced by the gateway"
	}
	return ""
}

func (sa *SA) ownAddress(a netip.Addr) bool {
	if sa.icfg.LocalAddresses == nil {
		return false
	}
	for _, x := range sa.icfg.LocalAddresses() {
		if x.Unmap() == a {
			return true
		}
	}
	return false
}

// dest is where a retransmitted request's cached answer goes: where the
// duplicate came from, unless the answer was sent elsewhere (an accepted
// switch, whose answer must keep opening the path to the new address).
func (c *cachedResponse) dest(from netpath.Path) netpath.Path {
	if c.redirect.IsValid() {
		from.Remote = c.redirect
	}
	return from
}
