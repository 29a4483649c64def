package mobility

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// IPv4 <-> IPv6 outer moves: local and peer addresses pair by family, the
// current path's ports are kept, and peer addresses that cannot be reached
// (link-local, loopback) make no path.
func TestFamilies(t *testing.T) {
	gw6 := netip.MustParseAddr("2001:db8:113::10")
	gw6b := netip.MustParseAddr("2001:db8:113:1::26")
	wwan6 := netmon.Address{Addr: netip.MustParseAddr("2001:db8:20::2"), Bits: 64, IfIndex: 3, IfName: "wwan"}
	on6 := func(a netmon.Address, peer netip.Addr) netpath.Path {
		return netpath.Path{Local: netip.AddrPortFrom(a.Addr, 40000), Remote: netip.AddrPortFrom(peer, gw.Port()), IfIndex: a.IfIndex}
	}
	tests := []struct {
		name      string
		addrs     []netmon.Address
		peers     []netip.Addr
		wantPaths []netpath.Path
	}{
		{name: "IPv4 uplink replaced by an IPv6-only one", addrs: []netmon.Address{wwan6},
			peers:     []netip.Addr{gw.Addr(), gw6, netip.MustParseAddr("fe80::1"), netip.IPv6Loopback(), gw6b},
			wantPaths: []netpath.Path{on6(wwan6, gw6), on6(wwan6, gw6b)}},
		{name: "dual-stack uplink: both families", addrs: []netmon.Address{wwan, wwan6},
			peers:     []netip.Addr{gw.Addr(), gw6},
			wantPaths: []netpath.Path{pathOn(wwan), on6(wwan6, gw6)}},
		{name: "gateway without IPv6: no path for an IPv6-only uplink", addrs: []netmon.Address{wwan6},
			peers: []netip.Addr{gw.Addr()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(knobs{}, wlan, tt.addrs, tt.addrs)
				defer r.stop()
				r.sa.peers = tt.peers
				got := r.m.candidates(tt.addrs)
				if len(got) != len(tt.wantPaths) {
					t.Fatalf("candidates %v, want %v", got, tt.wantPaths)
				}
				for i := range got {
					if got[i].path != tt.wantPaths[i] {
						t.Fatalf("candidates %v, want %v", got, tt.wantPaths)
					}
				}
				r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, IfName: "wlan", Current: true})
				r.wait(10 * time.Second)
				if len(tt.wantPaths) == 0 {
					if len(r.sa.updates) != 0 {
						t.Fatalf("moved without a path: %v", r.sa.updates)
					}
					return
				}
				if len(r.sa.updates) != 1 || r.sa.updates[0] != tt.wantPaths[0] {
					t.Fatalf("updates %v, want one to %v", r.sa.updates, tt.wantPaths[0])
				}
				if cur, _ := r.m.Current(); cur != tt.wantPaths[0] {
					t.Fatalf("current %v, want %v", cur, tt.wantPaths[0])
				}
			})
		})
	}
}
