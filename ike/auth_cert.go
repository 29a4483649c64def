package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// certEncodingX509 is the CERT/CERTREQ encoding "X.509 Certificate -
// Signature" (RFC 7296 3.6); for CERTREQ its data is a list of SHA-1
// hashes of trusted CAs' SubjectPublicKeyInfo.
const certEncodingX509 = 4

// maxPeerCerts bounds the chain a peer may make us parse and verify.
const maxPeerCerts = 8

type certAuth struct {
	id     *wire.Identification
	chain  []*x509.Certificate
	signer crypto.Signer
	scheme sigScheme
}

// NewCertAuth authenticates us with an X.509 certificate: certPEM holds our
// certificate, optionally followed by intermediates to send along; keyPEM
// its private key (PKCS#8, SEC 1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE
// KEY"). localID "" uses the certificate's subject DN; any other identity
// must be one the certificate names, or the peer would refuse it anyway.
// Signatures use SignatureAuto.
func NewCertAuth(localID string, certPEM, keyPEM []byte) (LocalAuth, error) {
	return NewCertAuthScheme(localID, certPEM, keyPEM, SignatureAuto)
}

// NewCertAuthScheme is NewCertAuth with a choice of signature scheme.
func NewCertAuthScheme(localID string, certPEM, keyPEM []byte, scheme SignatureScheme) (LocalAuth, error) {
	chain, signer, err := parseCertAndKey(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	s, err := chooseScheme(signer.Public(), scheme)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: %w", leaf.Subject, err)
	}
	var id *wire.Identification
	if localID == "" {
		id = &wire.Identification{IDType: wire.IDDERASN1DN, Data: slices.Clone(leaf.RawSubject)}
	} else {
		if id, err = ParseIdentity(localID); err != nil {
			return nil, fmt.Errorf("local ID: %w", err)
		}
		if err := identityInCert(id, leaf); err != nil {
			return nil, fmt.Errorf("local ID %q: %w", localID, err)
		}
	}
	return &certAuth{id: id, chain: chain, signer: signer, scheme: s}, nil
}

func (a *certAuth) Identity() *wire.Identification {
	return &wire.Identification{IDType: a.id.IDType, Data: slices.Clone(a.id.Data)}
}

func (a *certAuth) Certs() []*wire.Cert {
	cs := make([]*wire.Cert, len(a.chain))
	for i, c := range a.chain {
		cs[i] = &wire.Cert{Encoding: certEncodingX509, Data: slices.Clone(c.Raw)}
	}
	return cs
}

func (a *certAuth) Sign(_ *ikecrypto.PRF, octets []byte) (*wire.Auth, error) {
	return a.scheme.sign(a.signer, octets)
}

type certPeer struct {
	remote     *wire.Identification // nil: any identity the CA certified
	remoteText string
	roots      *x509.CertPool
	certReq    []byte
	now        func() time.Time
	// allowSHA1RSA accepts AUTH method 1 (RSA over SHA-1).
	allowSHA1RSA bool
}

