package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// IANA "Transform Type 1 - Encryption Algorithm Transform IDs" that the SK
// payload supports.
const (
	EncrAESCBC   uint16 = 12
	EncrAESGCM8  uint16 = 18 // 8-octet ICV
	EncrAESGCM12 uint16 = 19 // 12-octet ICV
	EncrAESGCM16 uint16 = 20 // 16-octet ICV
	// EncrChaCha20Poly1305 (RFC 7634) is built like AES-GCM-16: a 256-bit
	// key and 4-byte salt, an 8-byte explicit IV, a 16-octet tag and the
	// same nonce and AAD layout, so it shares GCM's code paths.
	EncrChaCha20Poly1305 uint16 = 28
	gcmSaltSize                 = 4 // RFC 5282 4: taken from the end of SK_e
	gcmIVSize                   = 8 // RFC 5282 3.1: explicit part of the nonce
	gcmFullTagSize              = 16
)

// Errors returned by SKCipher.Open. They are distinct so callers can count
// why a message was dropped; all are wrapped with context.
var (
	ErrShortSKData    = errors.New("ikecrypto: SK data too short")
	ErrAuthentication = errors.New("ikecrypto: SK payload integrity check failed")
	ErrBadPadding     = errors.New("ikecrypto: SK payload has invalid padding")
)

// IsAEAD reports whether encrID is a combined-mode cipher that needs no
// integrity transform.
func IsAEAD(encrID uint16) bool {
	_, ok := gcmICVSize(encrID)
	return ok
}

func gcmICVSize(encrID uint16) (int, bool) {
	switch encrID {
	case EncrAESGCM8:
		return 8, true
	case EncrAESGCM12:
		return 12, true
	case EncrAESGCM16, EncrChaCha20Poly1305:
		return 16, true
	}
	return 0, false
}

// SupportedEncr reports whether NewSKCipher accepts encrID with the given
// Key Length attribute (in bits).
func SupportedEncr(encrID uint16, keyBits int) bool {
	_, err := EncrKeySize(encrID, keyBits)
	return err == nil
}

// EncrKeySize returns the number of bytes of keying material (SK_ei, SK_er)
// for the cipher: the AES key, plus the 4-byte salt for GCM (RFC 5282 7.1).
func EncrKeySize(encrID uint16, keyBits int) (int, error) {
	if encrID == EncrChaCha20Poly1305 {
		// RFC 7634 2: the transform has no Key Length attribute.
		if keyBits != 0 && keyBits != 256 {
			return 0, fmt.Errorf("ikecrypto: ChaCha20-Poly1305 takes no key length, got %d", keyBits)
		}
		return chacha20poly1305.KeySize + gcmSaltSize, nil
	}
	if keyBits != 128 && keyBits != 192 && keyBits != 256 {
		return 0, fmt.Errorf("ikecrypto: unsupported key length %d for encryption transform %d", keyBits, encrID)
	}
	switch {
	case encrID == EncrAESCBC:
		return keyBits / 8, nil
	case IsAEAD(encrID):
		return keyBits/8 + gcmSaltSize, nil
	}
	return 0, fmt.Errorf("ikecrypto: unsupported encryption transform %d", encrID)
}

// SKCipher protects the contents of Encrypted (SK) and Encrypted Fragment
// (SKF) payloads for one direction of an IKE SA. Seal and Open are safe for
// concurrent use.
type SKCipher struct {
	encrID uint16

	// AES-GCM
	aead    cipher.AEAD // always with the full 16-octet tag
	block   cipher.Block
	salt    [gcmSaltSize]byte
	icvSize int
	// The explicit IV is ivBase+n for the n-th Seal. A counter cannot repeat
	// within one SKCipher; the random base keeps two SKCiphers made from the
	// same key (say, after a restart of the caller's state) apart.
	ivBase  uint64
	ivCount atomic.Uint64

	// AES-CBC + HMAC
	integ    *Integrity
	integKey []byte
}

