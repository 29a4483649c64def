package ike

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// ikeRekeyState is the state of IKE SA rekeys. pending is a rekeyed SA we
// answered, waiting for the peer to delete the old one; running, timer and
// lifeTimer are our own rekey and its schedule. Simultaneous rekeys (RFC
// 7296 2.8.2): next is the SA our finished rekey made while its DELETE of
// the old one is outstanding; sides are IKE SAs other than the current one
// that still get messages (redundant ones, the old one); waiters get the
// outcome of RekeyIKE calls when the SA switches; queueHeld (until
// holdTimer) keeps our requests back until the collision's winner deletes
// the old SA; done is the RekeyIKE call of the rekey on the wire.
type ikeRekeyState struct {
	pending   *ikeContext
	running   bool
	timer     Timer
	lifeTimer Timer
	next      *ikeContext
	sides     []*sideSA
	waiters   []chan<- error
	queueHeld bool
	holdTimer Timer
	done      chan<- error
	collision *ikeCollision
}

// IKE SA rekeying (RFC 7296 1.3.2, 2.18). The SA is rekeyed in place: the
// same *SA takes the new SPIs, keys and Message IDs, so its Child SAs, its
// MOBIKE state and its owner's references move to the new IKE SA without
// anyone noticing. The exchange that makes the new SA runs on the old one;
// the old one is then deleted by the end that started the rekey, and the
// other end switches when that DELETE arrives (or when the first message
// on the new SA does).
//
// Which end is "initiator" of the new IKE SA, for the I flag and the key
// directions, is whoever started the rekey (2.18); the role the daemon and
// MOBIKE care about (sa.initiator) stays with the end that made the first
// SA.

// IKERekeyed reports that the IKE SA now uses new SPIs and keys.
type IKERekeyed struct {
	SA         *SA
	SPIi, SPIr uint64
}

func (*IKERekeyed) event() {}

// ikeContext is the state that a rekey replaces.
type ikeContext struct {
	spii, spir  uint64
	flagI       bool   // we are the initiator of this IKE SA (I flag)
	ni, nr      []byte // the rekey exchange's nonces (collision rule)
	prop        wire.Proposal
	prf         *ikecrypto.PRF
	keys        ikecrypto.IKEKeys
	skIn, skOut *ikecrypto.SKCipher
}

// ourSPI is the SPI that names the SA at our end.
func (c *ikeContext) ourSPI() uint64 {
	if c.flagI {
		return c.spii
	}
	return c.spir
}

// newIKEContext derives the keys of the IKE SA a rekey made: SKEYSEED from
// the old SA's SK_d with its PRF (2.18), expanded with the new SA's PRF.
func (sa *SA) newIKEContext(chosen wire.Proposal, shared, ni, nr []byte, spii, spir uint64, flagI bool) (*ikeContext, error) {
	encr, _ := transformOf(chosen.Transforms, wire.TransformEncr)
	prfT, ok := transformOf(chosen.Transforms, wire.TransformPRF)
	if !ok {
		return nil, errors.New("ike: IKE proposal without PRF")
	}
	prf, err := ikecrypto.NewPRF(prfT.ID)
	if err != nil {
		return nil, err
	}
	var integ *ikecrypto.Integrity
	integLen := 0
	if !ikecrypto.IsAEAD(encr.ID) {
		it, ok := transformOf(chosen.Transforms, wire.TransformInteg)
		if !ok {
			return nil, errors.New("ike: IKE proposal without integrity algorithm")
		}
		if integ, err = ikecrypto.NewIntegrity(it.ID); err != nil {
			return nil, err
		}
		integLen = integ.KeySize()
	}
	encLen, err := ikecrypto.EncrKeySize(encr.ID, int(encr.KeyLength))
	if err != nil {
		return nil, err
	}
	keys := ikecrypto.DeriveRekeyedIKEKeysWith(sa.prf, prf, sa.keys.SKd, shared, ni, nr, spii, spir, integLen, encLen)
	ci, err := ikecrypto.NewSKCipher(encr.ID, int(encr.KeyLength), integ, keys.SKei, keys.SKai)
	if err != nil {
		return nil, err
	}
	cr, err := ikecrypto.NewSKCipher(encr.ID, int(encr.KeyLength), integ, keys.SKer, keys.SKar)
	if err != nil {
		return nil, err
	}
	c := &ikeContext{spii: spii, spir: spir, flagI: flagI, ni: slices.Clone(ni), nr: slices.Clone(nr), prop: chosen, prf: prf, keys: keys, skOut: cr, skIn: ci}
	if flagI {
		c.skOut, c.skIn = ci, cr
	}
	return c, nil
}

