package lab

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Identities used by the lab's certificates and configs.
const (
	GatewayID = "vpn.example.com"
	ClientID  = "alice@example.com"
)

// PKI is a throwaway CA with one gateway and one client certificate,
// written as PEM files that strongSwan and roam both read.
type PKI struct {
	Dir        string
	CACert     string // root CA certificate (PEM)
	GatewayCrt string // SAN DNS:vpn.example.com, followed by Intermediate if any
	GatewayKey string // PKCS#8 PEM
	ClientCrt  string // SAN email:alice@example.com, followed by Intermediate if any
	ClientKey  string // PKCS#8 PEM
	// Intermediate is the CA certificate between the root and the end
	// entities, or "" when the root signs them directly.
	Intermediate string
}

// NewPKI generates an ECDSA P-256 CA and both end-entity certificates,
// signed by it directly, into dir.
func NewPKI(dir string) (*PKI, error) {
	return newPKI(dir, func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }, false)
}

// NewRSAChainPKI generates a chain of three with RSA keys of bits: root
// CA, intermediate CA, and the gateway and client certificates under the
// intermediate. Large keys make large IKE_AUTH messages (RFC 7383 tests).
func NewRSAChainPKI(dir string, bits int) (*PKI, error) {
	return newPKI(dir, func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, bits) }, true)
}

func newPKI(dir string, newKey func() (crypto.Signer, error), intermediate bool) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	p := &PKI{
		Dir:        dir,
		CACert:     filepath.Join(dir, "ca.pem"),
		GatewayCrt: filepath.Join(dir, "gateway.pem"),
		GatewayKey: filepath.Join(dir, "gateway.key"),
		ClientCrt:  filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client.key"),
	}
	now := time.Now()
	serial := int64(0)
	// issue signs tmpl for a fresh key with parent (nil: self-signed).
	issue := func(tmpl *x509.Certificate, cn string, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
		k, err := newKey()
		if err != nil {
			return nil, nil, fmt.Errorf("pki: %w", err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.Subject = pkix.Name{Organization: []string{"roam lab"}, CommonName: cn}
		tmpl.NotBefore = now.Add(-time.Hour)
		tmpl.NotAfter = now.Add(24 * time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.Public(), parentKey)
		if err != nil {
			return nil, nil, fmt.Errorf("pki: %s: %w", cn, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("pki: %s: %w", cn, err)
		}
		return c, k, nil
	}
	caTmpl := func() *x509.Certificate {
		return &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	}
	ca, caKey, err := issue(caTmpl(), "roam lab CA", nil, nil)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.CACert, 0o644, ca); err != nil {
		return nil, err
	}
	signer, signerKey := ca, caKey
	var chain []*x509.Certificate // sent after each end-entity certificate
	if intermediate {
		if signer, signerKey, err = issue(caTmpl(), "roam lab intermediate CA", ca, caKey); err != nil {
			return nil, err
		}
		p.Intermediate = filepath.Join(dir, "intermediate.pem")
		if err := writePEM(p.Intermediate, 0o644, signer); err != nil {
			return nil, err
		}
		chain = append(chain, signer)
	}
	leaf := func(cn string, tmpl *x509.Certificate, crt, key string) error {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		c, k, err := issue(tmpl, cn, signer, signerKey)
		if err != nil {
			return err
		}
		pk, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		if err := writePEM(crt, 0o644, append([]*x509.Certificate{c}, chain...)...); err != nil {
			return err
		}
		return writeBlock(key, "PRIVATE KEY", pk, 0o600)
	}
	// strongSwan requires the serverAuth/ikeIntermediate EKU only when
	// told to; leaving EKUs out keeps the certificates acceptable to both.
	if err := leaf(GatewayID, &x509.Certificate{DNSNames: []string{GatewayID}}, p.GatewayCrt, p.GatewayKey); err != nil {
		return nil, err
	}
	if err := leaf(ClientID, &x509.Certificate{EmailAddresses: []string{ClientID}}, p.ClientCrt, p.ClientKey); err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path string, mode os.FileMode, certs ...*x509.Certificate) error {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func writeBlock(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
