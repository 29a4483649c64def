package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// Test PKI: generated once per test binary because RSA key generation is
// slow under -race.

type testKeys struct {
	p256, p384, p521 *ecdsa.PrivateKey
	rsa              *rsa.PrivateKey
}

var (
	testKeysOnce sync.Once
	testKeysVal  testKeys
)

func getTestKeys(t testing.TB) testKeys {
	t.Helper()
	testKeysOnce.Do(func() {
		var err error
		k := &testKeysVal
		if k.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
			panic(err)
		}
		if k.p521, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader); err != nil {
			panic(err)
		}
		if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return testKeysVal
}

type testCert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (c testCert) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

func issue(t testing.TB, tmpl *x509.Certificate, key crypto.Signer, parent *testCert) testCert {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{cert: c, key: key}
}

func newCA(t testing.TB, name string, key crypto.Signer, parent *testCert) testCert {
	return issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Example"}},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, key, parent)
}

func newLeaf(t testing.TB, key crypto.Signer, ca testCert) testCert {
	return issue(t, &x509.Certificate{
		Subject:        pkix.Name{CommonName: "vpn.example.com", Organization: []string{"Example"}},
		DNSNames:       []string{"vpn.example.com", "gw.example.com"},
		EmailAddresses: []string{"admin@example.com"},
		IPAddresses:    []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")},
		KeyUsage:       x509.KeyUsageDigitalSignature,
		// strongSwan-style: IKE intermediate EKU, which Verify must not mind.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key, &ca)
}

// gatewayCertAuth is the gateway's certificate authentication: a newLeaf
// for key issued by ca, as vpn.example.com.
func gatewayCertAuth(t testing.TB, key crypto.Signer, ca testCert) LocalAuth {
	t.Helper()
	leaf := newLeaf(t, key, ca)
	auth, err := NewCertAuth("vpn.example.com", leaf.pem(), keyPEM(t, key, "PRIVATE KEY"))
	if err != nil {
		t.Fatal(err)
	}
	return auth
}

func keyPEM(t testing.TB, key crypto.Signer, format string) []byte {
	t.Helper()
	var der []byte
	var err error
	switch format {
	case "PRIVATE KEY":
		der, err = x509.MarshalPKCS8PrivateKey(key)
	case "EC PRIVATE KEY":
		der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	case "RSA PRIVATE KEY":
		der = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	}
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: format, Bytes: der})
}

// sigAlgOf returns the AlgorithmIdentifier Go's x509 put into a certificate
// signed by key with alg: an independent encoding to compare ours with.
func sigAlgOf(t testing.TB, key crypto.Signer, alg x509.SignatureAlgorithm) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), SignatureAlgorithm: alg}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		TBS    asn1.RawValue
		SigAlg asn1.RawValue
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &c); err != nil {
		t.Fatal(err)
	}
	return c.SigAlg.FullBytes
}

