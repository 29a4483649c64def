package ike

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"slices"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
)

// eapRounds is EAP in IKE_AUTH (RFC 7296 2.16): the initiator's client
// rounds (initiator_eap.go) or the responder's server rounds
// (responder_eap.go); nil until EAP starts.
type eapRounds struct {
	client *eapInitiator
	server *eapResponder
}

// EAPAuth is a LocalAuth for an initiator that proves itself through EAP
// inside IKE_AUTH (RFC 7296 2.16): its first IKE_AUTH request carries no
// AUTH, and the AUTH it sends once EAP has succeeded is keyed with the
// method's MSK. Only Dial uses it; it cannot sign on its own.
type EAPAuth struct {
	id          *wire.Identification
	eapIdentity []byte
	method      func(rand io.Reader) (eap.Method, error)
	eapOnly     bool
}

// NewEAPMSCHAPv2Auth authenticates us as localID (the IDi) with
// EAP-MSCHAPv2 as username (also the EAP-Identity; "" means localID).
// Only the password's NT hash is kept. eapOnly asks the gateway for
// EAP-only authentication (RFC 5998): it may then skip its certificate
// signature, both AUTHs coming from the MSK.
func NewEAPMSCHAPv2Auth(localID, username string, password []byte, eapOnly bool) (*EAPAuth, error) {
	id, err := ParseIdentity(localID)
	if err != nil {
		return nil, fmt.Errorf("local ID: %w", err)
	}
	if username == "" {
		username = localID
	}
	if len(password) == 0 {
		return nil, errors.New("EAP-MSCHAPv2 password is empty")
	}
	hash, err := eap.NTPasswordHash(password)
	if err != nil {
		return nil, err
	}
	if _, err := eap.NewMSCHAPv2Hash(username, hash, nil); err != nil {
		return nil, err
	}
	return &EAPAuth{id: id, eapIdentity: []byte(username), eapOnly: eapOnly,
		method: func(rand io.Reader) (eap.Method, error) { return eap.NewMSCHAPv2Hash(username, hash, rand) }}, nil
}

// Identity is the IDi.
func (a *EAPAuth) Identity() *wire.Identification {
	return &wire.Identification{IDType: a.id.IDType, Data: slices.Clone(a.id.Data)}
}

// Certs is empty: the client has no certificate with EAP-MSCHAPv2.
func (a *EAPAuth) Certs() []*wire.Cert { return nil }

// Sign fails: the AUTH of an EAP initiator is keyed with the MSK of the
// SA's own EAP conversation, which Dial runs.
func (a *EAPAuth) Sign(*ikecrypto.PRF, []byte) (*wire.Auth, error) {
	return nil, errors.New("ike: EAP authentication is an initiator's, run by Dial")
}

// EAPOnly reports whether RFC 5998 EAP-only authentication is requested.
func (a *EAPAuth) EAPOnly() bool { return a.eapOnly }

func (a *EAPAuth) newPeer(rand io.Reader) (*eap.Peer, error) {
	m, err := a.method(rand)
	if err != nil {
		return nil, err
	}
	return eap.NewPeer(a.eapIdentity, m), nil
}

// EAPError is an EAP conversation that ended without success: the server
// refused us (wrapping an *eap.FailureError) or broke the protocol. It is
// an ErrAuthenticationFailed; its text names the method's reason and never
// the credentials.
type EAPError struct{ Err error }

func (e *EAPError) Error() string   { return e.Err.Error() }
func (e *EAPError) Unwrap() error   { return e.Err }
func (e *EAPError) Is(t error) bool { return t == ErrAuthenticationFailed }

// mskMAC is the AUTH of an EAP exchange (RFC 7296 2.16): the shared-key
// MAC of 2.15 with the MSK as the shared secret.
func mskMAC(prf *ikecrypto.PRF, msk, octets []byte) *wire.Auth {
	return &wire.Auth{Method: wire.AuthPSK, Data: pskMAC(prf, msk, octets)}
}

// mskPeer checks an AUTH keyed with an EAP MSK. checkID: the identity has
// not been proven otherwise (EAP-only, or a responder checking IDi).
type mskPeer struct {
	msk        []byte
	checkID    bool
	remote     *wire.Identification
	remoteText string
}

func (p *mskPeer) CertReqs() []*wire.CertReq { return nil }

func (p *mskPeer) Verify(prf *ikecrypto.PRF, octets []byte, id *wire.Identification, auth *wire.Auth, _ []*wire.Cert) error {
	if p.checkID {
		if err := checkRemoteID(p.remote, p.remoteText, id); err != nil {
			return err
		}
	}
	if auth == nil {
		return authErrorf(nil, "peer '%s' sent no AUTH payload after EAP", formatIdentity(id))
	}
	if auth.Method != wire.AuthPSK {
		return authErrorf(nil, "peer '%s' used %s after EAP, expected the MSK", formatIdentity(id), authMethodName(auth.Method))
	}
	if subtle.ConstantTimeCompare(mskMAC(prf, p.msk, octets).Data, auth.Data) != 1 {
		return authErrorf(nil, "AUTH of '%s' does not match the EAP MSK", formatIdentity(id))
	}
	return nil
}

// mskLocal signs with the MSK as the identity id (the responder's final
// AUTH of an EAP exchange).
type mskLocal struct {
	id  *wire.Identification
	msk []byte
}

func (l *mskLocal) Identity() *wire.Identification {
	return &wire.Identification{IDType: l.id.IDType, Data: slices.Clone(l.id.Data)}
}

func (l *mskLocal) Certs() []*wire.Cert { return nil }

func (l *mskLocal) Sign(prf *ikecrypto.PRF, octets []byte) (*wire.Auth, error) {
	return mskMAC(prf, l.msk, octets), nil
}
