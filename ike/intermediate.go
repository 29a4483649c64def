package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// addKEState is RFC 9242 / RFC 9370's: the additional key exchanges
// IKE_SA_INIT negotiated, whether the peer supports IKE_INTERMEDIATE, how
// many IKE_INTERMEDIATE exchanges are done, and the IntAuth chains of both
// directions. inPlain and inFirst are the inner payloads of the last
// message opened, as the peer encoded them (IntAuth covers those bytes,
// not our re-encoding). followups are the peer's CREATE_CHILD_SAs waiting
// for their IKE_FOLLOWUP_KE exchanges (followup.go).
type addKEState struct {
	transforms   []wire.Transform
	intermediate bool
	intDone      int
	authI, authR []byte
	inPlain      []byte
	inFirst      wire.PayloadType
	followups    []*followupState
}

// Additional key exchanges for the IKE SA (RFC 9370) in IKE_INTERMEDIATE
// exchanges (RFC 9242). After IKE_SA_INIT the initiator runs one
// IKE_INTERMEDIATE per negotiated ADDKE transform, in transform type
// order; each carries a KE payload both ways, is protected with the keys
// the previous step made, and when it is done both sides derive new keys
// (RFC 9370 2.2.2). The messages are bound into AUTH with the IntAuth
// chains (RFC 9242 3.3), so that an attacker cannot strip or alter them.

// addKETransforms returns the additional key exchanges of a negotiated
// transform set that are to run (ID NONE is skipped), by transform type.
func addKETransforms(ts []wire.Transform) []wire.Transform {
	var out []wire.Transform
	for _, t := range ts {
		if t.Type.IsADDKE() && t.ID != 0 {
			out = append(out, t)
		}
	}
	slices.SortStableFunc(out, func(a, b wire.Transform) int { return int(a.Type) - int(b.Type) })
	return out
}

// offersADDKE reports whether any of ps has an additional key exchange.
func offersADDKE(ps []Proposal) bool {
	for _, p := range ps {
		if len(addKETransforms(p.Transforms)) > 0 {
			return true
		}
	}
	return false
}

// addKEGroups lists the methods our proposals name in ADDKE transforms.
func addKEGroups(ps []Proposal) []uint16 {
	var out []uint16
	for _, p := range ps {
		for _, t := range addKETransforms(p.Transforms) {
			if !slices.Contains(out, t.ID) {
				out = append(out, t.ID)
			}
		}
	}
	return out
}

// withoutADDKE turns a peer's proposals into those a peer without RFC 9370
// means (it sent no INTERMEDIATE_EXCHANGE_SUPPORTED, so we must not pick
// an additional key exchange): proposals that allow NONE for every ADDKE
// type keep the rest, the others are dropped.
func withoutADDKE(ps []wire.Proposal) []wire.Proposal {
	var out []wire.Proposal
	for _, p := range ps {
		mandatory := false
		var types []wire.TransformType
		for _, t := range p.Transforms {
			if t.Type.IsADDKE() && !slices.Contains(types, t.Type) {
				types = append(types, t.Type)
			}
		}
		for _, typ := range types {
			if !slices.Contains(p.Transforms, wire.Transform{Type: typ, ID: 0}) {
				mandatory = true
			}
		}
		if mandatory {
			continue
		}
		p.Transforms = slices.DeleteFunc(slices.Clone(p.Transforms), func(t wire.Transform) bool { return t.Type.IsADDKE() })
		out = append(out, p)
	}
	return out
}

// stripADDKE drops the additional key exchanges from our proposals: the
// Child SA that IKE_AUTH makes has no key exchange of its own, so its
// proposals name none (the rekeys that follow do).
func stripADDKE(ps []Proposal) []Proposal {
	out := make([]Proposal, 0, len(ps))
	for _, p := range ps {
		ts := slices.DeleteFunc(slices.Clone(p.Transforms), func(t wire.Transform) bool { return t.Type.IsADDKE() })
		if !slices.ContainsFunc(out, func(q Proposal) bool { return slices.Equal(q.Transforms, ts) }) {
			out = append(out, Proposal{Transforms: ts, Text: p.Text})
		}
	}
	return out
}

// stripWireADDKE is stripADDKE for a peer's proposals in IKE_AUTH.
func stripWireADDKE(ps []wire.Proposal) []wire.Proposal {
	out := make([]wire.Proposal, len(ps))
	for i, p := range ps {
		p.Transforms = slices.DeleteFunc(slices.Clone(p.Transforms), func(t wire.Transform) bool { return t.Type.IsADDKE() })
		out[i] = p
	}
	return out
}

