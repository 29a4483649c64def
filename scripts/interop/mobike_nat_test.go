package interop

import (
	"testing"

	"github.com/roam-vpn/roam/scripts/lab"
)

// natScenarios are issue 3's (d): the active uplink's NAT loses its state
// while traffic flows, with no interface event on the client. Only the
// client's dead-path detection (ESP out, nothing back) can notice, and an
// UPDATE_SA_ADDRESSES from the same local address tells the gateway where
// the client's packets come from now.
var natScenarios = []mobikeScenario{
	// nf_nat often gives the flow a new public port after the flush (the
	// gateway's packets recreate an entry for the old one first); when it
	// keeps the old port nothing breaks and no event is needed.
	{name: "d1-nat-flushed", move: func(l *lab.Lab) error { return l.FlushConntrack(lab.NATWLAN) },
		wantIf: lab.WLAN, sameUplink: true, maxLoss: 400},
	// A new public address: the gateway's packets to the old one go
	// nowhere until the client refreshes the path.
	{name: "d2-nat-address-changed", move: func(l *lab.Lab) error { return l.ChangeNATAddress(lab.NATWLAN) },
		wantIf: lab.WLAN, sameUplink: true, wantEvent: "nat-changed|path-changed", maxLoss: 400},
}

// TestMOBIKENATStrongSwanGateway: scenario (d) against strongSwan.
func TestMOBIKENATStrongSwanGateway(t *testing.T) {
	for _, sc := range natScenarios {
		t.Run(sc.name, func(t *testing.T) { mobikeSwan(t, sc) })
	}
}

// TestMOBIKENATRoamGateway: scenario (d) against roam gateway.
func TestMOBIKENATRoamGateway(t *testing.T) {
	for _, sc := range natScenarios {
		t.Run(sc.name, func(t *testing.T) { mobikeRoamGW(t, sc) })
	}
}
