// Package esp is roam's userspace ESP (RFC 4303) with AES-GCM (RFC 4106)
// and ChaCha20-Poly1305 (RFC 7634),
// UDP-encapsulated (RFC 3948), and the batched TUN <-> UDP dataplane that
// carries it.
package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// Errors the dataplane counts; every packet the peer (or anyone) sends us
// that is not good ESP ends in one of them.
var (
	ErrMalformed  = errors.New("esp: malformed packet")
	ErrUnknownSPI = errors.New("esp: unknown SPI")
	ErrReplayed   = errors.New("esp: replayed or too old")
	// ErrTooOld is the ErrReplayed of a packet left of the replay window
	// (rather than one seen already): it says the packet arrived more than
	// ReplayWindow packets late, such as from a socket whose queue held
	// seconds of traffic while newer packets of the SA arrived elsewhere.
	ErrTooOld       = fmt.Errorf("%w: left of the replay window", ErrReplayed)
	ErrBadICV       = errors.New("esp: integrity check failed")
	ErrSeqExhausted = errors.New("esp: sequence numbers exhausted, the SA must be rekeyed")
)

const (
	headerLen = 8  // SPI + sequence number
	ivLen     = 8  // RFC 4106 explicit IV
	icvLen    = 16 // AES-GCM-16
	saltLen   = 4

	// Overhead is what ESP adds to an inner packet, not counting up to 3
	// padding bytes.
	Overhead = headerLen + ivLen + 2 + icvLen

	protoIPv4 = 4
	protoIPv6 = 41
)

// Cipher is an ESP combined-mode transform. Both have an 8-byte explicit
// IV, a 4-byte salt, a 16-octet ICV and the same nonce and AAD layout
// (RFC 4106, RFC 7634), so only the AEAD behind them differs.
type Cipher uint8

const (
	AESGCM16         Cipher = iota // RFC 4106, key material 20, 28 or 36 bytes
	ChaCha20Poly1305               // RFC 7634, key material 36 bytes
)

func (c Cipher) String() string {
	switch c {
	case AESGCM16:
		return "AES-GCM-16"
	case ChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	}
	return fmt.Sprintf("cipher(%d)", uint8(c))
}

func newAEAD(c Cipher, keyMat []byte) (cipher.AEAD, [saltLen]byte, error) {
	switch c {
	case AESGCM16:
		return newGCM(keyMat)
	case ChaCha20Poly1305:
		var salt [saltLen]byte
		if len(keyMat) != chacha20poly1305.KeySize+saltLen {
			return nil, salt, fmt.Errorf("esp: ChaCha20-Poly1305 key material of %d bytes (want 36)", len(keyMat))
		}
		aead, err := chacha20poly1305.New(keyMat[:chacha20poly1305.KeySize])
		if err != nil {
			return nil, salt, err
		}
		copy(salt[:], keyMat[chacha20poly1305.KeySize:])
		return aead, salt, nil
	}
	return nil, [saltLen]byte{}, fmt.Errorf("esp: unknown cipher %v", c)
}

func newGCM(keyMat []byte) (cipher.AEAD, [saltLen]byte, error) {
	var salt [saltLen]byte
	if n := len(keyMat) - saltLen; n != 16 && n != 24 && n != 32 {
		return nil, salt, fmt.Errorf("esp: AES-GCM key material of %d bytes (want 20, 28 or 36)", len(keyMat))
	}
	block, err := aes.NewCipher(keyMat[:len(keyMat)-saltLen])
	if err != nil {
		return nil, salt, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, salt, err
	}
	copy(salt[:], keyMat[len(keyMat)-saltLen:])
	return aead, salt, nil
}

// OutboundSA seals packets for one SA. Seal is safe for concurrent use.
type OutboundSA struct {
	spi  uint32
	esn  bool
	aead cipher.AEAD
	salt [saltLen]byte
	seq  atomic.Uint64 // last sequence number used
	soft *softLimit    // set before the SA is installed; nil: none
}

// NewOutboundSA makes an AES-GCM-16 outbound SA from key material = key ||
// 4-byte salt.
func NewOutboundSA(spi uint32, keyMat []byte, esn bool) (*OutboundSA, error) {
	return NewOutboundSAWith(AESGCM16, spi, keyMat, esn)
}

