package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// countRekeys counts the CREATE_CHILD_SA messages matching marker in
// strongSwan's log: Child SA rekeys carry REKEY_SA, IKE SA rekeys a KE
// payload without it.
func countRekeys(log, marker string) (child, ikeSA int) {
	return countRekeyLines(log, marker, "N(REKEY_SA)", " KE ")
}

// countRekeyLines counts the lines of log with marker that are a Child SA
// rekey (they contain childMark) or an IKE SA rekey (ikeMark).
func countRekeyLines(log, marker, childMark, ikeMark string) (child, ikeSA int) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, marker) {
			continue
		}
		switch {
		case strings.Contains(line, childMark):
			child++
		case strings.Contains(line, ikeMark):
			ikeSA++
		}
	}
	return child, ikeSA
}

// TestRekeyStrongSwan: with short lifetimes (Child SA 10 s, IKE SA 20 s) on
// one side at a time, the Child SA is replaced at least five times and the
// IKE SA at least twice in a minute, started by roam in one run and by
// strongSwan in the other; a ping every 10 ms loses nothing and a TCP
// transfer runs through every rekey.
func TestRekeyStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	const (
		childLife = 10 * time.Second
		ikeLife   = 20 * time.Second
		run       = 55 * time.Second
	)
	for _, tc := range []struct {
		name       string
		roamSets   bool
		swanMarker string // what strongSwan logs for each rekey in this direction
	}{
		{"roam rekeys", true, "parsed CREATE_CHILD_SA request"},
		{"strongSwan rekeys", false, "generating CREATE_CHILD_SA request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := lab.GatewayConn("psk", goodPSK, nil, nil)
			p := lab.LabProfile("psk", goodPSK, pki, nil)
			if tc.roamSets {
				p.ChildRekey, p.IKERekey = childLife, ikeLife
			} else {
				conn.ChildRekey, conn.IKERekey = childLife, ikeLife
			}
			gw := startSwanConn(t, l, pki, conn)
			r := roamClient(t, l, bin, p)
			fail := func(format string, args ...any) {
				t.Helper()
				roamLog, _ := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log"))
				t.Logf("strongSwan gateway log:\n%s\nroam log:\n%s", gw.Log(), roamLog)
				t.Fatalf(format, args...)
			}
			// status fails the test, with both logs, when the connection is gone.
			status := func() lab.Status {
				t.Helper()
				st, raw, err := r.Status()
				if err != nil {
					fail("roam status: %v", err)
				}
				for _, s := range st {
					if s.Name == "corp" {
						return s
					}
				}
				fail("roam status has no corp:\n%s", raw)
				return lab.Status{}
			}
			connectOnce(t, l, r, fail)
			acct := startEchoAccount(t, l)
			ping := startPinger(t, l, run)
			tcp := tcpInBackground(l.TCPTransferRate, run-5*time.Second, "20M")
			// Watch the SAs change under the traffic.
			childSPIs, ikeSPIs := map[string]bool{}, map[string]bool{}
			deadline := time.Now().Add(run)
			for time.Now().Before(deadline) {
				st := status()
				ikeSPIs[st.IKESPIi] = true
				for _, c := range st.Children {
					childSPIs[string(c.SPIIn)] = true
				}
				time.Sleep(500 * time.Millisecond)
			}
			sent, recv := ping.result(t, 2*run)
			if err := <-tcp; err != nil {
				fail("TCP transfer through the rekeys: %v", err)
			}
			verdict := acct.verdict(t, sent, recv)
			childRekeys, ikeRekeys := countRekeys(gw.Log(), tc.swanMarker)
			st := status()
			t.Logf("%s: strongSwan logged %d Child SA and %d IKE SA rekeys; roam showed %d Child and %d IKE SAs; %s; roam drops %s",
				tc.name, childRekeys, ikeRekeys, len(childSPIs), len(ikeSPIs), verdict, strings.Join(strings.Fields(string(st.Drops)), " "))
			if childRekeys < 5 || len(childSPIs) < 6 || ikeRekeys < 2 || len(ikeSPIs) < 3 {
				fail("too few rekeys in %v", run)
			}
			// No echo may be lost to the rekeys. The only loss accepted
			// is congestion at strongSwan's userspace ESP, which on this
			// shared machine now and then overflows its UDP socket under
			// the TCP transfer, rekey or not (issue 4's "1-15 echoes under
			// load": the host's counters showed every such echo was a
			// request that never arrived, and the gateway's kernel
			// counted the overflows; those right at a roam-started Child
			// rekey were our DELETE overtaking ESP still queued in
			// kernel-libipsec, which ike.replacedDeleteDelay addresses).
			if n := verdict.unexplained(); n > 0 {
				fail("%d echoes lost across the rekeys that congestion does not explain (%s):\n%s", n, verdict,
					lossReport(ping.proc.Output(), gw.Log(), "", ""))
			}
			if lost := sent - recv; lost > 0 {
				t.Logf("%d echoes lost to congestion at strongSwan's socket:\n%s", lost, lossReport(ping.proc.Output(), gw.Log(), "", ""))
			}
			// A rekey may be half done at this moment: both old and new
			// SA exist until the DELETE (and strongSwan lists a deleted
			// one for a while), so allow a few seconds to settle.
			settle := time.Now().Add(8 * time.Second)
			installed := func(cs []lab.ChildSA) (n int) {
				for _, c := range cs {
					if c.State == "INSTALLED" {
						n++
					}
				}
				return n
			}
			for {
				st = status()
				sas, err := gw.ListSAs()
				if st.State == "established" && len(st.Children) == 1 && err == nil && len(sas) == 1 && installed(sas[0].Children) == 1 {
					break
				}
				if time.Now().After(settle) {
					fail("after the rekeys roam is %s with %d Child SAs; strongSwan keeps %+v (%v)", st.State, len(st.Children), sas, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
