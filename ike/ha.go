package ike

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// HA between two gateway nodes (issue 5, draft-smyslov-ipsecme-ikev2-r-mobike
// 4.2.1 with RFC 6311). The active node reports StateChanged after anything
// exportable changed; its owner exports the SA and sends the blob to the
// standby, whose owner imports it as a parked SA: it holds the keys and
// routes the SA's SPIs to itself, but sends nothing, runs no timers and
// drops whatever arrives (the active node answers). When the active node
// fails, TakeOver unparks the copy: its replicated Message IDs may lag, so
// one INFORMATIONAL with Message ID zero, sent from the failed node's
// address, carries SWITCH_TO_IP_ADDRESS (our address) +
// IKEV2_MESSAGE_ID_SYNC + IPSEC_REPLAY_COUNTER_SYNC; the client answers at
// our address with its counters, and its UPDATE_SA_ADDRESSES then moves the
// SA here (PathUpdated).

// StateChanged reports that an HA gateway's SA changed in a way a standby
// must know (established, an exchange completed, a rekey, a move): export
// it now. Reports are coalesced: after one, the next comes only once the
// owner has called ExportState, which returns the newest state anyway.
type StateChanged struct{ SA *SA }

func (*StateChanged) event() {}

// TakeOverOptions says how a standby takes an SA over.
type TakeOverOptions struct {
	// From is the failed node's address and port the SA used: the request
	// goes out from there (a non-local bind), the only source the client's
	// NAT lets through.
	From netip.AddrPort
	// To is our own address; the client answers there and moves the SA to
	// it. To equal to From's address (nodes sharing an address) sends no
	// SWITCH_TO_IP_ADDRESS.
	To netip.Addr
	// ReplayDelta asks the client to skip this many outbound ESP sequence
	// numbers (IPSEC_REPLAY_COUNTER_SYNC), covering what the failed node
	// received after its last replication; 0 sends no such request. Our own
	// outbound Child SAs must be installed at the replicated counters plus
	// the same margin (esp.ChildConfig.OutboundSeq).
	ReplayDelta uint64
	// MessageIDMargin is added to our replicated next request Message ID:
	// the failed node may have sent requests after its last replication,
	// and the client drops a synchronisation whose counter is not above
	// every Message ID it has seen from the gateway (RFC 6311 5.1). Zero
	// means DefaultMessageIDMargin.
	MessageIDMargin uint32
}

// DefaultMessageIDMargin covers far more requests than a node sends
// between two replications (one exchange at a time).
const DefaultMessageIDMargin = 1024

// Errors of TakeOver.
var (
	ErrNotParked   = errors.New("ike: the SA is not a parked standby copy")
	ErrNoHASupport = errors.New("ike: the peer did not negotiate RFC 6311 Message ID synchronisation")
)

// Parked reports whether the SA is an imported standby copy.
func (sa *SA) Parked() bool { return sa.ha.parked.Load() }

// LocalSPI is the SPI naming the SA at our end: SPIr, unless we started
// the last rekey of the IKE SA. Responder.DropState takes it.
func (sa *SA) LocalSPI() uint64 {
	ch := make(chan uint64, 1)
	if !sa.post(func() { ch <- sa.ourSPI() }) {
		return sa.spir.Load()
	}
	select {
	case v := <-ch:
		return v
	case <-sa.done:
		return sa.spir.Load()
	}
}

// Children returns the SA's current Child SAs with their keys.
func (sa *SA) Children() []ChildSA {
	ch := make(chan []ChildSA, 1)
	if !sa.post(func() { ch <- slices.Clone(sa.children) }) {
		return nil
	}
	select {
	case c := <-ch:
		return c
	case <-sa.done:
		return nil
	}
}

// ExportState returns the SA's state for the HA standby: an opaque,
// versioned blob with every secret needed to continue the IKE SA and its
// Child SAs. Only for the encrypted HA channel; never log it.
func (sa *SA) ExportState() ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	if !sa.post(func() {
		b, err := sa.exportState(true)
		if err == nil {
			sa.ha.lastSum = sa.stateSum()
			sa.ha.notified.Store(false)
		}
		ch <- res{b, err}
	}) {
		return nil, ErrClosed
	}
	select {
	case r := <-ch:
		return r.b, r.err
	case <-sa.done:
		return nil, ErrClosed
	}
}

