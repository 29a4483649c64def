package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

func rep(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// RFC 4231 section 4 test cases (RFC 4868 2.7.1 uses the same ones for the
// PRF-HMAC-SHA-256/384/512 transforms). Test case 5 is left out: it checks a
// 128-bit truncation that no IKE PRF uses.
var rfc4231Cases = []struct {
	name           string
	key, data      []byte
	s256, s384, s5 string
}{
	{
		name: "RFC4231 TC1", key: rep(0x0b, 20), data: []byte("Hi There"),
		s256: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
		s384: "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
		s5:   "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
	},
	{
		name: "RFC4231 TC2", key: []byte("Jefe"), data: []byte("what do ya want for nothing?"),
		s256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
		s384: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
		s5:   "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
	},
	{
		name: "RFC4231 TC3", key: rep(0xaa, 20), data: rep(0xdd, 50),
		s256: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
		s384: "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
		s5:   "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
	},
	{
		name: "RFC4231 TC4", key: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25}, data: rep(0xcd, 50),
		s256: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
		s384: "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
		s5:   "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
	},
	{
		name: "RFC4231 TC6", key: rep(0xaa, 131), data: []byte("Test Using Larger Than Block-Size Key - Hash Key First"),
		s256: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
		s384: "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
		s5:   "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
	},
	{
		name: "RFC4231 TC7", key: rep(0xaa, 131),
		data: []byte("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."),
		s256: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
		s384: "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
		s5:   "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
	},
}

func TestPRFRFC4231(t *testing.T) {
	for _, tc := range rfc4231Cases {
		for _, v := range []struct {
			id   uint16
			want string
		}{{PRFHMACSHA2_256, tc.s256}, {PRFHMACSHA2_384, tc.s384}, {PRFHMACSHA2_512, tc.s5}} {
			prf, err := NewPRF(v.id)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, v.want)
			if prf.Size() != len(want) {
				t.Errorf("PRF %d: Size %d, want %d", v.id, prf.Size(), len(want))
			}
			if got := prf.Sum(tc.key, tc.data); !bytes.Equal(got, want) {
				t.Errorf("%s PRF %d: got %x, want %x", tc.name, v.id, got, want)
			}
			// Data given in pieces is concatenated.
			half := len(tc.data) / 2
			if got := prf.Sum(tc.key, tc.data[:half], nil, tc.data[half:]); !bytes.Equal(got, want) {
				t.Errorf("%s PRF %d split: got %x, want %x", tc.name, v.id, got, want)
			}
		}
	}
}

// RFC 4868 section 2.7.2 authenticator test cases: HMAC keyed with a key
// as long as the hash output, truncated to half.
func TestIntegrityRFC4868(t *testing.T) {
	jefe := func(n int) []byte { return bytes.Repeat([]byte("Jefe"), n/4) }
	hi, what := []byte("Hi There"), []byte("what do ya want for nothing?")
	tests := []struct {
		name      string
		id        uint16
		key, data []byte
		want      string
	}{
		{"AUTH256-1", IntegHMACSHA2_256_128, rep(0x0b, 32), hi, "198a607eb44bfbc69903a0f1cf2bbdc5"},
		{"AUTH256-2", IntegHMACSHA2_256_128, jefe(32), what, "167f928588c5cc2eef8e3093caa0e87c"},
		{"AUTH256-3", IntegHMACSHA2_256_128, rep(0xaa, 32), rep(0xdd, 50), "cdcb1220d1ecccea91e53aba3092f962"},
		{"AUTH384-1", IntegHMACSHA2_384_192, rep(0x0b, 48), hi, "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973"},
		{"AUTH384-2", IntegHMACSHA2_384_192, jefe(48), what, "2c7353974f1842fd66d53c452ca42122b28c0b594cfb184d"},
		{"AUTH384-3", IntegHMACSHA2_384_192, rep(0xaa, 48), rep(0xdd, 50), "809f439be00274321d4a538652164b53554a508184a0c316"},
		{"AUTH512-1", IntegHMACSHA2_512_256, rep(0x0b, 64), hi, "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8"},
		{"AUTH512-2", IntegHMACSHA2_512_256, jefe(64), what, "cb370917ae8a7ce28cfd1d8f4705d6141c173b2a9362c15df235dfb251b15454"},
		{"AUTH512-3", IntegHMACSHA2_512_256, rep(0xaa, 64), rep(0xdd, 50), "2ee7acd783624ca9398710f3ee05ae41b9f9b0510c87e49e586cc9bf961733d8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			integ, err := NewIntegrity(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, tc.want)
			if integ.KeySize() != len(tc.key) || integ.ICVSize() != len(want) {
				t.Fatalf("KeySize %d ICVSize %d, want %d %d", integ.KeySize(), integ.ICVSize(), len(tc.key), len(want))
			}
			if got := integ.Sum(tc.key, tc.data); !bytes.Equal(got, want) {
				t.Fatalf("got %x, want %x", got, want)
			}
			if !integ.Verify(tc.key, tc.data, want) {
				t.Error("Verify rejected the correct ICV")
			}
			bad := bytes.Clone(want)
			bad[len(bad)-1] ^= 1
			if integ.Verify(tc.key, tc.data, bad) || integ.Verify(tc.key, tc.data, want[:len(want)-1]) {
				t.Error("Verify accepted a wrong ICV")
			}
		})
	}
}

