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