// stateSum is the digest of the state without the Child SAs' ages, which
// grow by themselves: a change worth replicating changes it.
func (sa *SA) stateSum() [32]byte {
	b, err := sa.exportState(false)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}

// exportState encodes the SA's state; withAges adds how old each Child SA
// is (left out of the digest of noteStateChange).
func (sa *SA) exportState(withAges bool) ([]byte, error) {
	if sa.initiator || sa.resp == nil {
		return nil, errors.New("ike: only a gateway's SAs are exported")
	}
	if sa.state != stateEstablished {
		return nil, fmt.Errorf("ike: export in state %s", sa.state)
	}
	if sa.ha.id == 0 {
		sa.ha.id = sa.randSPI64()
	}
	k := sa.keys
	st := &haState{
		id: sa.ha.id, initiator: sa.initiator, flagI: sa.flagI,
		natLocal: sa.nat.local, natRemote: sa.nat.remote, natSupported: sa.nat.supported, forced: sa.nat.forced,
		peerMOBIKE: sa.mobike.peer, fragOK: sa.frag.ok, msgIDSync: sa.ha.msgIDSync, replaySync: sa.ha.replaySync,
		spii: sa.spii.Load(), spir: sa.spir.Load(), nextMsgID: sa.nextMsgID, peerNextMsgID: sa.peerNextMsgID,
		prop: sa.ikeProp, skd: k.SKd, skai: k.SKai, skar: k.SKar, skei: k.SKei, sker: k.SKer, skpi: k.SKpi, skpr: k.SKpr,
		path: sa.Path(), peerMOBIKED: sa.mobike.peerData, peerID: sa.peerID, poolKey: sa.poolKey,
		vips: sa.vips, dns: sa.dns, peerAddrs: sa.mobike.peerAddrs, verified: sa.mobike.rr.verified, children: sa.children,
	}
	now := sa.cfg.clock.Now()
	for _, c := range sa.children {
		var age time.Duration
		if born, ok := sa.ha.childBorn[c.SPIIn]; ok && withAges {
			age = now.Sub(born)
		}
		st.childAges = append(st.childAges, age)
	}
	if c := sa.lastResp; c != nil {
		st.lastRespID = c.msgID
		st.lastRespTo = c.redirect
		st.lastResp = c.frags
		if st.lastResp == nil {
			st.lastResp = [][]byte{c.pkt}
		}
	}
	return encodeState(st)
}

// noteStateChange runs after every step of the SA goroutine: an HA
// gateway's owner hears of a changed state once until it exports.
func (sa *SA) noteStateChange() {
	if sa.resp == nil || !sa.resp.cfg.HA || sa.ha.parked.Load() || sa.state != stateEstablished {
		return
	}
	sum := sa.stateSum()
	if sum == ([32]byte{}) || sum == sa.ha.lastSum {
		return
	}
	sa.ha.lastSum = sum
	if sa.ha.notified.Swap(true) {
		return
	}
	sa.emit(&StateChanged{SA: sa})
}

