package mobility

import (
	"context"
	"net/netip"
	"testing"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/netmon"
)

// IPv4 <-> IPv6 outer moves: local and peer addresses pair by family, the
// current path's ports are kept, and peer addresses that cannot be reached
// (link-local, loopback) make no path.
func TestFamilies(t *testing.T) {
	gw6 := netip.MustParseAddr("2001:db8:113::10")
	gw6b := netip.MustParseAddr("2001:db8:113:1::26")
	wwan6 := netmon.Address{Addr: netip.MustParseAddr("2001:db8:20::2"), Bits: 64, IfIndex: 3, IfName: "wwan"}
	on6 := func(a netmon.Address, peer netip.Addr) esp.Path {
		return esp.Path{Local: netip.AddrPortFrom(a.Addr, 40000), Remote: netip.AddrPortFrom(peer, gw.Port()), IfIndex: a.IfIndex}
	}
	tests := []struct {
		name      string
		start     esp.Path
		addrs     []netmon.Address
		peers     []netip.Addr
		wantPaths []esp.Path
	}{
		{name: "IPv4 uplink replaced by an IPv6-only one", start: pathOn(wlan), addrs: []netmon.Address{wwan6},
			peers:     []netip.Addr{gw.Addr(), gw6, netip.MustParseAddr("fe80::1"), netip.IPv6Loopback(), gw6b},
			wantPaths: []esp.Path{on6(wwan6, gw6), on6(wwan6, gw6b)}},
		{name: "IPv6 back to IPv4", start: on6(wwan6, gw6), addrs: []netmon.Address{wlan},
			peers:     []netip.Addr{gw6, gw.Addr()},
			wantPaths: []esp.Path{pathOn(wlan)}},
		{name: "gateway without IPv6: no path for an IPv6-only uplink", start: pathOn(wlan), addrs: []netmon.Address{wwan6},
			peers: []netip.Addr{gw.Addr()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sa := &fakeSA{path: tt.start, peers: tt.peers, working: map[netip.Addr]bool{}}
			for _, a := range tt.addrs {
				sa.working[a.Addr] = true
			}
			var moved []Move
			m := New(Config{
				SA:        sa,
				Addresses: func() []netmon.Address { return tt.addrs },
				SetPath:   func(esp.Path) {},
				OnMove:    func(mv Move) { moved = append(moved, mv) },
			}, tt.start, "wlan")
			var got []esp.Path
			for _, c := range m.candidates(true) {
				got = append(got, c.path)
			}
			if len(got) != len(tt.wantPaths) {
				t.Fatalf("candidates %v, want %v", got, tt.wantPaths)
			}
			for i := range got {
				if got[i] != tt.wantPaths[i] {
					t.Fatalf("candidates %v, want %v", got, tt.wantPaths)
				}
			}
			m.handle(context.Background(), netmon.LinkDown{IfIndex: tt.start.IfIndex, Current: true})
			if len(tt.wantPaths) == 0 {
				if len(moved) != 0 {
					t.Fatalf("moved without a path: %+v", moved)
				}
				return
			}
			if len(moved) != 1 || moved[0].To != tt.wantPaths[0] {
				t.Fatalf("moves %+v, want one to %v", moved, tt.wantPaths[0])
			}
		})
	}
}
