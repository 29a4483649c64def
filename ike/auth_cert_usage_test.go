package ike

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
)

// TestLeafKeyUsage: a certificate may sign IKE AUTH only if its KeyUsage,
// when present, allows signatures, and its ExtendedKeyUsage, when present,
// names IKE, TLS server or client, or any purpose (RFC 4945 5.1.3.2,
// 5.1.3.12, as strongSwan checks).
func TestLeafKeyUsage(t *testing.T) {
	k := getTestKeys(t)
	root := newCA(t, "Root CA", k.p384, nil)
	oidIPsecIKE := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 17}
	tests := []struct {
		name    string
		ku      x509.KeyUsage
		eku     []x509.ExtKeyUsage
		unknown []asn1.ObjectIdentifier
		errHas  string
	}{
		{"digital-signature", x509.KeyUsageDigitalSignature, nil, nil, ""},
		{"non-repudiation", x509.KeyUsageContentCommitment, nil, nil, ""},
		{"no-key-usage", 0, nil, nil, ""},
		{"encipherment-only", x509.KeyUsageKeyEncipherment, nil, nil, "key usage"},
		{"server-auth", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil, ""},
		{"client-auth", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, ""},
		{"any", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, nil, ""},
		{"ipsec-ike", x509.KeyUsageDigitalSignature, nil, []asn1.ObjectIdentifier{oidIPsecIKE}, ""},
		{"code-signing", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, nil, "extended key usage"},
		{"email", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, nil, "extended key usage"},
	}
	octets := []byte("signed octets")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leaf := issue(t, &x509.Certificate{
				Subject:            pkix.Name{CommonName: "alice"},
				EmailAddresses:     []string{"alice@example.com"},
				KeyUsage:           tc.ku,
				ExtKeyUsage:        tc.eku,
				UnknownExtKeyUsage: tc.unknown,
			}, k.p256, &root)
			local, err := NewCertAuth("alice@example.com", leaf.pem(), keyPEM(t, k.p256, "PRIVATE KEY"))
			if err != nil {
				t.Fatal(err)
			}
			auth, err := local.Sign(nil, octets)
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewCertPeer("", root.pem())
			if err != nil {
				t.Fatal(err)
			}
			checkAuthErr(t, p.Verify(nil, octets, local.Identity(), auth, local.Certs()), tc.errHas)
		})
	}
}
