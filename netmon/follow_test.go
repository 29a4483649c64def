package netmon

import (
	"net/netip"
	"testing"

	"github.com/roam-vpn/roam/netpath"
)

// TestFollowPath: the monitor watches the address and uplink of the path
// its owner confirmed, not the one ESP is tried on ahead of an answer.
func TestFollowPath(t *testing.T) {
	wlan := netpath.Path{Local: netip.MustParseAddrPort("[::ffff:192.168.10.2]:4500"), Remote: netip.MustParseAddrPort("203.0.113.10:4500"), IfIndex: 2}
	wwan := netpath.Path{Local: netip.MustParseAddrPort("192.168.20.2:4500"), Remote: wlan.Remote, IfIndex: 3}
	tests := []struct {
		name   string
		change func(*netpath.Current)
		want   current
	}{
		{"follow", func(*netpath.Current) {}, current{addr: netip.MustParseAddr("192.168.10.2"), ifindex: 2}},
		{"try", func(c *netpath.Current) { c.Try(wwan) }, current{addr: netip.MustParseAddr("192.168.10.2"), ifindex: 2}},
		{"set", func(c *netpath.Current) { c.Set(wwan, "wwan") }, current{addr: netip.MustParseAddr("192.168.20.2"), ifindex: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Monitor{}
			cur := netpath.NewCurrent(wlan, "wlan")
			cur.Follow(m)
			tt.change(cur)
			if got := m.current(); got != tt.want {
				t.Fatalf("watching %+v, want %+v", got, tt.want)
			}
		})
	}
}