// intAuthStep extends an IntAuth chain with one IKE_INTERMEDIATE message
// (RFC 9242 3.3.2): IntAuth_n = prf(SK_p, IntAuth_(n-1) | A | P), where A
// is the message's IKE header and Encrypted payload header with lengths
// as if it were sent unfragmented and unencrypted (no IV, padding or ICV),
// and P its inner payloads. skp is the key that protected the message.
func intAuthStep(prf *ikecrypto.PRF, skp, prev []byte, h wire.Header, first wire.PayloadType, plain []byte) []byte {
	a := wire.EncryptedHeader(h, first, len(plain))
	return prf.Sum(skp, prev, a, plain)
}

// intAuth is what RFC 9242 3.3.2 appends to the octets AUTH signs:
// IntAuth_iN | IntAuth_rN | IKE_AUTH_MID, or nothing without
// IKE_INTERMEDIATE. IKE_AUTH's first Message ID follows the last
// IKE_INTERMEDIATE's.
func (sa *SA) intAuth() []byte {
	if sa.addKE.intDone == 0 {
		return nil
	}
	out := slices.Concat(sa.addKE.authI, sa.addKE.authR)
	return binary.BigEndian.AppendUint32(out, uint32(sa.addKE.intDone)+1)
}

// signedOctets is SignedOctets with the IntAuth of this SA's
// IKE_INTERMEDIATE exchanges.
func (sa *SA) signedOctets(message, nonce, skp []byte, id *wire.Identification) []byte {
	return append(SignedOctets(message, nonce, sa.prf, skp, id), sa.intAuth()...)
}

// ikeKeyLens returns the integrity and encryption key lengths of the IKE
// SA's proposal.
func (sa *SA) ikeKeyLens() (integ *ikecrypto.Integrity, integLen, encLen int, err error) {
	encr, _ := transformOf(sa.ikeProp.Transforms, wire.TransformEncr)
	if !ikecrypto.IsAEAD(encr.ID) {
		it, ok := transformOf(sa.ikeProp.Transforms, wire.TransformInteg)
		if !ok {
			return nil, 0, 0, errors.New("ike: IKE proposal without integrity algorithm")
		}
		if integ, err = ikecrypto.NewIntegrity(it.ID); err != nil {
			return nil, 0, 0, err
		}
		integLen = integ.KeySize()
	}
	encLen, err = ikecrypto.EncrKeySize(encr.ID, int(encr.KeyLength))
	return integ, integLen, encLen, err
}

// installIKEKeys puts keys into use for the SK payloads.
func (sa *SA) installIKEKeys(keys ikecrypto.IKEKeys, integ *ikecrypto.Integrity) error {
	encr, _ := transformOf(sa.ikeProp.Transforms, wire.TransformEncr)
	ci, err := ikecrypto.NewSKCipher(encr.ID, int(encr.KeyLength), integ, keys.SKei, keys.SKai)
	if err != nil {
		return err
	}
	cr, err := ikecrypto.NewSKCipher(encr.ID, int(encr.KeyLength), integ, keys.SKer, keys.SKar)
	if err != nil {
		return err
	}
	sa.keys = keys
	if sa.initiator {
		sa.skOut, sa.skIn = ci, cr
	} else {
		sa.skOut, sa.skIn = cr, ci
	}
	return nil
}

// applyAdditionalKE moves the IKE SA to the keys of one more shared
// secret (RFC 9370 2.2.2).
func (sa *SA) applyAdditionalKE(shared []byte) error {
	integ, integLen, encLen, err := sa.ikeKeyLens()
	if err != nil {
		return err
	}
	keys := ikecrypto.DeriveAdditionalIKEKeys(sa.prf, sa.keys.SKd, shared, sa.ni, sa.nr, sa.spii.Load(), sa.spir.Load(), integLen, encLen)
	clear(shared)
	return sa.installIKEKeys(keys, integ)
}

// nextSetupStep runs the next IKE_INTERMEDIATE, or IKE_AUTH when all are
// done (initiator).
func (sa *SA) nextSetupStep() {
	if sa.addKE.intDone < len(sa.addKE.transforms) {
		sa.sendIntermediate()
		return
	}
	sa.sendAuth()
}