func TestUnsupportedTransforms(t *testing.T) {
	for _, id := range []uint16{0, 1, 2, 3, 4, 8, 9} {
		if _, err := NewPRF(id); err == nil || SupportedPRF(id) {
			t.Errorf("PRF %d accepted", id)
		}
	}
	for _, id := range []uint16{0, 1, 2, 5, 11, 15} {
		if _, err := NewIntegrity(id); err == nil || SupportedIntegrity(id) {
			t.Errorf("integrity %d accepted", id)
		}
	}
	for _, id := range []uint16{5, 6, 7} {
		if !SupportedPRF(id) {
			t.Errorf("PRF %d not supported", id)
		}
	}
	for _, id := range []uint16{12, 13, 14} {
		if !SupportedIntegrity(id) {
			t.Errorf("integrity %d not supported", id)
		}
	}
}

// refPRFPlus spells out RFC 7296 2.13 with crypto/hmac directly:
// prf+ (K,S) = T1 | T2 | T3 | T4 | ...
// T1 = prf (K, S | 0x01), T2 = prf (K, T1 | S | 0x02), ...
func refPRFPlus(h func() hash.Hash, k, s []byte, n int) []byte {
	var out, prev []byte
	for i := byte(1); len(out) < n; i++ {
		in := append(append(bytes.Clone(prev), s...), i)
		m := hmac.New(h, k)
		m.Write(in)
		prev = m.Sum(nil)
		out = append(out, prev...)
	}
	return out[:n]
}

func TestPRFPlus(t *testing.T) {
	key := []byte("prf+ test key")
	seed := []byte("Ni | Nr | SPIi | SPIr, more or less")
	for _, v := range []struct {
		id uint16
		h  func() hash.Hash
	}{{PRFHMACSHA2_256, sha256.New}, {PRFHMACSHA2_384, sha512.New384}, {PRFHMACSHA2_512, sha512.New}} {
		prf, _ := NewPRF(v.id)
		for _, n := range []int{0, 1, prf.Size() - 1, prf.Size(), prf.Size() + 1, 3*prf.Size() + 7, 200, prf.MaxPlus()} {
			got := prf.Plus(key, seed, n)
			want := refPRFPlus(v.h, key, seed, n)
			if !bytes.Equal(got, want) {
				t.Errorf("PRF %d prf+ n=%d: mismatch", v.id, n)
			}
			if len(got) != n {
				t.Errorf("PRF %d prf+ n=%d: length %d", v.id, n, len(got))
			}
		}
		// A longer output starts with a shorter one.
		if a, b := prf.Plus(key, seed, 40), prf.Plus(key, seed, 100); !bytes.Equal(a, b[:40]) {
			t.Errorf("PRF %d: prf+ prefix property broken", v.id)
		}
	}
}

func TestPRFPlusLimit(t *testing.T) {
	prf, _ := NewPRF(PRFHMACSHA2_256)
	if prf.MaxPlus() != 255*32 {
		t.Fatalf("MaxPlus %d", prf.MaxPlus())
	}
	defer func() {
		if recover() == nil {
			t.Error("prf+ beyond 255 blocks did not panic")
		}
	}()
	prf.Plus([]byte("k"), nil, prf.MaxPlus()+1)
}
