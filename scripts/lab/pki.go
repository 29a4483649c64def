package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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

// PKI is a throwaway CA with one gateway and one client certificate, all
// ECDSA P-256, written as PEM files that strongSwan and roam both read.
type PKI struct {
	Dir        string
	CACert     string // CA certificate (PEM)
	GatewayCrt string // SAN DNS:vpn.example.com
	GatewayKey string // PKCS#8 PEM
	ClientCrt  string // SAN email:alice@example.com
	ClientKey  string // PKCS#8 PEM
}

// NewPKI generates the CA and both end-entity certificates into dir.
func NewPKI(dir string) (*PKI, error) {
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
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"roam lab"}, CommonName: "roam lab CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("pki: CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("pki: CA: %w", err)
	}
	if err := writePEM(p.CACert, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	leaf := func(serial int64, cn string, tmpl *x509.Certificate, crt, key string) error {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.Subject = pkix.Name{Organization: []string{"roam lab"}, CommonName: cn}
		tmpl.NotBefore = now.Add(-time.Hour)
		tmpl.NotAfter = now.Add(24 * time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("pki: %s: %w", cn, err)
		}
		pk, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		if err := writePEM(crt, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		return writePEM(key, "PRIVATE KEY", pk, 0o600)
	}
	// strongSwan requires the serverAuth/ikeIntermediate EKU only when
	// told to; leaving EKUs out keeps the certificates acceptable to both.
	if err := leaf(2, GatewayID, &x509.Certificate{DNSNames: []string{GatewayID}}, p.GatewayCrt, p.GatewayKey); err != nil {
		return nil, err
	}
	if err := leaf(3, ClientID, &x509.Certificate{EmailAddresses: []string{ClientID}}, p.ClientCrt, p.ClientKey); err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
