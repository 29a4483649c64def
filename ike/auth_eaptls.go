package ike

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
)

// NewEAPTLSAuth authenticates us as localID (the IDi) with EAP-TLS: the
// client certificate certPEM (intermediates may follow) and its key
// keyPEM go inside TLS, and the EAP server's certificate must chain to a
// CA in caPEM and, when remoteID is set, name it. eapIdentity is the
// EAP-Identity ("" means localID); strongSwan expects the client
// certificate to name it. eapOnly as in NewEAPMSCHAPv2Auth. TLS 1.2
// (RFC 5216) only: strongSwan 5.9.8 negotiates 1.2 by default, and its
// TLS 1.3, when enabled, does not interoperate with crypto/tls.
func NewEAPTLSAuth(localID, eapIdentity string, certPEM, keyPEM, caPEM []byte, remoteID string, eapOnly bool) (*EAPAuth, error) {
	id, err := ParseIdentity(localID)
	if err != nil {
		return nil, fmt.Errorf("local ID: %w", err)
	}
	if eapIdentity == "" {
		eapIdentity = localID
	}
	chain, signer, err := parseCertAndKey(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	_, roots, err := parseCAs(caPEM)
	if err != nil {
		return nil, err
	}
	remote, err := parseRemoteID(remoteID)
	if err != nil {
		return nil, err
	}
	cert := tls.Certificate{PrivateKey: signer, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, slices.Clone(c.Raw))
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		// The server is checked below against the profile's CA and remote
		// ID, the way IKE checks the gateway, not against a host name.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifyEAPServer(roots, remote, remoteID),
	}
	return &EAPAuth{id: id, eapIdentity: []byte(eapIdentity), eapOnly: eapOnly,
		method: func(io.Reader) (eap.Method, error) { return eap.NewTLS(cfg), nil }}, nil
}

func verifyEAPServer(roots *x509.CertPool, remote *wire.Identification, remoteText string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("EAP-TLS server sent no certificate")
		}
		if len(raw) > maxPeerCerts {
			return fmt.Errorf("EAP-TLS server sent more than %d certificates", maxPeerCerts)
		}
		var leaf *x509.Certificate
		inter := x509.NewCertPool()
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("EAP-TLS server certificate malformed: %w", err)
			}
			if i == 0 {
				leaf = c
			} else {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: time.Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("EAP-TLS server certificate not trusted: %w", err)
		}
		if remote != nil {
			if err := identityInCert(remote, leaf); err != nil {
				return fmt.Errorf("EAP-TLS server certificate does not name '%s': %w", remoteText, err)
			}
		}
		return nil
	}
}