// switchIKE makes c the SA's IKE state: new SPIs, keys, and Message IDs
// from zero in both directions. keepOld keeps the old IKE SA around as a
// side SA, to answer the peer's DELETE of it when that comes after our
// switch (we switched on the first message under the new SPIs).
func (sa *SA) switchIKE(c *ikeContext, keepOld bool) {
	old := sa.ourSPI()
	if keepOld {
		sa.addSide(&sideSA{ctx: sa.currentIKE(), peerNext: sa.peerNextMsgID, last: sa.lastResp})
	} else if sa.resp != nil {
		// The new SPI was reserved when the rekey began.
		sa.resp.releaseSPI(old, sa)
	}
	// A request of ours still out on the old SA gets no answer now.
	stale := sa.out
	if stale != nil && stale.timer != nil {
		stale.timer.Stop()
	}
	sa.out = nil
	sa.spii.Store(c.spii)
	sa.spir.Store(c.spir)
	sa.flagI = c.flagI
	sa.ikeProp, sa.prf, sa.keys, sa.skIn, sa.skOut = c.prop, c.prf, c.keys, c.skIn, c.skOut
	sa.nextMsgID, sa.peerNextMsgID, sa.lastResp, sa.frag.reasm = 0, 0, nil, nil
	sa.ikeRekey.pending, sa.ikeRekey.next, sa.ikeRekey.running = nil, nil, false
	sa.mobike.failed = nil   // its Message ID was the old SA's
	sa.rekey.peer = nil      // Child SA rekeys of the old IKE SA are over
	sa.addKE.followups = nil // and so are their IKE_FOLLOWUP_KE exchanges
	sa.ikeRekey.queueHeld = false
	if sa.ikeRekey.holdTimer != nil {
		sa.ikeRekey.holdTimer.Stop()
		sa.ikeRekey.holdTimer = nil
	}
	role := "responder"
	if sa.initiator {
		role = "initiator"
	}
	sa.log = sa.cfg.log.With("role", role, "spii", spiHex(c.spii), "spir", spiHex(c.spir))
	sa.log.Info("IKE SA rekeyed", "proposal", ProposalText(c.prop.Transforms))
	// The next lifetimes are armed before the owner hears of the rekey,
	// so whoever reacts to IKERekeyed finds them in place.
	sa.scheduleIKERekey()
	sa.emit(&IKERekeyed{SA: sa, SPIi: c.spii, SPIr: c.spir})
	if stale != nil && stale.ikeRekeySPI != 0 {
		// The peer's rekey replaced the SA before ours was answered
		// (2.8.2, the collision it did not see): that is our outcome.
		sa.waitSwitch(sa.ikeRekey.done)
	}
	for _, w := range sa.ikeRekey.waiters {
		select {
		case w <- nil:
		default: // told already
		}
	}
	sa.ikeRekey.waiters, sa.ikeRekey.done = nil, nil
	if stale != nil {
		sa.resend(stale)
	}
	sa.drainQueue()
}

// resend moves a request that was outstanding on the old IKE SA to the new
// one; our own rekey of the old SA is simply over.
func (sa *SA) resend(r *request) {
	switch {
	case r.ikeRekeySPI != 0:
		sa.releaseSPI(r.ikeRekeySPI)
	case r.build == nil || r.rebuild != nil:
		// MOBIKE requests carry per-path content and their own Message
		// ID bookkeeping: they fail, and mobility tries again.
		if r.onTimeout != nil {
			r.onTimeout(errIKESwitched)
		}
	default:
		sa.queue = append([]func(){func() {
			sa.startRequest(r.exchange, r.build, r.onResponse, r.onTimeout)
		}}, sa.queue...)
	}
}

var errIKESwitched = errors.New("ike: the IKE SA was rekeyed while the request was out")

// currentIKE is the SA's IKE state as a context.
func (sa *SA) currentIKE() *ikeContext {
	return &ikeContext{spii: sa.spii.Load(), spir: sa.spir.Load(), flagI: sa.flagI, prop: sa.ikeProp, prf: sa.prf, keys: sa.keys, skIn: sa.skIn, skOut: sa.skOut}
}

