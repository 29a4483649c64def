package ike

import (
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
	flagI       bool // we are the initiator of this IKE SA (I flag)
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
	c := &ikeContext{spii: spii, spir: spir, flagI: flagI, prop: chosen, prf: prf, keys: keys, skOut: cr, skIn: ci}
	if flagI {
		c.skOut, c.skIn = ci, cr
	}
	return c, nil
}

// switchIKE makes c the SA's IKE state: new SPIs, keys, and Message IDs
// from zero in both directions.
func (sa *SA) switchIKE(c *ikeContext) {
	old := sa.ourSPI()
	sa.spii.Store(c.spii)
	sa.spir.Store(c.spir)
	sa.flagI = c.flagI
	sa.ikeProp, sa.prf, sa.keys, sa.skIn, sa.skOut = c.prop, c.prf, c.keys, c.skIn, c.skOut
	sa.nextMsgID, sa.peerNextMsgID, sa.lastResp, sa.reasm = 0, 0, nil, nil
	sa.pendingIKE = nil
	sa.peerRekeys = nil // Child SA rekeys of the old IKE SA are over
	if sa.resp != nil {
		// The new SPI was reserved when the rekey began.
		sa.resp.releaseSPI(old, sa)
	}
	role := "responder"
	if sa.initiator {
		role = "initiator"
	}
	sa.log = sa.cfg.log.With("role", role, "spii", spiHex(c.spii), "spir", spiHex(c.spir))
	sa.log.Info("IKE SA rekeyed", "proposal", ProposalText(c.prop.Transforms))
	sa.emit(&IKERekeyed{SA: sa, SPIi: c.spii, SPIr: c.spir})
	sa.scheduleIKERekey()
}

// ourSPI is the SPI that names the SA at our end now.
func (sa *SA) ourSPI() uint64 {
	if sa.flagI {
		return sa.spii.Load()
	}
	return sa.spir.Load()
}

// scheduleIKERekey arms the IKE SA's soft lifetime.
func (sa *SA) scheduleIKERekey() {
	if sa.cfg.ikeRekey <= 0 {
		return
	}
	if sa.ikeRekeyTimer != nil {
		sa.ikeRekeyTimer.Stop()
	}
	d := sa.cfg.ikeRekey
	if sa.cfg.rekeyJitter > 0 {
		d -= time.Duration(rand.Int64N(int64(sa.cfg.rekeyJitter)))
	}
	sa.ikeRekeyTimer = sa.cfg.clock.AfterFunc(d, func() {
		sa.post(func() {
			if err := sa.rekeyIKE(nil); err != nil {
				sa.log.Warn("IKE SA rekey not started", "err", err)
			}
		})
	})
}

// RekeyIKE replaces the IKE SA's keys and SPIs now and returns once the SA
// uses them.
func (sa *SA) RekeyIKE(ctx context.Context) error {
	return sa.await(ctx, func(res chan<- error) {
		if err := sa.rekeyIKE(res); err != nil {
			res <- err
		}
	})
}

func (sa *SA) rekeyIKE(done chan<- error) error {
	if sa.state != stateEstablished {
		return fmt.Errorf("ike: IKE rekey in state %s", sa.state)
	}
	if sa.ikeRekeying || sa.pendingIKE != nil {
		return ErrRekeyInProgress
	}
	group := uint16(0)
	if dh, ok := transformOf(sa.ikeProp.Transforms, wire.TransformDH); ok {
		group = dh.ID
	}
	sa.ikeRekeying = true
	sa.sendIKERekey(group, done)
	return nil
}

