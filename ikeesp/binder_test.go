package ikeesp

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/ike"
	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// testChild is a Child SA as the engine reports it: AES-GCM-256 keys (32
// octets and a 4-octet salt) and one selector each way.
func testChild(spiIn uint32, remote, local string) ike.ChildSA {
	ts := func(p string) []wire.TrafficSelector {
		pfx := netip.MustParsePrefix(p)
		return []wire.TrafficSelector{{StartPort: 0, EndPort: 65535, Start: pfx.Masked().Addr(), End: lastAddr(pfx)}}
	}
	return ike.ChildSA{
		SPIIn: spiIn, SPIOut: spiIn + 0x1000,
		KeyIn: bytes.Repeat([]byte{1}, 36), KeyOut: bytes.Repeat([]byte{2}, 36),
		LocalTS: ts(local), RemoteTS: ts(remote), Proposal: "aes256gcm16",
		Transforms: []wire.Transform{{Type: wire.TransformEncr, ID: ikecrypto.EncrAESGCM16, KeyLength: 256}},
	}
}

// lastAddr is the last address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func TestBinderInstallChild(t *testing.T) {
	tests := []struct {
		name       string
		ch         ike.ChildSA
		in         Install
		wantRemote []string
		wantOutSeq uint64
		wantErr    string
	}{
		{name: "selectors from the SA", ch: testChild(0x100, "10.1.0.0/16", "10.9.0.2/32"), wantRemote: []string{"10.1.0.0/16"}},
		{name: "selectors given", ch: testChild(0x101, "10.1.0.0/16", "10.9.0.2/32"),
			in: Install{Remote: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}}, wantRemote: []string{"10.2.0.0/24"}},
		{name: "pending rekey", ch: testChild(0x102, "10.3.0.0/16", "10.9.0.2/32"), in: Install{Pending: true}, wantRemote: []string{"10.3.0.0/16"}},
		{name: "taken over", ch: testChild(0x103, "10.4.0.0/16", "10.9.0.2/32"), in: Install{OutboundSeq: 5000, InboundSeq: 700},
			wantRemote: []string{"10.4.0.0/16"}, wantOutSeq: 4999},
		{name: "cipher the dataplane lacks", ch: func() ike.ChildSA {
			ch := testChild(0x104, "10.5.0.0/16", "10.9.0.2/32")
			ch.Transforms = []wire.Transform{{Type: wire.TransformEncr, ID: 12, KeyLength: 256}}
			return ch
		}(), wantErr: "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startESPEnd(t)
			b := Binder{DP: e.dp}
			peer := e.dp.NewPeer(netpath.Path{Remote: netip.MustParseAddrPort("127.0.0.1:4500")})
			cfg, err := b.InstallChild(peer, nil, tt.ch, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one naming %q", err, tt.wantErr)
				}
				if n := len(e.dp.ChildStats(peer)); n != 0 {
					t.Fatalf("%d children installed after an error", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OutboundPending != tt.in.Pending {
				t.Errorf("pending %v, want %v", cfg.OutboundPending, tt.in.Pending)
			}
			stats := e.dp.ChildStats(peer)
			if len(stats) != 1 || stats[0].SPIIn != tt.ch.SPIIn || stats[0].SPIOut != tt.ch.SPIOut {
				t.Fatalf("children %+v, want the one pair %08x/%08x", stats, tt.ch.SPIIn, tt.ch.SPIOut)
			}
			if got := PrefixStrings(stats[0].Remote); !slices.Equal(got, tt.wantRemote) {
				t.Errorf("remote selectors %v, want %v", got, tt.wantRemote)
			}
			if got := PrefixStrings(stats[0].Local); !slices.Equal(got, []string{"10.9.0.2/32"}) {
				t.Errorf("local selectors %v, want the SA's own", got)
			}
			if seq, _ := e.dp.ChildOutboundSeq(tt.ch.SPIIn); seq != tt.wantOutSeq {
				t.Errorf("outbound sequence %d, want %d", seq, tt.wantOutSeq)
			}
			if in, _ := e.dp.ChildInboundSeq(tt.ch.SPIIn); tt.in.InboundSeq > 0 && in != tt.in.InboundSeq {
				t.Errorf("inbound window at %d, want %d", in, tt.in.InboundSeq)
			}
			if _, err := b.InstallChild(peer, nil, tt.ch, tt.in); err == nil {
				t.Error("the same inbound SPI installed twice")
			}
		})
	}
}

func TestBinderRekeyedAndRetire(t *testing.T) {
	e := startESPEnd(t)
	b := Binder{DP: e.dp}
	peer := e.dp.NewPeer(netpath.Path{Remote: netip.MustParseAddrPort("127.0.0.1:4500")})
	old := testChild(0x200, "10.1.0.0/16", "10.9.0.2/32")
	if _, err := b.InstallChild(peer, nil, old, Install{}); err != nil {
		t.Fatal(err)
	}
	for _, initiated := range []bool{true, false} {
		next := testChild(0x201, "10.1.0.0/16", "10.9.0.2/32")
		if !initiated {
			next = testChild(0x202, "10.1.0.0/16", "10.9.0.2/32")
		}
		cfg, err := b.InstallRekeyed(peer, nil, &ike.ChildRekeyed{OldSPIIn: old.SPIIn, Child: next, Initiated: initiated})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OutboundPending == initiated {
			t.Errorf("rekey initiated %v: pending %v, want %v", initiated, cfg.OutboundPending, !initiated)
		}
	}
	if n := len(e.dp.ChildStats(peer)); n != 3 {
		t.Fatalf("%d children after two rekeys, want the old one beside both successors", n)
	}
	b.Retire(old.SPIIn)
	if _, ok := e.dp.ChildOutboundSeq(old.SPIIn); !ok {
		t.Error("a retired child left at once; it must open stragglers for esp.RetireGrace")
	}
}

func TestRekeyedReason(t *testing.T) {
	tests := []struct {
		ev   ike.Event
		want string
	}{
		{&ike.ChildRekeyed{OldSPIIn: 0xc1, Child: ike.ChildSA{SPIIn: 0xc2}}, "child SA 000000c1 replaced by 000000c2"},
		{&ike.IKERekeyed{SPIi: 0x1, SPIr: 0x2}, "IKE SA now 0000000000000001_i 0000000000000002_r"},
		{&ike.ChildDeleted{SPIIn: 1}, ""},
	}
	for _, tt := range tests {
		if got := RekeyedReason(tt.ev); got != tt.want {
			t.Errorf("RekeyedReason(%T) = %q, want %q", tt.ev, got, tt.want)
		}
	}
}
