package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"testing"
)

func TestSignedOctets(t *testing.T) {
	prf, _ := NewPRF(PRFHMACSHA2_256)
	msg := []byte("IKE_SA_INIT request bytes")
	nonce := bytes.Repeat([]byte{0x5a}, 32)
	skpi := bytes.Repeat([]byte{0x01}, 32)
	id := []byte{2, 0, 0, 0, 'c', 'l', 'i', 'e', 'n', 't'} // ID_FQDN "client"
	m := hmac.New(sha256.New, skpi)
	m.Write(id)
	want := append(append(bytes.Clone(msg), nonce...), m.Sum(nil)...)
	if got := SignedOctets(prf, msg, nonce, skpi, id); !bytes.Equal(got, want) {
		t.Errorf("SignedOctets = %x, want %x", got, want)
	}
}

func TestNATDetectionHash(t *testing.T) {
	const spii, spir = 0x0011223344556677, 0x8899aabbccddeeff
	for _, v := range []struct {
		addr string
		raw  string // IP | port as hashed
	}{
		{"192.0.2.1:500", "c0000201" + "01f4"},
		{"[::ffff:192.0.2.1]:4500", "c0000201" + "1194"},
		{"[2001:db8::1]:4500", "20010db8000000000000000000000001" + "1194"},
	} {
		raw, _ := hex.DecodeString("00112233445566778899aabbccddeeff" + v.raw)
		want := sha1.Sum(raw)
		got := NATDetectionHash(spii, spir, netip.MustParseAddrPort(v.addr))
		if !bytes.Equal(got, want[:]) {
			t.Errorf("%s: %x, want %x", v.addr, got, want)
		}
	}
}