// ourSPI is the SPI that names the SA at our end now.
func (sa *SA) ourSPI() uint64 {
	if sa.flagI {
		return sa.spii.Load()
	}
	return sa.spir.Load()
}

// ErrIKEExpired ends an IKE SA that reached its hard lifetime without a
// rekey (the peer refused every attempt, say); the owner may reconnect.
var ErrIKEExpired = errors.New("IKE SA lifetime expired before it could be rekeyed")

// ikeRekeyRetry is how long after a failed IKE rekey the next attempt
// comes, while the hard lifetime has not run out.
const ikeRekeyRetry = 30 * time.Second

// scheduleIKERekey arms the IKE SA's soft and hard lifetimes, from now
// (the SA is new or has just been rekeyed).
func (sa *SA) scheduleIKERekey() {
	sa.armIKELife()
	if sa.cfg.ikeRekey <= 0 {
		return
	}
	if sa.ikeRekey.timer != nil {
		sa.ikeRekey.timer.Stop()
	}
	d := sa.cfg.ikeRekey
	// The jitter is the Child SAs' (their life less their rekey time),
	// capped at a tenth of the IKE SA's own: a short rekey_time with the
	// default Child lifetimes must not come out as zero, again and again.
	if j := min(sa.cfg.rekeyJitter, d/10); j > 0 {
		d -= time.Duration(rand.Int64N(int64(j)))
	}
	sa.ikeRekey.timer = sa.cfg.clock.AfterFunc(d, func() {
		sa.post(func() {
			if err := sa.rekeyIKE(nil); err != nil {
				sa.log.Warn("IKE SA rekey not started", "err", err)
			}
		})
	})
}

// RekeyIKE replaces the IKE SA's keys and SPIs now and returns once the SA
// uses them (also when a simultaneous rekey by the peer is the one kept).
func (sa *SA) RekeyIKE(ctx context.Context) error {
	return sa.await(ctx, func(res chan<- error) {
		if err := sa.rekeyIKE(res); err != nil {
			res <- err
		}
	})
}

// armIKELife arms the hard lifetime: reached, the SA is deleted with
// ErrIKEExpired.
func (sa *SA) armIKELife() {
	if sa.cfg.ikeLife <= 0 {
		return
	}
	if sa.ikeRekey.lifeTimer != nil {
		sa.ikeRekey.lifeTimer.Stop()
	}
	sa.ikeRekey.lifeTimer = sa.cfg.clock.AfterFunc(sa.cfg.ikeLife, func() {
		sa.post(func() {
			if sa.state != stateEstablished || sa.ha.parked.Load() {
				return
			}
			sa.log.Warn("IKE SA expired before it was rekeyed: deleting it", "life_time", sa.cfg.ikeLife)
			sa.deleteIKE(ErrIKEExpired)
		})
	})
}

// retryIKERekey tries a refused IKE rekey again later; the hard lifetime
// ends the SA if every attempt fails.
func (sa *SA) retryIKERekey() {
	if sa.cfg.ikeRekey <= 0 || sa.state != stateEstablished {
		return
	}
	if sa.ikeRekey.timer != nil {
		sa.ikeRekey.timer.Stop()
	}
	sa.ikeRekey.timer = sa.cfg.clock.AfterFunc(ikeRekeyRetry, func() {
		sa.post(func() {
			if err := sa.rekeyIKE(nil); err != nil {
				sa.log.Warn("IKE SA rekey not started", "err", err)
			}
		})
	})
}

func (sa *SA) rekeyIKE(done chan<- error) error {
	if sa.state != stateEstablished {
		return fmt.Errorf("ike: IKE rekey in state %s", sa.state)
	}
	if sa.ikeRekey.running || sa.ikeRekey.pending != nil || sa.ikeRekey.next != nil || sa.followupPending() {
		return ErrRekeyInProgress
	}
	group := uint16(0)
	if dh, ok := transformOf(sa.ikeProp.Transforms, wire.TransformDH); ok {
		group = dh.ID
	}
	sa.ikeRekey.running = true
	sa.sendIKERekey(group, done)
	return nil
}

