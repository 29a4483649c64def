package ike

import (
	"errors"
	"fmt"
	"slices"

	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
)

// EAPServer is the authenticator side of one EAP conversation, as
// eap.Server implements it for EAP-MSCHAPv2.
type EAPServer interface {
	// Start returns the first EAP request.
	Start() ([]byte, error)
	// Handle answers a response with the next packet and where the
	// conversation stands.
	Handle(resp []byte) ([]byte, eap.Result, error)
	// MSK is valid once Handle returned eap.Succeeded.
	MSK() []byte
}

// eapResponder is a responder's EAP conversation, owned by the SA goroutine.
type eapResponder struct {
	srv   EAPServer
	first []wire.Payload // the first IKE_AUTH request: IDi, SA, TS, CP, notifies
	idi   *wire.Identification
	idr   *wire.Identification
	msk   []byte // set once EAP succeeded: the next request carries AUTH
}

// wantsEAP: the initiator asked for EAP by leaving AUTH out (RFC 7296
// 2.16), or is in the middle of it.
func (sa *SA) wantsEAP(ps []wire.Payload) bool {
	if sa.eap.server != nil {
		return true
	}
	return sa.resp.cfg.EAPServer != nil && !slices.ContainsFunc(ps, func(p wire.Payload) bool { _, ok := p.(*wire.Auth); return ok })
}

// eapServerStep runs one IKE_AUTH round of EAP. While EAP continues it
// returns the response (done false). When the initiator's final AUTH has
// arrived it returns done with the payloads handleAuthRequest should go on
// with: the first request's plus that AUTH.
func (sa *SA) eapServerStep(ps []wire.Payload) (merged, resp []wire.Payload, after func(), done bool) {
	r := sa.resp
	failed := func(err error, notify bool) ([]wire.Payload, []wire.Payload, func(), bool) {
		idi := findIDi(ps)
		if sa.eap.server != nil {
			idi = sa.eap.server.idi
		}
		sa.authFailed(idi, err)
		e := &NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: wire.ExchangeIKEAuth, Err: err}
		var out []wire.Payload
		if notify {
			out = append(out, &wire.Notify{Type: wire.NotifyAuthenticationFailed})
		}
		return nil, out, func() { sa.die(e) }, false
	}
	c := sa.eap.server
	if c == nil {
		idi := findIDi(ps)
		if idi == nil {
			return failed(errors.New("IKE_AUTH request lacks IDi"), true)
		}
		srv, err := r.cfg.EAPServer(idi)
		if err != nil {
			return failed(fmt.Errorf("identity %q: %w", identityString(idi), err), true)
		}
		local := r.cfg.LocalAuth
		if r.cfg.LocalAuthFor != nil {
			if local, err = r.cfg.LocalAuthFor(idi); err != nil {
				return failed(fmt.Errorf("identity %q: %w", identityString(idi), err), true)
			}
		}
		first, err := srv.Start()
		if err != nil {
			return failed(err, true)
		}
		idr := *local.Identity()
		idr.Responder = true
		c = &eapResponder{srv: srv, first: slices.Clone(ps), idi: idi, idr: &idr}
		resp = append(resp, &idr)
		eapOnly := r.cfg.EAPOnly && wire.FindNotify(ps, wire.NotifyEAPOnlyAuthentication) != nil
		if !eapOnly {
			for _, cert := range local.Certs() {
				resp = append(resp, cert)
			}
			auth, err := local.Sign(sa.prf, sa.signedOctets(sa.initResp, sa.ni, sa.keys.SKpr, &idr))
			if err != nil {
				return failed(fmt.Errorf("signing our AUTH: %w", err), true)
			}
			resp = append(resp, auth)
		}
		sa.eap.server = c
		if cl, ok := srv.(interface{ Close() }); ok {
			sa.onDead = append(sa.onDead, cl.Close)
		}
		return nil, append(resp, &wire.EAP{Data: first}), nil, false
	}
	if c.msk != nil {
		auth := wire.Collect(ps).Auth
		if auth == nil {
			return failed(errors.New("IKE_AUTH request after EAP lacks AUTH"), true)
		}
		return append(slices.Clone(c.first), auth), nil, nil, true
	}
	eapP := wire.Collect(ps).EAP
	if eapP == nil {
		return failed(errors.New("IKE_AUTH request lacks the EAP payload"), true)
	}
	next, res, err := c.srv.Handle(eapP.Data)
	switch {
	case err != nil:
		return failed(fmt.Errorf("EAP: %w", err), true)
	case res == eap.Failed:
		_, out, after, _ := failed(errors.New("EAP authentication failed"), false)
		return nil, append(out, &wire.EAP{Data: next}), after, false
	case res == eap.Succeeded:
		if c.msk = c.srv.MSK(); len(c.msk) == 0 {
			return failed(errors.New("EAP method produced no MSK"), true)
		}
	}
	return nil, []wire.Payload{&wire.EAP{Data: next}}, nil, false
}

// initiatorAuth checks the initiator's AUTH in handleAuthRequest: the
// configured PeerAuth, or the MSK after EAP (its identity was proven by
// EAP, with the EAPServer chosen for it).
func (sa *SA) initiatorAuth(idi *wire.Identification) (PeerAuth, error) {
	if c := sa.eap.server; c != nil && c.msk != nil {
		return &mskPeer{msk: c.msk}, nil
	}
	return sa.resp.cfg.PeerAuth(idi)
}

// eapLocalAuth replaces our authenticator for the final AUTH of EAP.
func (sa *SA) eapLocalAuth(local LocalAuth) LocalAuth {
	if c := sa.eap.server; c != nil && c.msk != nil {
		return &mskLocal{id: c.idr, msk: c.msk}
	}
	return local
}

// findIDi returns the first IDi payload of ps, or nil.
func findIDi(ps []wire.Payload) *wire.Identification {
	id, _ := wire.Find(ps, wire.PayloadIDi).(*wire.Identification)
	return id
}
