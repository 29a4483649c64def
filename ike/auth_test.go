package ike

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

func mustPRF(t testing.TB, id uint16) *ikecrypto.PRF {
	t.Helper()
	p, err := ikecrypto.NewPRF(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseIdentity(t *testing.T) {
	cnO := mustDN(t, pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "vpn.example.com"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "Example"}},
	})
	tests := []struct {
		in      string
		typ     wire.IDType
		data    []byte
		wantErr bool
	}{
		{in: "vpn.example.com", typ: wire.IDFQDN, data: []byte("vpn.example.com")},
		{in: "fqdn:alice@example.com", typ: wire.IDFQDN, data: []byte("alice@example.com")},
		{in: "@vpn.example.com", typ: wire.IDFQDN, data: []byte("vpn.example.com")},
		{in: "alice@example.com", typ: wire.IDRFC822Addr, data: []byte("alice@example.com")},
		{in: "email:alice", typ: wire.IDRFC822Addr, data: []byte("alice")},
		{in: "userfqdn:bob@example.com", typ: wire.IDRFC822Addr, data: []byte("bob@example.com")},
		{in: "192.0.2.1", typ: wire.IDIPv4Addr, data: []byte{192, 0, 2, 1}},
		{in: "::ffff:192.0.2.1", typ: wire.IDIPv4Addr, data: []byte{192, 0, 2, 1}},
		{in: "2001:db8::1", typ: wire.IDIPv6Addr, data: []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{in: "ipv4:198.51.100.7", typ: wire.IDIPv4Addr, data: []byte{198, 51, 100, 7}},
		{in: "ipv6:198.51.100.7", wantErr: true},
		{in: "ipv4:2001:db8::1", wantErr: true},
		{in: "ipv4:nonsense", wantErr: true},
		{in: "keyid:#01:02:ff", typ: wire.IDKeyID, data: []byte{1, 2, 0xff}},
		{in: "keyid:abc", typ: wire.IDKeyID, data: []byte("abc")},
		{in: "keyid:#zz", wantErr: true},
		{in: "keyid:", wantErr: true},
		{in: "@#0a0b", typ: wire.IDKeyID, data: []byte{0x0a, 0x0b}},
		{in: "CN=vpn.example.com, O=Example", typ: wire.IDDERASN1DN, data: cnO},
		{in: "cn = vpn.example.com ,o=Example", typ: wire.IDDERASN1DN, data: cnO},
		{in: "dn:CN=vpn.example.com,O=Example", typ: wire.IDDERASN1DN, data: cnO},
		{in: "CN=alice@example.com", typ: wire.IDDERASN1DN, data: mustDN(t, pkix.RDNSequence{
			{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("alice@example.com")}}},
		})},
		{in: "CN=", wantErr: true},
		{in: "C=Ünïcode", wantErr: true},
		{in: "CN=a,,O=b", wantErr: true},
		{in: "CN=\"unterminated", wantErr: true},
		{in: "", wantErr: true},
		{in: "fqdn:", wantErr: true},
		{in: "@", wantErr: true},
		{in: "bad\xffutf8", wantErr: true},
		{in: "weird=thing", typ: wire.IDFQDN, data: []byte("weird=thing")},
		{in: "host:8080", typ: wire.IDFQDN, data: []byte("host:8080")},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := ParseIdentity(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %d %x, want error", id.IDType, id.Data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.IDType != tt.typ || !bytes.Equal(id.Data, tt.data) {
				t.Errorf("got type %d %x, want %d %x", id.IDType, id.Data, tt.typ, tt.data)
			}
		})
	}
}