// NewCertPeer accepts a peer whose certificate chains to a CA in caPEM
// (one or more PEM certificates), whose AUTH signature verifies with that
// certificate's key, and whose ID is named by the certificate. remoteID ""
// accepts any such identity; otherwise the peer's ID must also equal it.
//
// RSA signatures over SHA-1 (AUTH method 1) are refused unless opts holds
// AllowSHA1RSA.
func NewCertPeer(remoteID string, caPEM []byte, opts ...CertPeerOption) (PeerAuth, error) {
	remote, err := parseRemoteID(remoteID)
	if err != nil {
		return nil, err
	}
	cas, roots, err := parseCAs(caPEM)
	if err != nil {
		return nil, err
	}
	var req []byte
	for _, ca := range cas {
		h := sha1.Sum(ca.RawSubjectPublicKeyInfo)
		req = append(req, h[:]...)
	}
	p := &certPeer{remote: remote, remoteText: remoteID, roots: roots, certReq: req, now: time.Now}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// CertPeerOption adjusts NewCertPeer.
type CertPeerOption func(*certPeer)

// AllowSHA1RSA accepts RSA signatures over SHA-1 (AUTH method 1) from
// peers too old for RFC 7427.
func AllowSHA1RSA() CertPeerOption { return func(p *certPeer) { p.allowSHA1RSA = true } }

func (p *certPeer) CertReqs() []*wire.CertReq {
	return []*wire.CertReq{{Encoding: certEncodingX509, Data: slices.Clone(p.certReq)}}
}

func (p *certPeer) Verify(_ *ikecrypto.PRF, octets []byte, id *wire.Identification, auth *wire.Auth, certs []*wire.Cert) error {
	if err := checkRemoteID(p.remote, p.remoteText, id); err != nil {
		return err
	}
	who := formatIdentity(id)
	if auth == nil {
		return authErrorf(nil, "peer '%s' sent no AUTH payload", who)
	}
	if auth.Method == wire.AuthPSK {
		return authErrorf(nil, "peer '%s' used a pre-shared key, expected a certificate signature", who)
	}
	if auth.Method == wire.AuthRSASig && !p.allowSHA1RSA {
		return authErrorf(nil, "peer '%s' signed with RSA over SHA-1 (AUTH method 1), which is refused unless allow_sha1_rsa = true", who)
	}
	var leaf *x509.Certificate
	inter := x509.NewCertPool()
	n := 0
	for _, c := range certs {
		if c.Encoding != certEncodingX509 {
			continue // e.g. hash-and-URL, which we never ask for
		}
		if n++; n > maxPeerCerts {
			return authErrorf(nil, "peer '%s' sent more than %d certificates", who, maxPeerCerts)
		}
		cert, err := x509.ParseCertificate(c.Data)
		if err != nil {
			return authErrorf(err, "certificate of '%s' malformed", who)
		}
		if leaf == nil {
			leaf = cert // RFC 7296 3.6: the first CERT holds the signing key
		} else {
			inter.AddCert(cert)
		}
	}
	if leaf == nil {
		return authErrorf(nil, "peer '%s' sent no X.509 certificate", who)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         p.roots,
		Intermediates: inter,
		CurrentTime:   p.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return authErrorf(err, "certificate of '%s' not trusted", who)
	}
	if err := identityInCert(id, leaf); err != nil {
		return authErrorf(err, "identity '%s' does not match certificate", who)
	}
	if err := leafUsageOK(leaf); err != nil {
		return authErrorf(err, "certificate of '%s' not for IKE", who)
	}
	if err := verifySignatureAuth(leaf.PublicKey, auth, octets); err != nil {
		return authErrorf(err, "signature of '%s' invalid", who)
	}
	return nil
}

// identityInCert checks that cert names id: an FQDN among its DNS names,
// an RFC 822 address among its e-mail addresses, an IP among its IP
// addresses, a DN as its subject, a key ID as its subject key identifier
// or the SHA-1 of its public key.
func identityInCert(id *wire.Identification, cert *x509.Certificate) error {
	switch id.IDType {
	case wire.IDFQDN:
		name := strings.TrimSuffix(string(id.Data), ".")
		for _, d := range cert.DNSNames {
			if strings.EqualFold(strings.TrimSuffix(d, "."), name) {
				return nil
			}
		}
		return fmt.Errorf("certificate %s has no DNS name %s", certName(cert), printable(name))
	case wire.IDRFC822Addr:
		for _, e := range cert.EmailAddresses {
			if strings.EqualFold(e, string(id.Data)) {
				return nil
			}
		}
		return fmt.Errorf("certificate %s has no e-mail address %s", certName(cert), printable(string(id.Data)))
	case wire.IDIPv4Addr, wire.IDIPv6Addr:
		ip := net.IP(id.Data)
		if (id.IDType == wire.IDIPv4Addr && len(id.Data) != 4) || (id.IDType == wire.IDIPv6Addr && len(id.Data) != 16) {
			return errors.New("malformed IP address identity")
		}
		for _, a := range cert.IPAddresses {
			if a.Equal(ip) {
				return nil
			}
		}
		return fmt.Errorf("certificate %s has no IP address %s", certName(cert), ip)
	case wire.IDDERASN1DN:
		if dnEqual(id.Data, cert.RawSubject) {
			return nil
		}
		return fmt.Errorf("certificate subject is %s", certName(cert))
	case wire.IDKeyID:
		if len(cert.SubjectKeyId) > 0 && bytes.Equal(cert.SubjectKeyId, id.Data) {
			return nil
		}
		if h, ok := publicKeySHA1(cert); ok && bytes.Equal(h, id.Data) {
			return nil
		}
		return fmt.Errorf("certificate %s has another key ID", certName(cert))
	}
	return fmt.Errorf("identity type %d cannot be bound to a certificate", id.IDType)
}

func certName(cert *x509.Certificate) string {
	if s, err := dnString(cert.RawSubject); err == nil && s != "" {
		return "'" + printable(s) + "'"
	}
	return "'" + printable(cert.Subject.String()) + "'"
}

// publicKeySHA1 is the SHA-1 of the subjectPublicKey BIT STRING, the key
// identifier of RFC 5280 4.2.1.2 method (1).
func publicKeySHA1(cert *x509.Certificate) ([]byte, bool) {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil || len(rest) != 0 {
		return nil, false
	}
	h := sha1.Sum(spki.PublicKey.Bytes)
	return h[:], true
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// parseCertAndKey reads our certificate chain and private key, and checks
// that the key is the leaf's.
func parseCertAndKey(certPEM, keyPEM []byte) ([]*x509.Certificate, crypto.Signer, error) {
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	signer, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("private key: %w", err)
	}
	if !publicKeysEqual(chain[0].PublicKey, signer.Public()) {
		return nil, nil, fmt.Errorf("private key does not belong to certificate %q", chain[0].Subject)
	}
	return chain, signer, nil
}

// parseCAs reads the trusted CA certificates, also as a pool.
func parseCAs(caPEM []byte) ([]*x509.Certificate, *x509.CertPool, error) {
	cas, err := parseCertificates(caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA: %w", err)
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	return cas, roots, nil
}

// parseCertificates reads PEM "CERTIFICATE" blocks in order, or a single
// DER certificate.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return nil, errors.New("no PEM CERTIFICATE block and not a DER certificate")
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// parsePrivateKey reads the first private key block of keyPEM. Errors
// never quote the key material.
func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	rest := keyPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")
		}
		if _, encrypted := block.Headers["Proc-Type"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("encrypted private keys are not supported")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue // e.g. "EC PARAMETERS" that openssl writes first
		}
		if err != nil {
			return nil, fmt.Errorf("%s: malformed", block.Type)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return nil, errors.New("Ed25519 keys are not supported")
		}
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
}

// oidIPsecIKE is id-kp-ipsecIKE (RFC 4945 5.1.3.12).
var oidIPsecIKE = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 17}

// leafUsageOK checks that a peer's certificate may sign IKE AUTH: its
// KeyUsage, if present, has digitalSignature or nonRepudiation (RFC 4945
// 5.1.3.2); its ExtendedKeyUsage, if present, names IKE, TLS server or
// client authentication (what VPN CAs issue, strongSwan's among them), or
// any purpose. A certificate the CA issued for code or mail signing alone
// does not log in.
func leafUsageOK(c *x509.Certificate) error {
	if c.KeyUsage != 0 && c.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return fmt.Errorf("its key usage does not allow signatures")
	}
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return nil
	}
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageAny, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth:
			return nil
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		if o.Equal(oidIPsecIKE) {
			return nil
		}
	}
	return fmt.Errorf("its extended key usage names neither IKE nor TLS authentication")
}
