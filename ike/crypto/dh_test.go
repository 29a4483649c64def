package crypto

import (
	"bytes"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/roam-vpn/roam/ike/wire"
)

// RFC 5903 section 8: private keys i and r, public values g^i and g^r as
// carried in the KE payload (x | y), and the shared secret x(g^ir).
var rfc5903Vectors = []struct {
	name               string
	group              uint16
	i, gi, r, gr, girx string
}{
	{
		name: "RFC5903 8.1 (256-bit)", group: wire.GroupECP256,
		i: "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
		gi: "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180" +
			"5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
		r: "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
		gr: "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63" +
			"56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
		girx: "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
	},
	{
		name: "RFC5903 8.2 (384-bit)", group: wire.GroupECP384,
		i: "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655E35B538041E649EE3FAEF896783AB194",
		gi: "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6DE3AC808ACB4BDB4C88732AEE95F41AA" +
			"9482ED1FC0EEB9CAFC4984625CCFC23F65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
		r: "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942E0308312916B8ED2960E4BD55A7448FC",
		gr: "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D0D1AC43A0336DEF96FDA41D0774A3571" +
			"DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
		girx: "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4D603135569B9E9D09CF5D4A270F59746",
	},
	{
		name: "RFC5903 8.3 (521-bit)", group: wire.GroupECP521,
		i: "0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A095AA85A30FE1C2952C6771D937BA9777F5957B2639BAB072462F68C27A57382D4A52",
		gi: "0015417E84DBF28C0AD3C278713349DC7DF153C897A1891BD98BAB4357C9ECBEE1E3BF42E00B8E380AEAE57C2D107564941885942AF5A7F4601723C4195D176CED3E" +
			"017CAE20B6641D2EEB695786D8C946146239D099E18E1D5A514C739D7CB4A10AD8A788015AC405D7799DC75E7B7D5B6CF2261A6A7F1507438BF01BEB6CA3926F9582",
		r: "0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E9C677D600B343757A3BDBF2A3163E4C2F869CCA7458AA4A4EFFC311F5CB151685EB9",
		gr: "00D0B3975AC4B799F5BEA16D5E13E9AF971D5E9B984C9F39728B5E5739735A219B97C356436ADC6E95BB0352F6BE64A6C2912D4EF2D0433CED2B6171640012D9460F" +
			"015C68226383956E3BD066E797B623C27CE0EAC2F551A10C2C724D9852077B87220B6536C5C408A1D2AEBB8E86D678AE49CB57091F4732296579AB44FCD17F0FC56A",
		girx: "01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04D1427E73CA4BAA240A34786859810C06B3C715A3A8CC3151F2BEE417996D19F3DDEA",
	},
}

func keFromPrivate(t *testing.T, group uint16, priv []byte) KeyExchange {
	t.Helper()
	curve, _ := ecdhCurve(group)
	k, err := curve.NewPrivateKey(priv)
	if err != nil {
		t.Fatalf("group %d private key: %v", group, err)
	}
	return newECDHWithKey(group, k)
}

func TestECPRFC5903(t *testing.T) {
	for _, v := range rfc5903Vectors {
		t.Run(v.name, func(t *testing.T) {
			ki := keFromPrivate(t, v.group, unhex(t, v.i))
			kr := keFromPrivate(t, v.group, unhex(t, v.r))
			gi, gr, girx := unhex(t, v.gi), unhex(t, v.gr), unhex(t, v.girx)
			if !bytes.Equal(ki.PublicKey(), gi) {
				t.Errorf("g^i = %X, want %X", ki.PublicKey(), gi)
			}
			if !bytes.Equal(kr.PublicKey(), gr) {
				t.Errorf("g^r = %X, want %X", kr.PublicKey(), gr)
			}
			if n, _ := PublicKeyLen(v.group); n != len(gi) {
				t.Errorf("PublicKeyLen %d, want %d", n, len(gi))
			}
			zi, err := ki.SharedSecret(gr)
			if err != nil {
				t.Fatal(err)
			}
			zr, err := kr.SharedSecret(gi)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(zi, girx) || !bytes.Equal(zr, girx) {
				t.Errorf("g^ir = %X / %X, want %X", zi, zr, girx)
			}
		})
	}
}