// restore fills a fresh SA from st and builds its ciphers, checking the
// keys against the proposal.
func (sa *SA) restore(st *haState) error {
	encr, ok := transformOf(st.prop.Transforms, wire.TransformEncr)
	if !ok {
		return fmt.Errorf("%w: IKE proposal without encryption", ErrBadState)
	}
	prfT, ok := transformOf(st.prop.Transforms, wire.TransformPRF)
	if !ok {
		return fmt.Errorf("%w: IKE proposal without PRF", ErrBadState)
	}
	prf, err := ikecrypto.NewPRF(prfT.ID)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	for _, k := range [][]byte{st.skd, st.skpi, st.skpr} {
		if len(k) != prf.Size() {
			return fmt.Errorf("%w: PRF key of %d octets, want %d", ErrBadState, len(k), prf.Size())
		}
	}
	var integ *ikecrypto.Integrity
	if !ikecrypto.IsAEAD(encr.ID) {
		it, ok := transformOf(st.prop.Transforms, wire.TransformInteg)
		if !ok {
			return fmt.Errorf("%w: IKE proposal without integrity algorithm", ErrBadState)
		}
		if integ, err = ikecrypto.NewIntegrity(it.ID); err != nil {
			return fmt.Errorf("%w: %w", ErrBadState, err)
		}
	}
	ci, err := ikecrypto.NewSKCipher(encr.ID, int(encr.KeyLength), integ, st.skei, st.skai)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	cr, err := ikecrypto.NewSKCipher(encr.ID, int(encr.KeyLength), integ, st.sker, st.skar)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	for _, c := range st.children {
		if _, ok := transformOf(c.Transforms, wire.TransformEncr); !ok {
			return fmt.Errorf("%w: Child SA %08x without encryption transform", ErrBadState, c.SPIIn)
		}
	}
	sa.prf = prf
	sa.keys = ikecrypto.IKEKeys{SKd: st.skd, SKai: st.skai, SKar: st.skar, SKei: st.skei, SKer: st.sker, SKpi: st.skpi, SKpr: st.skpr}
	sa.skOut, sa.skIn = cr, ci
	if st.flagI {
		sa.skOut, sa.skIn = ci, cr
	}
	sa.ikeProp = st.prop
	sa.flagI = st.flagI
	sa.spii.Store(st.spii)
	sa.spir.Store(st.spir)
	sa.nextMsgID, sa.peerNextMsgID = st.nextMsgID, st.peerNextMsgID
	sa.nat.local, sa.nat.remote, sa.nat.supported, sa.nat.forced = st.natLocal, st.natRemote, st.natSupported, st.forced
	sa.mobike.peer, sa.mobike.peerData, sa.frag.ok = st.peerMOBIKE, st.peerMOBIKED, st.fragOK
	sa.ha.msgIDSync, sa.ha.replaySync, sa.ha.id = st.msgIDSync, st.replaySync, st.id
	sa.peerID, sa.poolKey = st.peerID, st.poolKey
	sa.vips, sa.dns, sa.mobike.peerAddrs, sa.mobike.rr.verified = st.vips, st.dns, st.peerAddrs, st.verified
	sa.children = st.children
	now := sa.cfg.clock.Now()
	sa.ha.childBorn = make(map[uint32]time.Time, len(st.children))
	for i, c := range st.children {
		sa.ha.childBorn[c.SPIIn] = now.Add(-st.childAges[i])
	}
	if len(st.lastResp) > 0 {
		c := &cachedResponse{msgID: st.lastRespID, pkt: st.lastResp[len(st.lastResp)-1], redirect: st.lastRespTo}
		if len(st.lastResp) > 1 {
			c.frags = st.lastResp
		}
		sa.lastResp = c
	}
	sa.state = stateEstablished
	sa.established = true
	return nil
}

