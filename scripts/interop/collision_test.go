package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestIKERekeyCollisionStrongSwan: roam and strongSwan rekey the IKE SA at
// the same time (RFC 7296 2.8.2). A delay line holds the client uplink's
// packets for 200 ms each way; when roam logs its rekey request, the test
// makes strongSwan start its own at once, so the two requests cross.
// Both ends must pick the same survivor by the nonces (one logs that it
// won, the other that it lost), and afterwards strongSwan holds exactly
// one IKE SA with the one CHILD_SA, which carries traffic.
func TestIKERekeyCollisionStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	delayBin, err := lab.BuildDelay(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddDelay(lab.NATWLAN, delayBin, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	gw := startSwanGateway(t, l, pki, "psk", nil)
	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.IKERekey = 12 * time.Second
	r := roamClient(t, l, bin, p)
	logPath := filepath.Join(filepath.Dir(r.Socket), "roam.log")
	roamLog := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Logf("strongSwan gateway log:\n%s\nroam log:\n%s", gw.Log(), roamLog())
		t.Fatalf(format, args...)
	}
	connectOnce(t, l, r, fail)
	const rounds = 2
	collisions := 0
	for round := 1; round <= rounds; round++ {
		// Wait for roam's next rekey request, then cross it.
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(roamLog(), "rekeying IKE SA") < round {
			if time.Now().After(deadline) {
				fail("round %d: roam did not rekey the IKE SA", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if out, err := gw.Swanctl("--rekey", "--ike", "gw"); err != nil {
			fail("round %d: swanctl --rekey: %v\n%s", round, err, out)
		}
		// Settled: one IKE SA with one installed CHILD_SA at strongSwan,
		// roam established on the SPIs strongSwan has.
		deadline = time.Now().Add(15 * time.Second)
		for {
			sas, err := gw.ListSAs()
			st, ok := reconnectState(r)
			if err == nil && ok && len(sas) == 1 && len(sas[0].Children) == 1 && sas[0].Children[0].State == "INSTALLED" &&
				st.State == "established" && strings.Count(roamLog(), "IKE SA rekeyed") >= round {
				break
			}
			if time.Now().After(deadline) {
				fail("round %d: not settled: strongSwan %+v (%v), roam %+v", round, sas, err, st)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 2); err != nil {
			fail("round %d: ping after the rekeys: %v", round, err)
		}
		rl, sl := roamLog(), gw.Log()
		roamWon, roamLost := strings.Count(rl, "IKE SA rekey collision won"), strings.Count(rl, "IKE SA rekey collision lost")
		swanWon, swanLost := strings.Count(sl, "IKE_SA rekey collision won"), strings.Count(sl, "IKE_SA rekey collision lost")
		if roamWon != swanLost || roamLost != swanWon {
			fail("round %d: the ends disagree: roam won %d lost %d, strongSwan won %d lost %d", round, roamWon, roamLost, swanWon, swanLost)
		}
		collisions = roamWon + roamLost
		t.Logf("round %d: collisions so far %d (roam won %d, lost %d)", round, collisions, roamWon, roamLost)
	}
	if collisions == 0 {
		fail("the rekeys never crossed")
	}
	for _, lg := range []struct{ who, text string }{{"roam", roamLog()}, {"strongSwan", gw.Log()}} {
		for _, line := range strings.Split(lg.text, "\n") {
			if strings.Contains(line, "collision") || strings.Contains(line, "redundant") {
				t.Logf("%s: %s", lg.who, strings.TrimSpace(line))
			}
		}
	}
}
