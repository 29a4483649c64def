package eap

import (
	"bytes"
	"crypto/tls"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte{1, 1, 0, 5, 1})
	f.Add([]byte{3, 2, 0, 4})
	f.Add([]byte{2, 7, 0, 6, 26, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		q, err := Parse(p.Encode())
		if err != nil || q.Code != p.Code || q.Identifier != p.Identifier || q.Type != p.Type || !bytes.Equal(q.Data, p.Data) {
			t.Fatalf("round trip: %+v -> %+v, %v", p, q, err)
		}
	})
}

// FuzzPeer feeds a peer, fresh and after a challenge, arbitrary server
// packets: errors are fine, panics and acceptance without proof are not.
func FuzzPeer(f *testing.F) {
	chal := append([]byte{1, 3, 0, 30, 26, opChallenge, 3, 0, 25, 16}, make([]byte, 16)...)
	chal = append(chal, "roam"...)
	f.Add(chal, []byte{3, 4, 0, 4})
	f.Add(chal, append([]byte{1, 4, 0, 55, 26, opSuccess, 3, 0, 50}, "S=407A5589115FD0D6209F510FE9C04566932CDA56 M=hello"...))
	f.Add([]byte{1, 1, 0, 5, 1}, []byte{4, 2, 0, 4})
	f.Add(append([]byte{1, 4, 0, 14, 26, opFailure, 3, 0, 9}, "E=691"...), []byte{1, 5, 0, 6, 3, 26})
	f.Fuzz(func(t *testing.T, first, second []byte) {
		m, err := NewMSCHAPv2("alice", []byte("pw"), &fixedRand{})
		if err != nil {
			t.Fatal(err)
		}
		p := NewPeer([]byte("alice"), m)
		for _, msg := range [][]byte{first, second} {
			_, done, _ := p.Handle(msg)
			if done && !m.Complete() {
				t.Fatal("done without the method completing")
			}
		}
		if p.MSK() != nil && !m.Complete() {
			t.Fatal("MSK without completion")
		}
	})
}

// FuzzServer feeds the server arbitrary responses after its Identity and
// Challenge requests.
func FuzzServer(f *testing.F) {
	f.Add([]byte{2, 0, 0, 10, 1, 'a', 'l', 'i', 'c', 'e'}, []byte{2, 1, 0, 6, 3, 26})
	resp := append([]byte{2, 1, 0, 60, 26, opResponse, 1, 0, 55, 49}, make([]byte, 49)...)
	f.Add([]byte{2, 0, 0, 10, 1, 'a', 'l', 'i', 'c', 'e'}, append(resp, "alice"...))
	f.Fuzz(func(t *testing.T, first, second []byte) {
		s := NewMSCHAPv2Server(func(u string) ([]byte, bool) { return []byte("pw"), u == "alice" }, &fixedRand{})
		if _, err := s.Start(); err != nil {
			t.Fatal(err)
		}
		for _, msg := range [][]byte{first, second} {
			if _, res, _ := s.Handle(msg); res == Succeeded {
				t.Fatal("server succeeded without a verified response and acknowledgement")
			}
		}
	})
}

// FuzzTLSPeer feeds an EAP-TLS peer, after its Start, arbitrary frames
// (fragments, lengths, TLS records): errors are fine, completion without a
// handshake is not.
func FuzzTLSPeer(f *testing.F) {
	f.Add([]byte{0xc0, 0, 0, 0, 10, 0x16, 3, 3}, []byte{0x00, 1, 2})
	f.Add([]byte{0x00, 0x16, 3, 3, 0, 2, 2, 0}, []byte{0x00})
	f.Add([]byte{0x80, 0, 0, 0, 1, 0x15}, []byte{0x20})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		m := NewTLS(&tls.Config{InsecureSkipVerify: true})
		defer m.Close()
		if _, err := m.Process([]byte{tlsFlagStart}); err != nil {
			t.Fatal(err)
		}
		for _, d := range [][]byte{a, b} {
			m.Process(d)
		}
		if m.Complete() {
			t.Fatal("complete after junk")
		}
	})
}
