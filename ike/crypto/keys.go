package crypto

import (
	"encoding/binary"
)

// IKEKeys are the seven secrets of RFC 7296 2.14.
type IKEKeys struct {
	SKd, SKai, SKar, SKei, SKer, SKpi, SKpr []byte
}

// SKEYSEED computes prf(Ni | Nr, g^ir) (RFC 7296 2.14). For the HMAC PRFs
// the whole of Ni | Nr is the key; the 64-bit truncation applies only to
// the AES-based PRFs, which NewPRF does not offer.
func SKEYSEED(prf *PRF, ni, nr, sharedSecret []byte) []byte {
	key := make([]byte, 0, len(ni)+len(nr))
	key = append(append(key, ni...), nr...)
	return prf.Sum(key, sharedSecret)
}

// DeriveIKEKeys computes the keys of a new IKE SA (RFC 7296 2.14).
// integKeyLen is 0 for AEAD ciphers; encKeyLen comes from EncrKeySize.
func DeriveIKEKeys(prf *PRF, ni, nr, sharedSecret []byte, spii, spir uint64, integKeyLen, encKeyLen int) IKEKeys {
	seed := SKEYSEED(prf, ni, nr, sharedSecret)
	defer clear(seed)
	return expandIKEKeys(prf, seed, ni, nr, spii, spir, integKeyLen, encKeyLen)
}

// DeriveRekeyedIKEKeys computes the keys of an IKE SA created by rekeying
// (RFC 7296 2.18) when old and new SA negotiated the same PRF. spii and spir
// are the new SA's SPIs.
func DeriveRekeyedIKEKeys(prf *PRF, oldSKd, sharedSecret, ni, nr []byte, spii, spir uint64, integKeyLen, encKeyLen int) IKEKeys {
	return DeriveRekeyedIKEKeysWith(prf, prf, oldSKd, sharedSecret, ni, nr, spii, spir, integKeyLen, encKeyLen)
}

// DeriveRekeyedIKEKeysWith is DeriveRekeyedIKEKeys for SAs whose PRFs
// differ: RFC 7296 2.18 computes SKEYSEED = prf(SK_d(old), g^ir | Ni | Nr)
// with the old SA's PRF, because the exchange belongs to the old SA, and
// expands it with the new SA's PRF.
func DeriveRekeyedIKEKeysWith(oldPRF, newPRF *PRF, oldSKd, sharedSecret, ni, nr []byte, spii, spir uint64, integKeyLen, encKeyLen int) IKEKeys {
	seed := oldPRF.Sum(oldSKd, sharedSecret, ni, nr)
	defer clear(seed)
	return expandIKEKeys(newPRF, seed, ni, nr, spii, spir, integKeyLen, encKeyLen)
}

func expandIKEKeys(prf *PRF, skeyseed, ni, nr []byte, spii, spir uint64, integKeyLen, encKeyLen int) IKEKeys {
	s := make([]byte, 0, len(ni)+len(nr)+16)
	s = append(append(s, ni...), nr...)
	s = binary.BigEndian.AppendUint64(s, spii)
	s = binary.BigEndian.AppendUint64(s, spir)
	// RFC 7296 2.14: SK_d, SK_pi and SK_pr are as long as the PRF's
	// preferred key, which for HMAC is its output size.
	pk := prf.Size()
	km := prf.Plus(skeyseed, s, 3*pk+2*integKeyLen+2*encKeyLen)
	next := func(n int) []byte {
		k := km[:n:n]
		km = km[n:]
		return k
	}
	var k IKEKeys
	k.SKd = next(pk)
	k.SKai = next(integKeyLen)
	k.SKar = next(integKeyLen)
	k.SKei = next(encKeyLen)
	k.SKer = next(encKeyLen)
	k.SKpi = next(pk)
	k.SKpr = next(pk)
	return k
}

// ChildKeyMat returns n bytes of KEYMAT for a Child SA (RFC 7296 2.17):
// prf+(SK_d, Ni | Nr), or prf+(SK_d, g^ir(new) | Ni | Nr) when the
// CREATE_CHILD_SA exchange included a key exchange. sharedSecret is nil
// otherwise. For ESP the initiator-to-responder SA takes its keys first.
func ChildKeyMat(prf *PRF, skd, sharedSecret, ni, nr []byte, n int) []byte {
	s := make([]byte, 0, len(sharedSecret)+len(ni)+len(nr))
	s = append(append(append(s, sharedSecret...), ni...), nr...)
	return prf.Plus(skd, s, n)
}

// PSKAuth computes the AUTH payload data for shared-key authentication
// (RFC 7296 2.15): prf(prf(Shared Secret, "Key Pad for IKEv2"), octets),
// where octets are the signed octets of the message being authenticated.
func PSKAuth(prf *PRF, psk, octets []byte) []byte {
	k := prf.Sum(psk, []byte("Key Pad for IKEv2"))
	defer clear(k)
	return prf.Sum(k, octets)
}

// DeriveAdditionalIKEKeys computes the keys after the n-th additional key
// exchange of an IKE SA (RFC 9370 2.2.2): SKEYSEED(n) = prf(SK_d(n-1),
// SK(n) | Ni | Nr), expanded as in RFC 7296 2.14 with the SA's own SPIs.
// prevSKd is SK_d(n-1), the one the previous exchange (IKE_SA_INIT for the
// first) left; the SA keeps its PRF throughout.
func DeriveAdditionalIKEKeys(prf *PRF, prevSKd, sharedSecret, ni, nr []byte, spii, spir uint64, integKeyLen, encKeyLen int) IKEKeys {
	return DeriveRekeyedIKEKeysWith(prf, prf, prevSKd, sharedSecret, ni, nr, spii, spir, integKeyLen, encKeyLen)
}

// ConcatSecrets joins the shared secrets of a CREATE_CHILD_SA's key
// exchanges in the order they ran (RFC 9370 2.2.4): g^ir (new) | SK(1) | ...
// | SK(n) takes the place of g^ir in the RFC 7296 2.17 and 2.18 formulas.
func ConcatSecrets(secrets ...[]byte) []byte {
	n := 0
	for _, s := range secrets {
		n += len(s)
	}
	out := make([]byte, 0, n)
	for _, s := range secrets {
		out = append(out, s...)
	}
	return out
}
