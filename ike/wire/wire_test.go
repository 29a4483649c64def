package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

func samplePayloads() []Payload {
	return []Payload{
		&SA{Proposals: []Proposal{
			{Number: 1, Protocol: ProtoIKE, Transforms: []Transform{
				{Type: TransformEncr, ID: EncrAESGCM16, KeyLength: 256},
				{Type: TransformPRF, ID: PRFHMACSHA2_384},
				{Type: TransformDH, ID: GroupECP384}}},
			{Number: 2, Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4}, Transforms: []Transform{
				{Type: TransformEncr, ID: EncrAESCBC, KeyLength: 128},
				{Type: TransformInteg, ID: IntegHMACSHA2_256_128},
				{Type: TransformESN, ID: ESNNo}}},
		}},
		&KE{Group: GroupCurve25519, Data: bytes.Repeat([]byte{7}, 32)},
		&Nonce{Data: bytes.Repeat([]byte{9}, 32)},
		&Identification{IDType: IDRFC822Addr, Data: []byte("alice@example.com")},
		&Identification{Responder: true, IDType: IDFQDN, Data: []byte("vpn.example.com")},
		&Cert{Encoding: CertX509Signature, Data: []byte{0x30, 0x82}},
		&CertReq{Encoding: CertX509Signature, Data: bytes.Repeat([]byte{1}, 20)},
		&Auth{Method: AuthPSK, Data: bytes.Repeat([]byte{3}, 48)},
		&Notify{Type: NotifyNATDetectionSourceIP, Data: bytes.Repeat([]byte{4}, 20)},
		&Notify{Protocol: ProtoESP, SPI: []byte{0, 0, 0, 1}, Type: NotifyRekeySA},
		&Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}},
		&Delete{Protocol: ProtoIKE},
		&VendorID{Data: []byte("roam")},
		&TrafficSelectors{Selectors: []TrafficSelector{
			{StartPort: 0, EndPort: 65535, Start: netip.MustParseAddr("10.99.200.1"), End: netip.MustParseAddr("10.99.200.1")},
			{IPProtocol: 6, StartPort: 443, EndPort: 443, Start: netip.MustParseAddr("2001:db8::"), End: netip.MustParseAddr("2001:db8::ffff")}}},
		&TrafficSelectors{Responder: true, Selectors: []TrafficSelector{SelectorFromPrefix(netip.MustParsePrefix("0.0.0.0/0"))}},
		&Config{CfgType: CfgRequest, Attributes: []ConfigAttribute{{Type: AttrInternalIP4Address, Value: []byte{}}, {Type: AttrInternalIP4DNS, Value: []byte{10, 99, 0, 53}}}},
		&EAP{Data: []byte{1, 1, 0, 5, 1}},
		&Unknown{PayloadType: 200, Data: []byte{1, 2}},
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, p := range samplePayloads() {
		t.Run(p.PType().String(), func(t *testing.T) {
			first, body, err := EncodePayloads([]Payload{p})
			if err != nil {
				t.Fatal(err)
			}
			if first != p.PType() {
				t.Fatalf("first = %v", first)
			}
			got, err := DecodePayloads(first, body)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !reflect.DeepEqual(normalize(got[0]), normalize(p)) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got[0], p)
			}
		})
	}
}

// normalize makes nil and empty slices compare equal.
func normalize(p Payload) Payload {
	if c, ok := p.(*Config); ok {
		c2 := *c
		c2.Attributes = nil
		for _, a := range c.Attributes {
			if len(a.Value) == 0 {
				a.Value = nil
			}
			c2.Attributes = append(c2.Attributes, a)
		}
		return &c2
	}
	if n, ok := p.(*Notify); ok {
		n2 := *n
		if len(n2.SPI) == 0 {
			n2.SPI = nil
		}
		if len(n2.Data) == 0 {
			n2.Data = nil
		}
		return &n2
	}
	return p
}

