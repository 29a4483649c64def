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

// childRekeys is the state of Child SA rekeys, each map by the inbound SPI
// of the SA replaced: our rekeys under way, the peer's (for the collision
// rule), the SAs being deleted, the lifetime timers, and the RekeyChild
// calls waiting for a retry after TEMPORARY_FAILURE.
type childRekeys struct {
	ours     map[uint32]*childRekey
	peer     map[uint32]peerRekey
	deleting map[uint32]bool
	timers   map[uint32][]Timer
	retries  map[uint32]chan<- error
}

// Child SA rekeying that we start (RFC 7296 1.3.3, 2.8). Before a Child
// SA's soft lifetime runs out (minus a random jitter, so both ends rarely
// start at once) a CREATE_CHILD_SA with REKEY_SA makes its successor; we
// send on the new SA at once (the responder installed it before answering)
// and delete the old one. Simultaneous rekeys of one SA by both ends are
// resolved by the nonce rule of 2.8.1. The hard lifetime deletes an SA
// that could not be rekeyed.

// ChildRekeyed reports a Child SA replaced by a CREATE_CHILD_SA. The new one
// is usable now; the old one (OldSPIIn) stays until it is deleted
// (ChildDeleted), so packets in flight still arrive. Initiated says we ran
// the exchange: the peer then had the new SA before we did, so our traffic
// may move at once; otherwise it should wait until the peer uses it.
type ChildRekeyed struct {
	SA        *SA
	OldSPIIn  uint32
	Child     ChildSA
	Initiated bool
}

func (*ChildRekeyed) event() {}

// ErrRekeyInProgress is returned by RekeyChild for an SA already being
// replaced.
var ErrRekeyInProgress = errors.New("ike: the Child SA is being rekeyed already")

// childRekey is a rekey of old that we started or, with add, a new
// Child SA for old's selectors (children.go); created then gets it.
type childRekey struct {
	old      ChildSA
	ni, nr   []byte
	newSPIIn uint32
	add      bool
	created  func(ChildSA)
}

// peerRekey is a rekey of one of our Child SAs that the peer ran.
type peerRekey struct {
	ni, nr   []byte
	newSPIIn uint32
}

// rekeyTimes returns when a new Child SA is to be rekeyed and when it
// expires, from now; zero durations mean never.
func (sa *SA) rekeyTimes() (soft, hard time.Duration) {
	soft, hard = sa.cfg.childRekey, sa.cfg.childLife
	if soft > 0 && sa.cfg.rekeyJitter > 0 {
		soft -= time.Duration(rand.Int64N(int64(sa.cfg.rekeyJitter)))
	}
	return soft, hard
}

// scheduleChild arms the lifetimes of a Child SA just made.
func (sa *SA) scheduleChild(c ChildSA) {
	soft, hard := sa.rekeyTimes()
	spi := c.SPIIn
	// A Child SA an HA standby took over is as old as on the failed node.
	soft, hard = sa.ha.aged(spi, sa.cfg.clock.Now(), soft, hard)
	if sa.rekey.timers == nil {
		sa.rekey.timers = make(map[uint32][]Timer)
	}
	if soft > 0 {
		sa.rekey.timers[spi] = append(sa.rekey.timers[spi], sa.cfg.clock.AfterFunc(soft, func() {
			sa.post(func() {
				if err := sa.rekeyChild(spi, nil); err != nil && !errors.Is(err, errNoChild) {
					sa.log.Warn("Child SA rekey not started", "spi_in", fmt.Sprintf("%08x", spi), "err", err)
				}
			})
		}))
	}
	if hard > 0 {
		sa.rekey.timers[spi] = append(sa.rekey.timers[spi], sa.cfg.clock.AfterFunc(hard, func() {
			sa.post(func() {
				if sa.state == stateEstablished && sa.hasChild(spi) && !sa.rekey.deleting[spi] {
					sa.log.Warn("Child SA expired before it was rekeyed", "spi_in", fmt.Sprintf("%08x", spi))
					sa.startDeleteChild(spi, nil)
				}
			})
		}))
	}
}

