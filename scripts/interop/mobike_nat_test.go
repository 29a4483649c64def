package interop

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// natScenarios are issue 3's (d): the active uplink's NAT loses its state
// while traffic flows, with no interface event on the client. Only the
// client's dead-path detection (ESP out, nothing back) can notice, and an
// UPDATE_SA_ADDRESSES from the same local address tells the gateway where
// the client's packets come from now.
var natScenarios = []mobikeScenario{
	// The NAT restarts during a download: the gateway's packets reach it
	// before the client's and take the old public port, so the client's
	// flow gets a new one and the gateway's ESP goes nowhere until the
	// client tells it (lab.md: what breaks strongSwan's own client). The
	// router is back within a TCP retransmission timeout (about 200 ms),
	// before the dead-path window ends, so the tunnel normally refreshes
	// its path on wlan; on a loaded machine the window can end first and a
	// move to wwan is a recovery too.
	{name: "d1-nat-flushed", move: restartNAT,
		wantIf: lab.WLAN, orMoveTo: lab.WWAN, sameUplink: true, download: true, maxLoss: 400, after: natPortChanged},
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

func restartNAT(l *lab.Lab) error {
	_, err := l.RestartNAT(lab.NATWLAN, 2*time.Second)
	return err
}

// natPortChanged logs the NAT's UDP mappings after a restart and, when the
// client's flow to the gateway came out on a new public port, requires the
// client to have told the gateway (nat-changed or path-changed).
func natPortChanged(t *testing.T, l *lab.Lab, _ *lab.Roam, st lab.Status, evs []lab.Event) {
	t.Helper()
	out, err := l.NATMappings(lab.NATWLAN)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nat-wlan UDP mappings after the restart:\n%s", out)
	if st.Interface != lab.WLAN {
		return // moved away while the NAT was held: no new wlan mapping to check
	}
	found := false
	for _, line := range strings.Split(out, "\n") {
		m := reMapping.FindStringSubmatch(line)
		if m == nil || m[1] != lab.ClientWLAN.Addr().String() || m[3] != "4500" {
			continue
		}
		found = true
		// The download keeps the gateway sending during the pause, so the
		// old port is always taken by then: a kept port means the scenario
		// no longer tests what it should.
		if m[2] == m[4] {
			t.Errorf("the NAT kept the client's public port %s: the restart did not break the mapping", m[2])
			continue
		}
		t.Logf("the NAT gave the client's flow a new public port: %s -> %s", m[2], m[4])
		if !hasEvent(evs, "nat-changed", "path-changed") {
			t.Errorf("the client's flow moved from port %s to %s without a nat-changed event", m[2], m[4])
		}
	}
	if !found {
		t.Errorf("no mapping of the client's flow to the gateway in nat-wlan")
	}
}

// reMapping picks client address and port, gateway port, and the public
// port the reply goes to out of a conntrack -L line.
var reMapping = regexp.MustCompile(`src=(\S+) dst=\S+ sport=(\d+) dport=(\d+) .*src=\S+ dst=\S+ sport=\d+ dport=(\d+)`)
