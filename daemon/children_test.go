package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
)

// TestChildrenPerTS: children = "per_ts" puts the first remote_ts entry in
// IKE_AUTH's Child SA and each other one in a Child SA of its own; the
// default keeps them all in one.
func TestChildrenPerTS(t *testing.T) {
	a, b, c := netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("fd00:3::/64")
	tests := []struct {
		name      string
		children  string
		ts        []netip.Prefix
		wantFirst []netip.Prefix
		wantMore  []ike.Selectors
	}{
		{"single", config.ChildrenSingle, []netip.Prefix{a, b}, []netip.Prefix{a, b}, nil},
		{"per_ts", config.ChildrenPerTS, []netip.Prefix{a, b, c}, []netip.Prefix{a},
			[]ike.Selectors{{Remote: []netip.Prefix{b}}, {Remote: []netip.Prefix{c}}}},
		{"per_ts with one entry", config.ChildrenPerTS, []netip.Prefix{a}, []netip.Prefix{a}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &config.Profile{Children: tt.children, RemoteTS: tt.ts}
			if got := firstTS(p); !slices.Equal(got, tt.wantFirst) {
				t.Errorf("first Child SA %v, want %v", got, tt.wantFirst)
			}
			got := moreChildren(p)
			if !slices.EqualFunc(got, tt.wantMore, func(x, y ike.Selectors) bool {
				return slices.Equal(x.Remote, y.Remote) && slices.Equal(x.Local, y.Local)
			}) {
				t.Errorf("more Child SAs %v, want %v", got, tt.wantMore)
			}
		})
	}
}
