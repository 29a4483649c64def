package ike

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// TestCookieFraming: a COOKIE binds its fields one by one. Without framing,
// the cookie for nonce N'|X at IPv4 address A equalled the one for nonce N'
// at IPv6 address X|A.
func TestCookieFraming(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	x := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0}
	a4 := netip.MustParseAddr("192.0.2.1")
	a6 := netip.AddrFrom16([16]byte(append(append([]byte{}, x...), a4.AsSlice()...)))
	n := bytes.Repeat([]byte{1}, 16)
	tests := []struct {
		name   string
		ni1    []byte
		src1   netip.AddrPort
		ni2    []byte
		src2   netip.AddrPort
		spi1   uint64
		spi2   uint64
		v1, v2 byte
		same   bool
	}{
		{"same", n, netip.AddrPortFrom(a4, 500), n, netip.AddrPortFrom(a4, 500), 1, 1, 0, 0, true},
		{"v4-into-v6", append(append([]byte{}, n...), x...), netip.AddrPortFrom(a4, 500), n, netip.AddrPortFrom(a6, 500), 1, 1, 0, 0, false},
		{"port", n, netip.AddrPortFrom(a4, 500), n, netip.AddrPortFrom(a4, 4500), 1, 1, 0, 0, false},
		{"spi", n, netip.AddrPortFrom(a4, 500), n, netip.AddrPortFrom(a4, 500), 1, 2, 0, 0, false},
		{"version", n, netip.AddrPortFrom(a4, 500), n, netip.AddrPortFrom(a4, 500), 1, 1, 0, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c1 := cookieValue(secret, tc.v1, tc.ni1, tc.src1, tc.spi1)
			c2 := cookieValue(secret, tc.v2, tc.ni2, tc.src2, tc.spi2)
			if bytes.Equal(c1, c2) != tc.same {
				t.Fatalf("cookies equal = %v, want %v", bytes.Equal(c1, c2), tc.same)
			}
		})
	}
}

// TestCookieRotation: the secret changes every cookieRotate under a new
// version byte; a cookie of the previous secret is still good, an older one
// is not.
func TestCookieRotation(t *testing.T) {
	clock := newFakeClock()
	var c cookieSecrets
	if err := c.init(nil); err != nil {
		t.Fatal(err)
	}
	ni, src := bytes.Repeat([]byte{3}, 32), netip.MustParseAddrPort("192.0.2.1:500")
	issue := func() []byte { return c.issue(clock.Now(), ni, src, 9) }
	first := issue()
	if !c.valid(clock.Now(), first, ni, src, 9) {
		t.Fatal("fresh cookie refused")
	}
	if c.valid(clock.Now(), first, ni, src, 10) {
		t.Fatal("cookie good for another SPI")
	}
	clock.advance(cookieRotate + time.Second)
	second := issue()
	if second[0] == first[0] {
		t.Fatalf("version byte %d not changed by the rotation", second[0])
	}
	if !c.valid(clock.Now(), first, ni, src, 9) || !c.valid(clock.Now(), second, ni, src, 9) {
		t.Fatal("previous or current cookie refused")
	}
	clock.advance(cookieRotate + time.Second)
	issue()
	if c.valid(clock.Now(), first, ni, src, 9) {
		t.Fatal("cookie two secrets old accepted")
	}
	if c.valid(clock.Now(), first[:5], ni, src, 9) || c.valid(clock.Now(), nil, ni, src, 9) {
		t.Fatal("truncated cookie accepted")
	}
}