// waitSwitch hands done the outcome of the next switch to a new IKE SA.
func (sa *SA) waitSwitch(done chan<- error) {
	if done != nil {
		sa.ikeRekey.waiters = append(sa.ikeRekey.waiters, done)
	}
}

func (sa *SA) sendIKERekey(group uint16, done chan<- error) {
	fail := func(err error) {
		sa.ikeRekey.running = false
		if done != nil {
			done <- err
			return
		}
		sa.log.Warn("IKE SA rekey failed", "err", err)
		sa.retryIKERekey()
	}
	kx, err := ikecrypto.NewKeyExchange(group, sa.cfg.rand)
	if err != nil {
		fail(fmt.Errorf("ike: key exchange group %d: %w", group, err))
		return
	}
	spi := sa.newOurSPI()
	ni := sa.randBytes(32)
	var spiB [8]byte
	binary.BigEndian.PutUint64(spiB[:], spi)
	build := func() []wire.Payload {
		return []wire.Payload{
			&wire.SA{Proposals: offerProposals(sa.cfg.ike, wire.ProtoIKE, spiB[:], group)},
			&wire.Nonce{Data: ni},
			&wire.KE{Group: group, Data: kx.PublicKey()},
		}
	}
	onResponse := func(_ wire.Header, ps []wire.Payload, _ []byte) {
		if !sa.ikeRekey.running {
			// Given up meanwhile (the peer's rekey took over).
			sa.releaseSPI(spi)
			return
		}
		if n := wire.FirstError(ps); n != nil {
			sa.releaseSPI(spi)
			switch {
			case n.Type == wire.NotifyInvalidKEPayload && len(n.Data) == 2:
				if g := binary.BigEndian.Uint16(n.Data); g != group && slices.Contains(dhGroups(sa.cfg.ike), g) {
					sa.sendIKERekey(g, done)
					return
				}
			case n.Type == wire.NotifyTemporaryFailure && sa.ikeRekey.pending != nil:
				// The peer finished its own rekey of this SA before ours
				// reached it (RFC 7296 2.8.2): its SA replaces this one
				// when it deletes the old, and that is our outcome too.
				sa.ikeRekey.running = false
				sa.waitSwitch(done)
				return
			case n.Type == wire.NotifyTemporaryFailure:
				// The peer is busy (say, rekeying a Child SA): later.
				sa.ikeRekey.running = false
				wait := time.Second + time.Duration(rand.Int64N(int64(4*time.Second)))
				sa.ikeRekey.timer = sa.cfg.clock.AfterFunc(wait, func() {
					sa.post(func() {
						err := sa.rekeyIKE(done)
						switch {
						case errors.Is(err, ErrRekeyInProgress) && (sa.ikeRekey.pending != nil || sa.followupPending()):
							// The peer's retry came first and is under
							// way: its new SA is our outcome too.
							sa.waitSwitch(done)
						case err != nil && done != nil:
							done <- err
						}
					})
				})
				return
			}
			fail(&NotifyError{Type: n.Type, Exchange: wire.ExchangeCreateChildSA, Remote: true})
			return
		}
		pl := wire.Collect(ps)
		saP, nonce, ke := pl.SA, pl.Nonce, pl.KE
		if saP == nil || nonce == nil || ke == nil || len(saP.Proposals) != 1 || len(saP.Proposals[0].SPI) != 8 || len(nonce.Data) < 16 {
			sa.releaseSPI(spi)
			fail(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeCreateChildSA, Remote: true, Err: errors.New("IKE rekey response lacks SA, nonce or KE")})
			return
		}
		chosen, ok := selectProposal(sa.cfg.ike, saP.Proposals, wire.ProtoIKE, group)
		dh, _ := transformOf(chosen.Transforms, wire.TransformDH)
		if !ok || dh.ID != group || ke.Group != group {
			sa.releaseSPI(spi)
			fail(&NotifyError{Type: wire.NotifyNoProposalChosen, Exchange: wire.ExchangeCreateChildSA, Remote: true, Err: errors.New("the peer chose an IKE proposal we did not offer")})
			return
		}
		shared, err := kx.SharedSecret(ke.Data)
		if err != nil {
			sa.releaseSPI(spi)
			fail(err)
			return
		}
		peerSPI := binary.BigEndian.Uint64(saP.Proposals[0].SPI)
		if addKEs := addKETransforms(chosen.Transforms); len(addKEs) > 0 {
			var link []byte
			if n := wire.FindNotify(ps, wire.NotifyAdditionalKeyExchange); n != nil {
				link = n.Data
			}
			sa.runFollowups(addKEs, link, [][]byte{shared}, func(all []byte, err error) {
				if err != nil {
					sa.releaseSPI(spi)
					fail(err)
					return
				}
				sa.completeIKERekey(chosen, all, ni, nonce.Data, spi, peerSPI, done)
			})
			return
		}
		sa.completeIKERekey(chosen, shared, ni, nonce.Data, spi, peerSPI, done)
	}
	sa.log.Info("rekeying IKE SA", "new_spi", spiHex(spi))
	sa.enqueue(func() {
		if !sa.ikeRekey.running || sa.ikeRekey.pending != nil || sa.state != stateEstablished {
			// While it waited its turn, the peer rekeyed the SA (or it
			// is closing): nothing to send.
			sa.releaseSPI(spi)
			if sa.ikeRekey.running && sa.ikeRekey.pending != nil {
				sa.ikeRekey.running = false
				sa.waitSwitch(done)
			} else if sa.ikeRekey.running {
				fail(fmt.Errorf("ike: IKE rekey in state %s", sa.state))
			}
			return
		}
		sa.startRequest(wire.ExchangeCreateChildSA, build, onResponse, func(err error) { fail(err) })
		if sa.out != nil { // nil only if the SA died building it
			sa.out.ikeRekeySPI = spi
			sa.ikeRekey.done = done
		}
	})
}