func TestCertSignVerify(t *testing.T) {
	k := getTestKeys(t)
	ca := newCA(t, "Test CA", k.p256, nil)
	otherCA := newCA(t, "Other CA", k.p384, nil)
	octets := []byte("IKE_SA_INIT | nonce | prf(SK_p, ID)")

	tests := []struct {
		name       string
		key        crypto.Signer
		keyFormat  string
		scheme     SignatureScheme
		method     wire.AuthMethod
		goAlg      x509.SignatureAlgorithm // for method 14: the AlgorithmIdentifier expected
		wantNewErr string
	}{
		{"P-256", k.p256, "PRIVATE KEY", SignatureAuto, wire.AuthDigitalSignature, x509.ECDSAWithSHA256, ""},
		{"P-384", k.p384, "EC PRIVATE KEY", SignatureAuto, wire.AuthDigitalSignature, x509.ECDSAWithSHA384, ""},
		{"P-521", k.p521, "PRIVATE KEY", SignatureAuto, wire.AuthDigitalSignature, x509.ECDSAWithSHA512, ""},
		{"RSA-2048", k.rsa, "RSA PRIVATE KEY", SignatureAuto, wire.AuthDigitalSignature, x509.SHA256WithRSA, ""},
		{"RSA-2048 PSS", k.rsa, "PRIVATE KEY", SignatureRSAPSS, wire.AuthDigitalSignature, x509.SHA256WithRSAPSS, ""},
		{"P-256 classic", k.p256, "EC PRIVATE KEY", SignatureClassic, wire.AuthECDSA256, 0, ""},
		{"P-384 classic", k.p384, "PRIVATE KEY", SignatureClassic, wire.AuthECDSA384, 0, ""},
		{"P-521 classic", k.p521, "PRIVATE KEY", SignatureClassic, wire.AuthECDSA521, 0, ""},
		{"RSA classic", k.rsa, "PRIVATE KEY", SignatureClassic, 0, 0, "SHA-1"},
		{"P-256 PSS", k.p256, "PRIVATE KEY", SignatureRSAPSS, 0, 0, "needs an RSA key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := newLeaf(t, tt.key, ca)
			local, err := NewCertAuthScheme("vpn.example.com", leaf.pem(), keyPEM(t, tt.key, tt.keyFormat), tt.scheme)
			if tt.wantNewErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantNewErr) {
					t.Fatalf("NewCertAuthScheme: %v, want error with %q", err, tt.wantNewErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			auth, err := local.Sign(nil, octets)
			if err != nil {
				t.Fatal(err)
			}
			if auth.Method != tt.method {
				t.Fatalf("method %d, want %d", auth.Method, tt.method)
			}
			if tt.goAlg != 0 {
				want := sigAlgOf(t, tt.key, tt.goAlg)
				if int(auth.Data[0]) != len(want) || !bytes.HasPrefix(auth.Data[1:], want) {
					t.Fatalf("AlgorithmIdentifier %x, want %02x%x", auth.Data[:min(len(auth.Data), 1+len(want))], len(want), want)
				}
			}
			id := local.Identity()
			certs := local.Certs()
			if len(certs) != 1 || certs[0].Encoding != 4 || !bytes.Equal(certs[0].Data, leaf.cert.Raw) {
				t.Fatalf("Certs = %+v", certs)
			}

			tampered := bytes.Clone(octets)
			tampered[3] ^= 0x80
			badSig := &wire.Auth{Method: auth.Method, Data: bytes.Clone(auth.Data)}
			badSig.Data[len(badSig.Data)-1] ^= 1
			checks := []struct {
				name     string
				remoteID string
				caPEM    []byte
				octets   []byte
				id       string
				auth     *wire.Auth
				errHas   string
			}{
				{"ok", "vpn.example.com", ca.pem(), octets, "", auth, ""},
				{"ok any id", "", ca.pem(), octets, "", auth, ""},
				{"ok other SAN", "", ca.pem(), octets, "gw.example.com", auth, ""},
				{"tampered octets", "vpn.example.com", ca.pem(), tampered, "", auth, "signature of 'vpn.example.com' invalid"},
				{"tampered signature", "vpn.example.com", ca.pem(), octets, "", badSig, "invalid"},
				{"wrong CA", "vpn.example.com", otherCA.pem(), octets, "", auth, "certificate of 'vpn.example.com' not trusted"},
				{"remote id mismatch", "other.example.com", ca.pem(), octets, "", auth, "peer identity 'vpn.example.com' is not the expected 'other.example.com'"},
				{"id not in cert", "", ca.pem(), octets, "evil.example.com", auth, "identity 'evil.example.com' does not match certificate"},
				{"psk method", "", ca.pem(), octets, "", &wire.Auth{Method: wire.AuthPSK, Data: auth.Data}, "expected a certificate signature"},
			}
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) {
					peer, err := NewCertPeer(c.remoteID, c.caPEM)
					if err != nil {
						t.Fatal(err)
					}
					pid := id
					if c.id != "" {
						if pid, err = ParseIdentity(c.id); err != nil {
							t.Fatal(err)
						}
					}
					checkAuthErr(t, peer.Verify(nil, c.octets, pid, c.auth, certs), c.errHas)
				})
			}
		})
	}
}

