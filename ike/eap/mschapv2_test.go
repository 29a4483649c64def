package eap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func arr16(t testing.TB, s string) (a [16]byte) {
	copy(a[:], unhex(t, s))
	return a
}

// TestRFC2759Vectors checks the worked example of RFC 2759 9.2 and the key
// derivation of RFC 3079 3.5.3 (128-bit keys), which uses the same inputs.
func TestRFC2759Vectors(t *testing.T) {
	const user, pass = "User", "clientPass"
	authChal := arr16(t, "5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28")
	peerChal := arr16(t, "21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E")

	ch := ChallengeHash(peerChal, authChal, user)
	if want := unhex(t, "D0 2E 43 86 BC E9 12 26"); !bytes.Equal(ch[:], want) {
		t.Errorf("ChallengeHash = %x, want %x", ch, want)
	}
	pwHash, err := NTPasswordHash([]byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE"); !bytes.Equal(pwHash[:], want) {
		t.Errorf("PasswordHash = %x, want %x", pwHash, want)
	}
	nt := GenerateNTResponse(authChal, peerChal, user, pwHash)
	if want := unhex(t, "82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF"); !bytes.Equal(nt[:], want) {
		t.Errorf("NT-Response = %x, want %x", nt, want)
	}
	hh := hashNTPasswordHash(pwHash)
	if want := unhex(t, "41 C0 0C 58 4B D2 D9 1C 40 17 A2 A1 2F A5 9F 3F"); !bytes.Equal(hh[:], want) {
		t.Errorf("PasswordHashHash = %x, want %x", hh, want)
	}
	ar := AuthenticatorResponse(pwHash, nt, peerChal, authChal, user)
	if got := "S=" + strings.ToUpper(hex.EncodeToString(ar[:])); got != "S=407A5589115FD0D6209F510FE9C04566932CDA56" {
		t.Errorf("AuthenticatorResponse = %s", got)
	}
	mk := MasterKey(pwHash, nt)
	if want := unhex(t, "FDECE3717A8C838CB388E527AE3CDD31"); !bytes.Equal(mk[:], want) {
		t.Errorf("MasterKey = %x, want %x", mk, want)
	}
	// RFC 3079 3.5.3 prints the server's SendStartKey128, which is the
	// client's receive key (Magic3): the MSK's second 16 octets.
	msk := GenerateMSK(pwHash, nt)
	if len(msk) != MSKLen {
		t.Fatalf("MSK length %d", len(msk))
	}
	if want := unhex(t, "8B7CDC149B993A1BA118CB153F56DCCB"); !bytes.Equal(msk[16:32], want) {
		t.Errorf("MSK[16:32] = %x, want %x", msk[16:32], want)
	}
	// The client's send key (Magic2), as strongSwan computes it from the
	// same inputs; then 32 zero octets.
	if want := unhex(t, "D5F0E9521E3EA9589645E86051C82226"); !bytes.Equal(msk[:16], want) {
		t.Errorf("MSK[:16] = %x, want %x", msk[:16], want)
	}
	if !bytes.Equal(msk[32:], make([]byte, 32)) {
		t.Errorf("MSK tail = %x, want zeros", msk[32:])
	}
}

func TestDESKeyExpansion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ffffffffffffff", "fefefefefefefefe"},
		{"00000000000000", "0000000000000000"},
		{"80000000000000", "8000000000000000"},
		{"00000000000001", "0000000000000002"},
	} {
		if got := hex.EncodeToString(desKey(unhex(t, tc.in))); got != tc.want {
			t.Errorf("desKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestNTPasswordHashLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		pw   []byte
		ok   bool
	}{
		{"empty", nil, true},
		{"256 runes", []byte(strings.Repeat("ä", 256)), true},
		{"257 runes", []byte(strings.Repeat("a", 257)), false},
		{"invalid UTF-8", []byte{0xff, 0xfe}, false},
	} {
		_, err := NTPasswordHash(tc.pw)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
	// Non-ASCII passwords hash their UTF-16 code units: a character
	// outside the BMP is a surrogate pair.
	a, _ := NTPasswordHash([]byte("p\U0001F600"))
	b, _ := NTPasswordHash([]byte("p\uFFFD"))
	if a == b {
		t.Error("a supplementary character hashed like U+FFFD")
	}
}

func TestHashUsername(t *testing.T) {
	for in, want := range map[string]string{`CORP\alice`: "alice", "alice": "alice", "alice@corp": "alice@corp", `\x`: "x"} {
		if got := hashUsername(in); got != want {
			t.Errorf("hashUsername(%q) = %q, want %q", in, got, want)
		}
	}
}

type fixedRand struct{ b byte }

func (r *fixedRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.b
		r.b++
	}
	return len(p), nil
}

// converse runs peer against server until one side ends.
func converse(t *testing.T, peer *Peer, srv *Server) (peerErr error, res Result) {
	t.Helper()
	req, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		resp, done, err := peer.Handle(req)
		if done {
			return nil, res
		}
		if resp == nil {
			return err, res
		}
		if req, res, err = srv.Handle(resp); err != nil {
			t.Fatalf("server: %v", err)
		}
		if res != Continue {
			_, done, perr := peer.Handle(req)
			if done != (res == Succeeded) {
				t.Fatalf("peer done=%v after server result %v (err %v)", done, res, perr)
			}
			return perr, res
		}
		if err != nil {
			return err, res
		}
	}
	t.Fatal("conversation did not end")
	return nil, 0
}