func (sa *SA) hasChild(spiIn uint32) bool {
	return slices.ContainsFunc(sa.children, func(c ChildSA) bool { return c.SPIIn == spiIn })
}

var errNoChild = errors.New("ike: no such Child SA")

// RekeyChild replaces the Child SA whose inbound SPI is spiIn now and
// returns once the new one is in place (ChildRekeyed has been sent).
func (sa *SA) RekeyChild(ctx context.Context, spiIn uint32) error {
	return sa.await(ctx, func(res chan<- error) {
		if err := sa.rekeyChild(spiIn, res); err != nil {
			res <- err
		}
	})
}

// rekeyChild starts the CREATE_CHILD_SA for spiIn; done, when set, gets the
// outcome.
func (sa *SA) rekeyChild(spiIn uint32, done chan<- error) error {
	if sa.state != stateEstablished {
		return fmt.Errorf("ike: rekey in state %s", sa.state)
	}
	idx := slices.IndexFunc(sa.children, func(c ChildSA) bool { return c.SPIIn == spiIn })
	if idx < 0 || sa.rekey.deleting[spiIn] {
		return errNoChild
	}
	if _, ok := sa.rekey.ours[spiIn]; ok {
		return ErrRekeyInProgress
	}
	if _, ok := sa.rekey.peer[spiIn]; ok {
		// The peer replaced it already and will delete it.
		return ErrRekeyInProgress
	}
	cr := &childRekey{old: sa.children[idx], ni: sa.randBytes(32), newSPIIn: sa.randSPI32()}
	if sa.rekey.ours == nil {
		sa.rekey.ours = make(map[uint32]*childRekey)
	}
	sa.rekey.ours[spiIn] = cr
	sa.sendRekey(cr, pfsGroup(sa.cfg.esp), done)
	return nil
}

// pfsGroup is the key exchange our ESP proposals ask for on rekeying (0:
// no PFS).
func pfsGroup(ps []Proposal) uint16 {
	if gs := dhGroups(ps); len(gs) > 0 {
		return gs[0]
	}
	return 0
}

func (sa *SA) sendRekey(cr *childRekey, group uint16, done chan<- error) {
	var kx ikecrypto.KeyExchange
	if group != 0 {
		var err error
		if kx, err = ikecrypto.NewKeyExchange(group, sa.cfg.rand); err != nil {
			sa.finishRekey(cr, done, fmt.Errorf("ike: key exchange group %d: %w", group, err))
			return
		}
	}
	var oldSPI, newSPI [4]byte
	binary.BigEndian.PutUint32(oldSPI[:], cr.old.SPIIn)
	binary.BigEndian.PutUint32(newSPI[:], cr.newSPIIn)
	build := func() []wire.Payload {
		var ps []wire.Payload
		if !cr.add {
			ps = append(ps, &wire.Notify{Type: wire.NotifyRekeySA, Protocol: wire.ProtoESP, SPI: oldSPI[:]})
		}
		ps = append(ps,
			&wire.SA{Proposals: offerProposals(sa.cfg.esp, wire.ProtoESP, newSPI[:], group)},
			&wire.Nonce{Data: cr.ni})
		if kx != nil {
			ps = append(ps, &wire.KE{Group: group, Data: kx.PublicKey()})
		}
		return append(ps,
			&wire.TrafficSelectors{Selectors: cr.old.LocalTS},
			&wire.TrafficSelectors{Responder: true, Selectors: cr.old.RemoteTS})
	}
	if cr.add {
		sa.log.Info("creating Child SA", "new_in", fmt.Sprintf("%08x", cr.newSPIIn), "remote_ts", tsText(cr.old.RemoteTS))
	} else {
		sa.log.Info("rekeying Child SA", "old_in", fmt.Sprintf("%08x", cr.old.SPIIn), "new_in", fmt.Sprintf("%08x", cr.newSPIIn))
	}
	sa.startRequest(wire.ExchangeCreateChildSA, build,
		func(_ wire.Header, ps []wire.Payload, _ []byte) { sa.rekeyAnswered(cr, group, kx, ps, done) },
		func(err error) { sa.finishRekey(cr, done, err) })
}

