package ike

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
)

// TestEstablishEAPTLS runs IKE_AUTH with EAP-TLS inside: the client's
// certificate travels in TLS (fragmented over several IKE_AUTH round
// trips by the RSA server chain), the MSK keys both final AUTHs.
func TestEstablishEAPTLS(t *testing.T) {
	keys := getTestKeys(t)
	ca := newCA(t, "Example Root CA", keys.p256, nil)
	otherCA := newCA(t, "Other CA", keys.p384, nil)
	gwCert := newLeaf(t, keys.rsa, ca)
	gwAuth, err := NewCertAuth("vpn.example.com", gwCert.pem(), keyPEM(t, keys.rsa, "PRIVATE KEY"))
	if err != nil {
		t.Fatal(err)
	}
	alice := func(parent testCert) testCert {
		return issue(t, &x509.Certificate{
			Subject:        pkix.Name{CommonName: "alice"},
			EmailAddresses: []string{"alice@example.com"},
			KeyUsage:       x509.KeyUsageDigitalSignature,
		}, keys.p256, &parent)
	}
	tests := []struct {
		name         string
		client       testCert
		clientTrusts testCert // the EAP-TLS server's CA (IKE uses ca)
		tlsRemote    string   // the name the EAP-TLS server must have
		want         string
	}{
		{name: "mutual", client: alice(ca), clientTrusts: ca, tlsRemote: "vpn.example.com"},
		{name: "any EAP server name", client: alice(ca), clientTrusts: ca},
		{name: "client from other CA", client: alice(otherCA), clientTrusts: ca, tlsRemote: "vpn.example.com", want: "EAP-TLS: the gateway refused our certificate"},
		{name: "EAP server names another host", client: alice(ca), clientTrusts: ca, tlsRemote: "gw.example.org", want: "EAP-TLS server certificate does not name 'gw.example.org'"},
		{name: "EAP server untrusted", client: alice(ca), clientTrusts: otherCA, tlsRemote: "vpn.example.com", want: "EAP-TLS server certificate not trusted"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(700+i), func(r *ResponderConfig) {
				r.LocalAuth = gwAuth
				r.PeerAuth = func(*wire.Identification) (PeerAuth, error) { return nil, errors.New("EAP clients only") }
				r.EAPServer = func(*wire.Identification) (EAPServer, error) {
					pool := x509.NewCertPool()
					pool.AddCert(ca.cert)
					return eap.NewTLSServer(&tls.Config{
						Certificates: []tls.Certificate{{Certificate: [][]byte{gwCert.cert.Raw}, PrivateKey: keys.rsa}},
						ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool,
					}, seqReader()), nil
				}
			})
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			if cfg.LocalAuth, err = NewEAPTLSAuth("alice@example.com", "", tc.client.pem(), keyPEM(t, keys.p256, "PRIVATE KEY"),
				tc.clientTrusts.pem(), tc.tlsRemote, false); err != nil {
				t.Fatal(err)
			}
			if cfg.PeerAuth, err = NewCertPeer("vpn.example.com", ca.pem()); err != nil {
				t.Fatal(err)
			}
			c := e.dial(cfg)
			est, err := c.wait(t, 20*time.Second)
			if tc.want != "" {
				if !errors.Is(err, ErrAuthenticationFailed) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 5*time.Second)
			if len(est.Children) != 1 || len(gw.Children) != 1 || !bytes.Equal(est.Children[0].KeyOut, gw.Children[0].KeyIn) {
				t.Fatalf("established %+v / %+v", est, gw)
			}
		})
	}
}
