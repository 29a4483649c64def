package interop

import (
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestChildRekeyStrongSwan: with a 10 s Child SA lifetime on one side at a
// time, the Child SA is replaced at least five times in a minute, started
// by roam in one run and by strongSwan in the other; a ping every 10 ms
// loses nothing and a TCP transfer runs through every rekey.
func TestChildRekeyStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	const (
		lifetime = 10 * time.Second
		run      = 55 * time.Second
	)
	for _, tc := range []struct {
		name             string
		roam, strongswan time.Duration
		// what strongSwan logs for each rekey in this direction
		marker string
	}{
		{"roam rekeys", lifetime, 0, "parsed CREATE_CHILD_SA request"},
		{"strongSwan rekeys", 0, lifetime, "generating CREATE_CHILD_SA request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := lab.GatewayConn("psk", goodPSK, nil, nil)
			conn.ChildRekey = tc.strongswan
			gw, err := l.StartCharon(lab.Gateway, lab.CharonOptions{Conns: []lab.SwanConn{conn}, PKI: pki, InterfacesIgnore: []string{"lan"}})
			if err != nil {
				t.Fatal(err)
			}
			defer gw.Stop()
			p := lab.LabProfile("psk", goodPSK, pki, nil)
			p.ChildRekey = tc.roam
			r := roamClient(t, l, bin, p)
			fail := func(format string, args ...any) {
				t.Helper()
				t.Logf("strongSwan gateway log:\n%s", gw.Log())
				t.Fatalf(format, args...)
			}
			if out, err := r.Connect("corp", 20*time.Second); err != nil {
				fail("connect: %v\n%s", err, out)
			}
			if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
				fail("ping through the tunnel: %v", err)
			}
			ping := startPinger(t, l, run)
			tcp := make(chan error, 1)
			go func() {
				_, err := l.TCPTransferRate(lab.Client, lab.Host, lab.HostAddr.Addr(), run-5*time.Second, "20M")
				tcp <- err
			}()
			// Watch the Child SA change under the traffic.
			spis := map[string]bool{}
			deadline := time.Now().Add(run)
			for time.Now().Before(deadline) {
				st := connected(t, r, "corp")
				for _, c := range st.Children {
					spis[string(c.SPIIn)] = true
				}
				time.Sleep(500 * time.Millisecond)
			}
			sent, recv := ping.result(t, 2*run)
			if err := <-tcp; err != nil {
				fail("TCP transfer through the rekeys: %v", err)
			}
			rekeys := strings.Count(gw.Log(), tc.marker)
			t.Logf("%s: %d rekeys in strongSwan's log, %d inbound SPIs seen, %d echoes sent, %d answered", tc.name, rekeys, len(spis), sent, recv)
			if rekeys < 5 || len(spis) < 6 {
				fail("%d rekeys logged and %d Child SAs seen in %v, want at least 5 rekeys", rekeys, len(spis), run)
			}
			if recv != sent {
				fail("%d of %d echoes lost across the rekeys", sent-recv, sent)
			}
			st := connected(t, r, "corp")
			t.Logf("roam drops: %s", st.Drops)
			if len(st.Children) != 1 {
				fail("roam keeps %d Child SAs after the rekeys: %+v", len(st.Children), st.Children)
			}
		})
	}
}