// finishRekey ends our rekey of cr.old without a new SA.
func (sa *SA) finishRekey(cr *childRekey, done chan<- error, err error) {
	if !cr.add {
		delete(sa.rekey.ours, cr.old.SPIIn)
	}
	if done != nil {
		done <- err
	}
}

func (sa *SA) rekeyAnswered(cr *childRekey, group uint16, kx ikecrypto.KeyExchange, ps []wire.Payload, done chan<- error) {
	if n := wire.FirstError(ps); n != nil {
		switch n.Type {
		case wire.NotifyInvalidKEPayload:
			// RFC 7296 1.3: retry with the group the peer wants, if ours.
			if len(n.Data) == 2 {
				g := binary.BigEndian.Uint16(n.Data)
				if g != group && slices.Contains(dhGroups(sa.cfg.esp), g) {
					cr.ni = sa.randBytes(32)
					sa.sendRekey(cr, g, done)
					return
				}
			}
		case wire.NotifyTemporaryFailure:
			if cr.add {
				break // the caller decides whether to ask again
			}
			// RFC 7296 2.25: the peer is busy (its own rekey of this SA,
			// say); try again after a short random wait.
			sa.finishRekey(cr, nil, nil)
			spi := cr.old.SPIIn
			wait := time.Second + time.Duration(rand.Int64N(int64(4*time.Second)))
			if done != nil {
				if sa.rekey.retries == nil {
					sa.rekey.retries = make(map[uint32]chan<- error)
				}
				sa.rekey.retries[spi] = done
			}
			sa.rekey.timers[spi] = append(sa.rekey.timers[spi], sa.cfg.clock.AfterFunc(wait, func() {
				sa.post(func() {
					if _, waiting := sa.rekey.retries[spi]; done != nil && !waiting {
						return // answered by childGone
					}
					delete(sa.rekey.retries, spi)
					if _, replaced := sa.rekey.peer[spi]; replaced && done != nil {
						// The peer's rekey got through meanwhile: the
						// SA is rekeyed, which is what was asked.
						done <- nil
						return
					}
					if err := sa.rekeyChild(spi, done); err != nil && done != nil {
						done <- err
					}
				})
			}))
			return
		case wire.NotifyChildSANotFound:
			// The peer no longer has it: neither do we.
			if !cr.add {
				sa.dropChild(cr.old.SPIIn)
			}
		}
		sa.finishRekey(cr, done, &NotifyError{Type: n.Type, Exchange: wire.ExchangeCreateChildSA, Remote: true})
		return
	}
	pl := wire.Collect(ps)
	saP, nonce, ke, tsi, tsr := pl.SA, pl.Nonce, pl.KE, pl.TSi, pl.TSr
	invalid := func(why string) {
		sa.finishRekey(cr, done, &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeCreateChildSA, Remote: true, Err: errors.New(why)})
	}
	if saP == nil || nonce == nil || len(nonce.Data) < 16 || len(saP.Proposals) != 1 || len(saP.Proposals[0].SPI) != 4 {
		invalid("rekey response lacks SA or nonce")
		return
	}
	local := sa.cfg.esp
	if group != 0 {
		local = withPFS(local, group)
	}
	chosen, ok := selectProposal(local, saP.Proposals, wire.ProtoESP, group)
	if !ok {
		invalid("the peer chose an ESP proposal we did not offer")
		return
	}
	var shared []byte
	if kx != nil {
		if ke == nil || ke.Group != group {
			invalid("rekey response lacks the KE payload of our group")
			return
		}
		var err error
		if shared, err = kx.SharedSecret(ke.Data); err != nil {
			invalid(err.Error())
			return
		}
	}
	if addKEs := addKETransforms(chosen.Transforms); len(addKEs) > 0 {
		var link []byte
		if n := wire.FindNotify(ps, wire.NotifyAdditionalKeyExchange); n != nil {
			link = n.Data
		}
		sa.runFollowups(addKEs, link, [][]byte{shared}, func(all []byte, err error) {
			if err != nil {
				sa.finishRekey(cr, done, err)
				return
			}
			sa.completeChildRekey(cr, chosen, all, nonce.Data, tsi, tsr, done)
		})
		return
	}
	sa.completeChildRekey(cr, chosen, shared, nonce.Data, tsi, tsr, done)
}