func mustDN(t testing.TB, seq pkix.RDNSequence) []byte {
	t.Helper()
	der, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestParseIdentityDNRoundTrip checks that what we encode is what X.509
// parsers read back, in the order written, escapes and quotes resolved.
func TestParseIdentityDNRoundTrip(t *testing.T) {
	tests := []struct {
		in   string
		want pkix.Name
		str  string
	}{
		{"CN=vpn.example.com, O=Example", pkix.Name{CommonName: "vpn.example.com", Organization: []string{"Example"}}, "CN=vpn.example.com, O=Example"},
		{`C=CH, O="Acme, Inc.", OU=Net\,works, CN=Zürich gw`, pkix.Name{Country: []string{"CH"}, Organization: []string{"Acme, Inc."},
			OrganizationalUnit: []string{"Net,works"}, CommonName: "Zürich gw"}, `C=CH, O=Acme\, Inc., OU=Net\,works, CN=Zürich gw`},
		{"2.5.4.3=x, DC=example, DC=com", pkix.Name{CommonName: "x"}, "CN=x, DC=example, DC=com"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := ParseIdentity(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if id.IDType != wire.IDDERASN1DN {
				t.Fatalf("type %d", id.IDType)
			}
			var seq pkix.RDNSequence
			if rest, err := asn1.Unmarshal(id.Data, &seq); err != nil || len(rest) != 0 {
				t.Fatalf("unmarshal: %v, %d trailing", err, len(rest))
			}
			var got pkix.Name
			got.FillFromRDNSequence(&seq)
			if got.CommonName != tt.want.CommonName || strings.Join(got.Organization, "|") != strings.Join(tt.want.Organization, "|") ||
				strings.Join(got.Country, "|") != strings.Join(tt.want.Country, "|") ||
				strings.Join(got.OrganizationalUnit, "|") != strings.Join(tt.want.OrganizationalUnit, "|") {
				t.Errorf("parsed %+v, want %+v", got, tt.want)
			}
			if s := formatIdentity(id); s != tt.str {
				t.Errorf("formatIdentity = %q, want %q", s, tt.str)
			}
			again, err := ParseIdentity(formatIdentity(id))
			if err != nil || !identitiesEqual(id, again) {
				t.Errorf("re-parsing %q: %v, equal=%v", formatIdentity(id), err, err == nil && identitiesEqual(id, again))
			}
		})
	}
}

func TestIdentitiesEqual(t *testing.T) {
	p := func(s string) *wire.Identification {
		id, err := ParseIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	utf8CN := &wire.Identification{IDType: wire.IDDERASN1DN, Data: mustDN(t, pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("VPN.example.com")}}},
	})}
	tests := []struct {
		a, b *wire.Identification
		want bool
	}{
		{p("vpn.example.com"), p("VPN.Example.COM."), true},
		{p("vpn.example.com"), p("vpn2.example.com"), false},
		{p("vpn.example.com"), p("email:vpn.example.com"), false},
		{p("Alice@Example.com"), p("alice@example.com"), true},
		{p("192.0.2.1"), p("ipv4:192.0.2.1"), true},
		{p("192.0.2.1"), p("192.0.2.2"), false},
		{p("CN=vpn.example.com"), utf8CN, true},
		{p("CN=vpn.example.com, O=x"), utf8CN, false},
		{p("O=vpn.example.com"), utf8CN, false},
		{p("CN=vpn.example.com"), &wire.Identification{IDType: wire.IDDERASN1DN, Data: []byte{0x30, 0x80}}, false},
		{p("keyid:#0102"), p("@#0102"), true},
	}
	for i, tt := range tests {
		if got := identitiesEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("%d: identitiesEqual(%s, %s) = %v", i, formatIdentity(tt.a), formatIdentity(tt.b), got)
		}
		if got := identitiesEqual(tt.b, tt.a); got != tt.want {
			t.Errorf("%d: not symmetric", i)
		}
	}
}

func TestSignedOctets(t *testing.T) {
	prf := mustPRF(t, 5) // PRF_HMAC_SHA2_256
	msg := []byte("first message")
	nonce := []byte{9, 8, 7, 6}
	skp := bytes.Repeat([]byte{0x42}, 32)
	id := &wire.Identification{Responder: true, IDType: wire.IDFQDN, Data: []byte("vpn.example.com")}

	m := hmac.New(sha256.New, skp)
	m.Write([]byte{2, 0, 0, 0})
	m.Write([]byte("vpn.example.com"))
	want := append(append(append([]byte{}, msg...), nonce...), m.Sum(nil)...)

	got := SignedOctets(msg, nonce, prf, skp, id)
	if !bytes.Equal(got, want) {
		t.Fatalf("SignedOctets:\n got %x\nwant %x", got, want)
	}
	// The Responder flag selects IDi/IDr but is no part of the ID body.
	id.Responder = false
	if !bytes.Equal(SignedOctets(msg, nonce, prf, skp, id), want) {
		t.Error("Responder flag changed the octets")
	}
	id.IDType = wire.IDRFC822Addr
	if bytes.Equal(SignedOctets(msg, nonce, prf, skp, id), want) {
		t.Error("ID type not covered")
	}
}

