// Package ha is the replication channel between the two nodes of a roam
// gateway pair: the active node pushes every IKE SA's state (an opaque blob
// from ike.SA.ExportState plus the Child SAs' outbound ESP sequence numbers)
// to the standby, and both send heartbeats so the standby notices when the
// active node has gone silent.
//
// The channel is TCP, mutually authenticated and encrypted with a 32-byte
// key both nodes share (ha key_file). The Go standard library's TLS 1.3
// takes no external pre-shared key, so the channel is a small design of its
// own:
//
//	both sides send  magic "RMHA" | version 1 | 32-byte random nonce
//	keys             HKDF-SHA256(key, salt = nonce_dialer || nonce_listener,
//	                 info "roam ha v1") -> 32 bytes dialer->listener, 32 bytes listener->dialer
//	records          uint32 length | AES-256-GCM(seq as nonce, aad = length)
//
// Each direction's first record is an auth message carrying the sender's
// role; decrypting it proves the peer holds the key in this session (the key
// depends on both fresh nonces, so nothing recorded from an earlier session
// replays). The sequence number is implicit: a replayed, reordered,
// dropped or altered record fails to open and ends the connection.
package ha

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// KeySize is the length of the shared key.
const KeySize = 32

const (
	helloMagic   = "RMHA"
	helloVersion = 1
	nonceSize    = 32
	helloSize    = len(helloMagic) + 1 + nonceSize
	hkdfInfo     = "roam ha v1"
	// maxRecord bounds one record's plaintext: a state message is one IKE
	// SA with its Child SAs (a few hundred bytes); an inventory lists
	// 16 bytes per SA.
	maxRecord = 1 << 22
	// maxAuthRecord bounds the first record, the auth message: until it
	// has opened, the peer has proved nothing, so it gets no megabytes.
	maxAuthRecord = 64
	tagSize       = 16
)

// ErrBadRecord: a record failed to open (wrong key, replayed, reordered,
// truncated or altered) or was malformed.
var ErrBadRecord = errors.New("ha: bad record")

// ErrBadHello: the peer's hello is not a roam HA hello of our version.
var ErrBadHello = errors.New("ha: bad hello")

// sealer and opener are the two directions of one connection.
type sealer struct {
	aead cipher.AEAD
	seq  uint64
}

type opener struct {
	aead cipher.AEAD
	seq  uint64
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func seqNonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

// seal appends one framed record holding plain to dst.
func (s *sealer) seal(dst, plain []byte) ([]byte, error) {
	if len(plain) > maxRecord {
		return nil, fmt.Errorf("ha: record of %d bytes is over the limit", len(plain))
	}
	if s.seq == ^uint64(0) {
		return nil, errors.New("ha: sequence numbers exhausted")
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(plain)+tagSize))
	dst = append(dst, hdr[:]...)
	dst = s.aead.Seal(dst, seqNonce(s.seq), plain, hdr[:])
	s.seq++
	return dst, nil
}

// read reads and opens the next record from r.
func (o *opener) read(r io.Reader) ([]byte, error) { return o.readMax(r, maxRecord) }

// readFirst reads the connection's first record, which must be small.
func (o *opener) readFirst(r io.Reader) ([]byte, error) { return o.readMax(r, maxAuthRecord) }

func (o *opener) readMax(r io.Reader, limit uint32) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < tagSize || n > limit+tagSize {
		return nil, fmt.Errorf("%w: length %d", ErrBadRecord, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: truncated: %w", ErrBadRecord, err)
	}
	plain, err := o.aead.Open(buf[:0], seqNonce(o.seq), buf, hdr[:])
	if err != nil {
		return nil, fmt.Errorf("%w: does not open as record %d", ErrBadRecord, o.seq)
	}
	o.seq++
	return plain, nil
}

// hello is one side's opening message.
func newHello(rnd io.Reader) ([]byte, error) {
	h := make([]byte, helloSize)
	copy(h, helloMagic)
	h[len(helloMagic)] = helloVersion
	if _, err := io.ReadFull(rnd, h[len(helloMagic)+1:]); err != nil {
		return nil, fmt.Errorf("ha: nonce: %w", err)
	}
	return h, nil
}

func parseHello(h []byte) ([]byte, error) {
	if len(h) != helloSize || string(h[:len(helloMagic)]) != helloMagic {
		return nil, ErrBadHello
	}
	if v := h[len(helloMagic)]; v != helloVersion {
		return nil, fmt.Errorf("%w: version %d, we speak %d", ErrBadHello, v, helloVersion)
	}
	return h[len(helloMagic)+1:], nil
}

// sessionKeys derives one connection's two direction keys.
func sessionKeys(key, nonceDialer, nonceListener []byte, dialer bool) (*sealer, *opener, error) {
	if len(key) != KeySize {
		return nil, nil, fmt.Errorf("ha: key is %d bytes, want %d", len(key), KeySize)
	}
	salt := append(append([]byte{}, nonceDialer...), nonceListener...)
	km, err := hkdf.Key(sha256.New, key, salt, hkdfInfo, 2*KeySize)
	if err != nil {
		return nil, nil, fmt.Errorf("ha: hkdf: %w", err)
	}
	d2l, l2d := km[:KeySize], km[KeySize:]
	out, in := d2l, l2d
	if !dialer {
		out, in = l2d, d2l
	}
	sa, err := newAEAD(out)
	if err != nil {
		return nil, nil, err
	}
	oa, err := newAEAD(in)
	if err != nil {
		return nil, nil, err
	}
	return &sealer{aead: sa}, &opener{aead: oa}, nil
}

// handshake runs both hellos over rw and returns the connection's record
// layer. It authenticates nothing yet: the caller's first record exchange
// (an auth message each way) does.
func handshake(rw io.ReadWriter, key []byte, dialer bool) (*sealer, *opener, error) {
	mine, err := newHello(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	// Both hellos travel at once; a writer goroutine keeps a peer that
	// does the same from deadlocking on small socket buffers.
	werr := make(chan error, 1)
	go func() {
		_, err := rw.Write(mine)
		werr <- err
	}()
	theirs := make([]byte, helloSize)
	_, rerr := io.ReadFull(rw, theirs)
	if err := <-werr; err != nil {
		return nil, nil, fmt.Errorf("ha: send hello: %w", err)
	}
	if rerr != nil {
		return nil, nil, fmt.Errorf("ha: read hello: %w", rerr)
	}
	peerNonce, err := parseHello(theirs)
	if err != nil {
		return nil, nil, err
	}
	myNonce := mine[len(helloMagic)+1:]
	if string(peerNonce) == string(myNonce) {
		return nil, nil, fmt.Errorf("%w: our own nonce came back", ErrBadHello)
	}
	nd, nl := myNonce, peerNonce
	if !dialer {
		nd, nl = peerNonce, myNonce
	}
	return sessionKeys(key, nd, nl, dialer)
}
