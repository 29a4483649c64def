package ike

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// keyPad is the RFC 7296 2.15 constant mixed into the PSK before use.
const keyPad = "Key Pad for IKEv2"

type pskAuth struct {
	id  *wire.Identification
	psk []byte
}

// NewPSKAuth authenticates us as localID with a pre-shared key. The key is
// copied, so the caller may wipe its slice.
func NewPSKAuth(localID string, psk []byte) (LocalAuth, error) {
	if len(psk) == 0 {
		return nil, errors.New("pre-shared key is empty")
	}
	id, err := ParseIdentity(localID)
	if err != nil {
		return nil, fmt.Errorf("local ID: %w", err)
	}
	return &pskAuth{id: id, psk: slices.Clone(psk)}, nil
}

func (a *pskAuth) Identity() *wire.Identification {
	return &wire.Identification{IDType: a.id.IDType, Data: slices.Clone(a.id.Data)}
}

func (a *pskAuth) Certs() []*wire.Cert { return nil }

func (a *pskAuth) Sign(prf *ikecrypto.PRF, octets []byte) (*wire.Auth, error) {
	return &wire.Auth{Method: wire.AuthPSK, Data: pskMAC(prf, a.psk, octets)}, nil
}

// pskMAC is AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), octets).
func pskMAC(prf *ikecrypto.PRF, psk, octets []byte) []byte {
	return prf.Sum(prf.Sum(psk, []byte(keyPad)), octets)
}

type pskPeer struct {
	remote     *wire.Identification // nil: any identity
	remoteText string
	psk        []byte
}

// NewPSKPeer accepts a peer proving knowledge of psk. remoteID "" accepts
// any identity: a gateway chooses the PeerAuth by IDi itself.
func NewPSKPeer(remoteID string, psk []byte) (PeerAuth, error) {
	if len(psk) == 0 {
		return nil, errors.New("pre-shared key is empty")
	}
	remote, err := parseRemoteID(remoteID)
	if err != nil {
		return nil, err
	}
	return &pskPeer{remote: remote, remoteText: remoteID, psk: slices.Clone(psk)}, nil
}

func (p *pskPeer) CertReqs() []*wire.CertReq { return nil }

func (p *pskPeer) Verify(prf *ikecrypto.PRF, octets []byte, id *wire.Identification, auth *wire.Auth, _ []*wire.Cert) error {
	if err := checkRemoteID(p.remote, p.remoteText, id); err != nil {
		return err
	}
	if auth == nil {
		return authErrorf(nil, "peer '%s' sent no AUTH payload", formatIdentity(id))
	}
	if auth.Method != wire.AuthPSK {
		return authErrorf(nil, "peer '%s' used %s, expected a pre-shared key", formatIdentity(id), authMethodName(auth.Method))
	}
	want := pskMAC(prf, p.psk, octets)
	// ConstantTimeCompare returns 0 at once for different lengths, which
	// only reveals the PRF size, a public parameter.
	if subtle.ConstantTimeCompare(want, auth.Data) != 1 {
		return authErrorf(nil, "pre-shared key of '%s' does not match", formatIdentity(id))
	}
	return nil
}

func authMethodName(m wire.AuthMethod) string {
	switch m {
	case wire.AuthRSASig:
		return "RSA signature authentication"
	case wire.AuthPSK:
		return "pre-shared key authentication"
	case wire.AuthDSS:
		return "DSS signature authentication"
	case wire.AuthECDSA256, wire.AuthECDSA384, wire.AuthECDSA521:
		return fmt.Sprintf("ECDSA signature authentication (method %d)", m)
	case wire.AuthDigitalSignature:
		return "digital signature authentication"
	}
	return fmt.Sprintf("authentication method %d", m)
}
