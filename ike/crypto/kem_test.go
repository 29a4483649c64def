package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/mlkem"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/roam-vpn/roam/ike/wire"
)

// fixedReader returns the same byte forever: reproducible keys.
type fixedReader byte

func (r fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestMLKEMRoundTrip(t *testing.T) {
	tests := []struct {
		group        uint16
		ekLen, ctLen int
	}{
		{wire.GroupMLKEM768, 1184, 1088},
		{wire.GroupMLKEM1024, 1568, 1568},
	}
	for _, tt := range tests {
		ini, err := NewKeyExchange(tt.group, nil)
		if err != nil {
			t.Fatalf("group %d: %v", tt.group, err)
		}
		ek := ini.PublicKey()
		if len(ek) != tt.ekLen {
			t.Fatalf("group %d: encapsulation key %d bytes, want %d", tt.group, len(ek), tt.ekLen)
		}
		if n, _ := PublicKeyLen(tt.group); n != tt.ekLen {
			t.Errorf("group %d: PublicKeyLen %d", tt.group, n)
		}
		if n, _ := ResponseLen(tt.group); n != tt.ctLen {
			t.Errorf("group %d: ResponseLen %d", tt.group, n)
		}
		if err := CheckPublicKey(tt.group, ek); err != nil {
			t.Errorf("group %d: CheckPublicKey: %v", tt.group, err)
		}
		ct, sharedR, err := Respond(tt.group, ek, nil)
		if err != nil {
			t.Fatalf("group %d: Respond: %v", tt.group, err)
		}
		if len(ct) != tt.ctLen || len(sharedR) != mlkem.SharedKeySize {
			t.Fatalf("group %d: ciphertext %d bytes, secret %d", tt.group, len(ct), len(sharedR))
		}
		sharedI, err := ini.SharedSecret(ct)
		if err != nil {
			t.Fatalf("group %d: decapsulate: %v", tt.group, err)
		}
		if !bytes.Equal(sharedI, sharedR) {
			t.Fatalf("group %d: shared secrets differ", tt.group)
		}
		// Implicit rejection: a changed ciphertext yields another key, no error.
		bad := bytes.Clone(ct)
		bad[0] ^= 1
		if other, err := ini.SharedSecret(bad); err != nil || bytes.Equal(other, sharedI) {
			t.Fatalf("group %d: tampered ciphertext: err %v, same key %v", tt.group, err, bytes.Equal(other, sharedI))
		}
	}
}

func TestMLKEMDeterministicFromReader(t *testing.T) {
	a, err := NewKeyExchange(wire.GroupMLKEM768, fixedReader(7))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewKeyExchange(wire.GroupMLKEM768, fixedReader(7))
	c, _ := NewKeyExchange(wire.GroupMLKEM768, fixedReader(8))
	if !bytes.Equal(a.PublicKey(), b.PublicKey()) || bytes.Equal(a.PublicKey(), c.PublicKey()) {
		t.Fatal("encapsulation key does not follow the random source")
	}
}

// FIPS 203 7.2 and 7.3 input checks: wrong lengths and an encapsulation
// key with a coefficient not below q are refused with ErrInvalidPublicKey.
func TestMLKEMValidation(t *testing.T) {
	ini, err := NewKeyExchange(wire.GroupMLKEM768, nil)
	if err != nil {
		t.Fatal(err)
	}
	ek := ini.PublicKey()
	notReduced := bytes.Clone(ek)
	// The first coefficient is the low 12 bits of the first 3 bytes:
	// 0xFFF = 4095 >= q = 3329.
	notReduced[0] = 0xff
	notReduced[1] |= 0x0f
	tests := []struct {
		name string
		run  func() error
	}{
		{"short key", func() error { return CheckPublicKey(wire.GroupMLKEM768, ek[:len(ek)-1]) }},
		{"long key", func() error { return CheckPublicKey(wire.GroupMLKEM768, append(bytes.Clone(ek), 0)) }},
		{"unreduced key", func() error { return CheckPublicKey(wire.GroupMLKEM768, notReduced) }},
		{"respond unreduced", func() error { _, _, err := Respond(wire.GroupMLKEM768, notReduced, nil); return err }},
		{"respond 1024 with a 768 key", func() error { _, _, err := Respond(wire.GroupMLKEM1024, ek, nil); return err }},
		{"short ciphertext", func() error { _, err := ini.SharedSecret(make([]byte, 1087)); return err }},
		{"empty ciphertext", func() error { _, err := ini.SharedSecret(nil); return err }},
	}
	for _, tt := range tests {
		if err := tt.run(); !errors.Is(err, ErrInvalidPublicKey) {
			t.Errorf("%s: err = %v, want ErrInvalidPublicKey", tt.name, err)
		}
	}
	if _, err := NewKeyExchange(wire.GroupMLKEM512, nil); err == nil {
		t.Error("ML-KEM-512 has no implementation, but NewKeyExchange accepted it")
	}
	if SupportedGroup(wire.GroupMLKEM512) {
		t.Error("ML-KEM-512 reported as supported")
	}
}

func TestRespondDiffieHellman(t *testing.T) {
	ini, err := NewKeyExchange(wire.GroupCurve25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	reply, sharedR, err := Respond(wire.GroupCurve25519, ini.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sharedI, err := ini.SharedSecret(reply)
	if err != nil || !bytes.Equal(sharedI, sharedR) {
		t.Fatalf("x25519 via Respond: err %v, equal %v", err, bytes.Equal(sharedI, sharedR))
	}
}

// refPRFPlus is RFC 7296 2.13's prf+ written out with crypto/hmac, apart
// from the package's PRF, so that the key schedule is checked against a
// second implementation.
func refPRFPlus384(key, seed []byte, n int) []byte {
	var out, t []byte
	for i := byte(1); len(out) < n; i++ {
		m := hmac.New(sha512.New384, key)
		m.Write(t)
		m.Write(seed)
		m.Write([]byte{i})
		t = m.Sum(nil)
		out = append(out, t...)
	}
	return out[:n]
}

func refPRF384(key []byte, data ...[]byte) []byte {
	m := hmac.New(sha512.New384, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// The RFC 9370 2.2.2 schedule over IKE_SA_INIT and two additional key
// exchanges, against the reference computation, and pinned.
func TestAdditionalKeyScheduleKnownAnswer(t *testing.T) {
	prf, err := NewPRF(PRFHMACSHA2_384)
	if err != nil {
		t.Fatal(err)
	}
	ni := bytes.Repeat([]byte{0x11}, 32)
	nr := bytes.Repeat([]byte{0x22}, 32)
	spii, spir := uint64(0x0102030405060708), uint64(0x1112131415161718)
	secrets := [][]byte{
		bytes.Repeat([]byte{0xa0}, 32), // x25519 in IKE_SA_INIT
		bytes.Repeat([]byte{0xb1}, 32), // ML-KEM-768 in IKE_INTERMEDIATE 1
		bytes.Repeat([]byte{0xc2}, 32), // ML-KEM-1024 in IKE_INTERMEDIATE 2
	}
	const encLen, integLen = 36, 0 // AES-256-GCM with salt
	keys := DeriveIKEKeys(prf, ni, nr, secrets[0], spii, spir, integLen, encLen)
	for _, s := range secrets[1:] {
		keys = DeriveAdditionalIKEKeys(prf, keys.SKd, s, ni, nr, spii, spir, integLen, encLen)
	}

	seedTail := append(append(bytes.Clone(ni), nr...), binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, spii), spir)...)
	total := 3*48 + 2*encLen
	skeyseed := refPRF384(append(bytes.Clone(ni), nr...), secrets[0])
	km := refPRFPlus384(skeyseed, seedTail, total)
	for _, s := range secrets[1:] {
		skeyseed = refPRF384(km[:48], s, ni, nr) // SK_d(n-1) comes first
		km = refPRFPlus384(skeyseed, seedTail, total)
	}
	got := ConcatSecrets(keys.SKd, keys.SKai, keys.SKar, keys.SKei, keys.SKer, keys.SKpi, keys.SKpr)
	if !bytes.Equal(got, km) {
		t.Fatalf("key schedule differs from the reference:\n got %x\nwant %x", got, km)
	}
	// Pinned so that a change to both computations does not pass unseen.
	const wantSKd = "a4a174c42a80468ecff65413a8cb7cd79b38044edb53861dcbaf59b84c8988accbb65ef195228f858c1ddeea6535655b"
	if hex.EncodeToString(keys.SKd) != wantSKd {
		t.Logf("SK_d(2) = %x", keys.SKd)
		t.Fatalf("SK_d(2) changed")
	}
}

// The Child SA KEYMAT with two shared secrets (RFC 9370 2.2.4):
// prf+(SK_d, g^ir | SK(1) | Ni | Nr).
func TestChildKeyMatMultipleSecrets(t *testing.T) {
	prf, _ := NewPRF(PRFHMACSHA2_384)
	skd := bytes.Repeat([]byte{0x33}, 48)
	ni, nr := []byte("initiator nonce 0123456789abcdef"), []byte("responder nonce 0123456789abcdef")
	g, k := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	got := ChildKeyMat(prf, skd, ConcatSecrets(g, k), ni, nr, 72)
	want := refPRFPlus384(skd, ConcatSecrets(g, k, ni, nr), 72)
	if !bytes.Equal(got, want) {
		t.Fatalf("KEYMAT %x, want %x", got, want)
	}
}
