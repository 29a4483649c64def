package interop

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// roamEvent is one line of `roam events --json`.
type roamEvent struct{ Event, Profile, Reason string }

// eventsOf parses the events of profile corp from `roam events` output.
func eventsOf(out string) []roamEvent {
	var evs []roamEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev roamEvent
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Profile == "corp" {
			evs = append(evs, ev)
		}
	}
	return evs
}

// TestIdleDPDStrongSwan: an idle tunnel (no traffic at all) to a strongSwan
// gateway whose charon is frozen (SIGSTOP: it neither answers nor says
// goodbye). With dpd_delay 3 s roam's liveness check starts within the
// delay and gives up after its retransmissions (ConnectRetransmit, about
// 9.5 s); with reconnect = false the connection ends with the DPD reason,
// otherwise it goes to reconnecting with that reason.
func TestIdleDPDStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	const dpd = 3 * time.Second
	// dpd_delay, plus the retransmission schedule, plus slack for a loaded
	// machine.
	limit := dpd + 10*time.Second + 5*time.Second
	for _, reconnect := range []bool{false, true} {
		name := map[bool]string{false: "reconnect off", true: "reconnect on"}[reconnect]
		t.Run(name, func(t *testing.T) {
			gw := startSwanGateway(t, l, pki, "psk", nil)
			p := lab.LabProfile("psk", goodPSK, pki, nil)
			p.DPDDelay, p.NoReconnect = dpd, !reconnect
			r := roamClient(t, l, bin, p)
			frozen := false
			defer func() {
				if frozen {
					_ = syscall.Kill(gw.PID(), syscall.SIGCONT)
				}
			}()
			fail := failWith(t, swanLog("strongSwan gateway log", gw), clientLog(r))
			connectOnce(t, l, r, fail)
			evp, err := l.Start(lab.Client, bin, "events", "--socket", r.Socket, "--json")
			if err != nil {
				t.Fatal(err)
			}
			defer evp.Stop()
			// Let the ping's traffic age past the delay's start, then
			// freeze the gateway: from now on nothing crosses the tunnel.
			time.Sleep(500 * time.Millisecond)
			if err := syscall.Kill(gw.PID(), syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			frozen = true
			start := time.Now()
			var took time.Duration
			var reason string
			for took == 0 {
				if time.Since(start) > limit {
					fail("no DPD verdict %v after the gateway froze; events:\n%s", limit, evp.Output())
				}
				time.Sleep(100 * time.Millisecond)
				if reconnect {
					if st, ok := reconnectState(r); ok && st.State == "reconnecting" {
						took, reason = time.Since(start), st.LastError
					}
					continue
				}
				for _, ev := range eventsOf(evp.Output()) {
					if ev.Event == "disconnected" {
						took, reason = time.Since(start), ev.Reason
					}
				}
			}
			t.Logf("%s: DPD verdict %v after the gateway froze (dpd_delay %v): %q", name, took.Round(10*time.Millisecond), dpd, reason)
			if !strings.Contains(reason, "gateway not answering (dead peer detection)") {
				fail("reason %q does not name dead peer detection", reason)
			}
			// The check is retransmitted before the verdict: at least
			// the first timeouts of the schedule pass.
			if took < 3*time.Second {
				fail("verdict after %v, before the liveness check could have been retransmitted", took)
			}
		})
	}
}

// TestReconnectAfterRoamGatewayRestart: roam gateway is killed (SIGKILL, no
// DELETE) and a new one started at once, while a ping runs. The new
// gateway answers the client's next request on the old IKE SA (its path
// test once ESP goes unanswered) with an unprotected INVALID_IKE_SPI; the
// client takes the hint and negotiates a new SA at once instead of waiting
// for its check to time out. Reported: the time from the restart to a ping
// answered through the new SA.
func TestReconnectAfterRoamGatewayRestart(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	cfg := lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki}
	_, gp := startRoamGateway(t, l, bin, cfg)
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	var gp2 *lab.Proc
	fail := failWith(t, evidence{"first roam gateway output", gp.Output}, procOutput("restarted roam gateway output", &gp2), clientLog(r))
	connectRoam(t, l, r, fail)
	before, ok := reconnectState(r)
	if !ok || before.State != "established" {
		fail("status before the restart: %+v", before)
	}
	p := startPinger(t, l, 8*time.Second)
	time.Sleep(time.Second)
	if err := syscall.Kill(gp.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gp.Stop()
	restart := time.Now()
	_, gp2 = startRoamGateway(t, l, bin, cfg)
	waitReconnected(l, r, before.IKESPIi, restart, "the restart", fail)
	took := time.Since(restart)
	sent, recv := p.result(t, time.Minute)
	t.Logf("reconnected and pinging %v after the gateway restarted; %d echoes sent, %d answered", took.Round(time.Millisecond), sent, recv)
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log"))
	if !strings.Contains(string(b), "notify=INVALID_IKE_SPI") {
		fail("the client never got the restarted gateway's INVALID_IKE_SPI")
	}
	// Without the hint the client would wait for its check's ~9.5 s of
	// retransmissions: the hint must do better.
	if took > 5*time.Second {
		fail("back only %v after the restart", took)
	}
}
