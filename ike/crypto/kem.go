package crypto

import (
	"bytes"
	"crypto/mlkem"
	"fmt"
	"io"

	"github.com/roam-vpn/roam/ike/wire"
)

// The ML-KEM key exchange methods are those of
// draft-ietf-ipsecme-ikev2-mlkem (their IDs are in package wire).
// crypto/mlkem implements ML-KEM-768 and ML-KEM-1024; ML-KEM-512 counts as
// a KEM so that errors can name it, but has no implementation.

// IsKEM reports whether group is a key encapsulation method: the
// initiator's KE data is an encapsulation key and the responder's a
// ciphertext, so the two values differ in length and the responder's
// depends on the initiator's (Respond).
func IsKEM(group uint16) bool {
	return group == wire.GroupMLKEM512 || group == wire.GroupMLKEM768 || group == wire.GroupMLKEM1024
}

// kemSizes returns the encapsulation key and ciphertext lengths of FIPS 203
// for an implemented ML-KEM group.
func kemSizes(group uint16) (ekLen, ctLen int, ok bool) {
	switch group {
	case wire.GroupMLKEM768:
		return mlkem.EncapsulationKeySize768, mlkem.CiphertextSize768, true
	case wire.GroupMLKEM1024:
		return mlkem.EncapsulationKeySize1024, mlkem.CiphertextSize1024, true
	}
	return 0, 0, false
}

// ResponseLen returns the length of the responder's KE data for group:
// the ciphertext for ML-KEM, else the same as PublicKeyLen.
func ResponseLen(group uint16) (int, error) {
	if _, ct, ok := kemSizes(group); ok {
		return ct, nil
	}
	return PublicKeyLen(group)
}

// checkEncapsulationKey performs the FIPS 203 7.2 input checks on an
// initiator's ML-KEM KE data: its length (type check) and that every
// coefficient is below q (modulus check, done by crypto/mlkem).
func checkEncapsulationKey(group uint16, ek []byte) error {
	n, _, ok := kemSizes(group)
	if !ok {
		return fmt.Errorf("ikecrypto: unsupported key exchange method %d", group)
	}
	if len(ek) != n {
		return fmt.Errorf("%w: ML-KEM group %d encapsulation key is %d bytes, want %d", ErrInvalidPublicKey, group, len(ek), n)
	}
	var err error
	switch group {
	case wire.GroupMLKEM768:
		_, err = mlkem.NewEncapsulationKey768(ek)
	case wire.GroupMLKEM1024:
		_, err = mlkem.NewEncapsulationKey1024(ek)
	}
	if err != nil {
		return fmt.Errorf("%w: ML-KEM group %d encapsulation key: %v", ErrInvalidPublicKey, group, err)
	}
	return nil
}

// Respond is the responder's side of a key exchange: it validates the
// initiator's KE data peer and returns the responder's KE data and the
// shared secret. For Diffie-Hellman groups that is a fresh key pair's public
// value; for ML-KEM the ciphertext of an encapsulation to the initiator's
// key (crypto/mlkem draws that randomness itself, not from random).
func Respond(group uint16, peer []byte, random io.Reader) (reply, shared []byte, err error) {
	if IsKEM(group) {
		if err := checkEncapsulationKey(group, peer); err != nil {
			return nil, nil, err
		}
		switch group {
		case wire.GroupMLKEM768:
			ek, err := mlkem.NewEncapsulationKey768(peer)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %v", ErrInvalidPublicKey, err)
			}
			shared, reply = ek.Encapsulate()
		case wire.GroupMLKEM1024:
			ek, err := mlkem.NewEncapsulationKey1024(peer)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %v", ErrInvalidPublicKey, err)
			}
			shared, reply = ek.Encapsulate()
		}
		return reply, shared, nil
	}
	kx, err := NewKeyExchange(group, random)
	if err != nil {
		return nil, nil, err
	}
	if shared, err = kx.SharedSecret(peer); err != nil {
		return nil, nil, err
	}
	return kx.PublicKey(), shared, nil
}

// mlkemKE is the initiator's side of ML-KEM: PublicKey is the encapsulation
// key, SharedSecret decapsulates the responder's ciphertext.
type mlkemKE struct {
	group uint16
	ek    []byte
	// One of the two is set, by group.
	dk768  *mlkem.DecapsulationKey768
	dk1024 *mlkem.DecapsulationKey1024
}

// newMLKEM derives the decapsulation key from a 64-byte seed (FIPS 203
// ML-KEM.KeyGen_internal's d || z) read from random, so that callers who
// pass a reader get reproducible keys.
func newMLKEM(group uint16, random io.Reader) (*mlkemKE, error) {
	seed := make([]byte, mlkem.SeedSize)
	defer clear(seed)
	if _, err := io.ReadFull(random, seed); err != nil {
		return nil, fmt.Errorf("ikecrypto: ML-KEM group %d seed: %w", group, err)
	}
	k := &mlkemKE{group: group}
	var err error
	switch group {
	case wire.GroupMLKEM768:
		if k.dk768, err = mlkem.NewDecapsulationKey768(seed); err == nil {
			k.ek = k.dk768.EncapsulationKey().Bytes()
		}
	case wire.GroupMLKEM1024:
		if k.dk1024, err = mlkem.NewDecapsulationKey1024(seed); err == nil {
			k.ek = k.dk1024.EncapsulationKey().Bytes()
		}
	default:
		return nil, fmt.Errorf("ikecrypto: unsupported key exchange method %d", group)
	}
	if err != nil {
		return nil, fmt.Errorf("ikecrypto: ML-KEM group %d key: %w", group, err)
	}
	return k, nil
}

func (k *mlkemKE) Group() uint16     { return k.group }
func (k *mlkemKE) PublicKey() []byte { return bytes.Clone(k.ek) }

// SharedSecret decapsulates the responder's ciphertext. FIPS 203 7.3 asks
// for a ciphertext type check (its length) before decapsulation; a wrong
// ciphertext of the right length is not detectable (implicit rejection:
// the result is a pseudorandom key, and the peers' keys simply differ).
func (k *mlkemKE) SharedSecret(peer []byte) ([]byte, error) {
	_, ctLen, _ := kemSizes(k.group)
	if len(peer) != ctLen {
		return nil, fmt.Errorf("%w: ML-KEM group %d ciphertext is %d bytes, want %d", ErrInvalidPublicKey, k.group, len(peer), ctLen)
	}
	var (
		shared []byte
		err    error
	)
	if k.dk768 != nil {
		shared, err = k.dk768.Decapsulate(peer)
	} else {
		shared, err = k.dk1024.Decapsulate(peer)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: ML-KEM group %d ciphertext: %v", ErrInvalidPublicKey, k.group, err)
	}
	return shared, nil
}