// NewSKCipher builds the SK payload protection for one direction. For AEAD
// transforms integ must be nil and encKey is key||salt; for AES-CBC integ
// and integKey (SK_a) are required.
func NewSKCipher(encrID uint16, keyBits int, integ *Integrity, encKey, integKey []byte) (*SKCipher, error) {
	n, err := EncrKeySize(encrID, keyBits)
	if err != nil {
		return nil, err
	}
	if len(encKey) != n {
		return nil, fmt.Errorf("ikecrypto: encryption key is %d bytes, transform %d/%d needs %d", len(encKey), encrID, keyBits, n)
	}
	c := &SKCipher{encrID: encrID}
	if icv, ok := gcmICVSize(encrID); ok {
		if integ != nil {
			return nil, fmt.Errorf("ikecrypto: AEAD transform %d must not be combined with an integrity transform", encrID)
		}
		key := encKey[:n-gcmSaltSize]
		copy(c.salt[:], encKey[n-gcmSaltSize:])
		if encrID == EncrChaCha20Poly1305 {
			if c.aead, err = chacha20poly1305.New(key); err != nil {
				return nil, fmt.Errorf("ikecrypto: %w", err)
			}
		} else {
			if c.block, err = aes.NewCipher(key); err != nil {
				return nil, fmt.Errorf("ikecrypto: %w", err)
			}
			if c.aead, err = cipher.NewGCM(c.block); err != nil {
				return nil, fmt.Errorf("ikecrypto: %w", err)
			}
		}
		c.icvSize = icv
		var b [8]byte
		if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
			return nil, fmt.Errorf("ikecrypto: IV base: %w", err)
		}
		c.ivBase = binary.BigEndian.Uint64(b[:])
		return c, nil
	}
	if integ == nil {
		return nil, fmt.Errorf("ikecrypto: encryption transform %d needs an integrity transform", encrID)
	}
	if len(integKey) != integ.KeySize() {
		return nil, fmt.Errorf("ikecrypto: integrity key is %d bytes, transform %d needs %d", len(integKey), integ.ID(), integ.KeySize())
	}
	if c.block, err = aes.NewCipher(encKey); err != nil {
		return nil, fmt.Errorf("ikecrypto: %w", err)
	}
	c.integ = integ
	c.integKey = append([]byte(nil), integKey...)
	c.icvSize = integ.ICVSize()
	return c, nil
}

// ICVSize returns the length of the Integrity Checksum Data at the end of
// the SK data.
func (c *SKCipher) ICVSize() int { return c.icvSize }

// IVSize returns the length of the Initialization Vector at the start of the
// SK data.
func (c *SKCipher) IVSize() int {
	if c.aead != nil {
		return gcmIVSize
	}
	return aes.BlockSize
}

// padLen returns the padding that Seal adds in front of the Pad Length byte.
// CBC needs whole blocks. GCM needs none, but aligning to 4 octets as ESP
// does (RFC 4106 3.2) costs at most three bytes and suits receivers that
// apply ESP's rule to the SK payload.
func (c *SKCipher) padLen(plainLen int) int {
	return (c.padAlign() - (plainLen+1)%c.padAlign()) % c.padAlign()
}

func (c *SKCipher) padAlign() int {
	if c.aead != nil {
		return 4
	}
	return aes.BlockSize
}

// SealedLen returns the length of the SK data Seal produces for plainLen
// bytes of inner payloads: IV, encrypted payloads with padding and the Pad
// Length byte, and ICV. Callers need it before sealing, since the lengths
// in the IKE header and SK payload header are part of the AAD.
func (c *SKCipher) SealedLen(plainLen int) int {
	return c.IVSize() + plainLen + c.padLen(plainLen) + 1 + c.icvSize
}

// MaxPlainLen returns the largest plaintext whose sealed form fits in
// sealedLen bytes, or a negative number when none does. Fragmentation
// (RFC 7383) uses it to size fragments.
func (c *SKCipher) MaxPlainLen(sealedLen int) int {
	body := sealedLen - c.IVSize() - c.icvSize
	if body <= 0 {
		return -1
	}
	body -= body % c.padAlign()
	return body - 1
}

// Seal encrypts plaintext (the inner payload chain) and returns the SK data
// IV | ciphertext | ICV. aad is the message from the IKE header through the
// SK (or SKF) generic payload header, with lengths already covering
// SealedLen(len(plaintext)) bytes of SK data.
func (c *SKCipher) Seal(aad, plaintext []byte) ([]byte, error) {
	pad := c.padLen(len(plaintext))
	n := c.SealedLen(len(plaintext))
	// Spare capacity lets GCM append its full 16-byte tag in place before
	// it is cut to the negotiated ICV length.
	out := make([]byte, n, n+gcmFullTagSize)
	iv := out[:c.IVSize()]
	body := out[len(iv) : len(out)-c.icvSize]
	copy(body, plaintext)
	// Padding bytes are left zero; RFC 7296 3.14 lets the sender choose.
	body[len(body)-1] = byte(pad)

	if c.aead != nil {
		seq, err := c.nextIV()
		if err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint64(iv, c.ivBase+seq)
		nonce := c.nonce(iv)
		c.aead.Seal(body[:0], nonce[:], body, aad)
		return out, nil
	}

	// RFC 7296 3.14: the CBC IV must be random and unpredictable.
	if _, err := io.ReadFull(rand.Reader, iv); err != nil {
		return nil, fmt.Errorf("ikecrypto: SK IV: %w", err)
	}
	cipher.NewCBCEncrypter(c.block, iv).CryptBlocks(body, body)
	icv := c.integ.sum(c.integKey, aad, out[:len(out)-c.icvSize])
	copy(out[len(out)-c.icvSize:], icv)
	return out, nil
}

