package tunnel

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/tun"
)

// A Host's fields that are set stay the caller's; the nil ones become the
// machine's own.
func TestHostDefaults(t *testing.T) {
	errRoute, errListen, errTUN, errMon := errors.New("route"), errors.New("listen"), errors.New("tun"), errors.New("monitor")
	given := Host{
		CreateTUN:  func(string, int, func(tun.State) error) (Device, error) { return nil, errTUN },
		ListenUDP:  func(netip.AddrPort, uint32) (esp.Conn, error) { return nil, errListen },
		RouteTo:    func(netip.Addr, uint32) (netmon.Route, error) { return netmon.Route{}, errRoute },
		NewMonitor: func([]string) (Monitor, error) { return nil, errMon },
	}
	for _, tc := range []struct {
		name  string
		host  Host
		given bool
	}{
		{"zero", Host{}, false},
		{"all given", given, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.host.withDefaults()
			if h.CreateTUN == nil || h.ListenUDP == nil || h.RouteTo == nil || h.NewMonitor == nil {
				t.Fatalf("a field left nil: %+v", h)
			}
			if !tc.given {
				return
			}
			_, e1 := h.CreateTUN("roam-x", 1400, nil)
			_, e2 := h.ListenUDP(netip.AddrPort{}, 0)
			_, e3 := h.RouteTo(netip.Addr{}, 0)
			_, e4 := h.NewMonitor(nil)
			for i, pair := range [][2]error{{e1, errTUN}, {e2, errListen}, {e3, errRoute}, {e4, errMon}} {
				if pair[0] != pair[1] {
					t.Errorf("field %d: got %v, want the caller's %v", i, pair[0], pair[1])
				}
			}
		})
	}
}