// sendIntermediate starts the IKE_INTERMEDIATE exchange of the next
// additional key exchange (initiator).
func (sa *SA) sendIntermediate() {
	t := sa.addKE.transforms[sa.addKE.intDone]
	kx, err := ikecrypto.NewKeyExchange(t.ID, sa.cfg.rand)
	if err != nil {
		sa.fail(fmt.Errorf("ike: additional key exchange %s method %d: %w", t.Type, t.ID, err))
		return
	}
	var reqH wire.Header
	var reqFirst wire.PayloadType
	var reqPlain []byte
	build := func() []wire.Payload {
		ps := []wire.Payload{&wire.KE{Group: t.ID, Data: kx.PublicKey()}}
		// startRequest builds a request right before it takes its
		// Message ID, so nextMsgID is this message's.
		reqH = sa.header(wire.ExchangeIKEIntermediate, sa.nextMsgID, false)
		reqFirst, reqPlain, _ = wire.EncodePayloads(ps)
		return ps
	}
	sa.log.Debug("IKE_INTERMEDIATE", "exchange", sa.addKE.intDone+1, "method", t.ID)
	sa.startRequest(wire.ExchangeIKEIntermediate, build, func(h wire.Header, ps []wire.Payload, _ []byte) {
		if n := wire.FirstError(ps); n != nil {
			sa.fail(&NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true})
			return
		}
		ke := findKE(ps)
		if ke == nil || ke.Group != t.ID {
			sa.fail(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: fmt.Errorf("IKE_INTERMEDIATE response lacks a KE payload of method %d", t.ID)})
			return
		}
		shared, err := kx.SharedSecret(ke.Data)
		if err != nil {
			sa.fail(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: fmt.Errorf("responder's additional KE: %w", err)})
			return
		}
		sa.addKE.authI = intAuthStep(sa.prf, sa.keys.SKpi, sa.addKE.authI, reqH, reqFirst, reqPlain)
		sa.addKE.authR = intAuthStep(sa.prf, sa.keys.SKpr, sa.addKE.authR, h, sa.addKE.inFirst, sa.addKE.inPlain)
		if err := sa.applyAdditionalKE(shared); err != nil {
			sa.fail(err)
			return
		}
		sa.addKE.intDone++
		sa.nextSetupStep()
	}, nil)
}

// handleIntermediateRequest answers an IKE_INTERMEDIATE (responder): the
// response goes out under the current keys, and after it the keys of the
// new shared secret take over.
func (sa *SA) handleIntermediateRequest(h wire.Header, ps []wire.Payload) ([]wire.Payload, func()) {
	reqFirst, reqPlain := sa.addKE.inFirst, sa.addKE.inPlain
	var resp []wire.Payload
	var shared []byte
	var failure error
	if sa.addKE.intDone >= len(sa.addKE.transforms) {
		// RFC 9242 allows IKE_INTERMEDIATE for other uses; we know none.
		failure = &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: errors.New("IKE_INTERMEDIATE after every additional key exchange")}
		resp = []wire.Payload{&wire.Notify{Type: wire.NotifyInvalidSyntax}}
	} else {
		t := sa.addKE.transforms[sa.addKE.intDone]
		ke := findKE(ps)
		switch {
		case ke == nil:
			failure = &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: errors.New("IKE_INTERMEDIATE request lacks a KE payload")}
			resp = []wire.Payload{&wire.Notify{Type: wire.NotifyInvalidSyntax}}
		case ke.Group != t.ID:
			var g [2]byte
			binary.BigEndian.PutUint16(g[:], t.ID)
			failure = &NotifyError{Type: wire.NotifyInvalidKEPayload, Exchange: h.Exchange,
				Err: fmt.Errorf("initiator sent method %d for %s, which negotiated %d", ke.Group, t.Type, t.ID)}
			resp = []wire.Payload{&wire.Notify{Type: wire.NotifyInvalidKEPayload, Data: g[:]}}
		default:
			reply, s, err := ikecrypto.Respond(t.ID, ke.Data, sa.cfg.rand)
			if err != nil {
				failure = &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: fmt.Errorf("initiator's additional KE: %w", err)}
				resp = []wire.Payload{&wire.Notify{Type: wire.NotifyInvalidSyntax}}
			} else {
				shared = s
				resp = []wire.Payload{&wire.KE{Group: t.ID, Data: reply}}
			}
		}
	}
	if failure != nil {
		sa.log.Info("IKE_INTERMEDIATE refused", "err", failure)
		return resp, func() { sa.die(failure) }
	}
	respH := sa.header(h.Exchange, h.MessageID, true)
	respFirst, respPlain, err := wire.EncodePayloads(resp)
	if err != nil {
		return nil, func() { sa.die(fmt.Errorf("ike: encoding IKE_INTERMEDIATE response: %w", err)) }
	}
	sa.addKE.authI = intAuthStep(sa.prf, sa.keys.SKpi, sa.addKE.authI, h, reqFirst, reqPlain)
	sa.addKE.authR = intAuthStep(sa.prf, sa.keys.SKpr, sa.addKE.authR, respH, respFirst, respPlain)
	return resp, func() {
		if err := sa.applyAdditionalKE(shared); err != nil {
			sa.die(err)
			return
		}
		sa.addKE.intDone++
	}
}

// findKE returns the first KE payload of ps, or nil.
func findKE(ps []wire.Payload) *wire.KE {
	ke, _ := wire.Find(ps, wire.PayloadKE).(*wire.KE)
	return ke
}