// completeChildRekey makes the Child SA our rekey negotiated, once every
// key exchange is done (shared holds their secrets in order).
func (sa *SA) completeChildRekey(cr *childRekey, chosen wire.Proposal, shared, nr []byte, tsi, tsr *wire.TrafficSelectors, done chan<- error) {
	child, err := sa.deriveChild(chosen.Transforms, cr.newSPIIn, binary.BigEndian.Uint32(chosen.SPI), shared, cr.ni, nr, true)
	if err != nil {
		sa.finishRekey(cr, done, err)
		return
	}
	child.LocalTS, child.RemoteTS = cr.old.LocalTS, cr.old.RemoteTS
	narrowed := tsi != nil && tsr != nil && len(tsi.Selectors) > 0 && len(tsr.Selectors) > 0 &&
		subsetTS(tsi.Selectors, cr.old.LocalTS) && subsetTS(tsr.Selectors, cr.old.RemoteTS)
	if narrowed {
		child.LocalTS, child.RemoteTS = tsi.Selectors, tsr.Selectors
	}
	if cr.add {
		sa.completeNewChild(cr, child, narrowed, done)
		return
	}
	cr.nr = slices.Clone(nr)
	sa.children = append(sa.children, child)
	sa.scheduleChild(child)
	sa.log.Info("Child SA rekeyed", "old_in", fmt.Sprintf("%08x", cr.old.SPIIn), "new_in", fmt.Sprintf("%08x", child.SPIIn))
	sa.emit(&ChildRekeyed{SA: sa, OldSPIIn: cr.old.SPIIn, Child: child, Initiated: true})
	delete(sa.rekey.ours, cr.old.SPIIn)

	// RFC 7296 2.8.1: if the peer rekeyed the same SA meanwhile, the
	// exchange with the lowest of the four nonces made a redundant SA,
	// which its initiator deletes; the other initiator deletes the old SA.
	if pr, ok := sa.rekey.peer[cr.old.SPIIn]; ok {
		if bytes.Compare(minNonce(cr.ni, cr.nr), minNonce(pr.ni, pr.nr)) < 0 {
			sa.log.Info("rekey collision: ours is redundant", "redundant_in", fmt.Sprintf("%08x", child.SPIIn))
			sa.startDeleteChild(child.SPIIn, nil)
		} else {
			sa.log.Info("rekey collision: the peer's is redundant", "redundant_in", fmt.Sprintf("%08x", pr.newSPIIn))
			sa.deleteReplaced(cr.old.SPIIn)
		}
	} else {
		sa.deleteReplaced(cr.old.SPIIn)
	}
	if done != nil {
		done <- nil
	}
}

// notePeerRekey records that the peer replaced old with newSPIIn through
// an exchange with nonces ni and nr, for the collision rule.
func (sa *SA) notePeerRekey(old, newSPIIn uint32, ni, nr []byte) {
	if sa.rekey.peer == nil {
		sa.rekey.peer = make(map[uint32]peerRekey)
	}
	sa.rekey.peer[old] = peerRekey{ni: slices.Clone(ni), nr: slices.Clone(nr), newSPIIn: newSPIIn}
}

func minNonce(a, b []byte) []byte {
	if bytes.Compare(a, b) <= 0 {
		return a
	}
	return b
}

// replacedDeleteDelay is how long the DELETE of a Child SA our rekey
// replaced waits. Our traffic moved to the new SA at once, but packets
// sent on the old one just before may still wait in the peer's ESP queue
// when the DELETE overtakes them: strongSwan's kernel-libipsec processes
// ESP in a queue of its own, IKE in worker threads, and drops what is
// left for an SA the DELETE removed (echoes lost right at a rekey, seen
// in the lab under load). The peer keeps sending on the old SA until the
// DELETE, which we still open.
const replacedDeleteDelay = 500 * time.Millisecond

