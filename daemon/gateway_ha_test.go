package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/roam-vpn/roam/config"
)

func TestHAAnnouncedAndListen(t *testing.T) {
	own := netip.MustParseAddr("203.0.113.42")
	other := netip.MustParseAddr("203.0.113.10")
	for _, tc := range []struct {
		name     string
		ha       *config.HA
		announce []netip.Addr
		listen   []netip.Addr
	}{
		{"single node", nil, []netip.Addr{own}, []netip.Addr{own}},
		{"active", &config.HA{Role: "active", TakeoverAddress: other}, []netip.Addr{own, other}, []netip.Addr{own}},
		// A standby answers no one until it takes over.
		{"standby", &config.HA{Role: "standby", TakeoverAddress: other}, []netip.Addr{own, other}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &config.Gateway{Listen: []netip.Addr{own}, HA: tc.ha}
			if got := announced(g); !slices.Equal(got, tc.announce) {
				t.Errorf("announced %v, want %v", got, tc.announce)
			}
			if len(g.Listen) != 1 {
				t.Errorf("announced changed the listen list: %v", g.Listen)
			}
			gw := &gateway{cfg: g}
			if got := gw.startListen(); !slices.Equal(got, tc.listen) {
				t.Errorf("startListen %v, want %v", got, tc.listen)
			}
		})
	}
}
