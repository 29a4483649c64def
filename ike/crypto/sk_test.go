package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// "The Galois/Counter Mode of Operation (GCM)", McGrew and Viega, test
// cases 3, 4 (AES-128) and 16 (AES-256). IV cafebabefacedbaddecaf888 splits
// into the RFC 5282 salt (cafebabe, the last 4 bytes of the keying
// material) and explicit IV (facedbaddecaf888).
const (
	gcmK128  = "feffe9928665731c6d6a8f9467308308"
	gcmK256  = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
	gcmSalt  = "cafebabe"
	gcmIV    = "facedbaddecaf888"
	gcmAAD   = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
	gcmP64   = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
	gcmTC3C  = "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
	gcmTC3T  = "4d5c2af327cd64a62cf35abd2ba6fab4"
	gcmTC4T  = "5bc94fbc3221a5db94fae95ae7121a47"
	gcmTC16C = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
	gcmTC16T = "76fc6ece0f4e1768cddf8853bb2d551b"
)

// The 60-byte plaintext of test cases 4 and 16 ends in 0x39: read as SK
// contents that is a Pad Length of 57, leaving two payload bytes, d9 31.
func TestSKCipherGCMVectors(t *testing.T) {
	tc3C := unhex(t, gcmTC3C)
	tests := []struct {
		name    string
		encrID  uint16
		keyBits int
		key     string
		aad     string
		ct, tag []byte
		want    []byte
		wantErr error
	}{
		{"GCM TC4 ICV16", EncrAESGCM16, 128, gcmK128, gcmAAD, tc3C[:60], unhex(t, gcmTC4T), []byte{0xd9, 0x31}, nil},
		{"GCM TC4 ICV12", EncrAESGCM12, 128, gcmK128, gcmAAD, tc3C[:60], unhex(t, gcmTC4T)[:12], []byte{0xd9, 0x31}, nil},
		{"GCM TC4 ICV8", EncrAESGCM8, 128, gcmK128, gcmAAD, tc3C[:60], unhex(t, gcmTC4T)[:8], []byte{0xd9, 0x31}, nil},
		{"GCM TC16 ICV16", EncrAESGCM16, 256, gcmK256, gcmAAD, unhex(t, gcmTC16C), unhex(t, gcmTC16T), []byte{0xd9, 0x31}, nil},
		// TC3's plaintext ends in 0x55, a Pad Length of 85 in 64 bytes: the
		// ICV is good, the padding is not.
		{"GCM TC3 bad padding", EncrAESGCM16, 128, gcmK128, "", tc3C, unhex(t, gcmTC3T), nil, ErrBadPadding},
		{"GCM TC4 wrong AAD", EncrAESGCM16, 128, gcmK128, gcmAAD[2:], tc3C[:60], unhex(t, gcmTC4T), nil, ErrAuthentication},
		{"GCM TC4 ICV8 wrong tag", EncrAESGCM8, 128, gcmK128, gcmAAD, tc3C[:60], unhex(t, gcmTC4T)[8:], nil, ErrAuthentication},
		{"GCM TC4 ICV12 wrong AAD", EncrAESGCM12, 128, gcmK128, "", tc3C[:60], unhex(t, gcmTC4T)[:12], nil, ErrAuthentication},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewSKCipher(tc.encrID, tc.keyBits, nil, unhex(t, tc.key+gcmSalt), nil)
			if err != nil {
				t.Fatal(err)
			}
			data := append(append(unhex(t, gcmIV), tc.ct...), tc.tag...)
			got, err := c.Open(unhex(t, tc.aad), data)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %x, want %x", got, tc.want)
			}
		})
	}
}

