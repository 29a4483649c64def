package ike

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"

	"github.com/roam-vpn/roam/ike/wire"
)

// natHash is the NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port)
// (RFC 7296 2.23).
func natHash(spii, spir uint64, ap netip.AddrPort) []byte {
	h := sha1.New()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], spii)
	binary.BigEndian.PutUint64(b[8:], spir)
	h.Write(b[:])
	h.Write(ap.Addr().Unmap().AsSlice())
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], ap.Port())
	h.Write(p[:])
	return h.Sum(nil)
}

// natMatches reports whether any of the notifies of type t carries the hash
// of ap, and whether there was any such notify at all.
func natMatches(ps []wire.Payload, t wire.NotifyType, spii, spir uint64, ap netip.AddrPort) (match, present bool) {
	want := natHash(spii, spir, ap)
	for _, n := range notifies(ps, t) {
		present = true
		if hmac.Equal(n.Data, want) {
			match = true
		}
	}
	return match, present
}

func notifies(ps []wire.Payload, t wire.NotifyType) []*wire.Notify {
	var out []*wire.Notify
	for _, p := range ps {
		if n, ok := p.(*wire.Notify); ok && n.Type == t {
			out = append(out, n)
		}
	}
	return out
}

func findNotify(ps []wire.Payload, t wire.NotifyType) *wire.Notify {
	for _, p := range ps {
		if n, ok := p.(*wire.Notify); ok && n.Type == t {
			return n
		}
	}
	return nil
}

// firstError returns the first error notify (types below 16384).
func firstError(ps []wire.Payload) *wire.Notify {
	for _, p := range ps {
		if n, ok := p.(*wire.Notify); ok && n.Type < 16384 && n.Type != 0 {
			return n
		}
	}
	return nil
}

// cookieValue computes the stateless COOKIE of RFC 7296 2.6:
// version | HMAC(secret, Ni | IPi | port | SPIi)[:16].
func cookieValue(secret []byte, version byte, ni []byte, src netip.AddrPort, spii uint64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(ni)
	m.Write(src.Addr().Unmap().AsSlice())
	var b [10]byte
	binary.BigEndian.PutUint16(b[:2], src.Port())
	binary.BigEndian.PutUint64(b[2:], spii)
	m.Write(b[:])
	return append([]byte{version}, m.Sum(nil)[:16]...)
}