// completeIKERekey makes the IKE SA our rekey negotiated once every key
// exchange is done (shared holds their secrets in order) and moves to it.
func (sa *SA) completeIKERekey(chosen wire.Proposal, shared, ni, nr []byte, spi, peerSPI uint64, done chan<- error) {
	c, err := sa.newIKEContext(chosen, shared, ni, nr, spi, peerSPI, true)
	if err != nil {
		sa.releaseSPI(spi)
		sa.ikeRekey.running = false
		if done != nil {
			done <- err
		} else {
			sa.log.Warn("IKE SA rekey failed", "err", err)
			sa.retryIKERekey()
		}
		return
	}
	sa.ikeRekey.running = false
	if p := sa.ikeRekey.pending; p != nil && sa.collide(c, p) {
		// We lost: our SA is deleted, the peer's replaces the old
		// one when the peer deletes that.
		sa.waitSwitch(done)
		return
	}
	sa.ikeRekey.next = c
	// The old SA ends with our DELETE on it; only then do we talk on
	// the new one, so no request of ours is caught between the two.
	sa.startRequest(wire.ExchangeInformational,
		func() []wire.Payload { return []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}} },
		func(wire.Header, []wire.Payload, []byte) { sa.finishIKERekey(c, done) },
		nil)
	if sa.out != nil {
		// Losing the old SA's DELETE must not kill the SA: the new
		// one exists at both ends.
		sa.out.keepSA = true
		sa.out.onTimeout = func(error) { sa.finishIKERekey(c, done) }
	}
}

func (sa *SA) finishIKERekey(c *ikeContext, done chan<- error) {
	if sa.ikeRekey.next != c {
		return
	}
	sa.waitSwitch(done)
	sa.switchIKE(c, false)
}

// isIKERekey reports whether a CREATE_CHILD_SA request rekeys the IKE SA.
func isIKERekey(ps []wire.Payload) bool {
	if wire.FindNotify(ps, wire.NotifyRekeySA) != nil {
		return false
	}
	s, _ := wire.Find(ps, wire.PayloadSA).(*wire.SA)
	return s != nil && len(s.Proposals) > 0 && s.Proposals[0].Protocol == wire.ProtoIKE
}

