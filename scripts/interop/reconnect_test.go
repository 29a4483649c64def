package interop

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// reconnectStatus is the part of `roam status --json` a reconnect changes.
type reconnectStatus struct {
	Name             string `json:"name"`
	State            string `json:"state"`
	VirtualIP        string `json:"virtual_ip"`
	IKESPIi          string `json:"ike_spi_i"`
	ReconnectAttempt int    `json:"reconnect_attempt"`
	LastError        string `json:"last_error"`
}

func reconnectState(r *lab.Roam) (reconnectStatus, bool) {
	return statusEntry[reconnectStatus](r, "corp")
}

// waitReconnected waits, up to 10 s after since (when what happened), for
// r to be established on an IKE SA other than oldSPI, failing if the
// connection ends instead, and pings through the new SA.
func waitReconnected(l *lab.Lab, r *lab.Roam, oldSPI string, since time.Time, what string, fail func(string, ...any)) reconnectStatus {
	for {
		st, ok := reconnectState(r)
		if ok && st.State == "established" && st.IKESPIi != oldSPI {
			if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 1); err != nil {
				fail("ping through the new SA: %v", err)
			}
			return st
		}
		if ok && st.State == "disconnected" {
			fail("the connection ended: %+v", st)
		}
		if time.Since(since) > 10*time.Second {
			fail("not reconnected 10 s after %s: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tunIndex is the client's TUN device's interface index ("" when absent):
// a device removed and created again gets another one.
func tunIndex(l *lab.Lab) string {
	// Not l.Output: it logs every command, and this one is polled.
	out, err := l.Cmd(lab.Client, "cat", "/sys/class/net/roam-corp/ifindex").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// killCharon ends charon the hard way, as a crash or a power cut does: no
// DELETE reaches the client, and the new charon knows nothing of its SAs.
func killCharon(t *testing.T, gw *lab.Charon) {
	t.Helper()
	if err := syscall.Kill(gw.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gw.Stop() // reaps it
}

// TestReconnectAfterGatewayRestart: the strongSwan gateway's charon dies
// (SIGKILL: silence, not a DELETE) and a new one starts 4 s later. The
// restarted charon ignores the old SA's messages; roam notices that its
// path test goes unanswered, negotiates a new SA alongside, and is back
// within 10 s of the gateway's return, with the same inner address (the
// pool hands the first address to the first client again), the TUN device
// never removed, a TCP connection through the tunnel intact and a ping
// every 10 ms answered again. Status shows reconnecting meanwhile, events
// each attempt. Then `roam disconnect`, another gateway restart, and
// nothing comes back.
func TestReconnectAfterGatewayRestart(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gw := startSwanGateway(t, l, pki, "psk", nil)
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	logs := []func() string{gw.Log}
	// One strongSwan log for each gateway the test starts.
	swanLogs := evidence{"strongSwan gateway logs", func() string {
		var b strings.Builder
		for i, lg := range logs {
			fmt.Fprintf(&b, "log %d:\n%s\n", i+1, lg())
		}
		return b.String()
	}}
	fail := failWith(t, swanLogs, roamStatus("roam status", r), clientLog(r))
	connectOnce(t, l, r, fail)
	before, ok := reconnectState(r)
	if !ok || before.State != "established" || before.VirtualIP == "" {
		fail("status before the restart: %+v", before)
	}
	index := tunIndex(l)
	if index == "" {
		fail("no TUN device roam-corp")
	}
	evp, err := l.Start(lab.Client, bin, "events", "--socket", r.Socket, "--json")
	if err != nil {
		t.Fatal(err)
	}
	defer evp.Stop()

	const (
		lead = 2 * time.Second // traffic before the crash
		down = 4 * time.Second // no charon at all
	)
	// A rate-capped TCP connection that stalls through the restart and
	// must carry on after it.
	tcp := tcpInBackground(l.TCPTransferRate, 14*time.Second, "2M")
	p := startPinger(t, l, 12*time.Second)

	// Watch the client throughout: the state, and the TUN device.
	stopWatch := make(chan struct{})
	var watchMu sync.Mutex
	var states []string
	var tunGone []string
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(100 * time.Millisecond):
			}
			st, ok := reconnectState(r)
			idx := tunIndex(l)
			watchMu.Lock()
			if ok && (len(states) == 0 || states[len(states)-1] != st.State) {
				states = append(states, st.State)
			}
			if idx != index {
				tunGone = append(tunGone, idx)
			}
			watchMu.Unlock()
		}
	}()

	time.Sleep(lead)
	killCharon(t, gw)
	time.Sleep(down)
	gw2 := startSwanGateway(t, l, pki, "psk", nil)
	logs = append(logs, gw2.Log)
	backAt := time.Now()

	// Back: a new IKE SA, established, and traffic through it.
	after := waitReconnected(l, r, before.IKESPIi, backAt, "the gateway returned", fail)
	took := time.Since(backAt)
	t.Logf("reconnected and pinging %v after the gateway returned", took.Round(time.Millisecond))
	if took > 10*time.Second {
		fail("back only %v after the gateway returned, want within 10 s", took)
	}
	if after.VirtualIP != before.VirtualIP {
		fail("inner address changed from %s to %s", before.VirtualIP, after.VirtualIP)
	}
	if _, err := gw2.WaitSA(5*time.Second, lab.Established); err != nil {
		fail("restarted gateway: %v", err)
	}

	sent, recv := p.result(t, time.Minute)
	t.Logf("%d echoes sent, %d answered, %d lost", sent, recv, sent-recv)
	if recv == 0 || sent-recv > sent/2 {
		fail("ping: %d of %d answered", recv, sent)
	}
	tcpSurvived(tcp, "the restart", fail)
	close(stopWatch)
	<-watched
	watchMu.Lock()
	t.Logf("states seen: %v", states)
	if len(tunGone) > 0 {
		fail("TUN device removed or replaced during the restart (ifindex %q, was %s)", tunGone, index)
	}
	if !strings.Contains(strings.Join(states, " "), "reconnecting") {
		fail("status never showed reconnecting: %v", states)
	}
	if strings.Contains(strings.Join(states, " "), "disconnected") {
		fail("status showed disconnected: %v", states)
	}
	watchMu.Unlock()

	// Events: an attempt (connecting with the reason), then established
	// as a reconnect; never disconnected.
	evp.Stop()
	var attempts, reconnected int
	sc := bufio.NewScanner(strings.NewReader(evp.Output()))
	for sc.Scan() {
		var ev struct{ Event, Profile, Reason string }
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Profile != "corp" {
			continue
		}
		switch {
		case ev.Event == "connecting" && strings.HasPrefix(ev.Reason, "reconnect attempt "):
			attempts++
			t.Logf("event connecting: %s", ev.Reason)
		case ev.Event == "established" && strings.HasPrefix(ev.Reason, "reconnected after "):
			reconnected++
			t.Logf("event established: %s", ev.Reason)
		case ev.Event == "disconnected":
			fail("disconnected event during the restart: %s", ev.Reason)
		}
	}
	if attempts == 0 || reconnected != 1 {
		fail("%d reconnect attempts and %d reconnected events; all events:\n%s", attempts, reconnected, evp.Output())
	}

	// After `roam disconnect` nothing reconnects, not even to a gateway
	// that restarts once more.
	if out, err := r.Disconnect("corp"); err != nil {
		fail("disconnect: %v\n%s", err, out)
	}
	killCharon(t, gw2)
	gw3 := startSwanGateway(t, l, pki, "psk", nil)
	logs = append(logs, gw3.Log)
	time.Sleep(5 * time.Second)
	if sas, err := gw3.ListSAs(); err != nil || len(sas) != 0 {
		fail("after disconnect the gateway has SAs %+v (%v)", sas, err)
	}
	if st, ok := reconnectState(r); ok {
		fail("after disconnect roam status still lists %+v", st)
	}
	if idx := tunIndex(l); idx != "" {
		fail("TUN device still there after disconnect")
	}
}
