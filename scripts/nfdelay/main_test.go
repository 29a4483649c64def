package main

import (
	"net/netip"
	"testing"
)

func TestPeerOf(t *testing.T) {
	ip := make([]byte, 28)
	ip[0] = 0x45
	copy(ip[12:], []byte{203, 0, 113, 26}) // source
	copy(ip[16:], []byte{198, 51, 100, 2}) // destination
	for _, tc := range []struct {
		name string
		ip   []byte
		in   bool
		want string
	}{
		{"in: source", ip, true, "203.0.113.26"},
		{"out: destination", ip, false, "198.51.100.2"},
		{"short", ip[:19], true, ""},
		{"IPv6", append([]byte{0x60}, ip[1:]...), true, ""},
	} {
		got, ok := peerOf(tc.ip, tc.in)
		if tc.want == "" && ok || tc.want != "" && got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: %v, %v", tc.name, got, ok)
		}
	}
}