func TestPeerServerConversation(t *testing.T) {
	users := map[string]string{"alice": "s3cret pässword", `CORP\bob`: "hunter2"}
	lookup := func(u string) ([]byte, bool) { p, ok := users[u]; return []byte(p), ok }
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"right password", "alice", "s3cret pässword", true},
		{"domain user", `CORP\bob`, "hunter2", true},
		{"wrong password", "alice", "s3cret password", false},
		{"unknown user", "carol", "x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMSCHAPv2(tc.user, []byte(tc.pass), &fixedRand{7})
			if err != nil {
				t.Fatal(err)
			}
			peer := NewPeer([]byte(tc.user), m)
			srv := NewMSCHAPv2Server(lookup, &fixedRand{99})
			perr, res := converse(t, peer, srv)
			if tc.ok {
				if perr != nil || res != Succeeded {
					t.Fatalf("peer err %v, server result %v", perr, res)
				}
				if !bytes.Equal(peer.MSK(), srv.MSK()) || len(peer.MSK()) != MSKLen {
					t.Fatalf("MSKs differ: %x vs %x", peer.MSK(), srv.MSK())
				}
				if srv.Identity() != tc.user || srv.User() != tc.user {
					t.Errorf("server saw identity %q user %q", srv.Identity(), srv.User())
				}
				return
			}
			var fe *FailureError
			if !errors.As(perr, &fe) || fe.Code != 691 || res != Failed {
				t.Fatalf("peer err %v, server result %v", perr, res)
			}
			if perr.Error() != "EAP-MSCHAPv2 rejected the username or password" {
				t.Errorf("message %q", perr)
			}
			if peer.MSK() != nil || srv.MSK() != nil {
				t.Error("MSK after failure")
			}
		})
	}
}

// TestPeerChecksAuthenticatorResponse: a server that does not know the
// password cannot forge S=, and the peer refuses EAP-Success then.
func TestPeerChecksAuthenticatorResponse(t *testing.T) {
	m, _ := NewMSCHAPv2("alice", []byte("pw"), &fixedRand{1})
	peer := NewPeer([]byte("alice"), m)
	chal := append([]byte{opChallenge, 5, 0, 0, 16}, bytes.Repeat([]byte{0xab}, 16)...)
	chal = append(chal, "gw"...)
	chal[3] = byte(len(chal))
	resp, _, err := peer.Handle((&Packet{Code: CodeRequest, Identifier: 1, Type: TypeMSCHAPv2, Data: chal}).Encode())
	if err != nil || resp == nil {
		t.Fatalf("challenge: %v", err)
	}
	// A premature EAP-Success must not be accepted.
	if _, done, err := peer.Handle((&Packet{Code: CodeSuccess, Identifier: 2}).Encode()); done || err == nil {
		t.Fatal("EAP-Success accepted before the authenticator response")
	}
	succ := []byte{opSuccess, 5, 0, 0}
	succ = append(succ, "S="+strings.Repeat("0", 40)+" M=hi"...)
	succ[3] = byte(len(succ))
	_, _, err = peer.Handle((&Packet{Code: CodeRequest, Identifier: 2, Type: TypeMSCHAPv2, Data: succ}).Encode())
	if err == nil || !strings.Contains(err.Error(), "authenticator response") {
		t.Fatalf("forged S= accepted: %v", err)
	}
	if m.Complete() || peer.MSK() != nil {
		t.Fatal("method complete after a forged S=")
	}
}

