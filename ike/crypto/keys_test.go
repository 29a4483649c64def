package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"hash"
	"testing"
)

func refHMAC(h func() hash.Hash, key []byte, data ...[]byte) []byte {
	m := hmac.New(h, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

func spis(i, r uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, i)
	return binary.BigEndian.AppendUint64(b, r)
}

func TestDeriveIKEKeys(t *testing.T) {
	ni := bytes.Repeat([]byte{0x11}, 32)
	nr := bytes.Repeat([]byte{0x22}, 48)
	gir := bytes.Repeat([]byte{0x33}, 256)
	const spii, spir = 0x0102030405060708, 0x1112131415161718
	for _, v := range []struct {
		id               uint16
		h                func() hash.Hash
		integLen, encLen int
	}{
		{PRFHMACSHA2_256, sha256.New, 0, 20},    // aes128gcm16-prfsha256
		{PRFHMACSHA2_384, sha512.New384, 0, 36}, // aes256gcm16-prfsha384
		{PRFHMACSHA2_256, sha256.New, 32, 32},   // aes256-sha256
		{PRFHMACSHA2_512, sha512.New, 64, 16},   // aes128-sha512
	} {
		prf, _ := NewPRF(v.id)
		k := DeriveIKEKeys(prf, ni, nr, gir, spii, spir, v.integLen, v.encLen)

		// RFC 7296 2.14 by hand.
		seed := refHMAC(v.h, append(bytes.Clone(ni), nr...), gir)
		if got := SKEYSEED(prf, ni, nr, gir); !bytes.Equal(got, seed) {
			t.Errorf("PRF %d: SKEYSEED mismatch", v.id)
		}
		s := append(append(bytes.Clone(ni), nr...), spis(spii, spir)...)
		pk := prf.Size()
		km := refPRFPlus(v.h, seed, s, 3*pk+2*v.integLen+2*v.encLen)
		want := IKEKeys{
			SKd:  km[:pk],
			SKai: km[pk : pk+v.integLen],
			SKar: km[pk+v.integLen : pk+2*v.integLen],
			SKei: km[pk+2*v.integLen : pk+2*v.integLen+v.encLen],
			SKer: km[pk+2*v.integLen+v.encLen : pk+2*v.integLen+2*v.encLen],
			SKpi: km[pk+2*v.integLen+2*v.encLen : 2*pk+2*v.integLen+2*v.encLen],
			SKpr: km[2*pk+2*v.integLen+2*v.encLen:],
		}
		checkKeys(t, k, want)
	}
}

func checkKeys(t *testing.T, got, want IKEKeys) {
	t.Helper()
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"SK_d", got.SKd, want.SKd}, {"SK_ai", got.SKai, want.SKai}, {"SK_ar", got.SKar, want.SKar},
		{"SK_ei", got.SKei, want.SKei}, {"SK_er", got.SKer, want.SKer},
		{"SK_pi", got.SKpi, want.SKpi}, {"SK_pr", got.SKpr, want.SKpr},
	} {
		if !bytes.Equal(c.got, c.want) || len(c.got) != len(c.want) {
			t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
		}
	}
	// Appending to one key must not overwrite the next.
	if len(got.SKai) > 0 && cap(got.SKai) != len(got.SKai) {
		t.Error("keys share spare capacity")
	}
}

func TestDeriveRekeyedIKEKeys(t *testing.T) {
	oldSKd := bytes.Repeat([]byte{0x44}, 48)
	ni := bytes.Repeat([]byte{0x55}, 32)
	nr := bytes.Repeat([]byte{0x66}, 32)
	gir := bytes.Repeat([]byte{0x77}, 32)
	const spii, spir = 0xa1a2a3a4a5a6a7a8, 0xb1b2b3b4b5b6b7b8
	oldPRF, _ := NewPRF(PRFHMACSHA2_384)
	newPRF, _ := NewPRF(PRFHMACSHA2_256)

	// RFC 7296 2.18: SKEYSEED with the old PRF, prf+ with the new one.
	seed := refHMAC(sha512.New384, oldSKd, gir, ni, nr)
	s := append(append(bytes.Clone(ni), nr...), spis(spii, spir)...)
	km := refPRFPlus(sha256.New, seed, s, 3*32+2*20)
	want := IKEKeys{SKd: km[:32], SKai: km[32:32], SKar: km[32:32], SKei: km[32:52], SKer: km[52:72], SKpi: km[72:104], SKpr: km[104:136]}
	checkKeys(t, DeriveRekeyedIKEKeysWith(oldPRF, newPRF, oldSKd, gir, ni, nr, spii, spir, 0, 20), want)

	// Same PRF on both sides.
	seed = refHMAC(sha256.New, oldSKd, gir, ni, nr)
	km = refPRFPlus(sha256.New, seed, s, 3*32+2*32+2*16)
	want = IKEKeys{SKd: km[:32], SKai: km[32:64], SKar: km[64:96], SKei: km[96:112], SKer: km[112:128], SKpi: km[128:160], SKpr: km[160:192]}
	checkKeys(t, DeriveRekeyedIKEKeys(newPRF, oldSKd, gir, ni, nr, spii, spir, 32, 16), want)
}

func TestChildKeyMat(t *testing.T) {
	prf, _ := NewPRF(PRFHMACSHA2_256)
	skd := bytes.Repeat([]byte{0x88}, 32)
	ni := bytes.Repeat([]byte{0x99}, 32)
	nr := bytes.Repeat([]byte{0xaa}, 32)
	gir := bytes.Repeat([]byte{0xbb}, 97)

	// RFC 7296 2.17: KEYMAT = prf+(SK_d, Ni | Nr) without PFS ...
	want := refPRFPlus(sha256.New, skd, append(bytes.Clone(ni), nr...), 72)
	if got := ChildKeyMat(prf, skd, nil, ni, nr, 72); !bytes.Equal(got, want) {
		t.Errorf("no PFS: %x, want %x", got, want)
	}
	// ... and prf+(SK_d, g^ir (new) | Ni | Nr) with it.
	want = refPRFPlus(sha256.New, skd, append(append(bytes.Clone(gir), ni...), nr...), 72)
	if got := ChildKeyMat(prf, skd, gir, ni, nr, 72); !bytes.Equal(got, want) {
		t.Errorf("PFS: %x, want %x", got, want)
	}
}

func TestPSKAuth(t *testing.T) {
	prf, _ := NewPRF(PRFHMACSHA2_256)
	psk := []byte("correct horse battery staple")
	octets := []byte("RealMessage1 | NonceRData | MACedIDForI")
	want := refHMAC(sha256.New, refHMAC(sha256.New, psk, []byte("Key Pad for IKEv2")), octets)
	if got := PSKAuth(prf, psk, octets); !bytes.Equal(got, want) {
		t.Errorf("PSKAuth = %x, want %x", got, want)
	}
}
