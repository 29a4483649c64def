package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
)

func TestEAPAuthenticators(t *testing.T) {
	p := &config.Profile{Name: "corp", Auth: config.AuthEAPMSCHAPv2, LocalID: "alice@example.com",
		EAPIdentity: "alice", RemoteID: "vpn.example.com", CA: "/nonexistent/ca.pem"}
	if _, _, err := authenticators(p); err == nil || !strings.Contains(err.Error(), "ca:") {
		t.Fatalf("missing CA: %v", err)
	}
	p.CA = writeTestCA(t)
	if _, _, err := authenticators(p); err == nil || !strings.Contains(err.Error(), "no password") {
		t.Fatalf("without password: %v", err)
	}
	p.Password = []byte("s3cret")
	local, peer, err := authenticators(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := local.(*ike.EAPAuth); !ok || peer == nil || len(peer.CertReqs()) != 1 {
		t.Fatalf("local %T, peer %T", local, peer)
	}
}

// writeTestCA writes a self-signed CA certificate and returns its path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