// deleteReplaced deletes the Child SA spiIn, which a rekey replaced, after
// replacedDeleteDelay; from now on it is no longer rekeyed or offered for
// the peer's rekeys.
func (sa *SA) deleteReplaced(spiIn uint32) {
	if sa.rekey.deleting == nil {
		sa.rekey.deleting = make(map[uint32]bool)
	}
	sa.rekey.deleting[spiIn] = true
	if sa.rekey.timers == nil {
		sa.rekey.timers = make(map[uint32][]Timer)
	}
	sa.rekey.timers[spiIn] = append(sa.rekey.timers[spiIn], sa.cfg.clock.AfterFunc(replacedDeleteDelay, func() {
		sa.post(func() {
			if sa.state == stateEstablished && sa.hasChild(spiIn) {
				sa.startDeleteChild(spiIn, nil)
			}
		})
	}))
}

// startDeleteChild deletes one of our Child SAs with an INFORMATIONAL;
// ChildDeleted follows the peer's answer. done, when set, gets the outcome.
func (sa *SA) startDeleteChild(spiIn uint32, done chan<- error) {
	if sa.rekey.deleting == nil {
		sa.rekey.deleting = make(map[uint32]bool)
	}
	sa.rekey.deleting[spiIn] = true
	var spi [4]byte
	binary.BigEndian.PutUint32(spi[:], spiIn)
	sa.startRequest(wire.ExchangeInformational,
		func() []wire.Payload {
			return []wire.Payload{&wire.Delete{Protocol: wire.ProtoESP, SPISize: 4, SPIs: [][]byte{spi[:]}}}
		},
		func(wire.Header, []wire.Payload, []byte) {
			sa.dropChild(spiIn)
			if done != nil {
				done <- nil
			}
		},
		func(err error) {
			if done != nil {
				done <- err
			}
		})
}

// dropChild forgets a Child SA and reports ChildDeleted.
func (sa *SA) dropChild(spiIn uint32) {
	idx := slices.IndexFunc(sa.children, func(c ChildSA) bool { return c.SPIIn == spiIn })
	sa.childGone(spiIn)
	if idx < 0 {
		return
	}
	c := sa.children[idx]
	sa.children = slices.Delete(sa.children, idx, idx+1)
	sa.emit(&ChildDeleted{SA: sa, SPIIn: c.SPIIn, SPIOut: c.SPIOut})
}

// childGone clears the rekey state of a Child SA that no longer exists.
func (sa *SA) childGone(spiIn uint32) {
	if done, ok := sa.rekey.retries[spiIn]; ok {
		// A rekey that waits to be retried ends here: the SA was
		// replaced by the peer's rekey (done), or deleted.
		delete(sa.rekey.retries, spiIn)
		var err error
		if _, replaced := sa.rekey.peer[spiIn]; !replaced {
			err = errNoChild
		}
		done <- err
	}
	for _, t := range sa.rekey.timers[spiIn] {
		t.Stop()
	}
	delete(sa.rekey.timers, spiIn)
	delete(sa.rekey.deleting, spiIn)
	delete(sa.rekey.peer, spiIn)
	delete(sa.ha.childBorn, spiIn)
}

// stopChildTimers cancels every lifetime when the SA ends.
func (sa *SA) stopChildTimers() {
	for _, ts := range sa.rekey.timers {
		for _, t := range ts {
			t.Stop()
		}
	}
	sa.rekey.timers = nil
}