// ImportState makes a parked standby copy of an SA exported by the HA peer
// node: it is known under its SPIs, sends nothing, runs no timers and
// drops what arrives, until TakeOver. Importing the same SA again (also
// after an IKE rekey changed its SPIs) replaces the parked copy; an SA
// that is active on this node is never replaced.
func (r *Responder) ImportState(blob []byte) (*SA, error) {
	st, err := decodeState(blob)
	if err != nil {
		return nil, err
	}
	if st.initiator {
		return nil, fmt.Errorf("%w: an initiator's SA", ErrBadState)
	}
	sa := newSA(r.ctx, false, r.common, r.tr, r.events, st.path)
	sa.resp = r
	if err := sa.restore(st); err != nil {
		return nil, err
	}
	sa.ha.parked.Store(true)
	spi := sa.ourSPI() // the goroutine has not started yet
	sa.log = r.common.log.With("role", "responder", "spii", spiHex(st.spii), "spir", spiHex(st.spir), "ha", "standby")

	r.mu.Lock()
	var old []*SA
	if cur := r.bySPI[spi]; cur != nil {
		if !cur.Parked() {
			r.mu.Unlock()
			return nil, fmt.Errorf("ike: SA %016x is active on this node", spi)
		}
		old = append(old, cur)
	}
	for _, cur := range r.bySPI {
		if cur.Parked() && cur.ha.id == st.id && !slices.Contains(old, cur) {
			old = append(old, cur) // the same SA before an IKE rekey
		}
	}
	for k, cur := range r.bySPI {
		if slices.Contains(old, cur) {
			delete(r.bySPI, k)
		}
	}
	for _, o := range old {
		o.ha.gone.Store(true)
	}
	r.bySPI[spi] = sa
	r.mu.Unlock()

	// The standby's pool must not hand the client's inner addresses to
	// someone else.
	for _, a := range sa.vips {
		if r.cfg.Pool.claim(sa.poolKey, a) {
			sa.onDead = append(sa.onDead, func() { r.cfg.Pool.Release(sa.poolKey, a) })
		}
	}
	sa.onDead = append(sa.onDead, func() { r.releaseSPI(spi, sa) })
	for _, o := range old {
		o.post(func() { o.die(ErrClosed) })
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		sa.run(nil)
	}()
	return sa, nil
}

// DropState forgets the parked SA known under spi, either of its IKE SPIs
// (the active node deleted it). Active SAs are left alone.
func (r *Responder) DropState(spi uint64) {
	r.mu.Lock()
	sa := r.bySPI[spi]
	if sa == nil || !sa.Parked() {
		sa = nil
		for _, cur := range r.bySPI {
			if i, rr := cur.SPIs(); cur.Parked() && (i == spi || rr == spi) {
				sa = cur
				break
			}
		}
	}
	if sa == nil {
		r.mu.Unlock()
		return
	}
	for k, cur := range r.bySPI {
		if cur == sa {
			delete(r.bySPI, k)
		}
	}
	sa.ha.gone.Store(true)
	r.mu.Unlock()
	sa.post(func() { sa.die(ErrClosed) })
}

// claim leases a to identity if it is free or already the identity's: an
// imported SA keeps the inner address the active node gave out.
func (p *Pool) claim(identity string, a netip.Addr) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.fams {
		if !f.prefix.Contains(a) {
			continue
		}
		if owner, used := f.owner[a]; used && owner != identity {
			return false
		}
		if cur, ok := f.byID[identity]; ok && cur != a {
			return false
		}
		if _, ok := f.byID[identity]; ok {
			if f.refs[identity] == 0 {
				f.removeIdle(identity)
			}
			f.refs[identity]++
			return true
		}
		f.bind(identity, a)
		return true
	}
	return false
}

