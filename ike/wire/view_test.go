package wire

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestCollect(t *testing.T) {
	sa1 := &SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoIKE}}}
	sa2 := &SA{Proposals: []Proposal{{Number: 2, Protocol: ProtoESP}}}
	ke := &KE{Group: GroupCurve25519}
	nonce := &Nonce{Data: bytes.Repeat([]byte{1}, 16)}
	idi := &Identification{IDType: IDFQDN, Data: []byte("client")}
	idr := &Identification{Responder: true, IDType: IDFQDN, Data: []byte("gw")}
	idr2 := &Identification{Responder: true, IDType: IDFQDN, Data: []byte("gw2")}
	auth := &Auth{Method: AuthPSK}
	c1, c2 := &Cert{Data: []byte{1}}, &Cert{Data: []byte{2}}
	cr := &CertReq{Data: []byte{3}}
	tsi, tsr := &TrafficSelectors{}, &TrafficSelectors{Responder: true}
	cpReq := &Config{CfgType: CfgRequest}
	cpReply := &Config{CfgType: CfgReply}
	eapP := &EAP{Data: []byte{1}}
	d1, d2 := &Delete{Protocol: ProtoESP}, &Delete{Protocol: ProtoIKE}
	nat := &Notify{Type: NotifyNATDetectionSourceIP}
	zero := &Notify{Type: 0}
	ts1 := &Notify{Type: NotifyTSUnacceptable}
	ts2 := &Notify{Type: NotifyTSUnacceptable, Data: []byte{2}}
	noProp := &Notify{Type: NotifyNoProposalChosen}
	vid := &VendorID{Data: []byte("x")}

	tests := []struct {
		name string
		ps   []Payload
		want View
		// notify lookups: type -> the payload Notify must return
		notify     map[NotifyType]*Notify
		firstError *Notify
		config     map[uint8]*Config
	}{
		{name: "empty", want: View{}},
		{
			name:   "IKE_AUTH request",
			ps:     []Payload{idi, c1, auth, cpReq, sa1, tsi, tsr, nat},
			want:   View{IDi: idi, Auth: auth, CP: cpReq, SA: sa1, TSi: tsi, TSr: tsr, Certs: []*Cert{c1}},
			notify: map[NotifyType]*Notify{NotifyNATDetectionSourceIP: nat, NotifyCookie: nil},
			config: map[uint8]*Config{CfgRequest: cpReq, CfgReply: nil},
		},
		{
			name: "IKE_SA_INIT",
			ps:   []Payload{sa1, ke, nonce, vid, nat},
			want: View{SA: sa1, KE: ke, Nonce: nonce},
		},
		{
			name: "a repeated singleton: the last one counts",
			ps:   []Payload{sa1, idr, sa2, idr2, c1, c2, cr, eapP},
			want: View{SA: sa2, IDr: idr2, Certs: []*Cert{c1, c2}, CertReqs: []*CertReq{cr}, EAP: eapP},
		},
		{
			name:   "CP of either kind",
			ps:     []Payload{cpReply, cpReq},
			want:   View{CP: cpReq},
			config: map[uint8]*Config{CfgRequest: cpReq, CfgReply: cpReply, CfgSet: nil},
		},
		{
			name:       "notifies: the first of a type, the first real error",
			ps:         []Payload{nat, zero, ts1, noProp, ts2, d1, d2},
			want:       View{Deletes: []*Delete{d1, d2}},
			notify:     map[NotifyType]*Notify{NotifyTSUnacceptable: ts1, NotifyNoProposalChosen: noProp, 0: zero},
			firstError: ts1,
		},
		{
			name:   "status notifies only",
			ps:     []Payload{nat, zero},
			notify: map[NotifyType]*Notify{NotifyNATDetectionSourceIP: nat},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Collect(tt.ps)
			tt.want.All = tt.ps
			if !sameView(v, tt.want) {
				t.Fatalf("Collect = %+v, want %+v", v, tt.want)
			}
			for typ, want := range tt.notify {
				if got := v.Notify(typ); got != want {
					t.Errorf("Notify(%v) = %p, want %p", typ, got, want)
				}
				if got := v.Has(typ); got != (want != nil) {
					t.Errorf("Has(%v) = %v", typ, got)
				}
			}
			if got := v.FirstError(); got != tt.firstError {
				t.Errorf("FirstError = %v, want %v", got, tt.firstError)
			}
			for typ, want := range tt.config {
				if got := v.Config(typ); got != want {
					t.Errorf("Config(%d) = %p, want %p", typ, got, want)
				}
			}
		})
	}
}