func TestCertPeerChainAndIdentities(t *testing.T) {
	k := getTestKeys(t)
	root := newCA(t, "Root CA", k.p384, nil)
	inter := newCA(t, "Intermediate CA", k.rsa, &root)
	leaf := newLeaf(t, k.p256, inter)
	octets := []byte("signed octets")
	certPEM := append(leaf.pem(), inter.pem()...)

	local, err := NewCertAuth("", certPEM, keyPEM(t, k.p256, "PRIVATE KEY"))
	if err != nil {
		t.Fatal(err)
	}
	if id := local.Identity(); id.IDType != wire.IDDERASN1DN || !bytes.Equal(id.Data, leaf.cert.RawSubject) {
		t.Fatalf("default identity %+v, want the subject DN", id)
	}
	chain := local.Certs()
	if len(chain) != 2 || !bytes.Equal(chain[1].Data, inter.cert.Raw) {
		t.Fatalf("Certs did not include the intermediate")
	}

	peer, err := NewCertPeer("", root.pem())
	if err != nil {
		t.Fatal(err)
	}
	reqs := peer.CertReqs()
	h := sha1.Sum(root.cert.RawSubjectPublicKeyInfo)
	if len(reqs) != 1 || reqs[0].Encoding != 4 || !bytes.Equal(reqs[0].Data, h[:]) {
		t.Fatalf("CertReqs = %+v, want SHA-1 of the CA's SubjectPublicKeyInfo", reqs)
	}
	two, err := NewCertPeer("", append(root.pem(), inter.pem()...))
	if err != nil {
		t.Fatal(err)
	}
	if r := two.CertReqs(); len(r) != 1 || len(r[0].Data) != 40 {
		t.Fatalf("two CAs: CertReqs = %+v", r)
	}

	tests := []struct {
		localID  string
		remoteID string
		certs    []*wire.Cert
		now      time.Time
		errHas   string
	}{
		{localID: "vpn.example.com", remoteID: "VPN.example.com"},
		{localID: "gw.example.com", remoteID: "fqdn:gw.example.com"},
		{localID: "admin@example.com", remoteID: "admin@example.com"},
		{localID: "192.0.2.1", remoteID: "192.0.2.1"},
		{localID: "2001:db8::1", remoteID: "ipv6:2001:db8::1"},
		{localID: "O=Example, CN=vpn.example.com", remoteID: "CN=vpn.example.com, O=Example", errHas: "is not the expected"}, // RDN order matters
		{localID: "O=Example, CN=vpn.example.com", remoteID: "O=Example, CN=vpn.example.com"},
		{localID: "", remoteID: ""},
		{localID: "keyid:#" + hexString(mustKeySHA1(t, leaf.cert)), remoteID: ""},
		{localID: "vpn.example.com", certs: chain[:1], errHas: "certificate of 'vpn.example.com' not trusted"},
		{localID: "vpn.example.com", certs: []*wire.Cert{}, errHas: "sent no X.509 certificate"},
		{localID: "vpn.example.com", certs: []*wire.Cert{{Encoding: 12, Data: []byte("http://x")}}, errHas: "sent no X.509 certificate"},
		{localID: "vpn.example.com", certs: []*wire.Cert{{Encoding: 4, Data: []byte{0x30, 0x03, 1, 2, 3}}}, errHas: "certificate of 'vpn.example.com' malformed"},
		{localID: "vpn.example.com", certs: []*wire.Cert{chain[1], chain[0]}, errHas: "does not match certificate"}, // the first CERT is the signer's
		{localID: "vpn.example.com", now: time.Now().Add(48 * time.Hour), errHas: "not trusted"},
		{localID: "vpn.example.com", certs: repeatCert(chain[0], maxPeerCerts+1), errHas: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.localID+"→"+tt.remoteID, func(t *testing.T) {
			local, err := NewCertAuth(tt.localID, certPEM, keyPEM(t, k.p256, "EC PRIVATE KEY"))
			if err != nil {
				t.Fatal(err)
			}
			auth, err := local.Sign(nil, octets)
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewCertPeer(tt.remoteID, root.pem())
			if err != nil {
				t.Fatal(err)
			}
			if !tt.now.IsZero() {
				p.(*certPeer).now = func() time.Time { return tt.now }
			}
			certs := local.Certs()
			if tt.certs != nil {
				certs = tt.certs
			}
			checkAuthErr(t, p.Verify(nil, octets, local.Identity(), auth, certs), tt.errHas)
		})
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

func mustKeySHA1(t testing.TB, c *x509.Certificate) []byte {
	t.Helper()
	h, ok := publicKeySHA1(c)
	if !ok {
		t.Fatal("cannot hash the public key")
	}
	return h
}

func repeatCert(c *wire.Cert, n int) []*wire.Cert {
	out := make([]*wire.Cert, n)
	for i := range out {
		out[i] = c
	}
	return out
}

// TestLegacyRSAVerify: method 1 is PKCS#1 v1.5 over SHA-1 (RFC 7296 3.8);
// we never sign it, refuse it by default, and verify it for old peers when
// allowed (AllowSHA1RSA).
func TestLegacyRSAVerify(t *testing.T) {
	k := getTestKeys(t)
	ca := newCA(t, "Test CA", k.p256, nil)
	leaf := newLeaf(t, k.rsa, ca)
	octets := []byte("octets")
	h := sha1.Sum(octets)
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA1, h[:])
	if err != nil {
		t.Fatal(err)
	}
	strict, err := NewCertPeer("vpn.example.com", ca.pem())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := ParseIdentity("vpn.example.com")
	certs := []*wire.Cert{{Encoding: 4, Data: leaf.cert.Raw}}
	checkAuthErr(t, strict.Verify(nil, octets, id, &wire.Auth{Method: wire.AuthRSASig, Data: sig}, certs), "SHA-1")
	peer, err := NewCertPeer("vpn.example.com", ca.pem(), AllowSHA1RSA())
	if err != nil {
		t.Fatal(err)
	}
	checkAuthErr(t, peer.Verify(nil, octets, id, &wire.Auth{Method: wire.AuthRSASig, Data: sig}, certs), "")
	checkAuthErr(t, peer.Verify(nil, []byte("other"), id, &wire.Auth{Method: wire.AuthRSASig, Data: sig}, certs), "RSA signature does not verify")
	checkAuthErr(t, peer.Verify(nil, octets, id, &wire.Auth{Method: wire.AuthDSS, Data: sig}, certs), "not supported")
	// A classic ECDSA method against an RSA certificate.
	checkAuthErr(t, peer.Verify(nil, octets, id, &wire.Auth{Method: wire.AuthECDSA256, Data: make([]byte, 64)}, certs), "ECDSA signature, but the certificate holds an RSA key")
}

func TestSignatureKeyMismatch(t *testing.T) {
	k := getTestKeys(t)
	ca := newCA(t, "Test CA", k.p256, nil)
	ecLeaf := newLeaf(t, k.p384, ca)
	octets := []byte("octets")
	id, _ := ParseIdentity("vpn.example.com")
	peer, err := NewCertPeer("", ca.pem())
	if err != nil {
		t.Fatal(err)
	}
	certs := []*wire.Cert{{Encoding: 4, Data: ecLeaf.cert.Raw}}
	p256Leaf := newLeaf(t, k.p256, ca)
	classic, err := NewCertAuthScheme("vpn.example.com", p256Leaf.pem(), keyPEM(t, k.p256, "PRIVATE KEY"), SignatureClassic)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := classic.Sign(nil, octets)
	checkAuthErr(t, peer.Verify(nil, octets, id, a, certs), "needs a P-256 key")
	rsaAuth := gatewayCertAuth(t, k.rsa, ca)
	a, _ = rsaAuth.Sign(nil, octets)
	checkAuthErr(t, peer.Verify(nil, octets, id, a, certs), "RSA signature, but the certificate holds an ECDSA key")
	checkAuthErr(t, peer.Verify(nil, octets, id, &wire.Auth{Method: wire.AuthECDSA384, Data: make([]byte, 95)}, certs), "want 96")
	checkAuthErr(t, peer.Verify(nil, octets, id, nil, certs), "no AUTH")
}

func TestAlgorithmIdentifierParsing(t *testing.T) {
	mk := func(v any) []byte {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sha256AI := pkix.AlgorithmIdentifier{Algorithm: oidSHA256, Parameters: asn1NULL}
	mgf := func(h pkix.AlgorithmIdentifier) pkix.AlgorithmIdentifier {
		return pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: mk(h)}}
	}
	pss := func(p pssParams) []byte {
		return mk(pkix.AlgorithmIdentifier{Algorithm: oidRSAPSS, Parameters: asn1.RawValue{FullBytes: mk(p)}})
	}
	tests := []struct {
		name   string
		der    []byte
		kind   sigKind
		hash   crypto.Hash
		salt   int
		errHas string
	}{
		{"ecdsa-sha256", mk(pkix.AlgorithmIdentifier{Algorithm: oidECDSASHA256}), kindECDSA, crypto.SHA256, 0, ""},
		{"ecdsa-sha512 NULL", mk(pkix.AlgorithmIdentifier{Algorithm: oidECDSASHA512, Parameters: asn1NULL}), kindECDSA, crypto.SHA512, 0, ""},
		{"rsa-sha384", mk(pkix.AlgorithmIdentifier{Algorithm: oidRSASHA384, Parameters: asn1NULL}), kindRSA, crypto.SHA384, 0, ""},
		{"rsa-sha256 no params", mk(pkix.AlgorithmIdentifier{Algorithm: oidRSASHA256}), kindRSA, crypto.SHA256, 0, ""},
		{"pss sha256", pss(pssParams{Hash: sha256AI, MGF: mgf(sha256AI), SaltLength: 32, TrailerField: 1}), kindRSAPSS, crypto.SHA256, 32, ""},
		{"pss default salt", pss(pssParams{Hash: sha256AI, MGF: mgf(sha256AI), SaltLength: 20, TrailerField: 1}), kindRSAPSS, crypto.SHA256, 20, ""},
		{"pss no params", mk(pkix.AlgorithmIdentifier{Algorithm: oidRSAPSS}), 0, 0, 0, "SHA-1"},
		{"pss mgf hash differs", pss(pssParams{Hash: sha256AI, MGF: mgf(pkix.AlgorithmIdentifier{Algorithm: oidSHA384}), SaltLength: 32, TrailerField: 1}), 0, 0, 0, "MGF1 hash"},
		{"pss bad trailer", pss(pssParams{Hash: sha256AI, MGF: mgf(sha256AI), SaltLength: 32, TrailerField: 2}), 0, 0, 0, "trailer"},
		{"pss negative salt", pss(pssParams{Hash: sha256AI, MGF: mgf(sha256AI), SaltLength: -1, TrailerField: 1}), 0, 0, 0, "salt"},
		{"rsa-sha1", mk(pkix.AlgorithmIdentifier{Algorithm: oidRSASHA1, Parameters: asn1NULL}), 0, 0, 0, "SHA-1"},
		{"ed25519", mk(pkix.AlgorithmIdentifier{Algorithm: oidEd25519}), 0, 0, 0, "Ed25519"},
		{"unknown", mk(pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 3}}), 0, 0, 0, "unsupported signature algorithm 1.2.3"},
		{"ecdsa with params", mk(pkix.AlgorithmIdentifier{Algorithm: oidECDSASHA256, Parameters: asn1.RawValue{FullBytes: []byte{2, 1, 0}}}), 0, 0, 0, "unexpected parameters"},
		{"trailing", append(mk(pkix.AlgorithmIdentifier{Algorithm: oidECDSASHA256}), 0), 0, 0, 0, "trailing"},
		{"garbage", []byte{0x30, 0x05, 1}, 0, 0, 0, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseAlgorithmIdentifier(tt.der)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err %v, want %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.kind != tt.kind || s.hash != tt.hash || s.saltLen != tt.salt || s.method != wire.AuthDigitalSignature {
				t.Fatalf("got %+v", s)
			}
			// What we parse we must encode identically (for our own schemes).
			if again, err := s.algorithmIdentifier(); err != nil || (tt.name != "rsa-sha256 no params" && tt.name != "ecdsa-sha512 NULL" && !bytes.Equal(again, tt.der)) {
				t.Errorf("re-encoded %x, %v; want %x", again, err, tt.der)
			}
		})
	}
}

