package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// Additional key exchanges of a CREATE_CHILD_SA (RFC 9370 2.2.4): when the
// chosen proposal has ADDKE transforms, the responder's answer carries an
// ADDITIONAL_KEY_EXCHANGE notify, and the initiator runs one
// IKE_FOLLOWUP_KE exchange per additional key exchange, each quoting the
// notify data the previous answer gave. Only after the last one does the
// new Child SA or IKE SA exist, keyed with every shared secret in order
// (ikecrypto.ConcatSecrets). Rekey collisions are judged by the
// CREATE_CHILD_SA nonces, as without additional key exchanges.

// maxFollowups bounds the peer's unfinished exchanges we keep state for.
const maxFollowups = 4

// followupTimeout bounds how long the responder keeps a CREATE_CHILD_SA
// waiting for its next IKE_FOLLOWUP_KE (RFC 9370 2.2.4: a responder must
// not hold the state of an exchange the initiator abandoned forever). It is
// counted from the answer that asked for it, and is longer than an
// initiator retransmits one request for.
const followupTimeout = 60 * time.Second

// followupState is the responder's record of one CREATE_CHILD_SA waiting
// for its IKE_FOLLOWUP_KE exchanges.
type followupState struct {
	link      []byte // the ADDITIONAL_KEY_EXCHANGE data the next request must quote
	remaining []wire.Transform
	secrets   [][]byte
	// complete makes the new SA from all secrets; abandon undoes what the
	// CREATE_CHILD_SA reserved when the exchanges fail.
	complete func(shared []byte) func()
	abandon  func()
	ikeRekey bool
	// timer drops the state when the next request does not come within
	// followupTimeout.
	timer Timer
}

// deferAdditional records a CREATE_CHILD_SA whose SA waits for the
// additional key exchanges addKEs and returns the notify for its answer.
func (sa *SA) deferAdditional(addKEs []wire.Transform, shared []byte, ikeRekey bool, complete func([]byte) func(), abandon func()) *wire.Notify {
	if len(sa.addKE.followups) >= maxFollowups {
		old := sa.addKE.followups[0]
		sa.dropFollowup(old)
		if old.abandon != nil {
			old.abandon()
		}
	}
	f := &followupState{link: sa.randBytes(8), remaining: addKEs, secrets: [][]byte{shared},
		complete: complete, abandon: abandon, ikeRekey: ikeRekey}
	sa.addKE.followups = append(sa.addKE.followups, f)
	sa.armFollowup(f)
	return &wire.Notify{Type: wire.NotifyAdditionalKeyExchange, Data: f.link}
}

// armFollowup (re)starts f's wait for the next IKE_FOLLOWUP_KE.
func (sa *SA) armFollowup(f *followupState) {
	if f.timer != nil {
		f.timer.Stop()
	}
	link := f.link
	f.timer = sa.cfg.clock.AfterFunc(followupTimeout, func() {
		sa.post(func() { sa.expireFollowup(f, link) })
	})
}

// expireFollowup abandons f if it still waits for the request quoting link.
func (sa *SA) expireFollowup(f *followupState, link []byte) {
	if !slices.Contains(sa.addKE.followups, f) || !bytes.Equal(f.link, link) {
		return
	}
	sa.log.Info("IKE_FOLLOWUP_KE did not come; the CREATE_CHILD_SA waiting for it is abandoned",
		"after", followupTimeout, "ike_rekey", f.ikeRekey)
	sa.dropFollowup(f)
	for _, s := range f.secrets {
		clear(s)
	}
	if f.abandon != nil {
		f.abandon()
	}
}

// followupPending reports whether an IKE SA rekey of the peer's waits for
// its IKE_FOLLOWUP_KE exchanges.
func (sa *SA) followupPending() bool {
	for _, f := range sa.addKE.followups {
		if f.ikeRekey {
			return true
		}
	}
	return false
}

func (sa *SA) dropFollowup(f *followupState) {
	if f.timer != nil {
		f.timer.Stop()
	}
	for i, g := range sa.addKE.followups {
		if g == f {
			sa.addKE.followups = append(sa.addKE.followups[:i:i], sa.addKE.followups[i+1:]...)
			return
		}
	}
}

