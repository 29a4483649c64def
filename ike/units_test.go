package ike

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

func ts(start, end string, sp, ep uint16, proto uint8) wire.TrafficSelector {
	return wire.TrafficSelector{IPProtocol: proto, StartPort: sp, EndPort: ep,
		Start: netip.MustParseAddr(start), End: netip.MustParseAddr(end)}
}

func TestNarrowTS(t *testing.T) {
	all4 := PrefixTS(netip.MustParsePrefix("0.0.0.0/0"))
	all6 := PrefixTS(netip.MustParsePrefix("::/0"))
	tests := []struct {
		name               string
		requested, allowed []wire.TrafficSelector
		want               []wire.TrafficSelector
	}{
		{"full to subnet", []wire.TrafficSelector{all4}, []wire.TrafficSelector{PrefixTS(netip.MustParsePrefix("10.99.0.0/24"))},
			[]wire.TrafficSelector{ts("10.99.0.0", "10.99.0.255", 0, 65535, 0)}},
		{"families", []wire.TrafficSelector{all4, all6}, []wire.TrafficSelector{PrefixTS(netip.MustParsePrefix("fd00::/64"))},
			[]wire.TrafficSelector{ts("fd00::", "fd00::ffff:ffff:ffff:ffff", 0, 65535, 0)}},
		{"disjoint", []wire.TrafficSelector{PrefixTS(netip.MustParsePrefix("172.16.0.0/12"))},
			[]wire.TrafficSelector{PrefixTS(netip.MustParsePrefix("10.0.0.0/8"))}, nil},
		{"ports and protocol", []wire.TrafficSelector{ts("10.0.0.0", "10.0.0.255", 1000, 2000, 6)},
			[]wire.TrafficSelector{ts("10.0.0.128", "10.0.1.0", 1500, 65535, 0)},
			[]wire.TrafficSelector{ts("10.0.0.128", "10.0.0.255", 1500, 2000, 6)}},
		{"protocol mismatch", []wire.TrafficSelector{ts("10.0.0.0", "10.0.0.255", 0, 65535, 6)},
			[]wire.TrafficSelector{ts("10.0.0.0", "10.0.0.255", 0, 65535, 17)}, nil},
		{"virtual ip", []wire.TrafficSelector{all4}, []wire.TrafficSelector{AddrTS(netip.MustParseAddr("10.99.200.1"))},
			[]wire.TrafficSelector{ts("10.99.200.1", "10.99.200.1", 0, 65535, 0)}},
		{"dedup", []wire.TrafficSelector{all4, all4}, []wire.TrafficSelector{all4}, []wire.TrafficSelector{all4}},
		{"invalid range ignored", []wire.TrafficSelector{ts("10.0.0.9", "10.0.0.1", 0, 65535, 0)}, []wire.TrafficSelector{all4}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NarrowTS(tc.requested, tc.allowed)
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %+v, want %+v", got[i], tc.want[i])
				}
			}
			if !subsetTS(got, tc.requested) {
				t.Fatal("result not within the request")
			}
		})
	}
}