func TestMessageRoundTrip(t *testing.T) {
	m := &Message{Header: Header{SPIi: 0x1122334455667788, Exchange: ExchangeIKESAInit, Flags: FlagInitiator}, Payloads: samplePayloads()}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Length != uint32(len(b)) || got.Header.SPIi != m.Header.SPIi || got.Header.Version != Version || got.Header.NextPayload != PayloadSA {
		t.Fatalf("header %+v", got.Header)
	}
	if len(got.Payloads) != len(m.Payloads) {
		t.Fatalf("%d payloads, want %d", len(got.Payloads), len(m.Payloads))
	}
	if got.FindNotify(NotifyRekeySA) == nil || len(got.Notifies()) != 2 || Find(got.Payloads, PayloadKE) == nil {
		t.Fatal("accessors")
	}
}

// TestGoldenNotifyMessage checks the exact bytes of a small message built by
// hand from the RFC 7296 3.1/3.2/3.10 layouts.
func TestGoldenNotifyMessage(t *testing.T) {
	m := &Message{Header: Header{SPIi: 1, SPIr: 2, Exchange: ExchangeInformational, Flags: FlagResponse, MessageID: 5},
		Payloads: []Payload{&Notify{Type: NotifyCookie, Data: []byte{0xaa, 0xbb}}}}
	want := []byte{
		0, 0, 0, 0, 0, 0, 0, 1, // SPIi
		0, 0, 0, 0, 0, 0, 0, 2, // SPIr
		41, 0x20, 37, 0x20, // next N, version 2.0, INFORMATIONAL, R
		0, 0, 0, 5, // message ID
		0, 0, 0, 38, // length 28 + 10
		0, 0, 0, 10, // generic header: none, not critical, length 10
		0, 0, 0x40, 0x06, // protocol 0, SPI size 0, COOKIE
		0xaa, 0xbb,
	}
	got, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got  % x\nwant % x", got, want)
	}
}

func TestEncryptedLayout(t *testing.T) {
	h := Header{SPIi: 1, SPIr: 2, Exchange: ExchangeIKEAuth, Flags: FlagInitiator, MessageID: 1}
	body := bytes.Repeat([]byte{0x55}, 40)
	msg := append(EncryptedHeader(h, PayloadIDi, len(body)), body...)
	m, err := Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := m.Payloads[0].(*Encrypted)
	if !ok || e.FirstInner != PayloadIDi || !bytes.Equal(e.Data, body) || e.Offset != HeaderLen+4 {
		t.Fatalf("got %+v", m.Payloads[0])
	}
	frag := append(EncryptedFragmentHeader(h, PayloadIDi, 2, 3, len(body)), body...)
	m, err = Decode(frag)
	if err != nil {
		t.Fatal(err)
	}
	f := m.Payloads[0].(*EncryptedFragment)
	if f.Number != 2 || f.Total != 3 || f.FirstInner != PayloadNone || f.Offset != HeaderLen+8 || !bytes.Equal(f.Data, body) {
		t.Fatalf("got %+v", f)
	}
}

func TestDecodeMalformed(t *testing.T) {
	good, _ := (&Message{Header: Header{Exchange: ExchangeIKESAInit}, Payloads: []Payload{&Nonce{Data: []byte{1, 2, 3}}}}).Encode()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	crit := mut(func(b []byte) []byte { b[16] = 200; b[29] = 0x80; return b })
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short header", good[:20], ErrTruncated},
		{"length beyond buffer", mut(func(b []byte) []byte { b[27] = 200; return b }), ErrTruncated},
		{"bad version", mut(func(b []byte) []byte { b[17] = 0x10; return b }), ErrMalformed},
		{"payload length too big", mut(func(b []byte) []byte { b[31] = 50; return b }), ErrTruncated},
		{"payload length too small", mut(func(b []byte) []byte { b[31] = 2; return b }), ErrTruncated},
		{"trailing bytes", mut(func(b []byte) []byte { b[31] = 5; return b }), ErrMalformed},
		{"bad SA", mut(func(b []byte) []byte { b[16] = byte(PayloadSA); return b }), ErrMalformed},
		{"bad TS", mut(func(b []byte) []byte { b[16] = byte(PayloadTSi); return b }), ErrMalformed},
	}
	for _, tt := range tests {
		if _, err := Decode(tt.in); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	var ce *UnsupportedCriticalPayloadError
	if _, err := Decode(crit); !errors.As(err, &ce) || ce.Type != 200 {
		t.Errorf("critical unknown payload: %v", err)
	}
}

