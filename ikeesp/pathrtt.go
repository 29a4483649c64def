package ikeesp

import (
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/netpath"
)

// IKERTT is the dataplane's view of sa's round-trip estimates, per path:
// the smoothed time plus four deviations, as a retransmission timer takes
// it. A new path's GSO pause waits a few of them for an ICMP.
func IKERTT(sa *ike.SA) esp.RTTFunc {
	if sa == nil {
		return nil
	}
	return func(p netpath.Path) (time.Duration, bool) {
		r, ok := sa.RTT(p)
		return r.SRTT + 4*r.RTTVar, ok
	}
}