// handleIKERekeyRequest answers the peer's rekey of the IKE SA. The new SA
// waits in pendingIKE until the peer deletes the old one or uses the new.
func (sa *SA) handleIKERekeyRequest(ps []wire.Payload) ([]wire.Payload, func()) {
	refuse := func(t wire.NotifyType, data []byte) ([]wire.Payload, func()) {
		return []wire.Payload{&wire.Notify{Type: t, Data: data}}, nil
	}
	if sa.ikeRekey.pending != nil || sa.ikeRekey.next != nil || sa.state != stateEstablished || sa.followupPending() {
		// RFC 7296 2.8.2, 2.25.2: the SA is being replaced or closed
		// already (our own rekey of it finished first, say).
		return refuse(wire.NotifyTemporaryFailure, nil)
	}
	// A rekey of ours still waiting for its answer is a collision
	// (2.8.2): both exchanges complete, and the nonces decide which new
	// SA stays (collide).
	pl := wire.Collect(ps)
	saP, nonce, ke := pl.SA, pl.Nonce, pl.KE
	if saP == nil || nonce == nil || ke == nil || len(nonce.Data) < 16 {
		return refuse(wire.NotifyInvalidSyntax, nil)
	}
	var props []wire.Proposal
	for _, p := range saP.Proposals {
		if len(p.SPI) == 8 {
			props = append(props, p)
		}
	}
	chosen, ok := selectProposal(sa.cfg.ike, props, wire.ProtoIKE, ke.Group)
	if !ok {
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	dh, _ := transformOf(chosen.Transforms, wire.TransformDH)
	if dh.ID != ke.Group {
		var g [2]byte
		binary.BigEndian.PutUint16(g[:], dh.ID)
		return refuse(wire.NotifyInvalidKEPayload, g[:])
	}
	if !ikecrypto.SupportedGroup(dh.ID) {
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	addKEs := addKETransforms(chosen.Transforms)
	if len(addKEs) > 0 && sa.ikeRekey.running {
		// Our own rekey is under way: with additional key exchanges the
		// new SAs exist only after their IKE_FOLLOWUP_KE exchanges, so
		// this one is tried again later (RFC 7296 2.25).
		return refuse(wire.NotifyTemporaryFailure, nil)
	}
	reply, shared, err := ikecrypto.Respond(dh.ID, ke.Data, sa.cfg.rand)
	if err != nil {
		return refuse(wire.NotifyInvalidSyntax, nil)
	}
	spi := sa.newOurSPI()
	nr := sa.randBytes(32)
	peerSPI := binary.BigEndian.Uint64(chosen.SPI)
	install := func(shared []byte) error {
		c, err := sa.newIKEContext(chosen, shared, nonce.Data, nr, peerSPI, spi, false)
		if err != nil {
			sa.releaseSPI(spi)
			sa.log.Error("deriving rekeyed IKE SA keys", "err", err)
			return err
		}
		sa.ikeRekey.pending = c
		return nil
	}
	var spiB [8]byte
	binary.BigEndian.PutUint64(spiB[:], spi)
	resp := []wire.Payload{
		&wire.SA{Proposals: []wire.Proposal{{Number: chosen.Number, Protocol: wire.ProtoIKE, SPI: spiB[:], Transforms: chosen.Transforms}}},
		&wire.Nonce{Data: nr},
		&wire.KE{Group: dh.ID, Data: reply},
	}
	if len(addKEs) > 0 {
		n := sa.deferAdditional(addKEs, shared, true, func(all []byte) func() {
			if install(all) == nil {
				sa.log.Info("IKE SA rekeyed by peer", "new_spi", spiHex(spi), "additional_key_exchanges", len(addKEs))
			}
			return nil
		}, func() { sa.releaseSPI(spi) })
		return append(resp, n), nil
	}
	if install(shared) != nil {
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	return resp, nil
}

// takePendingIKE switches to a pending rekeyed IKE SA when a message
// arrives under its SPIs; it reports whether it did.
func (sa *SA) takePendingIKE(h wire.Header) bool {
	c := sa.ikeRekey.pending
	if c == nil || h.SPIi != c.spii || h.SPIr != c.spir {
		return false
	}
	sa.switchIKE(c, true)
	return true
}

// ikeCollision records how a simultaneous IKE rekey was decided.
type ikeCollision struct {
	ours, theirs []byte // the lower nonce of our exchange and of the peer's
	won          bool
}

// collide decides a simultaneous rekey (RFC 7296 2.8.2) once our exchange,
// which made ours, is complete and the peer's, which made theirs, was
// answered: of the two new SAs, the one whose exchange had the lowest of
// the four nonces is redundant and deleted by its initiator; the other
// replaces the old SA, which its initiator deletes. It reports whether we
// lost: then our SA is being deleted, and we wait for the peer's DELETE
// of the old SA with our requests held back (they would go to an SA that
// is about to end). If we won, the caller deletes the old SA as after any
// rekey, and the peer's new SA waits aside for the peer to delete it.
func (sa *SA) collide(ours, theirs *ikeContext) (lost bool) {
	col := &ikeCollision{ours: minNonce(ours.ni, ours.nr), theirs: minNonce(theirs.ni, theirs.nr)}
	col.won = bytes.Compare(col.ours, col.theirs) > 0
	sa.ikeRekey.collision = col
	if col.won {
		sa.log.Info("IKE SA rekey collision won: the peer deletes its redundant SA", "redundant_spii", spiHex(theirs.spii), "redundant_spir", spiHex(theirs.spir))
		sa.ikeRekey.pending = nil
		sa.addSide(&sideSA{ctx: theirs})
		return false
	}
	sa.log.Info("IKE SA rekey collision lost: deleting our redundant SA", "redundant_spii", spiHex(ours.spii), "redundant_spir", spiHex(ours.spir))
	side := &sideSA{ctx: ours}
	sa.addSide(side)
	sa.sendSideDelete(side, 0)
	sa.ikeRekey.queueHeld = true
	// Should the winner's DELETE of the old SA never come, it has
	// switched anyway after its retransmissions (keepSA): so do we.
	sa.ikeRekey.holdTimer = sa.cfg.clock.AfterFunc(sa.cfg.retransmit.Total(), func() {
		sa.post(func() {
			if c := sa.ikeRekey.pending; c == theirs && sa.ikeRekey.queueHeld {
				sa.log.Warn("the peer did not delete the old IKE SA after a rekey collision; switching to its new one")
				sa.switchIKE(c, true)
			}
		})
	})
	return true
}

// sideSA is an IKE SA other than the SA's current one that still carries
// a few messages: a redundant SA from a rekey collision (we delete it, or
// wait for the peer to), or the old SA after a switch we made before the
// peer deleted it. It answers DELETE and liveness checks, refuses other
// requests with TEMPORARY_FAILURE, and goes once deleted or after expiry.
type sideSA struct {
	ctx      *ikeContext
	peerNext uint32          // the Message ID the peer's next request has
	last     *cachedResponse // our answer to its last request
	// Our DELETE of it (only when it is ours and redundant).
	del   []byte
	timer Timer
}

// addSide registers s; it expires after the retransmission time, by when
// the peer has given up on any exchange on it.
func (sa *SA) addSide(s *sideSA) {
	sa.ikeRekey.sides = append(sa.ikeRekey.sides, s)
	sa.cfg.clock.AfterFunc(sa.cfg.retransmit.Total()+time.Second, func() {
		sa.post(func() { sa.dropSide(s) })
	})
}

// dropSide forgets s and frees its SPI.
func (sa *SA) dropSide(s *sideSA) {
	i := slices.Index(sa.ikeRekey.sides, s)
	if i < 0 {
		return
	}
	sa.ikeRekey.sides = slices.Delete(sa.ikeRekey.sides, i, i+1)
	if s.timer != nil {
		s.timer.Stop()
	}
	sa.releaseSPI(s.ctx.ourSPI())
}

func (sa *SA) sideHeader(c *ikeContext, exchange wire.ExchangeType, msgID uint32, response bool) wire.Header {
	h := wire.Header{SPIi: c.spii, SPIr: c.spir, Version: 0x20, Exchange: exchange, MessageID: msgID}
	if c.flagI {
		h.Flags |= wire.FlagInitiator
	}
	if response {
		h.Flags |= wire.FlagResponse
	}
	return h
}

// sendSideDelete sends (transmission n of) our DELETE of side, the first
// request on that SA, with the retransmission schedule of any request.
func (sa *SA) sendSideDelete(side *sideSA, n int) {
	if side.del == nil {
		pkt, err := sealWith(side.ctx.skOut, sa.sideHeader(side.ctx, wire.ExchangeInformational, 0, false), []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}})
		if err != nil {
			sa.log.Error("cannot build the DELETE of a redundant IKE SA", "err", err)
			sa.dropSide(side)
			return
		}
		side.del = pkt
	}
	if n > sa.cfg.retransmit.Retries {
		sa.dropSide(side)
		return
	}
	sa.send(side.del, nil, sa.Path())
	side.timer = sa.cfg.clock.AfterFunc(sa.cfg.retransmit.Timeout(n), func() {
		sa.post(func() {
			if slices.Contains(sa.ikeRekey.sides, side) {
				sa.sendSideDelete(side, n+1)
			}
		})
	})
}

// sideIKE takes a message for one of the side SAs; it reports whether the
// message was for one (and is consumed).
func (sa *SA) sideIKE(p inPacket, msg *wire.Message) bool {
	h := msg.Header
	if c := sa.ikeRekey.pending; c != nil && sa.out != nil && sa.out.ikeRekeySPI != 0 && h.SPIi == c.spii && h.SPIr == c.spir {
		// The peer's new SA speaks while our own rekey still waits for
		// its answer: the peer saw both exchanges and deletes its SA as
		// the redundant one (2.8.2). Ours then replaces the old SA.
		sa.log.Info("IKE SA rekey collision: the peer deletes its new SA", "spii", spiHex(c.spii), "spir", spiHex(c.spir))
		sa.ikeRekey.pending = nil
		sa.addSide(&sideSA{ctx: c})
	}
	i := slices.IndexFunc(sa.ikeRekey.sides, func(s *sideSA) bool { return s.ctx.spii == h.SPIi && s.ctx.spir == h.SPIr })
	if i < 0 {
		return false
	}
	s := sa.ikeRekey.sides[i]
	if (h.Flags&wire.FlagInitiator != 0) == s.ctx.flagI || len(msg.Payloads) != 1 {
		sa.stats.unexpected.Add(1)
		return true
	}
	if _, ok := msg.Payloads[0].(*wire.Encrypted); !ok {
		sa.stats.unexpected.Add(1)
		return true
	}
	if h.Flags&wire.FlagResponse != 0 {
		if s.del == nil || h.MessageID != 0 || h.Exchange != wire.ExchangeInformational {
			sa.stats.unexpected.Add(1)
			return true
		}
		if _, err := openWith(s.ctx.skIn, p.pkt, msg); err != nil {
			sa.stats.undecryptable.Add(1)
			return true
		}
		sa.log.Info("redundant IKE SA deleted", "spii", spiHex(s.ctx.spii), "spir", spiHex(s.ctx.spir))
		sa.dropSide(s)
		return true
	}
	if s.last != nil && h.MessageID == s.last.msgID {
		sa.stats.dupRequests.Add(1)
		sa.resendCached(s.last, p.path)
		return true
	}
	if h.MessageID != s.peerNext {
		sa.stats.unexpected.Add(1)
		return true
	}
	ps, err := openWith(s.ctx.skIn, p.pkt, msg)
	if err != nil {
		sa.stats.undecryptable.Add(1)
		return true
	}
	var resp []wire.Payload
	deleted := false
	switch h.Exchange {
	case wire.ExchangeInformational:
		for _, pl := range ps {
			if d, ok := pl.(*wire.Delete); ok && d.Protocol == wire.ProtoIKE {
				deleted = true
			}
		}
	default:
		resp = []wire.Payload{&wire.Notify{Type: wire.NotifyTemporaryFailure}}
	}
	pkt, err := sealWith(s.ctx.skOut, sa.sideHeader(s.ctx, h.Exchange, h.MessageID, true), resp)
	if err != nil {
		sa.log.Error("cannot build response", "exchange", h.Exchange, "err", err)
		return true
	}
	s.peerNext = h.MessageID + 1
	s.last = sa.cacheResponse(h.MessageID, pkt, nil)
	sa.send(pkt, nil, p.path)
	if deleted {
		// Should this answer be lost, the peer's retransmissions find
		// nothing and it ends the SA on its own after them.
		sa.log.Info("the peer deleted an IKE SA it no longer uses", "spii", spiHex(s.ctx.spii), "spir", spiHex(s.ctx.spir))
		sa.dropSide(s)
	}
	return true
}

// newOurSPI picks the SPI for our end of a new IKE SA; a responder's is
// registered at once, so messages under it find this SA.
func (sa *SA) newOurSPI() uint64 {
	if sa.resp != nil {
		return sa.resp.reserveSPI(sa)
	}
	return sa.randSPI64()
}

func (sa *SA) releaseSPI(spi uint64) {
	if sa.resp != nil {
		sa.resp.releaseSPI(spi, sa)
	}
}