func TestPoolLeases(t *testing.T) {
	p, err := NewPool([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/29"), netip.MustParsePrefix("fd00::/125")}, netip.MustParseAddr("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	// /29: .1-.6 usable, .1 reserved -> 5 addresses.
	seen := map[netip.Addr]string{}
	for i := range 5 {
		id := string(rune('a' + i))
		a, err := p.Acquire(id, false)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if a == netip.MustParseAddr("10.0.0.1") || a == netip.MustParseAddr("10.0.0.0") || a == netip.MustParseAddr("10.0.0.7") {
			t.Fatalf("handed out %v", a)
		}
		if seen[a] != "" {
			t.Fatalf("%v given twice", a)
		}
		seen[a] = id
	}
	if _, err := p.Acquire("f", false); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("exhausted pool: %v", err)
	}
	a, _ := p.Acquire("a", false) // same identity again: same address, second lease
	if seen[a] != "a" {
		t.Fatalf("a got %v", a)
	}
	p.Release("a", a)
	if _, err := p.Acquire("f", false); !errors.Is(err, ErrPoolExhausted) {
		t.Fatal("address reused while a still holds a lease")
	}
	p.Release("a", a)
	f, err := p.Acquire("f", false)
	if err != nil || f != a {
		t.Fatalf("f got %v, %v; want a's released %v", f, err, a)
	}
	v6, err := p.Acquire("a", true)
	if err != nil || !netip.MustParsePrefix("fd00::/125").Contains(v6) || v6 == netip.MustParseAddr("fd00::") {
		t.Fatalf("v6 %v %v", v6, err)
	}
	if _, err := NewPool([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/31")}); err == nil {
		t.Fatal("pool without usable addresses accepted")
	}
	var nilPool *Pool
	if _, err := nilPool.Acquire("x", false); !errors.Is(err, ErrPoolExhausted) {
		t.Fatal("nil pool")
	}
}

func TestSelectProposal(t *testing.T) {
	peer := []wire.Proposal{
		{Number: 1, Protocol: wire.ProtoIKE, Transforms: ikeX25519.Transforms},
		{Number: 2, Protocol: wire.ProtoIKE, Transforms: []wire.Transform{
			tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 31, 0), tr(wire.TransformDH, 20, 0)}},
	}
	tests := []struct {
		name     string
		local    []Proposal
		peer     []wire.Proposal
		proto    wire.ProtocolID
		prefer   uint16
		want     string
		wantNone bool
	}{
		{"peer order wins", []Proposal{ikeECP384, ikeX25519}, peer, wire.ProtoIKE, 0, "aes128gcm16-prfsha256-curve25519", false},
		{"only second", []Proposal{ikeECP384}, peer, wire.ProtoIKE, 0, "aes256gcm16-prfsha384-ecp384", false},
		{"prefer KE group", []Proposal{{Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0),
			tr(wire.TransformDH, 20, 0), tr(wire.TransformDH, 31, 0)}}}, peer[1:], wire.ProtoIKE, 20, "aes256gcm16-prfsha384-ecp384", false},
		{"none", []Proposal{ikeCBC}, peer, wire.ProtoIKE, 0, "", true},
		{"wrong protocol", []Proposal{ikeX25519}, peer, wire.ProtoESP, 0, "", true},
		{"esp missing esn means no", []Proposal{esp128}, []wire.Proposal{{Protocol: wire.ProtoESP, SPI: []byte{1, 2, 3, 4},
			Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 128)}}}, wire.ProtoESP, 0, "aes128gcm16", false},
		{"esp esn only vs no esn", []Proposal{esp128}, []wire.Proposal{{Protocol: wire.ProtoESP,
			Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 128), tr(wire.TransformESN, 1, 0)}}}, wire.ProtoESP, 0, "", true},
		{"esp esn either", []Proposal{esp256ESN}, []wire.Proposal{{Protocol: wire.ProtoESP,
			Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 256), tr(wire.TransformESN, 1, 0), tr(wire.TransformESN, 0, 0)}}}, wire.ProtoESP, 0, "aes256gcm16-esn", false},
		{"key length matters", []Proposal{esp256}, []wire.Proposal{{Protocol: wire.ProtoESP,
			Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 128)}}}, wire.ProtoESP, 0, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := selectProposal(tc.local, tc.peer, tc.proto, tc.prefer)
			if ok == tc.wantNone {
				t.Fatalf("ok=%v", ok)
			}
			if ok && ProposalText(got.Transforms) != tc.want {
				t.Fatalf("chose %q, want %q", ProposalText(got.Transforms), tc.want)
			}
		})
	}
}

func TestOfferProposalsPutsGroupFirst(t *testing.T) {
	p := Proposal{Transforms: []wire.Transform{tr(wire.TransformDH, 31, 0), tr(wire.TransformEncr, 20, 256), tr(wire.TransformDH, 20, 0), tr(wire.TransformPRF, 6, 0)}}
	got := offerProposals([]Proposal{p}, wire.ProtoIKE, nil, 20)[0].Transforms
	var dh []uint16
	for _, x := range got {
		if x.Type == wire.TransformDH {
			dh = append(dh, x.ID)
		}
	}
	if dh[0] != 20 || dh[1] != 31 || got[0].Type != wire.TransformEncr {
		t.Fatalf("order %+v", got)
	}
}

func TestRetransmitSchedule(t *testing.T) {
	tests := []struct {
		r     Retransmit
		want  []time.Duration
		total time.Duration
	}{
		{DefaultRetransmit, []time.Duration{4 * time.Second, 7200 * time.Millisecond, 12960 * time.Millisecond}, 0},
		{ConnectRetransmit, []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}, 9500 * time.Millisecond},
		{Retransmit{}, []time.Duration{4 * time.Second}, 0},
	}
	for _, tc := range tests {
		for i, w := range tc.want {
			if got := tc.r.Timeout(i); got != w {
				t.Fatalf("%+v: timeout %d = %v, want %v", tc.r, i, got, w)
			}
		}
		if tc.total != 0 && tc.r.Total() != tc.total {
			t.Fatalf("%+v: total %v, want %v", tc.r, tc.r.Total(), tc.total)
		}
	}
	if d := DefaultRetransmit.Total(); d < 160*time.Second || d > 170*time.Second {
		t.Fatalf("default total %v", d)
	}
}

func TestNotifyErrorClasses(t *testing.T) {
	tests := []struct {
		t    wire.NotifyType
		want error
	}{
		{wire.NotifyAuthenticationFailed, ErrAuthenticationFailed},
		{wire.NotifyNoProposalChosen, ErrNoProposalChosen},
		{wire.NotifyTSUnacceptable, ErrTSUnacceptable},
		{wire.NotifyInternalAddressFailure, ErrInternalAddressFailure},
		{wire.NotifyFailedCPRequired, ErrFailedCPRequired},
	}
	for _, tc := range tests {
		err := error(&NotifyError{Type: tc.t, Exchange: wire.ExchangeIKEAuth, Remote: true})
		if !errors.Is(err, tc.want) {
			t.Fatalf("%v is not %v", err, tc.want)
		}
		if errors.Is(err, ErrUnreachable) {
			t.Fatalf("%v is unreachable", err)
		}
	}
	u := &UnreachableError{Exchange: wire.ExchangeIKESAInit, Retransmissions: 5}
	if !errors.Is(u, ErrUnreachable) || errors.Is(u, ErrAuthenticationFailed) {
		t.Fatal("unreachable classification")
	}
}
