package ike

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// TestEstablishCert runs IKE_AUTH with X.509 certificates (RFC 7427
// signatures) both ways, reusing the test PKI of auth_cert_test.go.
func TestEstablishCert(t *testing.T) {
	keys := getTestKeys(t)
	ca := newCA(t, "Example Root CA", keys.p256, nil)
	otherCA := newCA(t, "Other CA", keys.p384, nil)
	clientLeaf := func(key crypto.Signer) testCert {
		return issue(t, &x509.Certificate{
			Subject:        pkix.Name{CommonName: "alice", Organization: []string{"Example"}},
			EmailAddresses: []string{"alice@example.com"},
			KeyUsage:       x509.KeyUsageDigitalSignature,
		}, key, &ca)
	}
	tests := []struct {
		name          string
		clientKey     crypto.Signer
		gwKey         crypto.Signer
		clientTrusts  testCert
		gatewayTrusts testCert
		want          error
	}{
		{"ecdsa-client-rsa-gateway", keys.p384, keys.rsa, ca, ca, nil},
		{"rsa-client-ecdsa-gateway", keys.rsa, keys.p256, ca, ca, nil},
		{"client-distrusts-gateway", keys.p256, keys.p256, otherCA, ca, ErrAuthenticationFailed},
		{"gateway-distrusts-client", keys.p256, keys.p256, ca, otherCA, ErrAuthenticationFailed},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gwAuth := gatewayCertAuth(t, tc.gwKey, ca)
			e := newEnv(t, int64(300+i), func(r *ResponderConfig) {
				r.LocalAuth = gwAuth
				r.PeerAuth = func(id *wire.Identification) (PeerAuth, error) {
					return NewCertPeer(identityString(id), tc.gatewayTrusts.pem())
				}
			})
			var err error
			cc := clientLeaf(tc.clientKey)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			if cfg.LocalAuth, err = NewCertAuth("alice@example.com", cc.pem(), keyPEM(t, tc.clientKey, "PRIVATE KEY")); err != nil {
				t.Fatal(err)
			}
			if cfg.PeerAuth, err = NewCertPeer("vpn.example.com", tc.clientTrusts.pem()); err != nil {
				t.Fatal(err)
			}
			c := e.dial(cfg)
			est, err := c.wait(t, 10*time.Second)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if est.PeerID != "vpn.example.com" || len(est.Children) != 1 {
				t.Fatalf("established %+v", est)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			if gw.PeerID != "alice@example.com" {
				t.Fatalf("gateway sees %q", gw.PeerID)
			}
		})
	}
}
