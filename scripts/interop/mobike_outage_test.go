package interop

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// outageLength is scenario (e)'s time with every uplink down.
const outageLength = 20 * time.Second

// restoreUplink is what a network manager does when an uplink returns:
// link up, then the default route it learnt.
func restoreUplink(l *lab.Lab, name string) error {
	for _, u := range l.Uplinks {
		if u.Name != name {
			continue
		}
		if err := l.LinkUp(lab.Client, u.Name); err != nil {
			return err
		}
		return l.Exec(lab.Client, "ip", "route", "replace", "default", "via", u.Gate.Addr().String(), "dev", u.Name, "metric", fmt.Sprint(u.Metric))
	}
	return fmt.Errorf("no uplink %q", name)
}

// allLinksDown takes the uplinks devs of namespace ns down, in that order,
// in one step: one ip process, its netlink requests back to back. The
// current uplink must go last. Taken down first, it leaves the client the
// other one for the time it takes to close the second (a link-down waits
// for the kernel's grace periods: milliseconds under load, more with a
// process start between two commands), and the client rightly moves
// there. That is another scenario, a move and then the outage, and
// against strongSwan it ends the IKE SA: strongSwan rekeys the CHILD_SA
// after every UPDATE_SA_ADDRESSES (kernel-libipsec cannot move an SA),
// the request goes to the uplink just lost, and the lab's
// retransmissions (retransmit_tries 3, about 12 s) run out inside the 20 s
// outage, while no client could receive them. With the other uplink down
// first, the client's update cannot leave by it.
func allLinksDown(l *lab.Lab, ns string, devs ...string) error {
	var batch strings.Builder
	for _, d := range devs {
		fmt.Fprintf(&batch, "link set %s down\n", d)
	}
	f, err := os.CreateTemp(l.Dir, "links-down-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(batch.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return l.Exec(ns, "ip", "-batch", f.Name())
}

// runOutage is issue 3's scenario (e): every client uplink down for 20 s,
// then back. The connection is kept through the outage (state suspended),
// and afterwards carries traffic again on the preferred uplink with the
// same inner address and the same TCP connection; the events report the
// outage as suspended, then resumed.
func runOutage(t *testing.T, l *lab.Lab, r *lab.Roam, bin string, logs func() string) {
	t.Helper()
	fail := failWith(t, evidence{"gateway log", logs}, roamStatus("roam status", r), clientLog(r))
	connectOnce(t, l, r, fail)
	before := connected(t, r, "corp")
	if before.Interface != lab.WLAN || before.VirtualIP == "" {
		fail("tunnel starts on %q with inner address %q, want wlan and one", before.Interface, before.VirtualIP)
	}
	evp, err := l.Start(lab.Client, bin, "events", "--socket", r.Socket, "--json")
	if err != nil {
		t.Fatal(err)
	}
	defer evp.Stop()

	// A long TCP connection, rate-capped: it stalls through the outage and
	// must carry on afterwards. Its retransmission backoff has reached
	// about 13 s by the end of a 20 s outage, so it resumes up to that
	// long after the tunnel does; 36 s leaves room for it.
	tcp := tcpInBackground(l.TCPTransferRate, 36*time.Second, "2M")
	p := startPinger(t, l, 1500*time.Millisecond+outageLength+5*time.Second)
	time.Sleep(1500 * time.Millisecond)
	// The uplink not in use goes first: see allLinksDown.
	if err := allLinksDown(l, lab.Client, lab.WWAN, lab.WLAN); err != nil {
		fail("links down: %v", err)
	}
	downAt := time.Now()
	// The connection stays, suspended, for the whole outage.
	suspended := false
	for time.Since(downAt) < outageLength {
		st := connected(t, r, "corp")
		switch st.State {
		case "suspended":
			suspended = true
			if st.Interface != "" {
				fail("suspended on interface %q", st.Interface)
			}
			if h, ok := healthOf(r); ok && h.State == "suspended" && h.Health != "no-path" {
				fail("health %q (%s) with every uplink down, want no-path", h.Health, h.HealthReason)
			}
		case "disconnected":
			fail("connection ended during the outage")
		}
		time.Sleep(time.Second)
	}
	if !suspended {
		fail("state never showed suspended during a %v outage", outageLength)
	}
	// Back in the order a laptop often sees: cellular first, then Wi-Fi.
	for _, u := range []string{lab.WWAN, lab.WLAN} {
		if err := restoreUplink(l, u); err != nil {
			fail("uplink back: %v", err)
		}
	}
	upAt := time.Now()
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 10*time.Second); err != nil {
		fail("tunnel did not recover: %v", err)
	}
	t.Logf("e-all-down: ping through the tunnel %v after the uplinks returned", time.Since(upAt).Round(time.Millisecond))
	deadline := time.Now().Add(10 * time.Second)
	after := connected(t, r, "corp")
	for after.State != "established" || after.Interface != lab.WLAN {
		if time.Now().After(deadline) {
			fail("after the outage: state %q on %q, want established on wlan", after.State, after.Interface)
		}
		time.Sleep(200 * time.Millisecond)
		after = connected(t, r, "corp")
	}
	if after.VirtualIP != before.VirtualIP {
		fail("inner address changed from %s to %s", before.VirtualIP, after.VirtualIP)
	}
	// ping's 10 ms interval stretches on a loaded machine.
	sent, recv := p.result(t, time.Minute)
	t.Logf("e-all-down: %d echoes sent, %d answered, %d lost", sent, recv, sent-recv)
	tcpSurvived(tcp, "the outage", fail)

	// suspended, then resumed, and nothing ended the connection.
	evp.Stop()
	var seq []string
	sc := bufio.NewScanner(strings.NewReader(evp.Output()))
	for sc.Scan() {
		var ev struct {
			Event, Profile, Reason string
			TookMS                 int64 `json:"took_ms"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Profile != "corp" {
			continue
		}
		switch ev.Event {
		case "suspended", "resumed", "disconnected":
			t.Logf("event %s: %s (took %d ms)", ev.Event, ev.Reason, ev.TookMS)
			seq = append(seq, ev.Event)
		}
	}
	if len(seq) < 2 || seq[0] != "suspended" || seq[len(seq)-1] != "resumed" || strings.Contains(strings.Join(seq, " "), "disconnected") {
		fail("events %v, want suspended ... resumed and no disconnect; all events:\n%s", seq, evp.Output())
	}
}

// TestMOBIKEOutageStrongSwanGateway: scenario (e) against strongSwan (no
// DPD in the lab's gateway config, so nothing there ends the SA).
func TestMOBIKEOutageStrongSwanGateway(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gw := startSwanGateway(t, l, pki, "psk", nil)
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	runOutage(t, l, r, bin, gw.Log)
}

// TestMOBIKEOutageRoamGateway: scenario (e) against roam gateway.
func TestMOBIKEOutageRoamGateway(t *testing.T) {
	l, bin := setup(t)
	r, _, logs := roamGatewayClient(t, l, bin)
	runOutage(t, l, r, bin, logs)
}