// handleFollowupRequest answers an IKE_FOLLOWUP_KE (responder).
func (sa *SA) handleFollowupRequest(ps []wire.Payload) ([]wire.Payload, func()) {
	n := wire.FindNotify(ps, wire.NotifyAdditionalKeyExchange)
	var f *followupState
	for _, g := range sa.addKE.followups {
		if n != nil && bytes.Equal(g.link, n.Data) {
			f = g
		}
	}
	if f == nil {
		return []wire.Payload{&wire.Notify{Type: wire.NotifyStateNotFound}}, nil
	}
	fail := func(t wire.NotifyType, data []byte) ([]wire.Payload, func()) {
		sa.dropFollowup(f)
		if f.abandon != nil {
			f.abandon()
		}
		return []wire.Payload{&wire.Notify{Type: t, Data: data}}, nil
	}
	t := f.remaining[0]
	ke := findKE(ps)
	if ke == nil {
		return fail(wire.NotifyInvalidSyntax, nil)
	}
	if ke.Group != t.ID {
		// The method is the one the CREATE_CHILD_SA chose; anything else
		// ends the exchange with the method we wanted.
		var g [2]byte
		binary.BigEndian.PutUint16(g[:], t.ID)
		return fail(wire.NotifyInvalidKEPayload, g[:])
	}
	reply, shared, err := ikecrypto.Respond(t.ID, ke.Data, sa.cfg.rand)
	if err != nil {
		sa.log.Info("IKE_FOLLOWUP_KE refused", "err", err)
		return fail(wire.NotifyInvalidSyntax, nil)
	}
	f.secrets = append(f.secrets, shared)
	f.remaining = f.remaining[1:]
	resp := []wire.Payload{&wire.KE{Group: t.ID, Data: reply}}
	if len(f.remaining) > 0 {
		f.link = sa.randBytes(8)
		sa.armFollowup(f)
		return append(resp, &wire.Notify{Type: wire.NotifyAdditionalKeyExchange, Data: f.link}), nil
	}
	sa.dropFollowup(f)
	all := ikecrypto.ConcatSecrets(f.secrets...)
	for _, s := range f.secrets {
		clear(s)
	}
	return resp, f.complete(all)
}

// runFollowups runs the IKE_FOLLOWUP_KE exchanges for addKEs after a
// CREATE_CHILD_SA answered with link (initiator); done gets every shared
// secret in order, first included, or the error that ended them.
func (sa *SA) runFollowups(addKEs []wire.Transform, link []byte, secrets [][]byte, done func(shared []byte, err error)) {
	if len(addKEs) == 0 {
		all := ikecrypto.ConcatSecrets(secrets...)
		done(all, nil)
		return
	}
	if len(link) == 0 {
		done(nil, &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeCreateChildSA, Remote: true,
			Err: errors.New("the peer chose additional key exchanges without ADDITIONAL_KEY_EXCHANGE")})
		return
	}
	t := addKEs[0]
	kx, err := ikecrypto.NewKeyExchange(t.ID, sa.cfg.rand)
	if err != nil {
		done(nil, fmt.Errorf("ike: additional key exchange method %d: %w", t.ID, err))
		return
	}
	build := func() []wire.Payload {
		return []wire.Payload{
			&wire.Notify{Type: wire.NotifyAdditionalKeyExchange, Data: link},
			&wire.KE{Group: t.ID, Data: kx.PublicKey()},
		}
	}
	sa.startRequest(wire.ExchangeIKEFollowupKE, build, func(h wire.Header, ps []wire.Payload, _ []byte) {
		if n := wire.FirstError(ps); n != nil {
			done(nil, &NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true})
			return
		}
		ke := findKE(ps)
		if ke == nil || ke.Group != t.ID {
			done(nil, &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Remote: true,
				Err: fmt.Errorf("IKE_FOLLOWUP_KE response lacks a KE payload of method %d", t.ID)})
			return
		}
		shared, err := kx.SharedSecret(ke.Data)
		if err != nil {
			done(nil, &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: fmt.Errorf("peer's additional KE: %w", err)})
			return
		}
		var next []byte
		if n := wire.FindNotify(ps, wire.NotifyAdditionalKeyExchange); n != nil {
			next = n.Data
		}
		sa.runFollowups(addKEs[1:], next, append(secrets, shared), done)
	}, func(err error) { done(nil, err) })
}