// handleCreateChildRequest answers a CREATE_CHILD_SA that rekeys one of our
// Child SAs (RFC 7296 1.3.3), or the IKE SA; one for an additional Child
// SA goes to handleNewChildRequest (children.go).
func (sa *SA) handleCreateChildRequest(ps []wire.Payload) ([]wire.Payload, func()) {
	refuse := func(t wire.NotifyType, data []byte) ([]wire.Payload, func()) {
		return []wire.Payload{&wire.Notify{Type: t, Data: data}}, nil
	}
	if isIKERekey(ps) {
		return sa.handleIKERekeyRequest(ps)
	}
	rekey := wire.FindNotify(ps, wire.NotifyRekeySA)
	if rekey == nil {
		return sa.handleNewChildRequest(ps)
	}
	if rekey.Protocol != wire.ProtoESP || len(rekey.SPI) != 4 {
		return refuse(wire.NotifyInvalidSyntax, nil)
	}
	oldOut := binary.BigEndian.Uint32(rekey.SPI)
	idx := slices.IndexFunc(sa.children, func(c ChildSA) bool { return c.SPIOut == oldOut })
	if idx < 0 {
		return []wire.Payload{&wire.Notify{Type: wire.NotifyChildSANotFound, Protocol: wire.ProtoESP, SPI: slices.Clone(rekey.SPI)}}, nil
	}
	old := sa.children[idx]
	if sa.rekey.deleting[old.SPIIn] {
		// We are deleting it (our own rekey of it finished first).
		return []wire.Payload{&wire.Notify{Type: wire.NotifyChildSANotFound, Protocol: wire.ProtoESP, SPI: slices.Clone(rekey.SPI)}}, nil
	}
	if _, replaced := sa.rekey.peer[old.SPIIn]; replaced {
		// The peer rekeyed it already; it only waits for the peer's
		// DELETE. Another successor would be one more SA for nothing.
		sa.log.Info("rekey of a Child SA the peer replaced already refused", "old_in", fmt.Sprintf("%08x", old.SPIIn))
		return []wire.Payload{&wire.Notify{Type: wire.NotifyChildSANotFound, Protocol: wire.ProtoESP, SPI: slices.Clone(rekey.SPI)}}, nil
	}
	if len(sa.children) >= sa.cfg.maxChildren {
		sa.log.Warn("rekey refused: too many Child SAs", "children", len(sa.children))
		return refuse(wire.NotifyNoAdditionalSAs, nil)
	}
	offer, refusal := sa.childOffer(ps)
	if refusal != nil {
		return []wire.Payload{refusal}, nil
	}
	chosen, shared, ourKE, nonce := offer.chosen, offer.shared, offer.ourKE, offer.nonce
	addKEs := addKETransforms(chosen.Transforms)
	if len(addKEs) > 0 {
		if _, ours := sa.rekey.ours[old.SPIIn]; ours {
			// Our own rekey of it is on the wire: with additional key
			// exchanges neither new SA exists until its IKE_FOLLOWUP_KE
			// exchanges end, so the peer tries again later instead.
			return refuse(wire.NotifyTemporaryFailure, nil)
		}
	}
	nr := sa.randBytes(32)
	spiIn := sa.randSPI32()
	ev := &ChildRekeyed{SA: sa, OldSPIIn: old.SPIIn}
	install := func(shared []byte) error {
		child, err := sa.deriveChild(chosen.Transforms, spiIn, binary.BigEndian.Uint32(chosen.SPI), shared, nonce.Data, nr, false)
		if err != nil {
			return err
		}
		// A rekey keeps the traffic selectors of the SA it replaces.
		child.LocalTS, child.RemoteTS = old.LocalTS, old.RemoteTS
		sa.children = append(sa.children, child)
		sa.scheduleChild(child)
		ev.Child = child
		return nil
	}
	// The collision rule looks at the CREATE_CHILD_SA's nonces, also
	// while its additional key exchanges run.
	sa.notePeerRekey(old.SPIIn, spiIn, nonce.Data, nr)
	var followup *wire.Notify
	if len(addKEs) > 0 {
		followup = sa.deferAdditional(addKEs, shared, false, func(all []byte) func() {
			if err := install(all); err != nil {
				sa.log.Error("deriving rekeyed Child SA keys", "err", err)
				return nil
			}
			sa.log.Info("Child SA rekeyed by peer", "old_in", fmt.Sprintf("%08x", old.SPIIn), "new_in", fmt.Sprintf("%08x", spiIn), "additional_key_exchanges", len(addKEs))
			return func() { sa.emit(ev) }
		}, func() {
			if pr, ok := sa.rekey.peer[old.SPIIn]; ok && pr.newSPIIn == spiIn {
				delete(sa.rekey.peer, old.SPIIn)
			}
		})
	} else if err := install(shared); err != nil {
		delete(sa.rekey.peer, old.SPIIn)
		sa.log.Error("deriving rekeyed Child SA keys", "err", err)
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	var spi [4]byte
	binary.BigEndian.PutUint32(spi[:], spiIn)
	resp := []wire.Payload{
		&wire.SA{Proposals: []wire.Proposal{{Number: chosen.Number, Protocol: wire.ProtoESP, SPI: spi[:], Transforms: chosen.Transforms}}},
		&wire.Nonce{Data: nr},
	}
	if ourKE != nil {
		resp = append(resp, ourKE)
	}
	// The selectors are those of the SA replaced, whatever the request
	// says, and the answer says so.
	resp = append(resp, &wire.TrafficSelectors{Selectors: old.RemoteTS}, &wire.TrafficSelectors{Responder: true, Selectors: old.LocalTS})
	if followup != nil {
		return append(resp, followup), nil
	}
	sa.log.Info("Child SA rekeyed by peer", "old_in", fmt.Sprintf("%08x", old.SPIIn), "new_in", fmt.Sprintf("%08x", spiIn))
	return resp, func() { sa.emit(ev) }
}

// childOffer is what a CREATE_CHILD_SA request for a Child SA brings, with
// the proposal we chose and our side of its key exchange.
type childOffer struct {
	chosen   wire.Proposal
	shared   []byte
	ourKE    *wire.KE
	nonce    *wire.Nonce
	tsi, tsr *wire.TrafficSelectors
}

// childOffer picks the ESP proposal of a CREATE_CHILD_SA request for a
// Child SA and answers its KE; refusal is the notify to answer instead.
func (sa *SA) childOffer(ps []wire.Payload) (o childOffer, refusal *wire.Notify) {
	refuse := func(t wire.NotifyType, data []byte) (childOffer, *wire.Notify) {
		return childOffer{}, &wire.Notify{Type: t, Data: data}
	}
	pl := wire.Collect(ps)
	saP, nonce, ke, tsi, tsr := pl.SA, pl.Nonce, pl.KE, pl.TSi, pl.TSr
	if saP == nil || nonce == nil || tsi == nil || tsr == nil || len(nonce.Data) < 16 {
		return refuse(wire.NotifyInvalidSyntax, nil)
	}
	var props []wire.Proposal
	for _, p := range saP.Proposals {
		if len(p.SPI) == 4 {
			props = append(props, p)
		}
	}
	var preferDH uint16
	if ke != nil {
		preferDH = ke.Group
	}
	chosen, ok := selectProposal(sa.cfg.esp, props, wire.ProtoESP, preferDH)
	if !ok {
		chosen, ok = selectProposal(withPFS(sa.cfg.esp, preferDH), props, wire.ProtoESP, preferDH)
	}
	if !ok {
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	o = childOffer{chosen: chosen, nonce: nonce, tsi: tsi, tsr: tsr}
	if dh, ok := transformOf(chosen.Transforms, wire.TransformDH); ok && dh.ID != 0 {
		if ke == nil || ke.Group != dh.ID {
			var g [2]byte
			binary.BigEndian.PutUint16(g[:], dh.ID)
			return refuse(wire.NotifyInvalidKEPayload, g[:])
		}
		if !ikecrypto.SupportedGroup(dh.ID) {
			return refuse(wire.NotifyNoProposalChosen, nil)
		}
		reply, s, err := ikecrypto.Respond(dh.ID, ke.Data, sa.cfg.rand)
		if err != nil {
			return refuse(wire.NotifyInvalidSyntax, nil)
		}
		o.shared = s
		o.ourKE = &wire.KE{Group: dh.ID, Data: reply}
	}
	return o, nil
}

// withPFS adds the peer's group to our ESP proposals: a gateway configured
// for PFS rekeys with a KE payload even though the first Child SA (made in
// IKE_AUTH) had none.
func withPFS(ps []Proposal, group uint16) []Proposal {
	if group == 0 || !ikecrypto.SupportedGroup(group) {
		return nil
	}
	out := make([]Proposal, len(ps))
	for i, p := range ps {
		ts := slices.Clone(p.Transforms)
		ts = append(ts, wire.Transform{Type: wire.TransformDH, ID: group})
		out[i] = Proposal{Transforms: ts, Text: p.Text}
	}
	return out
}
