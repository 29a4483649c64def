package eap

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSAKey(t *testing.T) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
	})
	return rsaKey
}

func newTestCA(t testing.TB, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCA{cert: c, key: key}
}

func (ca testCA) issue(t testing.TB, cn string, key crypto.Signer, eku x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		DNSNames: []string{cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{eku}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// tlsConverse runs an EAP-TLS peer against a server; it returns the
// peer's error and the server's result, and counts the server's fragments
// that had more to follow.
func tlsConverse(t *testing.T, peer *Peer, srv *TLSServer) (error, Result, int) {
	t.Helper()
	req, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	acks := 0
	for range 100 {
		if p, _ := Parse(req); p != nil && p.Type == TypeTLS && len(p.Data) > 1 && p.Data[0]&tlsFlagMore != 0 {
			acks++
		}
		resp, done, perr := peer.Handle(req)
		if done {
			return nil, Succeeded, acks
		}
		if perr != nil {
			return perr, Continue, acks
		}
		var res Result
		if req, res, err = srv.Handle(resp); err != nil {
			t.Fatalf("server: %v", err)
		}
		if res == Failed {
			_, _, perr := peer.Handle(req)
			return perr, res, acks
		}
	}
	t.Fatal("conversation did not end")
	return nil, 0, 0
}

func TestEAPTLS(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	ecKey := func() crypto.Signer {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	srvCert := ca.issue(t, "vpn.example.com", testRSAKey(t), x509.ExtKeyUsageServerAuth)
	tests := []struct {
		name       string
		clientCert tls.Certificate
		clientCA   *x509.CertPool
		serverName string
		ok         bool
		wantErr    string
	}{
		{"mutual", ca.issue(t, "alice", ecKey(), x509.ExtKeyUsageClientAuth), ca.pool(), "vpn.example.com", true, ""},
		{"client from other CA", other.issue(t, "alice", ecKey(), x509.ExtKeyUsageClientAuth), ca.pool(), "vpn.example.com", false, "EAP-TLS"},
		{"server untrusted", ca.issue(t, "alice", ecKey(), x509.ExtKeyUsageClientAuth), other.pool(), "vpn.example.com", false, "certificate"},
		{"server name wrong", ca.issue(t, "alice", ecKey(), x509.ExtKeyUsageClientAuth), ca.pool(), "evil.example.com", false, "certificate"},
	}
	for _, v := range []struct {
		name          string
		client, serve uint16
		want          uint16
	}{
		{"tls1.2", 0, 0, tls.VersionTLS12},
		{"tls1.3", tls.VersionTLS13, tls.VersionTLS13, tls.VersionTLS13},
		{"tls1.3 client, 1.2 server", tls.VersionTLS13, 0, tls.VersionTLS12},
	} {
		for _, tc := range tests {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				m := NewTLS(&tls.Config{Certificates: []tls.Certificate{tc.clientCert}, RootCAs: tc.clientCA, ServerName: tc.serverName, MaxVersion: v.client})
				defer m.Close()
				peer := NewPeer([]byte("alice"), m)
				srv := NewTLSServer(&tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool(), MaxVersion: v.serve}, &fixedRand{3})
				defer srv.Close()
				perr, res, acks := tlsConverse(t, peer, srv)
				if !tc.ok {
					if perr == nil || !strings.Contains(perr.Error(), tc.wantErr) || res == Succeeded {
						t.Fatalf("peer err %v, server %v", perr, res)
					}
					if peer.MSK() != nil {
						t.Fatal("MSK after failure")
					}
					return
				}
				if perr != nil || res != Succeeded {
					t.Fatalf("peer err %v, server %v", perr, res)
				}
				if len(peer.MSK()) != 64 || !bytes.Equal(peer.MSK(), srv.MSK()) {
					t.Fatalf("MSKs %x / %x", peer.MSK(), srv.MSK())
				}
				if acks == 0 {
					t.Error("the RSA server flight was not fragmented")
				}
				if len(srv.PeerCertificates()) != 1 {
					t.Error("server has no client certificate")
				}
				if got := m.ch.conn.ConnectionState().Version; got != v.want {
					t.Errorf("TLS version %x, want %x", got, v.want)
				}
			})
		}
	}
}

func TestParseTLSFrame(t *testing.T) {
	for _, tc := range []struct {
		in []byte
		ok bool
	}{
		{[]byte{0x20}, true},
		{[]byte{0x80, 0, 0, 0, 2, 1, 2}, true},
		{[]byte{0xc0, 0, 0, 0, 9, 1, 2}, true},
		{[]byte{0x80, 0, 0, 0, 1, 1, 2}, false}, // shorter than its data
		{[]byte{0x80, 0, 0}, false},             // no room for the length
		{[]byte{0x80, 0xff, 0, 0, 0}, false},    // absurd length
		{nil, false},
	} {
		if _, err := parseTLSFrame(tc.in); (err == nil) != tc.ok {
			t.Errorf("%x: %v", tc.in, err)
		}
	}
}

func TestEAPTLSProtocolErrors(t *testing.T) {
	m := NewTLS(&tls.Config{})
	defer m.Close()
	if _, err := m.Process([]byte{0x00, 0x16}); err == nil {
		t.Error("data before Start accepted")
	}
	var fe *FailureError
	p := NewPeer([]byte("alice"), NewTLS(&tls.Config{}))
	if _, _, err := p.Handle((&Packet{Code: CodeFailure, Identifier: 1}).Encode()); !errors.As(err, &fe) {
		t.Errorf("EAP-Failure: %v", err)
	}
}

func TestTLSFailure(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate")}, "EAP-TLS: the gateway refused our certificate (tls: unknown certificate)"},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: handshake failure")}, "EAP-TLS: the gateway ended the handshake (tls: handshake failure)"},
		{errors.New("x509: certificate signed by unknown authority"), "eap-tls: x509: certificate signed by unknown authority"},
	} {
		if got := tlsFailure(tc.err).Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