// Seal's output is RFC 5282 AES-GCM: nonce = salt | IV, the plaintext
// followed by a zero Pad Length, the AAD as given. Checked against the
// standard library directly and against test case 3's keystream.
func TestSKCipherGCMSealLayout(t *testing.T) {
	c, err := NewSKCipher(EncrAESGCM16, 128, nil, unhex(t, gcmK128+gcmSalt), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.ivBase = 0xfacedbaddecaf888 // first Seal uses the test case's IV
	p := unhex(t, gcmP64)
	aad := unhex(t, gcmAAD)
	out, err := c.Seal(aad, p[:63])
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != c.SealedLen(63) || len(out) != 8+64+16 {
		t.Fatalf("sealed %d bytes, SealedLen %d", len(out), c.SealedLen(63))
	}
	if !bytes.Equal(out[:8], unhex(t, gcmIV)) {
		t.Fatalf("IV %x", out[:8])
	}
	// CTR keystream is that of TC3: the first 63 bytes match its ciphertext,
	// the 64th encrypts 0x00 instead of 0x55.
	tc3C := unhex(t, gcmTC3C)
	if !bytes.Equal(out[8:8+63], tc3C[:63]) || out[8+63] != tc3C[63]^0x55 {
		t.Fatalf("ciphertext %x", out[8:72])
	}
	block, _ := aes.NewCipher(unhex(t, gcmK128))
	aead, _ := cipher.NewGCM(block)
	want := aead.Seal(nil, unhex(t, gcmSalt+gcmIV), append(bytes.Clone(p[:63]), 0), aad)
	if !bytes.Equal(out[8:], want) {
		t.Fatalf("sealed %x, want %x", out[8:], want)
	}
	// The next Seal uses the next IV.
	out2, _ := c.Seal(aad, p[:63])
	if !bytes.Equal(out2[:8], unhex(t, "facedbaddecaf889")) {
		t.Fatalf("second IV %x", out2[:8])
	}
}

// The CBC layout is RFC 7296 3.14: IV | AES-CBC(payloads | padding | pad
// length) | HMAC(aad | IV | ciphertext) truncated.
func TestSKCipherCBCLayout(t *testing.T) {
	integ, _ := NewIntegrity(IntegHMACSHA2_256_128)
	ek := bytes.Repeat([]byte{1}, 32)
	ak := bytes.Repeat([]byte{2}, 32)
	c, err := NewSKCipher(EncrAESCBC, 256, integ, ek, ak)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("IKE header and SK generic header")
	plain := []byte("twenty bytes of data")
	out, err := c.Seal(aad, plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 16+32+16 || len(out) != c.SealedLen(len(plain)) {
		t.Fatalf("sealed %d bytes", len(out))
	}
	m := hmac.New(sha256.New, ak)
	m.Write(aad)
	m.Write(out[:48])
	if !bytes.Equal(out[48:], m.Sum(nil)[:16]) {
		t.Fatal("ICV is not HMAC over aad | IV | ciphertext")
	}
	block, _ := aes.NewCipher(ek)
	dec := make([]byte, 32)
	cipher.NewCBCDecrypter(block, out[:16]).CryptBlocks(dec, out[16:48])
	if !bytes.Equal(dec[:20], plain) || dec[31] != 11 {
		t.Fatalf("decrypted %x", dec)
	}

	// A correctly authenticated message with an impossible Pad Length is
	// refused after the ICV check.
	bad := bytes.Clone(dec)
	bad[31] = 40
	msg := make([]byte, 48)
	copy(msg, out[:16])
	cipher.NewCBCEncrypter(block, msg[:16]).CryptBlocks(msg[16:], bad)
	m.Reset()
	m.Write(aad)
	m.Write(msg)
	msg = append(msg, m.Sum(nil)[:16]...)
	if _, err := c.Open(aad, msg); !errors.Is(err, ErrBadPadding) {
		t.Fatalf("bad pad length: %v", err)
	}
}

// Authentic messages whose Pad Length claims more bytes than there are are
// refused, not sliced out of range.
func TestSKCipherOpenPadLength(t *testing.T) {
	key := bytes.Repeat([]byte{6}, 16)
	salt := []byte{1, 2, 3, 4}
	c, err := NewSKCipher(EncrAESGCM16, 128, nil, append(bytes.Clone(key), salt...), nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	iv := []byte{0, 0, 0, 0, 0, 0, 0, 9}
	for _, v := range []struct {
		plain   []byte
		want    []byte
		wantErr bool
	}{
		{[]byte{0}, []byte{}, false},
		{[]byte{1}, nil, true},
		{[]byte{0xaa, 1}, []byte{}, false},
		{[]byte{0xaa, 2}, nil, true},
		{[]byte{0xaa, 0xbb, 1}, []byte{0xaa}, false},
		{[]byte{7, 7, 2}, []byte{}, false},
		{append(make([]byte, 10), 255), nil, true},
	} {
		data := append(bytes.Clone(iv), aead.Seal(nil, append(bytes.Clone(salt), iv...), v.plain, []byte("aad"))...)
		got, err := c.Open([]byte("aad"), data)
		if v.wantErr {
			if !errors.Is(err, ErrBadPadding) {
				t.Errorf("plain %x: err %v, want ErrBadPadding", v.plain, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, v.want) {
			t.Errorf("plain %x: got %x, %v; want %x", v.plain, got, err, v.want)
		}
	}
}

type suite struct {
	name    string
	encrID  uint16
	keyBits int
	integID uint16 // 0 for AEAD
}

func allSuites() []suite {
	var s []suite
	for _, id := range []uint16{EncrAESGCM8, EncrAESGCM12, EncrAESGCM16} {
		for _, kb := range []int{128, 192, 256} {
			s = append(s, suite{fmt.Sprintf("gcm%d-%d", id, kb), id, kb, 0})
		}
	}
	for _, kb := range []int{128, 192, 256} {
		for _, integ := range []uint16{IntegHMACSHA2_256_128, IntegHMACSHA2_384_192, IntegHMACSHA2_512_256} {
			s = append(s, suite{fmt.Sprintf("cbc%d-integ%d", kb, integ), EncrAESCBC, kb, integ})
		}
	}
	return append(s, suite{"chacha20poly1305", EncrChaCha20Poly1305, 0, 0})
}

func newSuiteCipher(t testing.TB, s suite, seed byte) *SKCipher {
	t.Helper()
	n, err := EncrKeySize(s.encrID, s.keyBits)
	if err != nil {
		t.Fatal(err)
	}
	var integ *Integrity
	var ik []byte
	if s.integID != 0 {
		integ, _ = NewIntegrity(s.integID)
		ik = bytes.Repeat([]byte{seed + 1}, integ.KeySize())
	}
	c, err := NewSKCipher(s.encrID, s.keyBits, integ, bytes.Repeat([]byte{seed}, n), ik)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSKCipherRoundTrip(t *testing.T) {
	aad := []byte("0123456789abcdef0123456789ab\x29\x00\x00\x00")
	for _, s := range allSuites() {
		t.Run(s.name, func(t *testing.T) {
			c := newSuiteCipher(t, s, 7)
			peer := newSuiteCipher(t, s, 7) // the receiving side's own instance
			for _, n := range []int{0, 1, 14, 15, 16, 17, 31, 32, 100, 1000} {
				plain := bytes.Repeat([]byte{byte(n)}, n)
				out, err := c.Seal(aad, plain)
				if err != nil {
					t.Fatal(err)
				}
				if len(out) != c.SealedLen(n) {
					t.Fatalf("n=%d: sealed %d, SealedLen %d", n, len(out), c.SealedLen(n))
				}
				if body := len(out) - c.IVSize() - c.ICVSize(); body%c.padAlign() != 0 {
					t.Fatalf("n=%d: encrypted part of %d bytes is not aligned", n, body)
				}
				if m := c.MaxPlainLen(len(out)); m < n || c.SealedLen(m) > len(out) {
					t.Fatalf("n=%d: MaxPlainLen(%d) = %d", n, len(out), m)
				}
				got, err := peer.Open(aad, out)
				if err != nil {
					t.Fatalf("n=%d: %v", n, err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("n=%d: round trip changed the data", n)
				}
				if _, err := peer.Open(aad[1:], out); !errors.Is(err, ErrAuthentication) {
					t.Fatalf("n=%d: changed AAD: %v", n, err)
				}
			}
		})
	}
}

// Every single-bit change anywhere in the SK data, and every truncation,
// is refused without a panic.
func TestSKCipherTamper(t *testing.T) {
	aad := []byte("header")
	for _, s := range allSuites() {
		t.Run(s.name, func(t *testing.T) {
			c := newSuiteCipher(t, s, 3)
			out, err := c.Seal(aad, []byte("some inner payloads, 37 bytes long.."))
			if err != nil {
				t.Fatal(err)
			}
			for i := range out {
				bad := bytes.Clone(out)
				bad[i] ^= 0x80
				if _, err := c.Open(aad, bad); !errors.Is(err, ErrAuthentication) {
					t.Fatalf("flipped byte %d: %v", i, err)
				}
			}
			for n := range len(out) {
				if _, err := c.Open(aad, out[:n]); err == nil {
					t.Fatalf("truncated to %d accepted", n)
				}
			}
			if _, err := c.Open(aad, append(bytes.Clone(out), 0)); err == nil {
				t.Fatal("extended data accepted")
			}
			other := newSuiteCipher(t, s, 4)
			if _, err := other.Open(aad, out); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("wrong key: %v", err)
			}
		})
	}
}

func TestSKCipherMaxPlainLen(t *testing.T) {
	for _, s := range allSuites() {
		c := newSuiteCipher(t, s, 5)
		if m := c.MaxPlainLen(c.IVSize() + c.ICVSize()); m >= 0 {
			t.Errorf("%s: MaxPlainLen of an empty body = %d", s.name, m)
		}
		for sealed := c.SealedLen(0); sealed < 300; sealed++ {
			m := c.MaxPlainLen(sealed)
			if c.SealedLen(m) > sealed || c.SealedLen(m+1) <= sealed {
				t.Fatalf("%s: MaxPlainLen(%d) = %d is not the largest fit", s.name, sealed, m)
			}
		}
	}
}

func TestSKCipherFreshIVs(t *testing.T) {
	for _, s := range []suite{{"gcm", EncrAESGCM16, 128, 0}, {"cbc", EncrAESCBC, 128, IntegHMACSHA2_256_128}} {
		c := newSuiteCipher(t, s, 9)
		seen := map[string]bool{}
		for range 1000 {
			out, err := c.Seal(nil, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			iv := string(out[:c.IVSize()])
			if seen[iv] {
				t.Fatalf("%s: IV repeated", s.name)
			}
			seen[iv] = true
		}
	}
	// Two ciphers from the same key start at different counters.
	a := newSuiteCipher(t, suite{"gcm", EncrAESGCM16, 128, 0}, 9)
	b := newSuiteCipher(t, suite{"gcm", EncrAESGCM16, 128, 0}, 9)
	if a.ivBase == b.ivBase {
		t.Error("IV counters of two instances start at the same value")
	}
	a.ivCount.Store(^uint64(0))
	if _, err := a.Seal(nil, nil); err == nil {
		t.Error("Seal after IV exhaustion succeeded")
	}
}

func TestEncrKeySize(t *testing.T) {
	for _, v := range []struct {
		id      uint16
		bits    int
		want    int
		wantErr bool
	}{
		{EncrAESGCM16, 128, 20, false},
		{EncrAESGCM16, 256, 36, false},
		{EncrAESGCM12, 192, 28, false},
		{EncrAESGCM8, 128, 20, false},
		{EncrAESCBC, 128, 16, false},
		{EncrAESCBC, 256, 32, false},
		{EncrAESCBC, 0, 0, true},
		{EncrAESGCM16, 64, 0, true},
		{3, 128, 0, true},                    // 3DES
		{13, 128, 0, true},                   // AES-CTR
		{EncrChaCha20Poly1305, 0, 36, false}, // no Key Length attribute
		{EncrChaCha20Poly1305, 256, 36, false},
		{EncrChaCha20Poly1305, 128, 0, true},
	} {
		got, err := EncrKeySize(v.id, v.bits)
		if (err != nil) != v.wantErr || got != v.want {
			t.Errorf("EncrKeySize(%d, %d) = %d, %v", v.id, v.bits, got, err)
		}
		if SupportedEncr(v.id, v.bits) == v.wantErr {
			t.Errorf("SupportedEncr(%d, %d) wrong", v.id, v.bits)
		}
	}
	if !IsAEAD(EncrAESGCM16) || !IsAEAD(EncrChaCha20Poly1305) || IsAEAD(EncrAESCBC) {
		t.Error("IsAEAD wrong")
	}
}

// TestSKCipherChaCha20Poly1305Vector uses the AEAD example of RFC 8439
// 2.8.2, whose 12-byte nonce 07000000 4041424344454647 is exactly an RFC
// 7634 salt followed by an explicit IV. Its ciphertext's first block and
// tag are the RFC's; the plaintext ends in '.', read as a Pad Length of 46.
func TestSKCipherChaCha20Poly1305Vector(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(0x80 + i)
	}
	salt, iv := unhex(t, "07000000"), unhex(t, "4041424344454647")
	aad := unhex(t, "50515253c0c1c2c3c4c5c6c7")
	plain := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	c, err := NewSKCipher(EncrChaCha20Poly1305, 0, nil, append(bytes.Clone(key), salt...), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.IVSize() != 8 || c.ICVSize() != 16 {
		t.Fatalf("IV %d ICV %d, want 8 and 16", c.IVSize(), c.ICVSize())
	}
	// The ciphertext beyond the first block is not in this file: a stream
	// cipher's output is the keystream XOR the plaintext, and the tag below
	// covers all of it, so a wrong keystream or nonce fails the tag check.
	ct := chachaEncrypt(t, key, append(bytes.Clone(salt), iv...), plain, aad)
	if want := unhex(t, "d31a8d34648e60db7b86afbc53ef7ec2"); !bytes.Equal(ct[:16], want) {
		t.Fatalf("first ciphertext block %x, want %x", ct[:16], want)
	}
	if want := unhex(t, "1ae10b594f09e26a7e902ecbd0600691"); !bytes.Equal(ct[len(ct)-16:], want) {
		t.Fatalf("tag %x, want %x", ct[len(ct)-16:], want)
	}
	got, err := c.Open(aad, append(bytes.Clone(iv), ct...))
	if err != nil {
		t.Fatal(err)
	}
	if want := plain[:len(plain)-1-'.']; !bytes.Equal(got, want) {
		t.Fatalf("opened %q, want %q", got, want)
	}
	if _, err := c.Open(aad[1:], append(bytes.Clone(iv), ct...)); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("wrong AAD: %v", err)
	}
}

func TestNewSKCipherErrors(t *testing.T) {
	integ, _ := NewIntegrity(IntegHMACSHA2_256_128)
	k20, k32 := make([]byte, 20), make([]byte, 32)
	for name, f := range map[string]func() (*SKCipher, error){
		"gcm short key":    func() (*SKCipher, error) { return NewSKCipher(EncrAESGCM16, 128, nil, k32[:16], nil) },
		"gcm with integ":   func() (*SKCipher, error) { return NewSKCipher(EncrAESGCM16, 128, integ, k20, k32) },
		"cbc no integ":     func() (*SKCipher, error) { return NewSKCipher(EncrAESCBC, 128, nil, k32[:16], nil) },
		"cbc short integ":  func() (*SKCipher, error) { return NewSKCipher(EncrAESCBC, 128, integ, k32[:16], k20) },
		"cbc wrong keylen": func() (*SKCipher, error) { return NewSKCipher(EncrAESCBC, 256, integ, k20, k32) },
		"unknown":          func() (*SKCipher, error) { return NewSKCipher(99, 128, nil, k20, nil) },
		"chacha short key": func() (*SKCipher, error) { return NewSKCipher(EncrChaCha20Poly1305, 0, nil, k32, nil) },
		"chacha integ": func() (*SKCipher, error) {
			return NewSKCipher(EncrChaCha20Poly1305, 0, integ, append(k32, 1, 2, 3, 4), k32)
		},
	} {
		if _, err := f(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzSKCipherOpen(f *testing.F) {
	integ, _ := NewIntegrity(IntegHMACSHA2_256_128)
	gcm, err := NewSKCipher(EncrAESGCM16, 128, nil, bytes.Repeat([]byte{1}, 20), nil)
	if err != nil {
		f.Fatal(err)
	}
	gcm8, _ := NewSKCipher(EncrAESGCM8, 256, nil, bytes.Repeat([]byte{2}, 36), nil)
	cbc, _ := NewSKCipher(EncrAESCBC, 128, integ, bytes.Repeat([]byte{3}, 16), bytes.Repeat([]byte{4}, 32))
	chacha, _ := NewSKCipher(EncrChaCha20Poly1305, 0, nil, bytes.Repeat([]byte{5}, 36), nil)
	ciphers := []*SKCipher{gcm, gcm8, cbc, chacha}
	for i, c := range ciphers {
		for _, p := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{0xee}, 40)} {
			out, err := c.Seal([]byte("aad"), p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), []byte("aad"), out)
		}
	}
	f.Add(uint8(0), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, which uint8, aad, data []byte) {
		c := ciphers[int(which)%len(ciphers)]
		orig := bytes.Clone(data)
		plain, err := c.Open(aad, data)
		if !bytes.Equal(data, orig) {
			t.Fatal("Open modified its input")
		}
		if err == nil {
			// Only genuine messages authenticate; re-sealing what came
			// out must open to the same thing.
			out, err := c.Seal(aad, plain)
			if err != nil {
				t.Fatal(err)
			}
			again, err := c.Open(aad, out)
			if err != nil || !bytes.Equal(again, plain) {
				t.Fatalf("re-seal round trip failed: %v", err)
			}
		}
		// Seal/Open round trip of arbitrary payloads.
		out, err := c.Seal(aad, data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Open(aad, out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

// chachaEncrypt seals with x/crypto directly, outside SKCipher.
func chachaEncrypt(t *testing.T, key, nonce, plain, aad []byte) []byte {
	t.Helper()
	a, err := chacha20poly1305.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return a.Seal(nil, nonce, plain, aad)
}