// RFC 6989 2.3: a point not on the curve, the point at infinity and
// malformed encodings are refused.
func TestECPRejectsInvalidPoints(t *testing.T) {
	for _, v := range rfc5903Vectors {
		t.Run(v.name, func(t *testing.T) {
			ki := keFromPrivate(t, v.group, unhex(t, v.i))
			gr := unhex(t, v.gr)
			offCurve := bytes.Clone(gr)
			offCurve[len(offCurve)-1] ^= 1 // y changed: not on the curve
			xTooBig := bytes.Clone(gr)
			for i := range len(xTooBig) / 2 {
				xTooBig[i] = 0xff // x >= p
			}
			for name, peer := range map[string][]byte{
				"off curve": offCurve,
				"zero":      make([]byte, len(gr)),
				"x >= p":    xTooBig,
				"short":     gr[:len(gr)-1],
				"long":      append(bytes.Clone(gr), 0),
				"sec1":      append([]byte{4}, gr...),
				"empty":     nil,
			} {
				if z, err := ki.SharedSecret(peer); err == nil || !errors.Is(err, ErrInvalidPublicKey) {
					t.Errorf("%s: got %x, %v; want ErrInvalidPublicKey", name, z, err)
				}
			}
		})
	}
}

func TestX25519RFC7748(t *testing.T) {
	// Section 5.2, the two single-step test vectors.
	for _, v := range []struct{ name, scalar, u, out string }{
		{"RFC7748 5.2 #1",
			"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
			"e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
			"c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
		{"RFC7748 5.2 #2",
			"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
			"e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
			"95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
	} {
		k := keFromPrivate(t, wire.GroupCurve25519, unhex(t, v.scalar))
		got, err := k.SharedSecret(unhex(t, v.u))
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		if want := unhex(t, v.out); !bytes.Equal(got, want) {
			t.Errorf("%s: got %x, want %x", v.name, got, want)
		}
	}

	// Section 6.1, Alice and Bob.
	alice := keFromPrivate(t, wire.GroupCurve25519, unhex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	bob := keFromPrivate(t, wire.GroupCurve25519, unhex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
	alicePub := unhex(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	bobPub := unhex(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	shared := unhex(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
	if !bytes.Equal(alice.PublicKey(), alicePub) || !bytes.Equal(bob.PublicKey(), bobPub) {
		t.Errorf("RFC7748 6.1 public keys: %x %x", alice.PublicKey(), bob.PublicKey())
	}
	za, err := alice.SharedSecret(bobPub)
	if err != nil {
		t.Fatal(err)
	}
	zb, err := bob.SharedSecret(alicePub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(za, shared) || !bytes.Equal(zb, shared) {
		t.Errorf("RFC7748 6.1 shared secret: %x %x", za, zb)
	}
}

// RFC 8031 2.1 / RFC 6989: points of small order give an all-zero shared
// secret, which must be refused.
func TestX25519RejectsLowOrder(t *testing.T) {
	k, err := NewKeyExchange(wire.GroupCurve25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	lowOrder := []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // 0
		"0100000000000000000000000000000000000000000000000000000000000000", // 1
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p (= 0)
	}
	for _, h := range lowOrder {
		if z, err := k.SharedSecret(unhex(t, h)); !errors.Is(err, ErrInvalidPublicKey) {
			t.Errorf("peer %s: got %x, %v; want ErrInvalidPublicKey", h, z, err)
		}
	}
	if _, err := k.SharedSecret(make([]byte, 31)); !errors.Is(err, ErrInvalidPublicKey) {
		t.Errorf("short value accepted: %v", err)
	}
}

func TestKeyExchangeAgreement(t *testing.T) {
	for _, g := range []uint16{wire.GroupMODP2048, wire.GroupMODP3072, wire.GroupMODP4096, wire.GroupECP256, wire.GroupECP384, wire.GroupECP521, wire.GroupCurve25519} {
		if !SupportedGroup(g) {
			t.Errorf("group %d not supported", g)
		}
		a, err := NewKeyExchange(g, nil)
		if err != nil {
			t.Fatalf("group %d: %v", g, err)
		}
		b, err := NewKeyExchange(g, nil)
		if err != nil {
			t.Fatalf("group %d: %v", g, err)
		}
		if a.Group() != g {
			t.Errorf("Group() = %d, want %d", a.Group(), g)
		}
		n, _ := PublicKeyLen(g)
		if len(a.PublicKey()) != n {
			t.Errorf("group %d: public key %d bytes, want %d", g, len(a.PublicKey()), n)
		}
		za, err := a.SharedSecret(b.PublicKey())
		if err != nil {
			t.Fatalf("group %d: %v", g, err)
		}
		zb, err := b.SharedSecret(a.PublicKey())
		if err != nil {
			t.Fatalf("group %d: %v", g, err)
		}
		if !bytes.Equal(za, zb) {
			t.Errorf("group %d: shared secrets differ", g)
		}
		if bytes.Equal(a.PublicKey(), b.PublicKey()) {
			t.Errorf("group %d: two fresh keys are equal", g)
		}
	}
	for _, g := range []uint16{0, 1, 2, 5, 17, 18, 22, 30, 32, 35} {
		if _, err := NewKeyExchange(g, nil); err == nil || SupportedGroup(g) {
			t.Errorf("group %d accepted", g)
		}
	}
}

// The random source passed in decides the private key, so a deterministic
// reader gives deterministic keys (what engine tests rely on).
func TestKeyExchangeUsesReader(t *testing.T) {
	for _, g := range []uint16{wire.GroupMODP2048, wire.GroupECP256, wire.GroupECP521, wire.GroupCurve25519} {
		a, err := NewKeyExchange(g, mrand.NewChaCha8([32]byte{1}))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := NewKeyExchange(g, mrand.NewChaCha8([32]byte{1}))
		c, _ := NewKeyExchange(g, mrand.NewChaCha8([32]byte{2}))
		if !bytes.Equal(a.PublicKey(), b.PublicKey()) || bytes.Equal(a.PublicKey(), c.PublicKey()) {
			t.Errorf("group %d: key does not follow the reader", g)
		}
	}
	if _, err := NewKeyExchange(wire.GroupECP256, bytes.NewReader(nil)); err == nil {
		t.Error("empty reader accepted")
	}
	if _, err := NewKeyExchange(wire.GroupMODP2048, bytes.NewReader(nil)); err == nil {
		t.Error("empty reader accepted")
	}
}

// The built-in primes are the RFC 3526 safe primes: 64 one bits at each
// end and both p and (p-1)/2 prime.
func TestMODPPrimes(t *testing.T) {
	for _, v := range []struct {
		group uint16
		bits  int
	}{{wire.GroupMODP2048, 2048}, {wire.GroupMODP3072, 3072}, {wire.GroupMODP4096, 4096}} {
		p := modpPrime(v.group)
		if p.BitLen() != v.bits {
			t.Errorf("group %d: %d bits", v.group, p.BitLen())
		}
		mask := new(big.Int).SetUint64(^uint64(0))
		if new(big.Int).And(p, mask).Cmp(mask) != 0 || new(big.Int).Rsh(p, uint(v.bits-64)).Cmp(mask) != 0 {
			t.Errorf("group %d: not of the RFC 3526 form", v.group)
		}
		q := new(big.Int).Rsh(p, 1)
		if !p.ProbablyPrime(0) || !q.ProbablyPrime(0) {
			t.Errorf("group %d: not a safe prime", v.group)
		}
	}
}

// RFC 6989 2.2: for MODP groups the peer value must satisfy 1 < y < p-1.
func TestMODPRejectsInvalidValues(t *testing.T) {
	k, err := NewKeyExchange(wire.GroupMODP2048, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := modpPrime(wire.GroupMODP2048)
	enc := func(x *big.Int) []byte { return x.FillBytes(make([]byte, 256)) }
	one := big.NewInt(1)
	for name, peer := range map[string][]byte{
		"0":     enc(big.NewInt(0)),
		"1":     enc(one),
		"p-1":   enc(new(big.Int).Sub(p, one)),
		"p":     enc(p),
		"p+1":   enc(new(big.Int).Add(p, one)),
		"2^n-1": enc(new(big.Int).Sub(new(big.Int).Lsh(one, 2048), one)),
		"short": enc(big.NewInt(2))[1:],
		"long":  append([]byte{0}, enc(big.NewInt(2))...),
	} {
		if _, err := k.SharedSecret(peer); !errors.Is(err, ErrInvalidPublicKey) {
			t.Errorf("%s: %v, want ErrInvalidPublicKey", name, err)
		}
	}
	// The smallest and largest permitted values work.
	for _, y := range []*big.Int{big.NewInt(2), new(big.Int).Sub(p, big.NewInt(2))} {
		if _, err := k.SharedSecret(enc(y)); err != nil {
			t.Errorf("y=%v: %v", y, err)
		}
	}
}

// A known-answer check of the MODP arithmetic and encoding: with x = 1 the
// public value is 2 and the shared secret is the peer value itself, both
// padded to the length of the prime.
func TestMODPEncoding(t *testing.T) {
	m := newMODPWithExponent(wire.GroupMODP2048, big.NewInt(1))
	want := make([]byte, 256)
	want[255] = 2
	if !bytes.Equal(m.PublicKey(), want) {
		t.Errorf("public value %x", m.PublicKey())
	}
	peer := make([]byte, 256)
	peer[200] = 7
	z, err := m.SharedSecret(peer)
	if err != nil || !bytes.Equal(z, peer) {
		t.Errorf("shared secret %x, %v", z, err)
	}
}

// KE payload data comes straight from the network.
func FuzzSharedSecret(f *testing.F) {
	groups := []uint16{wire.GroupMODP2048, wire.GroupECP256, wire.GroupECP384, wire.GroupECP521, wire.GroupCurve25519}
	kes := make([]KeyExchange, len(groups))
	for i, g := range groups {
		k, err := NewKeyExchange(g, mrand.NewChaCha8([32]byte{byte(i)}))
		if err != nil {
			f.Fatal(err)
		}
		kes[i] = k
		peer, _ := NewKeyExchange(g, mrand.NewChaCha8([32]byte{byte(i + 100)}))
		f.Add(uint8(i), peer.PublicKey())
		f.Add(uint8(i), make([]byte, len(peer.PublicKey())))
	}
	f.Fuzz(func(t *testing.T, which uint8, peer []byte) {
		k := kes[int(which)%len(kes)]
		z, err := k.SharedSecret(peer)
		if err != nil {
			if !errors.Is(err, ErrInvalidPublicKey) {
				t.Fatalf("error not wrapping ErrInvalidPublicKey: %v", err)
			}
			return
		}
		if len(z) == 0 || bytes.Equal(z, make([]byte, len(z))) {
			t.Fatalf("accepted %x with degenerate secret %x", peer, z)
		}
	})
}

// TestCheckPublicKey: what a responder refuses before making its own key
// agrees with SharedSecret.
func TestCheckPublicKey(t *testing.T) {
	for _, g := range []uint16{wire.GroupMODP2048, wire.GroupECP256, wire.GroupECP384, wire.GroupCurve25519} {
		kx, err := NewKeyExchange(g, nil)
		if err != nil {
			t.Fatal(err)
		}
		good := kx.PublicKey()
		offCurve := bytes.Clone(good)
		offCurve[len(offCurve)-1] ^= 1
		tests := []struct {
			name string
			data []byte
			ok   bool
		}{
			{"valid", good, true},
			{"short", good[1:], false},
			{"long", append(bytes.Clone(good), 0), false},
			{"one", append(make([]byte, len(good)-1), 1), g == wire.GroupCurve25519},
			{"flipped", offCurve, g == wire.GroupCurve25519 || g == wire.GroupMODP2048},
		}
		for _, tc := range tests {
			err := CheckPublicKey(g, tc.data)
			if (err == nil) != tc.ok {
				t.Errorf("group %d %s: err %v, want ok %v", g, tc.name, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidPublicKey) {
				t.Errorf("group %d %s: err %v is not ErrInvalidPublicKey", g, tc.name, err)
			}
		}
	}
	if err := CheckPublicKey(99, make([]byte, 32)); err == nil {
		t.Error("unsupported group accepted")
	}
}
