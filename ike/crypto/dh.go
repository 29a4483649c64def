package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/roam-vpn/roam/ike/wire"
)

// ErrInvalidPublicKey reports a peer key exchange value that fails the
// RFC 6989 checks. The engine answers it with INVALID_SYNTAX or drops the
// exchange.
var ErrInvalidPublicKey = errors.New("ikecrypto: invalid peer key exchange value")

// KeyExchange is one side of an ephemeral key exchange. PublicKey is the KE
// payload data; SharedSecret validates the peer's KE data and returns g^ir
// in the encoding RFC 7296 2.14 feeds into SKEYSEED.
type KeyExchange interface {
	Group() uint16
	PublicKey() []byte
	SharedSecret(peer []byte) ([]byte, error)
}

// SupportedGroup reports whether NewKeyExchange accepts group. For an
// ML-KEM method, NewKeyExchange makes the initiator's side and Respond the
// responder's.
func SupportedGroup(group uint16) bool {
	_, err := PublicKeyLen(group)
	return err == nil
}

// PublicKeyLen returns the length of the KE payload data for group.
func PublicKeyLen(group uint16) (int, error) {
	switch group {
	case wire.GroupMODP2048:
		return 256, nil
	case wire.GroupMODP3072:
		return 384, nil
	case wire.GroupMODP4096:
		return 512, nil
	case wire.GroupECP256:
		return 64, nil
	case wire.GroupECP384:
		return 96, nil
	case wire.GroupECP521:
		return 132, nil
	case wire.GroupCurve25519:
		return 32, nil
	}
	if ek, _, ok := kemSizes(group); ok {
		return ek, nil // the initiator's encapsulation key
	}
	return 0, fmt.Errorf("ikecrypto: unsupported key exchange group %d", group)
}

// CheckPublicKey validates a peer's KE data for group without a key of our
// own: its length, for MODP the range of RFC 6989 2.2, for the NIST curves
// that the point is on the curve. A responder refuses bad KE payloads with
// it before it spends a key generation on the request.
func CheckPublicKey(group uint16, peer []byte) error {
	if IsKEM(group) {
		return checkEncapsulationKey(group, peer)
	}
	n, err := PublicKeyLen(group)
	if err != nil {
		return err
	}
	if len(peer) != n {
		return fmt.Errorf("%w: group %d value is %d bytes, want %d", ErrInvalidPublicKey, group, len(peer), n)
	}
	if p := modpPrime(group); p != nil {
		y := new(big.Int).SetBytes(peer)
		if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(new(big.Int).Sub(p, big.NewInt(1))) >= 0 {
			return fmt.Errorf("%w: MODP group %d value out of range", ErrInvalidPublicKey, group)
		}
		return nil
	}
	if curve, _ := ecdhCurve(group); curve != nil && group != wire.GroupCurve25519 {
		if _, err := curve.NewPublicKey(append([]byte{4}, peer...)); err != nil {
			return fmt.Errorf("%w: group %d point: %v", ErrInvalidPublicKey, group, err)
		}
	}
	return nil
}

// NewKeyExchange generates an ephemeral private key for group from random
// (crypto/rand.Reader when nil).
func NewKeyExchange(group uint16, random io.Reader) (KeyExchange, error) {
	if random == nil {
		random = rand.Reader
	}
	switch group {
	case wire.GroupMODP2048, wire.GroupMODP3072, wire.GroupMODP4096:
		return newMODP(group, random)
	case wire.GroupECP256, wire.GroupECP384, wire.GroupECP521, wire.GroupCurve25519:
		return newECDH(group, random)
	case wire.GroupMLKEM768, wire.GroupMLKEM1024:
		return newMLKEM(group, random)
	}
	return nil, fmt.Errorf("ikecrypto: unsupported key exchange group %d", group)
}

// RFC 3526 primes; all have generator 2. Each is
// 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) pi) + k); the tests check
// the size, the 64 one-bits at each end and that each is a safe prime.
const (
	modp2048Hex = "" +
		"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74" +
		"020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437" +
		"4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED" +
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05" +
		"98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB" +
		"9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B" +
		"E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718" +
		"3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF"
	modp3072Hex = "" +
		"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74" +
		"020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437" +
		"4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED" +
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05" +
		"98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB" +
		"9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B" +
		"E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718" +
		"3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33" +
		"A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7" +
		"ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864" +
		"D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2" +
		"08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"
	modp4096Hex = "" +
		"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74" +
		"020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437" +
		"4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED" +
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05" +
		"98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB" +
		"9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B" +
		"E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718" +
		"3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33" +
		"A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7" +
		"ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864" +
		"D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2" +
		"08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7" +
		"88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8" +
		"DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2" +
		"233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9" +
		"93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF"
)

// modpExponentBits is the private exponent length. RFC 3526 estimates at
// most 240 bits of strength for these groups, and RFC 7296 recommends
// exponents at least twice that long; 512 bits is cheap.
const modpExponentBits = 512

type modp struct {
	group uint16
	p     *big.Int
	x     *big.Int // private exponent
	pub   []byte
}

func modpPrime(group uint16) *big.Int {
	var h string
	switch group {
	case wire.GroupMODP2048:
		h = modp2048Hex
	case wire.GroupMODP3072:
		h = modp3072Hex
	case wire.GroupMODP4096:
		h = modp4096Hex
	default:
		return nil
	}
	p, ok := new(big.Int).SetString(h, 16)
	if !ok {
		panic("ikecrypto: malformed built-in MODP prime")
	}
	return p
}