func TestRangePrefixes(t *testing.T) {
	tests := []struct {
		start, end string
		want       []string
	}{
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"10.99.0.0", "10.99.0.255", []string{"10.99.0.0/24"}},
		{"10.99.200.7", "10.99.200.7", []string{"10.99.200.7/32"}},
		{"10.0.0.5", "10.0.0.9", []string{"10.0.0.5/32", "10.0.0.6/31", "10.0.0.8/31"}},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", []string{"::/0"}},
		{"10.0.0.9", "10.0.0.5", nil},
	}
	for _, tt := range tests {
		got := RangePrefixes(netip.MustParseAddr(tt.start), netip.MustParseAddr(tt.end))
		var gs []string
		for _, p := range got {
			gs = append(gs, p.String())
		}
		if !reflect.DeepEqual(gs, tt.want) {
			t.Errorf("RangePrefixes(%s, %s) = %v, want %v", tt.start, tt.end, gs, tt.want)
		}
	}
	ts := SelectorFromPrefix(netip.MustParsePrefix("10.99.0.0/24"))
	if ts.End != netip.MustParseAddr("10.99.0.255") || ts.EndPort != 65535 {
		t.Errorf("SelectorFromPrefix: %+v", ts)
	}
}

func TestStrings(t *testing.T) {
	if NotifyNoProposalChosen.String() != "NO_PROPOSAL_CHOSEN" || ExchangeIKEAuth.String() != "IKE_AUTH" || NotifyType(9999).String() != "ERROR_9999" {
		t.Error("names")
	}
}

func FuzzDecode(f *testing.F) {
	m := &Message{Header: Header{SPIi: 1, Exchange: ExchangeIKESAInit, Flags: FlagInitiator}, Payloads: samplePayloads()}
	b, _ := m.Encode()
	f.Add(b)
	f.Add(append(EncryptedHeader(Header{}, PayloadIDi, 4), 1, 2, 3, 4))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Decode(in)
		if err != nil {
			return
		}
		out, err := m.Encode()
		if err != nil {
			return // e.g. an SA payload with zero proposals cannot be decoded anyway
		}
		m2, err := Decode(out)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		out2, err := m2.Encode()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("encoding not stable: %v", err)
		}
	})
}

func FuzzDecodePayloads(f *testing.F) {
	first, body, _ := EncodePayloads(samplePayloads())
	f.Add(uint8(first), body)
	f.Fuzz(func(t *testing.T, first uint8, body []byte) {
		ps, err := DecodePayloads(PayloadType(first), body)
		if err != nil {
			return
		}
		// The view of any decoded chain holds only payloads of the chain.
		v := Collect(ps)
		for _, p := range []Payload{v.SA, v.KE, v.Nonce, v.IDi, v.IDr, v.Auth, v.TSi, v.TSr, v.CP, v.EAP} {
			if !reflect.ValueOf(p).IsNil() && !slices.Contains(ps, p) {
				t.Fatalf("view holds %v, not in the chain", p.PType())
			}
		}
		if len(v.Certs)+len(v.CertReqs)+len(v.Deletes) > len(ps) {
			t.Fatal("view holds more payloads than the chain")
		}
		v.FirstError()
		if _, _, err := EncodePayloads(ps); err != nil {
			// Decoded values must re-encode, except an empty SA proposal list,
			// which decode already refuses.
			t.Fatalf("re-encode: %v", err)
		}
	})
}
