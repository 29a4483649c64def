package ike

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// natState is what NAT detection (RFC 7296 2.23) found: a NAT in front of
// us (local) or of the peer (remote), whether both sides sent the
// detection payloads, and whether encapsulation is forced without a NAT.
type natState struct {
	local, remote bool
	supported     bool
	forced        bool
}

// natHash is the NAT_DETECTION_*_IP data (RFC 7296 2.23).
func natHash(spii, spir uint64, ap netip.AddrPort) []byte {
	return ikecrypto.NATDetectionHash(spii, spir, ap)
}

// natMatches reports whether any of the notifies of type t carries the hash
// of ap, and whether there was any such notify at all.
func natMatches(ps []wire.Payload, t wire.NotifyType, spii, spir uint64, ap netip.AddrPort) (match, present bool) {
	want := natHash(spii, spir, ap)
	for _, p := range ps {
		if n, ok := p.(*wire.Notify); ok && n.Type == t {
			present = true
			if hmac.Equal(n.Data, want) {
				match = true
			}
		}
	}
	return match, present
}

// cookieValue computes the stateless COOKIE of RFC 7296 2.6:
// version | HMAC(secret, version | len(Ni) | Ni | len(IPi) | IPi | port | SPIi)[:16].
// The lengths frame the fields: without them the cookie of nonce N'|X at
// IPv4 address A was also that of nonce N' at IPv6 address X|A.
func cookieValue(secret []byte, version byte, ni []byte, src netip.AddrPort, spii uint64) []byte {
	m := hmac.New(sha256.New, secret)
	addr := src.Addr().Unmap().AsSlice()
	var head [3]byte
	head[0] = version
	binary.BigEndian.PutUint16(head[1:], uint16(len(ni)))
	m.Write(head[:])
	m.Write(ni)
	m.Write([]byte{byte(len(addr))})
	m.Write(addr)
	var b [10]byte
	binary.BigEndian.PutUint16(b[:2], src.Port())
	binary.BigEndian.PutUint64(b[2:], spii)
	m.Write(b[:])
	return append([]byte{version}, m.Sum(nil)[:16]...)
}

// cookieRotate is how long one cookie secret is used. A cookie stays good
// for the next one too, so a client answering right at a rotation is not
// asked again.
const cookieRotate = 5 * time.Minute

// cookieSecrets is the responder's cookie secret, changed every
// cookieRotate under a new version byte (RFC 7296 2.6).
type cookieSecrets struct {
	mu        sync.Mutex
	rand      io.Reader
	version   byte
	cur, prev []byte
	since     time.Time
}

func (c *cookieSecrets) init(rnd io.Reader) error {
	if rnd == nil {
		rnd = rand.Reader
	}
	c.rand = rnd
	c.cur = make([]byte, 32)
	if _, err := io.ReadFull(rnd, c.cur); err != nil {
		return fmt.Errorf("ike: cookie secret: %w", err)
	}
	return nil
}

// rotate changes the secret once cookieRotate has passed; c.mu is held.
func (c *cookieSecrets) rotate(now time.Time) {
	if c.since.IsZero() {
		c.since = now
		return
	}
	if now.Sub(c.since) < cookieRotate {
		return
	}
	next := make([]byte, 32)
	if _, err := io.ReadFull(c.rand, next); err != nil {
		return // keep the old one rather than none
	}
	c.prev, c.cur = c.cur, next
	c.version++
	c.since = now
}

// issue returns the cookie to demand from an initiator.
func (c *cookieSecrets) issue(now time.Time, ni []byte, src netip.AddrPort, spii uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rotate(now)
	return cookieValue(c.cur, c.version, ni, src, spii)
}

// valid reports whether got is a cookie of the current or the previous
// secret for these fields.
func (c *cookieSecrets) valid(now time.Time, got, ni []byte, src netip.AddrPort, spii uint64) bool {
	if len(got) != 17 {
		return false
	}
	c.mu.Lock()
	c.rotate(now)
	var secret []byte
	switch got[0] {
	case c.version:
		secret = c.cur
	case c.version - 1:
		secret = c.prev
	}
	c.mu.Unlock()
	return secret != nil && hmac.Equal(got, cookieValue(secret, got[0], ni, src, spii))
}