func TestPeerNaksOtherMethods(t *testing.T) {
	m, _ := NewMSCHAPv2("alice", []byte("pw"), &fixedRand{1})
	peer := NewPeer([]byte("alice@corp"), m)
	resp, _, err := peer.Handle((&Packet{Code: CodeRequest, Identifier: 9, Type: TypeMD5Challenge, Data: []byte{1, 2}}).Encode())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(resp)
	if err != nil || p.Code != CodeResponse || p.Identifier != 9 || p.Type != TypeNak || !bytes.Equal(p.Data, []byte{byte(TypeMSCHAPv2)}) {
		t.Fatalf("Nak = %+v, %v", p, err)
	}
	resp, _, err = peer.Handle((&Packet{Code: CodeRequest, Identifier: 10, Type: TypeIdentity, Data: []byte("hello")}).Encode())
	if p, _ := Parse(resp); err != nil || p.Type != TypeIdentity || string(p.Data) != "alice@corp" {
		t.Fatalf("identity = %+v, %v", p, err)
	}
	resp, _, err = peer.Handle((&Packet{Code: CodeRequest, Identifier: 11, Type: TypeNotification, Data: []byte("note")}).Encode())
	if p, _ := Parse(resp); err != nil || p.Type != TypeNotification || len(p.Data) != 0 {
		t.Fatalf("notification = %+v, %v", p, err)
	}
	// Failure before the method started names no method.
	_, _, err = peer.Handle((&Packet{Code: CodeFailure, Identifier: 12}).Encode())
	if err == nil || err.Error() != "gateway sent EAP-Failure" {
		t.Fatalf("failure: %v", err)
	}
}

func TestFailureCodes(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		code int
		text string
	}{
		{"E=691 R=1 C=00112233445566778899aabbccddeeff V=3 M=bad", 691, "rejected the username or password"},
		{"E=648 R=0 V=3", 648, "password expired"},
		{"E=647", 647, "account disabled"},
		{"M=no code", 0, "rejected the username or password"},
		{"E=999999999999999999999", 0, "rejected"},
	} {
		m, _ := NewMSCHAPv2("alice", []byte("pw"), &fixedRand{1})
		chal := append([]byte{opChallenge, 1, 0, 21, 16}, make([]byte, 16)...)
		if _, err := m.Process(chal); err != nil {
			t.Fatal(err)
		}
		data := append([]byte{opFailure, 1, 0, 0}, tc.msg...)
		data[3] = byte(len(data))
		resp, err := m.Process(data)
		var fe *FailureError
		if !errors.As(err, &fe) || fe.Code != tc.code || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%q: err %v", tc.msg, err)
		}
		if !bytes.Equal(resp, []byte{opFailure}) {
			t.Errorf("%q: failure response %x", tc.msg, resp)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
		want Packet
	}{
		{"identity request", "0101000501", true, Packet{Code: CodeRequest, Identifier: 1, Type: TypeIdentity, Data: []byte{}}},
		{"padding ignored", "0207000601ffee", true, Packet{Code: CodeResponse, Identifier: 7, Type: TypeIdentity, Data: []byte{0xff}}},
		{"success", "03020004", true, Packet{Code: CodeSuccess, Identifier: 2}},
		{"failure with junk length", "04020006abcd", true, Packet{Code: CodeFailure, Identifier: 2}},
		{"short", "010100", false, Packet{}},
		{"length beyond data", "0101000901", false, Packet{}},
		{"length below header", "01010003", false, Packet{}},
		{"request without type", "01010004", false, Packet{}},
		{"unknown code", "05010004", false, Packet{}},
	} {
		p, err := Parse(unhex(t, tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if !tc.ok {
			continue
		}
		if p.Code != tc.want.Code || p.Identifier != tc.want.Identifier || p.Type != tc.want.Type || !bytes.Equal(p.Data, tc.want.Data) {
			t.Errorf("%s: got %+v", tc.name, p)
		}
		if tc.name != "padding ignored" && tc.name != "failure with junk length" && hex.EncodeToString(p.Encode()) != tc.in {
			t.Errorf("%s: re-encoded %x", tc.name, p.Encode())
		}
	}
}

// TestPeerSameIdentifier: strongSwan's EAP-Identity and MSCHAPv2 methods
// pick identifiers independently; a Challenge with the Identity request's
// identifier is a new request, while an identical request is a
// retransmission and gets the same answer.
func TestPeerSameIdentifier(t *testing.T) {
	m, _ := NewMSCHAPv2("alice", []byte("pw"), &fixedRand{1})
	peer := NewPeer([]byte("alice"), m)
	idReq := (&Packet{Code: CodeRequest, Identifier: 77, Type: TypeIdentity}).Encode()
	first, _, err := peer.Handle(idReq)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := peer.Handle(idReq)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("retransmitted request: %x vs %x (%v)", first, again, err)
	}
	chal := append([]byte{opChallenge, 77, 0, 0, 16}, bytes.Repeat([]byte{0xab}, 16)...)
	chal[3] = byte(len(chal))
	resp, _, err := peer.Handle((&Packet{Code: CodeRequest, Identifier: 77, Type: TypeMSCHAPv2, Data: chal}).Encode())
	if err != nil {
		t.Fatal(err)
	}
	if p, err := Parse(resp); err != nil || p.Type != TypeMSCHAPv2 || p.Data[0] != opResponse {
		t.Fatalf("challenge with a reused identifier answered with %+v (%v)", p, err)
	}
}
