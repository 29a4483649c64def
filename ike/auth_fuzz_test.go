package ike

import (
	"crypto"
	"testing"

	"github.com/roam-vpn/roam/ike/wire"
)

// FuzzVerifyAuthData feeds arbitrary AUTH payloads to the signature path:
// method dispatch, RFC 7427 framing, AlgorithmIdentifier and RSASSA-PSS
// parameter decoding, and verification against ECDSA and RSA keys. None of
// it may panic, and nothing but our seeds' exact bytes may verify.
func FuzzVerifyAuthData(f *testing.F) {
	k := getTestKeys(f)
	octets := []byte("fuzzed octets")
	seeds := []struct {
		key crypto.Signer
		s   sigScheme
	}{
		{k.p256, sigScheme{method: wire.AuthDigitalSignature, kind: kindECDSA, hash: crypto.SHA256}},
		{k.p384, sigScheme{method: wire.AuthECDSA384, kind: kindECDSA, hash: crypto.SHA384}},
		{k.rsa, sigScheme{method: wire.AuthDigitalSignature, kind: kindRSA, hash: crypto.SHA512}},
		{k.rsa, sigScheme{method: wire.AuthDigitalSignature, kind: kindRSAPSS, hash: crypto.SHA256, saltLen: 32}},
	}
	for _, sd := range seeds {
		a, err := sd.s.sign(sd.key, octets)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(a.Method), a.Data)
	}
	f.Add(uint8(wire.AuthRSASig), make([]byte, 256))
	f.Add(uint8(wire.AuthDigitalSignature), []byte{0x0d, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x00})
	pubs := []crypto.PublicKey{k.p256.Public(), k.p384.Public(), k.rsa.Public()}
	f.Fuzz(func(t *testing.T, method uint8, data []byte) {
		auth := &wire.Auth{Method: wire.AuthMethod(method), Data: data}
		if _, _, err := parseSignatureAuth(auth); err != nil {
			return
		}
		for _, pub := range pubs {
			if verifySignatureAuth(pub, auth, []byte("other octets")) == nil {
				t.Fatalf("method %d data %x verified over octets nobody signed", method, data)
			}
		}
	})
}

// FuzzPeerIdentity feeds arbitrary IDi/IDr payload contents through what
// happens to a peer's identity: formatting for logs, comparison with the
// configured one and binding to a certificate.
func FuzzPeerIdentity(f *testing.F) {
	k := getTestKeys(f)
	ca := newCA(f, "Fuzz CA", k.p256, nil)
	leaf := newLeaf(f, k.p256, ca).cert
	want, err := ParseIdentity("O=Example, CN=vpn.example.com")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(wire.IDDERASN1DN), leaf.RawSubject)
	f.Add(uint8(wire.IDFQDN), []byte("vpn.example.com"))
	f.Add(uint8(wire.IDRFC822Addr), []byte("admin@example.com"))
	f.Add(uint8(wire.IDIPv6Addr), []byte(leaf.IPAddresses[1].To16()))
	f.Add(uint8(wire.IDKeyID), []byte{1, 2, 3})
	f.Add(uint8(wire.IDFQDN), []byte{0x0e})
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		id := &wire.Identification{IDType: wire.IDType(typ), Data: data}
		s, exact := formatIdentityExact(id)
		if s != FormatIdentity(id) {
			t.Fatal("FormatIdentity differs from formatIdentityExact")
		}
		if exact {
			if back, err := ParseIdentity(s); err != nil || !IdentitiesEqual(back, id) {
				t.Fatalf("FormatIdentity %q does not parse back: %v", s, err)
			}
		}
		eq := IdentitiesEqual(want, id)
		if eq != IdentitiesEqual(id, want) {
			t.Fatal("IdentitiesEqual not symmetric")
		}
		bound := identityInCert(id, leaf) == nil
		if eq && !bound {
			t.Fatalf("%q equals the subject but is not bound to the certificate", s)
		}
	})
}