// TakeOver makes a parked SA the active one after the node that served it
// failed: it jumps the Message IDs per RFC 6311 and asks the client, from
// opt.From, to switch to opt.To (RequestSwitch with the sync notifies and
// Message ID 0: SwitchSent, and on failure SwitchFailed). It returns once
// the client's answer arrived at To and its counters are ours; the client's
// UPDATE_SA_ADDRESSES then moves the SA here (PathUpdated, SwitchDone).
// Errors: ErrNotParked, ErrNoHASupport, ErrNotSwitchCapable (the SA stays
// parked); ErrSwitchRefused, an *UnreachableError after the retransmissions
// (the SA is active then, and torn down only when no other address of ours
// was announced, as for any switch with the old address gone).
func (sa *SA) TakeOver(ctx context.Context, opt TakeOverOptions) error {
	if !opt.From.IsValid() || !opt.To.IsValid() {
		return errors.New("ike: TakeOver needs the failed node's address and ours")
	}
	return sa.await(ctx, func(res chan<- error) {
		switched := opt.To.Unmap() != opt.From.Addr().Unmap()
		switch {
		case !sa.ha.parked.Load():
			res <- ErrNotParked
			return
		case !sa.ha.msgIDSync:
			res <- ErrNoHASupport
			return
		case switched && !sa.switchCapable():
			res <- ErrNotSwitchCapable
			return
		}
		margin := opt.MessageIDMargin
		if margin == 0 {
			margin = DefaultMessageIDMargin
		}
		m1, p1 := sa.nextMsgID+margin, sa.peerNextMsgID
		if m1 < sa.nextMsgID {
			res <- errors.New("ike: Message IDs exhausted; the IKE SA must be rekeyed")
			return
		}
		if !sa.unpark() {
			res <- ErrNotParked
			return
		}
		sa.setPath(netpath.Path{Local: opt.From, Remote: sa.Path().Remote})
		sa.startHATimers()
		var nonce [4]byte
		copy(nonce[:], sa.randBytes(4))
		sync := []wire.Payload{msgIDSync{nonce, m1, p1}.notify()}
		if opt.ReplayDelta > 0 && sa.ha.replaySync {
			sync = append(sync, replaySyncNotify(opt.ReplayDelta))
		}
		adopt := func(ps []wire.Payload) error {
			n := wire.FindNotify(ps, wire.NotifyIKEv2MessageIDSync)
			if n == nil {
				return &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeInformational, Remote: true,
					Err: errors.New("the answer to the Message ID synchronisation lacks IKEV2_MESSAGE_ID_SYNC")}
			}
			m, err := decodeMessageIDSync(n)
			if err == nil && m.nonce != nonce {
				err = errors.New("nonce differs from ours")
			}
			if err != nil {
				sa.stats.badNotifies.Add(1)
				return &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeInformational, Remote: true,
					Err: fmt.Errorf("bad IKEV2_MESSAGE_ID_SYNC in the answer: %w", err)}
			}
			// The answer holds the client's own counters: its next
			// request (P2) and the next it expects from us (M2).
			sa.peerNextMsgID = max(p1, m.send)
			sa.nextMsgID = max(m1, m.recv)
			// The replicated cached response stays: the client may still
			// retransmit the request the failed node answered last.
			sa.log.Info("Message IDs synchronised", "next_request", sa.nextMsgID, "next_peer_request", sa.peerNextMsgID,
				"answered_on", sa.respPath.Local.String())
			return nil
		}
		sa.log.Info("taking the SA over", "from", opt.From.String(), "to", opt.To, "next_request", m1, "next_peer_request", p1,
			"replay_delta", opt.ReplayDelta)
		if switched {
			// The draft's failover: the switch request carries the sync,
			// with Message ID 0; the answer must come to To.
			sa.startSwitch(opt.To.Unmap(), SwitchOptions{OldGone: true, Extra: sync, MessageID0: true, OnResponse: adopt}, res)
			return
		}
		// Nodes sharing one address: the sync alone (RFC 6311).
		pkt, err := sa.seal(sa.header(wire.ExchangeInformational, 0, false), sync)
		if err != nil {
			res <- err
			return
		}
		sched := SwitchRetransmit.normalized()
		r := &request{exchange: wire.ExchangeInformational, msgID: 0, pkt: pkt, keepSA: true, sched: &sched}
		r.onResponse = func(_ wire.Header, ps []wire.Payload, _ []byte) { res <- adopt(ps) }
		r.onTimeout = func(err error) { res <- err }
		sa.sendRequest(r)
	})
}

// unpark makes a parked copy active, unless an import replaced it or it
// was dropped meanwhile.
func (sa *SA) unpark() bool {
	sa.resp.mu.Lock()
	defer sa.resp.mu.Unlock()
	if sa.ha.gone.Load() {
		return false
	}
	sa.ha.parked.Store(false)
	return true
}

// startHATimers arms what a parked SA did without: dead peer detection,
// the IKE SA's lifetime (counted from now) and the Child SAs' (from their
// replicated age, so a failover does not extend a key's use).
func (sa *SA) startHATimers() {
	sa.dpd.lastIn = sa.cfg.clock.Now()
	sa.armDPD(sa.cfg.dpdDelay)
	sa.scheduleIKERekey()
	for _, c := range sa.children {
		sa.scheduleChild(c)
	}
}