// NewOutboundSAWith makes an outbound SA for cipher c.
func NewOutboundSAWith(c Cipher, spi uint32, keyMat []byte, esn bool) (*OutboundSA, error) {
	aead, salt, err := newAEAD(c, keyMat)
	if err != nil {
		return nil, err
	}
	return &OutboundSA{spi: spi, esn: esn, aead: aead, salt: salt}, nil
}

// SPI is the peer's SPI for this SA.
func (sa *OutboundSA) SPI() uint32 { return sa.spi }

// Seq is the last sequence number sent.
func (sa *OutboundSA) Seq() uint64 { return sa.seq.Load() }

// cryptoScratch holds a nonce and AAD. The AEAD is an interface, so what
// is passed to it escapes: a loop keeps one scratch and reuses it instead
// of a new heap nonce per packet.
type cryptoScratch struct {
	nonce [12]byte
	aad   [12]byte
}

// nextSeq reserves the next sequence number.
func (sa *OutboundSA) nextSeq() (uint64, error) {
	seq := sa.seq.Add(1)
	limit := uint64(1<<32 - 1)
	if sa.esn {
		limit = ^uint64(0)
	}
	if seq > limit || seq == 0 {
		return 0, ErrSeqExhausted
	}
	sa.checkSoft(seq)
	return seq, nil
}

// nextHeader is the ESP next header for an inner packet.
func nextHeader(inner []byte) (byte, error) {
	if len(inner) == 0 {
		return 0, ErrMalformed
	}
	switch inner[0] >> 4 {
	case 4:
		return protoIPv4, nil
	case 6:
		return protoIPv6, nil
	}
	return 0, fmt.Errorf("%w: inner packet is not IP", ErrMalformed)
}

// sealedLen is the ESP packet length for an inner packet of n bytes.
func sealedLen(n int) int {
	return headerLen + ivLen + n + (4-(n+2)%4)%4 + 2 + icvLen
}

// Seal appends the ESP packet carrying inner (an IPv4 or IPv6 packet) to dst.
// With cap(dst) large enough it does not allocate beyond the AEAD's nonce.
func (sa *OutboundSA) Seal(dst, inner []byte) ([]byte, error) {
	next, err := nextHeader(inner)
	if err != nil {
		return dst, err
	}
	seq, err := sa.nextSeq()
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = grow(dst, sealedLen(len(inner)))
	pkt := dst[start:]
	copy(pkt[headerLen+ivLen:], inner)
	var sc cryptoScratch
	sa.seal(&sc, pkt, len(inner), next, seq)
	return dst, nil
}

// sealInPlace makes buf[off:off+n], an inner packet, into an ESP packet
// without copying it: the header and IV go into the headroom in front
// (off >= headerLen+ivLen) and the trailer and ICV after it, within
// cap(buf). It returns the ESP packet, a part of buf.
func (sa *OutboundSA) sealInPlace(sc *cryptoScratch, buf []byte, off, n int, seq uint64) ([]byte, error) {
	next, err := nextHeader(buf[off : off+n])
	if err != nil {
		return nil, err
	}
	start := off - headerLen - ivLen
	end := start + sealedLen(n)
	if start < 0 || end > cap(buf) {
		return nil, fmt.Errorf("%w: no room to seal in place", ErrMalformed)
	}
	pkt := buf[start:end]
	sa.seal(sc, pkt, n, next, seq)
	return pkt, nil
}

// seal encrypts pkt in place: pkt has room for the ESP packet and holds the
// inner packet of n bytes after the header and IV.
func (sa *OutboundSA) seal(sc *cryptoScratch, pkt []byte, n int, next byte, seq uint64) {
	plainLen := len(pkt) - headerLen - ivLen - icvLen
	padLen := plainLen - 2 - n
	binary.BigEndian.PutUint32(pkt[0:], sa.spi)
	binary.BigEndian.PutUint32(pkt[4:], uint32(seq))
	binary.BigEndian.PutUint64(pkt[8:], seq) // the IV: unique per key by construction
	plain := pkt[headerLen+ivLen : headerLen+ivLen+plainLen]
	for i := 0; i < padLen; i++ {
		plain[n+i] = byte(i + 1) // RFC 4303 2.4 default padding
	}
	plain[plainLen-2] = byte(padLen)
	plain[plainLen-1] = next
	copy(sc.nonce[:4], sa.salt[:])
	copy(sc.nonce[4:], pkt[8:16])
	aad := aadFor(sc.aad[:], sa.spi, seq, sa.esn)
	sa.aead.Seal(plain[:0], sc.nonce[:], plain, aad)
}