// Open authenticates and decrypts SK data and returns the inner payload
// chain with padding removed. aad is the received message up to the SK data.
// data is not modified.
func (c *SKCipher) Open(aad, data []byte) ([]byte, error) {
	ivLen := c.IVSize()
	// At least the Pad Length byte must be present.
	minLen := ivLen + 1 + c.icvSize
	if c.aead == nil {
		minLen = ivLen + aes.BlockSize + c.icvSize
	}
	if len(data) < minLen {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrShortSKData, len(data), minLen)
	}
	iv := data[:ivLen]
	ct := data[ivLen : len(data)-c.icvSize]
	icv := data[len(data)-c.icvSize:]

	var plain []byte
	if c.aead != nil {
		nonce := c.nonce(iv)
		if c.icvSize == gcmFullTagSize {
			var err error
			plain, err = c.aead.Open(nil, nonce[:], data[ivLen:], aad)
			if err != nil {
				return nil, fmt.Errorf("%w (AEAD)", ErrAuthentication)
			}
		} else {
			var err error
			if plain, err = c.openTruncated(nonce, ct, icv, aad); err != nil {
				return nil, err
			}
		}
	} else {
		if len(ct)%aes.BlockSize != 0 {
			return nil, fmt.Errorf("%w: ciphertext of %d bytes is not a whole number of blocks", ErrBadPadding, len(ct))
		}
		// Encrypt-then-MAC: check before touching the ciphertext.
		want := c.integ.sum(c.integKey, aad, data[:len(data)-c.icvSize])
		if subtle.ConstantTimeCompare(want, icv) != 1 {
			return nil, fmt.Errorf("%w (HMAC)", ErrAuthentication)
		}
		plain = make([]byte, len(ct))
		cipher.NewCBCDecrypter(c.block, iv).CryptBlocks(plain, ct)
	}

	pad := int(plain[len(plain)-1])
	if pad+1 > len(plain) {
		return nil, fmt.Errorf("%w: pad length %d with %d bytes of plaintext", ErrBadPadding, pad, len(plain))
	}
	return plain[:len(plain)-1-pad], nil
}

// openTruncated handles GCM ICVs shorter than the 12 bytes the standard
// library accepts: a truncated GCM tag is the leading part of the full tag
// (NIST SP 800-38D 5.2.1.2), so decrypt with CTR and recompute the full tag
// over the recovered plaintext. Re-sealing the same plaintext under the same
// nonce reproduces the received ciphertext and leaks nothing new.
func (c *SKCipher) openTruncated(nonce [12]byte, ct, icv, aad []byte) ([]byte, error) {
	var ctr [aes.BlockSize]byte
	copy(ctr[:], nonce[:])
	ctr[15] = 2 // J0 = nonce|1; the first data block uses inc32(J0)
	plain := make([]byte, len(ct))
	cipher.NewCTR(c.block, ctr[:]).XORKeyStream(plain, ct)
	full := c.aead.Seal(nil, nonce[:], plain, aad)
	if subtle.ConstantTimeCompare(full[len(ct):len(ct)+len(icv)], icv) != 1 {
		clear(plain)
		return nil, fmt.Errorf("%w (AES-GCM)", ErrAuthentication)
	}
	return plain, nil
}

// nextIV hands out each counter value once; unlike a bare Add it cannot
// wrap around to values already used.
func (c *SKCipher) nextIV() (uint64, error) {
	for {
		n := c.ivCount.Load()
		if n == ^uint64(0) {
			return 0, errors.New("ikecrypto: SK IV space exhausted, rekey the IKE SA")
		}
		if c.ivCount.CompareAndSwap(n, n+1) {
			return n, nil
		}
	}
}

// nonce builds the RFC 5282 4 nonce: salt | explicit IV.
func (c *SKCipher) nonce(iv []byte) [12]byte {
	var n [12]byte
	copy(n[:gcmSaltSize], c.salt[:])
	copy(n[gcmSaltSize:], iv)
	return n
}
