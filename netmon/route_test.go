package netmon

import (
	"net/netip"
	"testing"

	"github.com/roam-vpn/roam/internal/nstest"
)

func TestRouteTo(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "wlan", "type", "veth", "peer", "name", "wlanp"},
		{"link", "add", "wwan", "mtu", "1400", "type", "veth", "peer", "name", "wwanp"},
		{"addr", "add", "192.0.2.2/24", "dev", "wlan"},
		{"addr", "add", "198.51.100.2/24", "dev", "wwan"},
		{"link", "set", "wlan", "up"}, {"link", "set", "wlanp", "up"},
		{"link", "set", "wwan", "up"}, {"link", "set", "wwanp", "up"},
		{"route", "add", "default", "via", "192.0.2.1"},
		// Marked packets use another table whose default leaves by wwan.
		{"route", "add", "default", "via", "198.51.100.1", "table", "77"},
		{"rule", "add", "fwmark", "0x10", "table", "77"},
	} {
		nstest.Exec(t, "ip", args...)
	}
	tests := []struct {
		dst     string
		mark    uint32
		wantSrc string
		wantIf  string
		wantMTU int
		wantErr bool
	}{
		{"203.0.113.10", 0, "192.0.2.2", "wlan", 1500, false},
		{"203.0.113.10", 0x10, "198.51.100.2", "wwan", 1400, false},
		{"198.51.100.9", 0, "198.51.100.2", "wwan", 1400, false},
		{"2001:db8::1", 0, "", "", 0, true},
	}
	for _, tt := range tests {
		r, err := RouteTo(netip.MustParseAddr(tt.dst), tt.mark)
		if tt.wantErr {
			if err == nil {
				t.Errorf("RouteTo(%s) = %+v, want error", tt.dst, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("RouteTo(%s, %#x): %v", tt.dst, tt.mark, err)
			continue
		}
		if r.Src.String() != tt.wantSrc || r.IfName != tt.wantIf || r.MTU != tt.wantMTU {
			t.Errorf("RouteTo(%s, %#x) = %+v, want src %s via %s mtu %d", tt.dst, tt.mark, r, tt.wantSrc, tt.wantIf, tt.wantMTU)
		}
	}
}