func (sa *SA) sendIKERekey(group uint16, done chan<- error) {
	fail := func(err error) {
		sa.ikeRekeying = false
		if done != nil {
			done <- err
		}
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
	sa.log.Info("rekeying IKE SA", "new_spi", spiHex(spi))
	sa.startRequest(wire.ExchangeCreateChildSA, build, func(_ wire.Header, ps []wire.Payload, _ []byte) {
		if n := firstError(ps); n != nil {
			sa.releaseSPI(spi)
			switch {
			case n.Type == wire.NotifyInvalidKEPayload && len(n.Data) == 2:
				if g := binary.BigEndian.Uint16(n.Data); g != group && slices.Contains(dhGroups(sa.cfg.ike), g) {
					sa.sendIKERekey(g, done)
					return
				}
			case n.Type == wire.NotifyTemporaryFailure:
				// The peer is busy (say, rekeying itself): later.
				sa.ikeRekeying = false
				wait := time.Second + time.Duration(rand.Int64N(int64(4*time.Second)))
				sa.ikeRekeyTimer = sa.cfg.clock.AfterFunc(wait, func() {
					sa.post(func() {
						if err := sa.rekeyIKE(done); err != nil && done != nil {
							done <- err
						}
					})
				})
				return
			}
			fail(&NotifyError{Type: n.Type, Exchange: wire.ExchangeCreateChildSA, Remote: true})
			return
		}
		saP, nonce, ke := ikeRekeyPayloads(ps)
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
		c, err := sa.newIKEContext(chosen, shared, ni, nonce.Data, spi, binary.BigEndian.Uint64(saP.Proposals[0].SPI), true)
		if err != nil {
			sa.releaseSPI(spi)
			fail(err)
			return
		}
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
	}, func(err error) { fail(err) })
}

func (sa *SA) finishIKERekey(c *ikeContext, done chan<- error) {
	sa.ikeRekeying = false
	sa.switchIKE(c)
	if done != nil {
		done <- nil
	}
}

func ikeRekeyPayloads(ps []wire.Payload) (*wire.SA, *wire.Nonce, *wire.KE) {
	saP, nonce, ke, _, _ := childPayloads(ps)
	return saP, nonce, ke
}

// isIKERekey reports whether a CREATE_CHILD_SA request rekeys the IKE SA.
func isIKERekey(ps []wire.Payload) bool {
	if findNotify(ps, wire.NotifyRekeySA) != nil {
		return false
	}
	for _, p := range ps {
		if s, ok := p.(*wire.SA); ok {
			return len(s.Proposals) > 0 && s.Proposals[0].Protocol == wire.ProtoIKE
		}
	}
	return false
}

// handleIKERekeyRequest answers the peer's rekey of the IKE SA. The new SA
// waits in pendingIKE until the peer deletes the old one or uses the new.
func (sa *SA) handleIKERekeyRequest(ps []wire.Payload) ([]wire.Payload, func()) {
	refuse := func(t wire.NotifyType, data []byte) ([]wire.Payload, func()) {
		return []wire.Payload{&wire.Notify{Type: t, Data: data}}, nil
	}
	if sa.ikeRekeying || sa.pendingIKE != nil {
		// RFC 7296 2.25: a rekey is under way already.
		return refuse(wire.NotifyTemporaryFailure, nil)
	}
	saP, nonce, ke := ikeRekeyPayloads(ps)
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
	kx, err := ikecrypto.NewKeyExchange(dh.ID, sa.cfg.rand)
	if err != nil {
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	shared, err := kx.SharedSecret(ke.Data)
	if err != nil {
		return refuse(wire.NotifyInvalidSyntax, nil)
	}
	spi := sa.newOurSPI()
	nr := sa.randBytes(32)
	c, err := sa.newIKEContext(chosen, shared, nonce.Data, nr, binary.BigEndian.Uint64(chosen.SPI), spi, false)
	if err != nil {
		sa.releaseSPI(spi)
		sa.log.Error("deriving rekeyed IKE SA keys", "err", err)
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	sa.pendingIKE = c
	var spiB [8]byte
	binary.BigEndian.PutUint64(spiB[:], spi)
	return []wire.Payload{
		&wire.SA{Proposals: []wire.Proposal{{Number: chosen.Number, Protocol: wire.ProtoIKE, SPI: spiB[:], Transforms: chosen.Transforms}}},
		&wire.Nonce{Data: nr},
		&wire.KE{Group: dh.ID, Data: kx.PublicKey()},
	}, nil
}

// takePendingIKE switches to a pending rekeyed IKE SA when a message
// arrives under its SPIs; it reports whether it did.
func (sa *SA) takePendingIKE(h wire.Header) bool {
	c := sa.pendingIKE
	if c == nil || h.SPIi != c.spii || h.SPIr != c.spir {
		return false
	}
	sa.switchIKE(c)
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
