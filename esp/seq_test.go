package esp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

func TestImportedCounters(t *testing.T) {
	tests := []struct {
		name           string
		esn            bool
		outSeq, inSeq  uint64
		delta          uint64
		wantFirstOut   uint64
		refused, fresh []uint64 // inbound sequence numbers
	}{
		{"fresh", false, 0, 0, 0, 1, nil, []uint64{1, 2, 100}},
		{"mid block", false, 500, 100, 0, 500, []uint64{1, 64, 99, 100}, []uint64{101, 127, 128, 3000}},
		{"block edge", false, 64, 63, 0, 64, []uint64{63, 1}, []uint64{64, 65}},
		{"advanced", false, 1000, 2000, 4096, 1000 + 4096, []uint64{2000, 1999, 1500}, []uint64{2001, 2100}},
		{"esn high", true, 1<<32 + 10, 1<<32 + 5, 0, 1<<32 + 10, []uint64{1<<32 + 5, 1<<32 + 1}, []uint64{1<<32 + 6, 1<<32 + 70}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			km := keyMat(36)
			out, _ := NewOutboundSA(0x1000, km, tc.esn)
			in, _ := NewInboundSA(0x1000, km, tc.esn)
			// A separate sender for the inbound checks, so the numbers can
			// be chosen freely.
			src, _ := NewOutboundSA(0x1000, km, tc.esn)
			dst, _ := NewInboundSA(0x1000, km, tc.esn)
			applySeq(ChildConfig{In: dst, Out: out, OutboundSeq: tc.outSeq, InboundSeq: tc.inSeq})
			if tc.delta > 0 {
				out.Advance(tc.delta)
			}
			pkt, err := out.Seal(nil, ipv4Packet(10))
			if err != nil {
				t.Fatal(err)
			}
			got := uint64(binary.BigEndian.Uint32(pkt[4:]))
			if got != tc.wantFirstOut&0xffffffff || out.Seq() != tc.wantFirstOut {
				t.Fatalf("first outbound seq %d (last %d), want %d", got, out.Seq(), tc.wantFirstOut)
			}
			if _, err := in.Open(nil, pkt); err != nil && tc.outSeq == 0 {
				t.Fatalf("fresh inbound refused the first packet: %v", err)
			}
			sealAt := func(seq uint64) []byte {
				src.seq.Store(seq - 1)
				p, err := src.Seal(nil, ipv4Packet(10))
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			for _, s := range tc.refused {
				if _, err := dst.Open(nil, sealAt(s)); !errors.Is(err, ErrReplayed) {
					t.Errorf("seq %d: %v, want ErrReplayed", s, err)
				}
			}
			for _, s := range tc.fresh {
				if _, err := dst.Open(nil, sealAt(s)); err != nil {
					t.Errorf("seq %d refused: %v", s, err)
				}
			}
			if tc.inSeq > 0 && len(tc.fresh) > 0 {
				if h := dst.Highest(); h != tc.fresh[len(tc.fresh)-1] {
					t.Errorf("highest %d, want %d", h, tc.fresh[len(tc.fresh)-1])
				}
			}
		})
	}
}

func TestAdvanceSaturates(t *testing.T) {
	out, _ := NewOutboundSA(1, keyMat(20), false)
	out.seq.Store(10)
	if got := out.Advance(^uint64(0)); got != ^uint64(0) {
		t.Fatalf("advance wrapped to %d", got)
	}
	if _, err := out.Seal(nil, ipv4Packet(1)); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("seal after saturation: %v", err)
	}
}

func TestDataplaneSeqHooks(t *testing.T) {
	d := NewDataplane(nil, func([]byte, Path) {}, nil)
	p := d.NewPeer(Path{Remote: netip.MustParseAddrPort("198.51.100.1:4500")})
	in, _ := NewInboundSA(0x2000, keyMat(36), false)
	out, _ := NewOutboundSA(0x3000, keyMat(36), false)
	if err := d.InstallChild(p, ChildConfig{In: in, Out: out, OutboundSeq: 42, InboundSeq: 7}); err != nil {
		t.Fatal(err)
	}
	if s, ok := d.ChildSeq(0x3000); !ok || s != 41 {
		t.Fatalf("ChildSeq = %d, %v; want 41 (nothing sent yet)", s, ok)
	}
	if s, ok := d.ChildInboundSeq(0x2000); !ok || s != 7 {
		t.Fatalf("ChildInboundSeq = %d, %v; want 7", s, ok)
	}
	if !d.AdvanceSeq(0x3000, 100) {
		t.Fatal("AdvanceSeq found no child")
	}
	if s, _ := d.ChildSeq(0x3000); s != 141 {
		t.Fatalf("after AdvanceSeq: %d, want 141", s)
	}
	if d.AdvanceSeq(0x2000, 1) {
		t.Fatal("AdvanceSeq took an inbound SPI")
	}
	if _, ok := d.ChildSeq(0x9999); ok {
		t.Fatal("ChildSeq of an unknown SPI")
	}
	// A second peer that chose the same outbound SPI: by inbound SPI each
	// child's counter is found.
	in2, _ := NewInboundSA(0x2001, keyMat(36), false)
	out2, _ := NewOutboundSA(0x3000, keyMat(36), false)
	if err := d.InstallChild(d.NewPeer(Path{}), ChildConfig{In: in2, Out: out2, OutboundSeq: 500}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spiIn uint32
		want  uint64
	}{{0x2000, 141}, {0x2001, 499}} {
		if s, ok := d.ChildOutboundSeq(tc.spiIn); !ok || s != tc.want {
			t.Errorf("ChildOutboundSeq(%x) = %d, %v; want %d", tc.spiIn, s, ok, tc.want)
		}
	}
	if _, ok := d.ChildOutboundSeq(0x3000); ok {
		t.Fatal("ChildOutboundSeq took an outbound SPI")
	}
}
