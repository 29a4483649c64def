package ike

import (
	"errors"
	"fmt"
	"slices"

	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
)

// eapInitiator is the state of an initiator's EAP conversation inside
// IKE_AUTH (RFC 7296 2.16), owned by the SA goroutine.
type eapInitiator struct {
	auth *EAPAuth
	peer *eap.Peer
	idi  *wire.Identification // as sent: our AUTH covers it
	idr  *wire.Identification // from the first response
	// sigVerified: the gateway's first AUTH (its certificate) checked out;
	// false only with EAP-only authentication.
	sigVerified bool
	gotFirst    bool
	// notifies of the first response that the final one may not repeat
	// (MOBIKE_SUPPORTED and the addresses of RFC 4555).
	firstNotifies []wire.Payload
	msk           []byte
}

// startEAP prepares the conversation before the first IKE_AUTH request
// goes out; extra are the payloads that request adds.
func (sa *SA) startEAP(a *EAPAuth, idi *wire.Identification) (extra []wire.Payload, err error) {
	peer, err := a.newPeer(sa.cfg.rand)
	if err != nil {
		return nil, err
	}
	sa.eap.client = &eapInitiator{auth: a, peer: peer, idi: idi}
	sa.onDead = append(sa.onDead, peer.Close)
	if a.eapOnly {
		extra = append(extra, &wire.Notify{Type: wire.NotifyEAPOnlyAuthentication})
	}
	return extra, nil
}

// responderAuth is what checks the gateway's AUTH in handleAuthResponse:
// the configured PeerAuth, or the MSK once EAP has run.
func (sa *SA) responderAuth() PeerAuth {
	if c := sa.eap.client; c != nil && c.msk != nil {
		p := &mskPeer{msk: c.msk, checkID: !c.sigVerified}
		if p.checkID {
			p.remote, _ = parseRemoteID(sa.icfg.RemoteID)
			p.remoteText = sa.icfg.RemoteID
		}
		return p
	}
	return sa.icfg.PeerAuth
}

func (sa *SA) handleEAPResponse(h wire.Header, ps []wire.Payload, _ []byte) {
	c := sa.eap.client
	pl := wire.Collect(ps)
	idr, auth, certs, eapP := pl.IDr, pl.Auth, pl.Certs, pl.EAP
	if eapP == nil {
		if n := pl.Notify(wire.NotifyAuthenticationFailed); n != nil {
			sa.fail(&NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true})
			return
		}
		if n := pl.FirstError(); n != nil {
			sa.fail(&NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true})
			return
		}
		sa.failAfterAuth(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange,
			Err: errors.New("gateway did not continue EAP in IKE_AUTH")}, false)
		return
	}
	if !c.gotFirst {
		if idr == nil {
			sa.failAfterAuth(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange,
				Err: errors.New("first IKE_AUTH response lacks IDr")}, false)
			return
		}
		if auth != nil {
			// The gateway proves itself before we send it anything derived
			// from the password (RFC 7296 2.16).
			octets := sa.signedOctets(sa.initResp, sa.ni, sa.keys.SKpr, idr)
			if err := sa.icfg.PeerAuth.Verify(sa.prf, octets, idr, auth, certs); err != nil {
				sa.failAfterAuth(&NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: h.Exchange,
					Err: fmt.Errorf("gateway's authentication did not verify: %w", err)}, false)
				return
			}
			c.sigVerified = true
		} else if !c.auth.eapOnly {
			sa.failAfterAuth(&NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: h.Exchange,
				Err: errors.New("gateway sent no AUTH before EAP, and EAP-only authentication is not enabled")}, false)
			return
		}
		c.idr = idr
		c.gotFirst = true
		for _, p := range ps {
			if n, ok := p.(*wire.Notify); ok {
				switch n.Type {
				case wire.NotifyMOBIKESupported, wire.NotifyAdditionalIP4Address, wire.NotifyAdditionalIP6Address, wire.NotifyNoAdditionalAddresses:
					c.firstNotifies = append(c.firstNotifies, n)
				}
			}
		}
	}
	resp, done, err := c.peer.Handle(eapP.Data)
	switch {
	case done:
		sa.sendEAPAuth()
	case err != nil && resp != nil:
		sa.sendEAPLastWord(resp, &EAPError{Err: err})
	case err != nil:
		var fe *eap.FailureError
		if errors.As(err, &fe) {
			// EAP-Failure: the gateway has already dropped the SA.
			sa.fail(&EAPError{Err: err})
			return
		}
		sa.failAfterAuth(&EAPError{Err: err}, false)
	default:
		sa.log.Debug("EAP round trip", "method", c.peer.Method())
		sa.startRequest(wire.ExchangeIKEAuth, func() []wire.Payload { return []wire.Payload{&wire.EAP{Data: resp}} },
			sa.handleEAPResponse, nil)
	}
}

// sendEAPLastWord sends a method's acknowledgement of the server's refusal
// and ends the SA with err when the gateway answers (its EAP-Failure), or
// after one retransmission timeout: the user waits for this.
func (sa *SA) sendEAPLastWord(resp []byte, err error) {
	sa.log.Warn("EAP authentication refused", "err", err)
	sa.finish(nil, err)
	sa.sendLastWord(wire.ExchangeIKEAuth, &wire.EAP{Data: resp}, err)
}

// sendEAPAuth sends our AUTH keyed with the MSK (RFC 7296 2.16).
func (sa *SA) sendEAPAuth() {
	c := sa.eap.client
	c.msk = c.peer.MSK()
	if len(c.msk) == 0 {
		sa.failAfterAuth(&EAPError{Err: errors.New("EAP method produced no MSK")}, false)
		return
	}
	sa.log.Info("EAP succeeded", "method", c.peer.Method())
	auth := mskMAC(sa.prf, c.msk, sa.signedOctets(sa.initReq, sa.nr, sa.keys.SKpi, c.idi))
	sa.startRequest(wire.ExchangeIKEAuth, func() []wire.Payload { return []wire.Payload{auth} },
		sa.handleEAPFinal, nil)
}

// handleEAPFinal completes IKE_AUTH as without EAP; the final response
// need not repeat IDr or what the first one announced.
func (sa *SA) handleEAPFinal(h wire.Header, ps []wire.Payload, raw []byte) {
	c := sa.eap.client
	merged := slices.Clone(ps)
	if !slices.ContainsFunc(ps, func(p wire.Payload) bool { id, ok := p.(*wire.Identification); return ok && id.Responder }) {
		merged = append(merged, c.idr)
	}
	if wire.FindNotify(ps, wire.NotifyMOBIKESupported) == nil {
		merged = append(merged, c.firstNotifies...)
	}
	sa.handleAuthResponse(h, merged, raw)
}
