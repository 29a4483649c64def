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
	if sa.childTimers == nil {
		sa.childTimers = make(map[uint32][]Timer)
	}
	if soft > 0 {
		sa.childTimers[spi] = append(sa.childTimers[spi], sa.cfg.clock.AfterFunc(soft, func() {
			sa.post(func() {
				if err := sa.rekeyChild(spi, nil); err != nil && !errors.Is(err, errNoChild) {
					sa.log.Warn("Child SA rekey not started", "spi_in", fmt.Sprintf("%08x", spi), "err", err)
				}
			})
		}))
	}
	if hard > 0 {
		sa.childTimers[spi] = append(sa.childTimers[spi], sa.cfg.clock.AfterFunc(hard, func() {
			sa.post(func() {
				if sa.state == stateEstablished && sa.hasChild(spi) && !sa.deleting[spi] {
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
	if idx < 0 || sa.deleting[spiIn] {
		return errNoChild
	}
	if _, ok := sa.rekeys[spiIn]; ok {
		return ErrRekeyInProgress
	}
	if _, ok := sa.peerRekeys[spiIn]; ok {
		// The peer replaced it already and will delete it.
		return ErrRekeyInProgress
	}
	cr := &childRekey{old: sa.children[idx], ni: sa.randBytes(32), newSPIIn: sa.randSPI32()}
	if sa.rekeys == nil {
		sa.rekeys = make(map[uint32]*childRekey)
	}
	sa.rekeys[spiIn] = cr
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
		delete(sa.rekeys, cr.old.SPIIn)
	}
	if done != nil {
		done <- err
	}
}

func (sa *SA) rekeyAnswered(cr *childRekey, group uint16, kx ikecrypto.KeyExchange, ps []wire.Payload, done chan<- error) {
	if n := firstError(ps); n != nil {
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
				if sa.rekeyRetries == nil {
					sa.rekeyRetries = make(map[uint32]chan<- error)
				}
				sa.rekeyRetries[spi] = done
			}
			sa.childTimers[spi] = append(sa.childTimers[spi], sa.cfg.clock.AfterFunc(wait, func() {
				sa.post(func() {
					if _, waiting := sa.rekeyRetries[spi]; done != nil && !waiting {
						return // answered by childGone
					}
					delete(sa.rekeyRetries, spi)
					if _, replaced := sa.peerRekeys[spi]; replaced && done != nil {
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
	saP, nonce, ke, tsi, tsr := childPayloads(ps)
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
		if n := findNotify(ps, wire.NotifyAdditionalKeyExchange); n != nil {
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
	delete(sa.rekeys, cr.old.SPIIn)

	// RFC 7296 2.8.1: if the peer rekeyed the same SA meanwhile, the
	// exchange with the lowest of the four nonces made a redundant SA,
	// which its initiator deletes; the other initiator deletes the old SA.
	if pr, ok := sa.peerRekeys[cr.old.SPIIn]; ok {
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

// childPayloads picks the payloads of a CREATE_CHILD_SA message.
func childPayloads(ps []wire.Payload) (saP *wire.SA, nonce *wire.Nonce, ke *wire.KE, tsi, tsr *wire.TrafficSelectors) {
	for _, p := range ps {
		switch p := p.(type) {
		case *wire.SA:
			saP = p
		case *wire.Nonce:
			nonce = p
		case *wire.KE:
			ke = p
		case *wire.TrafficSelectors:
			if p.Responder {
				tsr = p
			} else {
				tsi = p
			}
		}
	}
	return saP, nonce, ke, tsi, tsr
}

// notePeerRekey records that the peer replaced old with newSPIIn through
// an exchange with nonces ni and nr, for the collision rule.
func (sa *SA) notePeerRekey(old, newSPIIn uint32, ni, nr []byte) {
	if sa.peerRekeys == nil {
		sa.peerRekeys = make(map[uint32]peerRekey)
	}
	sa.peerRekeys[old] = peerRekey{ni: slices.Clone(ni), nr: slices.Clone(nr), newSPIIn: newSPIIn}
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
	if sa.deleting == nil {
		sa.deleting = make(map[uint32]bool)
	}
	sa.deleting[spiIn] = true
	if sa.childTimers == nil {
		sa.childTimers = make(map[uint32][]Timer)
	}
	sa.childTimers[spiIn] = append(sa.childTimers[spiIn], sa.cfg.clock.AfterFunc(replacedDeleteDelay, func() {
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
	if sa.deleting == nil {
		sa.deleting = make(map[uint32]bool)
	}
	sa.deleting[spiIn] = true
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
	if done, ok := sa.rekeyRetries[spiIn]; ok {
		// A rekey that waits to be retried ends here: the SA was
		// replaced by the peer's rekey (done), or deleted.
		delete(sa.rekeyRetries, spiIn)
		var err error
		if _, replaced := sa.peerRekeys[spiIn]; !replaced {
			err = errNoChild
		}
		done <- err
	}
	for _, t := range sa.childTimers[spiIn] {
		t.Stop()
	}
	delete(sa.childTimers, spiIn)
	delete(sa.deleting, spiIn)
	delete(sa.peerRekeys, spiIn)
	delete(sa.ha.childBorn, spiIn)
}

// stopChildTimers cancels every lifetime when the SA ends.
func (sa *SA) stopChildTimers() {
	for _, ts := range sa.childTimers {
		for _, t := range ts {
			t.Stop()
		}
	}
	sa.childTimers = nil
}
