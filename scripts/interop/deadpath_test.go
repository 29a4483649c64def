package interop

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// pathEvents counts the mobility events in `roam events --json` output.
func pathEvents(out string) map[string]int {
	n := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		var ev struct{ Event string }
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "path-test", "path-changed", "nat-changed", "suspended":
			n[ev.Event]++
		}
	}
	return n
}

// TestNoFalseMoves: dead paths are noticed in RTT time, so the window is
// short; it must not make a healthy or a lossy path look dead. With both
// uplinks up (a false alarm could move the SA to wwan), the tunnel carries
// a 10 ms ping on a healthy path, then idles, then carries the ping over
// a wlan NAT that drops 5 % of the packets it forwards each way. On the
// healthy path not one path test may start; on the lossy one the tunnel
// must stay on wlan throughout (no move, no suspension).
func TestNoFalseMoves(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki})
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	var evp *lab.Proc
	fail := failWith(t, gatewayOutput(gp), clientLog(r), procOutput("events", &evp))
	connectRoam(t, l, r, fail)
	var err error
	if evp, err = l.Start(lab.Client, bin, "events", "--socket", r.Socket, "--json"); err != nil {
		t.Fatal(err)
	}
	defer evp.Stop()
	time.Sleep(200 * time.Millisecond) // the subscription is in place

	// phase checks the events since the last phase: on a healthy path
	// none; on a lossy one a path test may start (three round trips lost
	// in a row, or a starved process on this shared machine, look like a
	// dead path), but it must find the current path and keep the SA on it.
	seen := 0
	phase := func(name string, lossy bool) map[string]int {
		t.Helper()
		time.Sleep(300 * time.Millisecond) // late events of the phase
		all := evp.Output()
		n := pathEvents(all[seen:])
		seen = len(all)
		if !lossy && len(n) > 0 {
			fail("%s: path events %v on a path that works", name, n)
		}
		if n["path-changed"] > 0 || n["suspended"] > 0 {
			fail("%s: false move: path events %v on a path that works", name, n)
		}
		if st, ok := healthOf(r); !ok || st.State != "established" {
			fail("%s: status %+v", name, st)
		}
		return n
	}

	// Healthy, busy.
	p := startPinger(t, l, 5*time.Second)
	sent, recv := p.result(t, time.Minute)
	phase("healthy path under a ping", false)
	t.Logf("healthy: %d pings, %d answered", sent, recv)
	// Healthy, idle.
	time.Sleep(3 * time.Second)
	phase("healthy idle path", false)

	// Lossy: 5 % of what the wlan NAT forwards, either way, IKE included.
	const lossy = "add table ip lossy; add chain ip lossy drops { type filter hook forward priority -10; policy accept; }; " +
		"add rule ip lossy drops numgen random mod 100 < 5 counter drop"
	if err := l.Exec(lab.NATWLAN, "nft", lossy); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Exec(lab.NATWLAN, "nft", "delete table ip lossy") }()
	p = startPinger(t, l, 15*time.Second)
	sent, recv = p.result(t, time.Minute)
	counters, _ := l.Output(lab.NATWLAN, "nft", "list", "table", "ip", "lossy")
	n := phase("path losing 5 %", true)
	if sent == 0 || recv == sent {
		fail("lossy phase: %d pings, %d answered: no loss, so the test proves nothing\n%s", sent, recv, counters)
	}
	t.Logf("lossy: %d pings, %d answered (%.1f %% lost); %d path tests, all answered on wlan; no move",
		sent, recv, 100*float64(sent-recv)/float64(sent), n["path-test"])
}