func TestAuthDataFraming(t *testing.T) {
	ai := []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02} // ecdsa-with-SHA256, RFC 7427 A.3.1
	tests := []struct {
		name   string
		data   []byte
		errHas string
	}{
		{"ok", append(append([]byte{12}, ai...), 1, 2, 3), ""},
		{"empty", nil, "empty"},
		{"zero length", []byte{0, 1, 2}, "cannot hold"},
		{"no signature", append([]byte{12}, ai...), "cannot hold"},
		{"length too long", append([]byte{13}, ai...), "cannot hold"},
		{"length too short", append(append([]byte{11}, ai...), 1), "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, sig, err := parseSignatureAuth(&wire.Auth{Method: wire.AuthDigitalSignature, Data: tt.data})
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err %v, want %q", err, tt.errHas)
				}
				return
			}
			if err != nil || s.kind != kindECDSA || s.hash != crypto.SHA256 || !bytes.Equal(sig, []byte{1, 2, 3}) {
				t.Fatalf("got %+v %x %v", s, sig, err)
			}
		})
	}
}

func TestNewCertAuthErrors(t *testing.T) {
	k := getTestKeys(t)
	ca := newCA(t, "Test CA", k.p256, nil)
	leaf := newLeaf(t, k.p256, ca)
	good := keyPEM(t, k.p256, "PRIVATE KEY")
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}})
	tests := []struct {
		name, id      string
		certPEM, key  []byte
		errHas        string
		errNotContain string
	}{
		{"ok DER cert", "vpn.example.com", leaf.cert.Raw, good, "", ""},
		{"ok EC PARAMETERS first", "vpn.example.com", leaf.pem(), append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 0}}), good...), "", ""},
		{"key of another cert", "vpn.example.com", leaf.pem(), keyPEM(t, k.p384, "PRIVATE KEY"), "does not belong", ""},
		{"id not in cert", "other.example.com", leaf.pem(), good, "has no DNS name other.example.com", ""},
		{"email not in cert", "bob@example.com", leaf.pem(), good, "no e-mail address", ""},
		{"ip not in cert", "198.51.100.1", leaf.pem(), good, "no IP address", ""},
		{"dn not subject", "CN=other", leaf.pem(), good, "certificate subject is 'O=Example, CN=vpn.example.com'", ""},
		{"encrypted key", "vpn.example.com", leaf.pem(), encrypted, "encrypted", ""},
		{"garbage key", "vpn.example.com", leaf.pem(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("SECRETSECRET")}), "malformed", "SECRET"},
		{"no key", "vpn.example.com", leaf.pem(), []byte("nothing"), "no PEM private key", ""},
		{"no cert", "vpn.example.com", []byte("nothing"), good, "no PEM CERTIFICATE", ""},
		{"bad id", "ipv4:x", leaf.pem(), good, "local ID", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCertAuth(tt.id, tt.certPEM, tt.key)
			if tt.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err %v, want %q", err, tt.errHas)
			}
			if tt.errNotContain != "" && strings.Contains(err.Error(), tt.errNotContain) {
				t.Fatalf("error leaks key bytes: %v", err)
			}
		})
	}
	if _, err := NewCertPeer("", []byte("no CA here")); err == nil {
		t.Error("NewCertPeer accepted no CA")
	}
	if _, err := NewCertPeer("ipv6:1.2.3.4", ca.pem()); err == nil {
		t.Error("NewCertPeer accepted a bad remote ID")
	}
}