func newMODP(group uint16, random io.Reader) (*modp, error) {
	b := make([]byte, modpExponentBits/8)
	if _, err := io.ReadFull(random, b); err != nil {
		return nil, fmt.Errorf("ikecrypto: MODP group %d private exponent: %w", group, err)
	}
	x := new(big.Int).SetBytes(b)
	clear(b)
	// A full-length exponent: RFC 6989's bounds assume it.
	x.SetBit(x, modpExponentBits-1, 1)
	return newMODPWithExponent(group, x), nil
}

func newMODPWithExponent(group uint16, x *big.Int) *modp {
	p := modpPrime(group)
	y := new(big.Int).Exp(big.NewInt(2), x, p)
	return &modp{group: group, p: p, x: x, pub: y.FillBytes(make([]byte, (p.BitLen()+7)/8))}
}

func (m *modp) Group() uint16     { return m.group }
func (m *modp) PublicKey() []byte { return bytes.Clone(m.pub) }

// SharedSecret checks the peer value as RFC 6989 2.2 asks for safe-prime
// MODP groups (1 < y < p-1; the y^q check is unnecessary because every
// other element has order q or 2q) and returns g^xy padded to the length of
// the prime.
//
// math/big is not constant time; the exponent is ephemeral and used once,
// which is the usage RFC 7296 expects for these groups.
func (m *modp) SharedSecret(peer []byte) ([]byte, error) {
	n := len(m.pub)
	if len(peer) != n {
		return nil, fmt.Errorf("%w: MODP group %d value is %d bytes, want %d", ErrInvalidPublicKey, m.group, len(peer), n)
	}
	y := new(big.Int).SetBytes(peer)
	pm1 := new(big.Int).Sub(m.p, big.NewInt(1))
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(pm1) >= 0 {
		return nil, fmt.Errorf("%w: MODP group %d value out of range", ErrInvalidPublicKey, m.group)
	}
	z := new(big.Int).Exp(y, m.x, m.p)
	if z.Cmp(big.NewInt(1)) == 0 {
		return nil, fmt.Errorf("%w: MODP group %d value of small order", ErrInvalidPublicKey, m.group)
	}
	return z.FillBytes(make([]byte, n)), nil
}

type ecdhKE struct {
	group uint16
	curve ecdh.Curve
	priv  *ecdh.PrivateKey
	pub   []byte
}

func ecdhCurve(group uint16) (ecdh.Curve, int) {
	switch group {
	case wire.GroupECP256:
		return ecdh.P256(), 32
	case wire.GroupECP384:
		return ecdh.P384(), 48
	case wire.GroupECP521:
		return ecdh.P521(), 66
	case wire.GroupCurve25519:
		return ecdh.X25519(), 32
	}
	return nil, 0
}

// newECDH draws the scalar from rand itself (rejection sampling for the NIST
// curves) because ecdh.Curve.GenerateKey ignores its reader since Go 1.26,
// and callers such as tests rely on the reader they pass.
func newECDH(group uint16, random io.Reader) (*ecdhKE, error) {
	curve, size := ecdhCurve(group)
	b := make([]byte, size)
	defer clear(b)
	for range 100 {
		if _, err := io.ReadFull(random, b); err != nil {
			return nil, fmt.Errorf("ikecrypto: group %d private key: %w", group, err)
		}
		if group == wire.GroupECP521 {
			b[0] &= 0x01 // the order of P-521 has 521 bits
		}
		priv, err := curve.NewPrivateKey(b)
		if err != nil {
			continue // zero or not below the group order: draw again
		}
		return newECDHWithKey(group, priv), nil
	}
	return nil, fmt.Errorf("ikecrypto: group %d private key: random source keeps producing invalid scalars", group)
}

func newECDHWithKey(group uint16, priv *ecdh.PrivateKey) *ecdhKE {
	curve, _ := ecdhCurve(group)
	pub := priv.PublicKey().Bytes()
	if group != wire.GroupCurve25519 {
		pub = pub[1:] // RFC 5903 7: x | y without the SEC 1 0x04 prefix
	}
	return &ecdhKE{group: group, curve: curve, priv: priv, pub: pub}
}

func (e *ecdhKE) Group() uint16     { return e.group }
func (e *ecdhKE) PublicKey() []byte { return bytes.Clone(e.pub) }

// SharedSecret validates the peer value and returns the RFC 5903 / RFC 8031
// shared secret: the x coordinate for ECP groups, the X25519 output for
// Curve25519. crypto/ecdh rejects points not on the curve and the point at
// infinity (RFC 6989 2.3) and all-zero X25519 results (RFC 8031 2.1).
func (e *ecdhKE) SharedSecret(peer []byte) ([]byte, error) {
	if len(peer) != len(e.pub) {
		return nil, fmt.Errorf("%w: group %d value is %d bytes, want %d", ErrInvalidPublicKey, e.group, len(peer), len(e.pub))
	}
	enc := peer
	if e.group != wire.GroupCurve25519 {
		enc = append([]byte{4}, peer...)
	}
	pk, err := e.curve.NewPublicKey(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: group %d: %v", ErrInvalidPublicKey, e.group, err)
	}
	z, err := e.priv.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("%w: group %d: %v", ErrInvalidPublicKey, e.group, err)
	}
	// Belt and braces for RFC 8031 2.1 in case the library ever stops checking.
	if subtle.ConstantTimeCompare(z, make([]byte, len(z))) == 1 {
		return nil, fmt.Errorf("%w: group %d: all-zero shared secret", ErrInvalidPublicKey, e.group)
	}
	return z, nil
}