func TestSignatureHashNotify(t *testing.T) {
	n := SignatureHashNotify()
	if n.Type != wire.NotifySignatureHashAlgorithms || !bytes.Equal(n.Data, []byte{0, 2, 0, 3, 0, 4}) || len(n.SPI) != 0 {
		t.Fatalf("got %+v", n)
	}
}

func TestPSK(t *testing.T) {
	prf := mustPRF(t, 5)
	octets := []byte("octets to authenticate")
	psk := []byte("correct horse battery staple")

	// RFC 7296 2.15 by hand.
	pad := hmac.New(sha256.New, psk)
	pad.Write([]byte("Key Pad for IKEv2"))
	m := hmac.New(sha256.New, pad.Sum(nil))
	m.Write(octets)
	handAuth := m.Sum(nil)

	local, err := NewPSKAuth("alice@example.com", psk)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := local.Sign(prf, octets)
	if err != nil {
		t.Fatal(err)
	}
	if auth.Method != wire.AuthPSK || !bytes.Equal(auth.Data, handAuth) {
		t.Fatalf("Sign = %d %x, want 2 %x", auth.Method, auth.Data, handAuth)
	}
	if id := local.Identity(); id.IDType != wire.IDRFC822Addr || string(id.Data) != "alice@example.com" {
		t.Fatalf("Identity = %+v", id)
	}
	if local.Certs() != nil {
		t.Error("PSK auth has certificates")
	}
	psk[0] ^= 1 // the authenticator keeps its own copy
	if again, _ := local.Sign(prf, octets); !bytes.Equal(again.Data, handAuth) {
		t.Error("NewPSKAuth did not copy the key")
	}
	psk[0] ^= 1

	alice, _ := ParseIdentity("alice@example.com")
	bob, _ := ParseIdentity("bob@example.com")
	tampered := bytes.Clone(octets)
	tampered[0] ^= 1
	tests := []struct {
		name     string
		remoteID string
		psk      []byte
		prf      *ikecrypto.PRF
		octets   []byte
		id       *wire.Identification
		auth     *wire.Auth
		errHas   string
	}{
		{name: "ok", remoteID: "alice@example.com", psk: psk, octets: octets, id: alice, auth: auth},
		{name: "ok any id", psk: psk, octets: octets, id: alice, auth: auth},
		{name: "ok case-insensitive id", remoteID: "ALICE@example.com", psk: psk, octets: octets, id: alice, auth: auth},
		{name: "wrong psk", remoteID: "alice@example.com", psk: []byte("wrong"), octets: octets, id: alice, auth: auth, errHas: "pre-shared key of 'alice@example.com' does not match"},
		{name: "tampered", psk: psk, octets: tampered, id: alice, auth: auth, errHas: "does not match"},
		{name: "other prf", psk: psk, prf: mustPRF(t, 7), octets: octets, id: alice, auth: auth, errHas: "does not match"},
		{name: "wrong id", remoteID: "alice@example.com", psk: psk, octets: octets, id: bob, auth: auth, errHas: "peer identity 'bob@example.com' is not the expected 'alice@example.com'"},
		{name: "no id", psk: psk, octets: octets, auth: auth, errHas: "no identity"},
		{name: "no auth", psk: psk, octets: octets, id: alice, errHas: "no AUTH"},
		{name: "signature method", psk: psk, octets: octets, id: alice, auth: &wire.Auth{Method: wire.AuthDigitalSignature, Data: auth.Data}, errHas: "expected a pre-shared key"},
		{name: "truncated", psk: psk, octets: octets, id: alice, auth: &wire.Auth{Method: wire.AuthPSK, Data: auth.Data[:16]}, errHas: "does not match"},
		{name: "empty", psk: psk, octets: octets, id: alice, auth: &wire.Auth{Method: wire.AuthPSK}, errHas: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer, err := NewPSKPeer(tt.remoteID, tt.psk)
			if err != nil {
				t.Fatal(err)
			}
			if peer.CertReqs() != nil {
				t.Error("PSK peer requests certificates")
			}
			p := prf
			if tt.prf != nil {
				p = tt.prf
			}
			err = peer.Verify(p, tt.octets, tt.id, tt.auth, nil)
			checkAuthErr(t, err, tt.errHas)
			if err != nil && (strings.Contains(err.Error(), string(psk)) || strings.Contains(err.Error(), "wrong")) {
				t.Errorf("error leaks the key: %v", err)
			}
		})
	}

	for _, bad := range []struct{ id, psk string }{{"alice@example.com", ""}, {"", "x"}} {
		if _, err := NewPSKAuth(bad.id, []byte(bad.psk)); err == nil {
			t.Errorf("NewPSKAuth(%q, %q) accepted", bad.id, bad.psk)
		}
	}
	if _, err := NewPSKPeer("x", nil); err == nil {
		t.Error("NewPSKPeer accepted an empty key")
	}
	if _, err := NewPSKPeer("ipv4:x", []byte("k")); err == nil {
		t.Error("NewPSKPeer accepted a bad remote ID")
	}
}

func checkAuthErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	if !errors.Is(err, ErrAuthenticationFailed) {
		t.Errorf("error %v is not ErrAuthenticationFailed", err)
	}
	var ae *AuthError
	if !errors.As(err, &ae) {
		t.Errorf("error %T is not an *AuthError", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func TestFormatIdentity(t *testing.T) {
	dn, _ := ParseIdentity("C=CH, O=Example, CN=vpn")
	tests := []struct {
		id   *wire.Identification
		want string
	}{
		{&wire.Identification{IDType: wire.IDFQDN, Data: []byte("vpn.example.com")}, "vpn.example.com"},
		{&wire.Identification{IDType: wire.IDFQDN, Data: []byte("alice@example.com")}, "fqdn:alice@example.com"},
		{&wire.Identification{IDType: wire.IDFQDN, Data: []byte("192.0.2.1")}, "fqdn:192.0.2.1"},
		{&wire.Identification{IDType: wire.IDFQDN, Data: []byte("CN=x")}, "fqdn:CN=x"},
		{&wire.Identification{IDType: wire.IDFQDN, Data: []byte("evil\nINFO forged")}, `evil\nINFO forged`},
		{&wire.Identification{IDType: wire.IDRFC822Addr, Data: []byte("alice@example.com")}, "alice@example.com"},
		{&wire.Identification{IDType: wire.IDRFC822Addr, Data: []byte("alice")}, "email:alice"},
		{&wire.Identification{IDType: wire.IDIPv4Addr, Data: []byte{192, 0, 2, 1}}, "192.0.2.1"},
		{&wire.Identification{IDType: wire.IDIPv4Addr, Data: []byte{192, 0, 2}}, "id-type-1:#c00002"},
		{&wire.Identification{IDType: wire.IDIPv6Addr, Data: bytes.Repeat([]byte{0}, 15)}, "id-type-5:#000000000000000000000000000000"},
		{dn, "C=CH, O=Example, CN=vpn"},
		{&wire.Identification{IDType: wire.IDDERASN1DN, Data: []byte{1, 2}}, "id-type-9:#0102"},
		{&wire.Identification{IDType: wire.IDKeyID, Data: []byte{0xab}}, "keyid:#ab"},
		{&wire.Identification{IDType: 200, Data: []byte{1}}, "id-type-200:#01"},
		{nil, "(none)"},
	}
	for _, tt := range tests {
		got := FormatIdentity(tt.id)
		if got != tt.want {
			t.Errorf("FormatIdentity(%+v) = %q, want %q", tt.id, got, tt.want)
			continue
		}
		if tt.id == nil || strings.HasPrefix(got, "id-type-") || strings.Contains(got, `\n`) {
			continue
		}
		back, err := ParseIdentity(got)
		if err != nil || !IdentitiesEqual(back, tt.id) {
			t.Errorf("ParseIdentity(%q) = %+v, %v: does not round-trip", got, back, err)
		}
	}
}