// sameView compares by identity: a view points into the payloads, it
// copies none.
func sameView(a, b View) bool {
	return len(a.All) == len(b.All) && (len(a.All) == 0 || &a.All[0] == &b.All[0]) &&
		a.SA == b.SA && a.KE == b.KE && a.Nonce == b.Nonce && a.IDi == b.IDi && a.IDr == b.IDr &&
		a.Auth == b.Auth && a.TSi == b.TSi && a.TSr == b.TSr && a.CP == b.CP && a.EAP == b.EAP &&
		samePtrs(a.Certs, b.Certs) && samePtrs(a.CertReqs, b.CertReqs) && samePtrs(a.Deletes, b.Deletes)
}

func samePtrs[T any](a, b []*T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ikeAuthPayloads decodes a typical IKE_AUTH request, as the engine sees
// one after decryption.
func ikeAuthPayloads(t testing.TB, certs int) []Payload {
	ps := []Payload{
		&Identification{IDType: IDRFC822Addr, Data: []byte("alice@example.com")},
		&Auth{Method: AuthDigitalSignature, Data: bytes.Repeat([]byte{3}, 64)},
		&Config{CfgType: CfgRequest, Attributes: []ConfigAttribute{{Type: AttrInternalIP4Address, Value: []byte{}}}},
		&Notify{Type: NotifyMOBIKESupported},
		&Notify{Type: NotifyInitialContact},
		&SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4}, Transforms: []Transform{
			{Type: TransformEncr, ID: EncrAESGCM16, KeyLength: 256}, {Type: TransformESN, ID: ESNNo}}}}},
		&TrafficSelectors{Selectors: []TrafficSelector{SelectorFromPrefix(netip.MustParsePrefix("0.0.0.0/0"))}},
		&TrafficSelectors{Responder: true, Selectors: []TrafficSelector{SelectorFromPrefix(netip.MustParsePrefix("0.0.0.0/0"))}},
	}
	for range certs {
		ps = append(ps, &Cert{Encoding: CertX509Signature, Data: []byte{0x30}})
	}
	first, body, err := EncodePayloads(ps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodePayloads(first, body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// handCollected is the collection loop the engine had in each handler
// before View: the allocation baseline Collect must not exceed.
func handCollected(ps []Payload) (idi *Identification, auth *Auth, certs []*Cert, n int) {
	for _, p := range ps {
		switch p := p.(type) {
		case *Identification:
			if !p.Responder {
				idi = p
			}
		case *Auth:
			auth = p
		case *Cert:
			certs = append(certs, p)
		}
	}
	return idi, auth, certs, len(certs)
}

func TestCollectAllocations(t *testing.T) {
	for _, certs := range []int{0, 1, 3} {
		ps := ikeAuthPayloads(t, certs)
		var sink int
		before := testing.AllocsPerRun(100, func() {
			_, _, c, n := handCollected(ps)
			sink += len(c) + n
		})
		got := testing.AllocsPerRun(100, func() {
			v := Collect(ps)
			if v.Notify(NotifyMOBIKESupported) != nil && v.FirstError() == nil && v.Config(CfgRequest) != nil {
				sink += len(v.Certs)
			}
		})
		if got > before {
			t.Errorf("%d certs: Collect makes %v allocations, the hand loop %v", certs, got, before)
		}
		if certs == 0 && got != 0 {
			t.Errorf("without certs Collect allocates %v times", got)
		}
		_ = sink
	}
}

func BenchmarkCollect(b *testing.B) {
	ps := ikeAuthPayloads(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		v := Collect(ps)
		if v.IDi == nil || v.Notify(NotifyInitialContact) == nil {
			b.Fatal("payloads missing")
		}
	}
}
