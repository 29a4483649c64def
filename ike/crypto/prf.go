package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"
	"hash"
)

// IANA "Transform Type 2 - Pseudorandom Function Transform IDs".
const (
	PRFHMACSHA2_256 uint16 = 5
	PRFHMACSHA2_384 uint16 = 6
	PRFHMACSHA2_512 uint16 = 7
)

// IANA "Transform Type 3 - Integrity Algorithm Transform IDs".
const (
	IntegHMACSHA2_256_128 uint16 = 12
	IntegHMACSHA2_384_192 uint16 = 13
	IntegHMACSHA2_512_256 uint16 = 14
)

func hmacHash(id uint16) (func() hash.Hash, int, bool) {
	switch id {
	case PRFHMACSHA2_256:
		return sha256.New, sha256.Size, true
	case PRFHMACSHA2_384:
		return sha512.New384, sha512.Size384, true
	case PRFHMACSHA2_512:
		return sha512.New, sha512.Size, true
	}
	return nil, 0, false
}

// PRF is a negotiated IKEv2 pseudorandom function. It is stateless and safe
// for concurrent use.
type PRF struct {
	id   uint16
	hash func() hash.Hash
	size int
}

// NewPRF returns the PRF with IANA transform ID id.
func NewPRF(id uint16) (*PRF, error) {
	h, size, ok := hmacHash(id)
	if !ok {
		return nil, fmt.Errorf("ikecrypto: unsupported PRF transform %d", id)
	}
	return &PRF{id: id, hash: h, size: size}, nil
}

// SupportedPRF reports whether NewPRF accepts id.
func SupportedPRF(id uint16) bool {
	_, _, ok := hmacHash(id)
	return ok
}

// ID returns the IANA transform ID.
func (p *PRF) ID() uint16 { return p.id }

// Size returns the output length in bytes, which for the HMAC PRFs is also
// the preferred key length (RFC 7296 2.14: the length of SK_d, SK_pi, SK_pr).
func (p *PRF) Size() int { return p.size }

// Sum returns prf(key, data[0] | data[1] | ...). HMAC accepts keys of any
// length, so RFC 7296 2.14's special key rules do not apply.
func (p *PRF) Sum(key []byte, data ...[]byte) []byte {
	m := hmac.New(p.hash, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// MaxPlus is the most output prf+ can produce: its counter is one octet and
// starts at 1 (RFC 7296 2.13).
func (p *PRF) MaxPlus() int { return 255 * p.size }

// Plus returns the first n bytes of prf+(key, seed) (RFC 7296 2.13):
// T1 = prf(K, S | 0x01), Ti = prf(K, Ti-1 | S | i).
//
// n is chosen by the caller from negotiated algorithms, never by a peer; a
// request beyond MaxPlus is a programming error and panics.
func (p *PRF) Plus(key, seed []byte, n int) []byte {
	if n < 0 || n > p.MaxPlus() {
		panic(fmt.Sprintf("ikecrypto: prf+ output of %d bytes exceeds the limit of %d", n, p.MaxPlus()))
	}
	out := make([]byte, 0, n+p.size)
	m := hmac.New(p.hash, key)
	var t []byte
	for i := 1; len(out) < n; i++ {
		m.Reset()
		m.Write(t)
		m.Write(seed)
		m.Write([]byte{byte(i)})
		t = m.Sum(t[:0])
		out = append(out, t...)
	}
	return out[:n]
}

// Integrity is a negotiated IKEv2 integrity algorithm (RFC 4868
// HMAC-SHA2 with the output truncated to half). Stateless, safe for
// concurrent use.
type Integrity struct {
	id      uint16
	hash    func() hash.Hash
	keySize int
	icvSize int
}

func integHash(id uint16) (func() hash.Hash, int, bool) {
	switch id {
	case IntegHMACSHA2_256_128:
		return sha256.New, sha256.Size, true
	case IntegHMACSHA2_384_192:
		return sha512.New384, sha512.Size384, true
	case IntegHMACSHA2_512_256:
		return sha512.New, sha512.Size, true
	}
	return nil, 0, false
}

// NewIntegrity returns the integrity algorithm with IANA transform ID id.
func NewIntegrity(id uint16) (*Integrity, error) {
	h, size, ok := integHash(id)
	if !ok {
		return nil, fmt.Errorf("ikecrypto: unsupported integrity transform %d", id)
	}
	// RFC 4868 2.1.1: the key is as long as the hash output; 2.1.2: the
	// ICV is the leftmost half.
	return &Integrity{id: id, hash: h, keySize: size, icvSize: size / 2}, nil
}

// SupportedIntegrity reports whether NewIntegrity accepts id.
func SupportedIntegrity(id uint16) bool {
	_, _, ok := integHash(id)
	return ok
}

// ID returns the IANA transform ID.
func (i *Integrity) ID() uint16 { return i.id }

// KeySize returns the key length in bytes (SK_ai, SK_ar).
func (i *Integrity) KeySize() int { return i.keySize }

// ICVSize returns the length of the truncated checksum in bytes.
func (i *Integrity) ICVSize() int { return i.icvSize }

// Sum returns the truncated ICV of data under key.
func (i *Integrity) Sum(key, data []byte) []byte {
	m := hmac.New(i.hash, key)
	m.Write(data)
	return m.Sum(nil)[:i.icvSize]
}

func (i *Integrity) sum(key []byte, data ...[]byte) []byte {
	m := hmac.New(i.hash, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)[:i.icvSize]
}

// Verify reports in constant time whether icv is the ICV of data under key.
func (i *Integrity) Verify(key, data, icv []byte) bool {
	return subtle.ConstantTimeCompare(i.Sum(key, data), icv) == 1
}
