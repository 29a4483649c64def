package eap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// FuzzTLSServer feeds the gateway's EAP-TLS server, after its Start,
// arbitrary responses: fragments, lengths, acknowledgements and TLS
// records. Seeds are the peer's responses of a real conversation (their
// handshake cannot be replayed: the server's random differs every run).
// Errors and failures are fine; a panic, or success without a handshake
// with a certificate from the CA, is not.
func FuzzTLSServer(f *testing.F) {
	ca := newTestCA(f, "Test CA")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	srvCert := ca.issue(f, "vpn.example.com", key, x509.ExtKeyUsageServerAuth)
	cliCert := ca.issue(f, "alice", key, x509.ExtKeyUsageClientAuth)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool()}

	// A real conversation: every response the peer sent.
	m := NewTLS(&tls.Config{Certificates: []tls.Certificate{cliCert}, RootCAs: ca.pool(), ServerName: "vpn.example.com"})
	peer := NewPeer([]byte("alice"), m)
	srv := NewTLSServer(serverCfg, &fixedRand{3})
	req, err := srv.Start()
	if err != nil {
		f.Fatal(err)
	}
	var responses [][]byte
	for range 50 {
		resp, done, err := peer.Handle(req)
		if done || err != nil || resp == nil {
			break
		}
		responses = append(responses, resp)
		var res Result
		if req, res, err = srv.Handle(resp); err != nil || res != Continue {
			break
		}
	}
	m.Close()
	srv.Close()
	if len(responses) < 2 {
		f.Fatalf("real conversation gave %d responses", len(responses))
	}
	for i := range responses {
		a, b := responses[i], []byte{}
		if i+1 < len(responses) {
			b = responses[i+1]
		}
		f.Add(a, b)
	}
	f.Add([]byte{2, 3, 0, 6, 13, 0}, []byte{2, 4, 0, 6, 13, 0})
	f.Add([]byte{2, 3, 0, 10, 13, 0xc0, 0, 1, 0, 0}, []byte{2, 4, 0, 7, 13, 0x40, 0x16})
	f.Add([]byte{2, 3, 0, 5, 3}, []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		s := NewTLSServer(serverCfg, &fixedRand{3})
		defer s.Close()
		if _, err := s.Start(); err != nil {
			t.Fatal(err)
		}
		for _, msg := range [][]byte{a, b} {
			if _, res, _ := s.Handle(msg); res == Succeeded {
				t.Fatal("EAP-TLS server succeeded without a handshake")
			}
		}
		if len(s.MSK()) != 0 {
			t.Fatal("MSK without success")
		}
	})
}