func aadFor(buf []byte, spi uint32, seq uint64, esn bool) []byte {
	binary.BigEndian.PutUint32(buf[0:], spi)
	if esn {
		binary.BigEndian.PutUint64(buf[4:], seq)
		return buf[:12]
	}
	binary.BigEndian.PutUint32(buf[4:], uint32(seq))
	return buf[:8]
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, (len(b)+n)*2)
	copy(nb, b)
	return nb
}

// InboundSA opens packets for one SA. Open is safe for concurrent use.
type InboundSA struct {
	spi  uint32
	esn  bool
	aead cipher.AEAD
	salt [saltLen]byte

	mu     sync.Mutex
	window replayWindow
}

// NewInboundSA makes an AES-GCM-16 inbound SA from key material = key ||
// 4-byte salt.
func NewInboundSA(spi uint32, keyMat []byte, esn bool) (*InboundSA, error) {
	return NewInboundSAWith(AESGCM16, spi, keyMat, esn)
}

// NewInboundSAWith makes an inbound SA for cipher c.
func NewInboundSAWith(c Cipher, spi uint32, keyMat []byte, esn bool) (*InboundSA, error) {
	aead, salt, err := newAEAD(c, keyMat)
	if err != nil {
		return nil, err
	}
	return &InboundSA{spi: spi, esn: esn, aead: aead, salt: salt}, nil
}

// SPI is our SPI for this SA.
func (sa *InboundSA) SPI() uint32 { return sa.spi }

// Open checks and decrypts an ESP packet and appends the inner packet to
// dst. The replay window is consulted before decryption (cheap rejection of
// floods) and updated only after the ICV verified, so forged packets cannot
// move it.
func (sa *InboundSA) Open(dst, pkt []byte) ([]byte, error) {
	var sc cryptoScratch
	return sa.open(&sc, dst, pkt)
}

// open is Open with the caller's scratch.
func (sa *InboundSA) open(sc *cryptoScratch, dst, pkt []byte) ([]byte, error) {
	if len(pkt) < headerLen+ivLen+4+icvLen || (len(pkt)-headerLen-ivLen-icvLen)%4 != 0 {
		return dst, ErrMalformed
	}
	if binary.BigEndian.Uint32(pkt) != sa.spi {
		return dst, ErrUnknownSPI
	}
	seqLow := binary.BigEndian.Uint32(pkt[4:])
	sa.mu.Lock()
	seq, ok := sa.window.check(seqLow, sa.esn)
	old := !ok && sa.window.left(seq)
	sa.mu.Unlock()
	if old {
		return dst, ErrTooOld
	}
	if !ok {
		return dst, ErrReplayed
	}
	copy(sc.nonce[:4], sa.salt[:])
	copy(sc.nonce[4:], pkt[8:16])
	aad := aadFor(sc.aad[:], sa.spi, seq, sa.esn)
	start := len(dst)
	dst = grow(dst, len(pkt)-headerLen-ivLen-icvLen)
	plain, err := sa.aead.Open(dst[start:start], sc.nonce[:], pkt[headerLen+ivLen:], aad)
	if err != nil {
		return dst[:start], ErrBadICV
	}
	sa.mu.Lock()
	fresh := sa.window.update(seq)
	old = !fresh && sa.window.left(seq)
	sa.mu.Unlock()
	if old {
		// The window moved past it during decryption: newer packets were
		// opened meanwhile (another part of the batch, another socket).
		return dst[:start], ErrTooOld
	}
	if !fresh {
		return dst[:start], ErrReplayed // a copy raced us through decryption
	}
	padLen := int(plain[len(plain)-2])
	next := plain[len(plain)-1]
	innerLen := len(plain) - 2 - padLen
	if innerLen <= 0 || (next != protoIPv4 && next != protoIPv6) {
		// next header 59 is a dummy packet (RFC 4303 2.6): valid, nothing to deliver.
		if next == 59 {
			return dst[:start], nil
		}
		return dst[:start], ErrMalformed
	}
	return dst[:start+innerLen], nil
}
