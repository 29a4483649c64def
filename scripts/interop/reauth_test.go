package interop

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// reauthStatus is the part of `roam status --json` a reauthentication
// changes.
type reauthStatus struct {
	Name              string `json:"name"`
	State             string `json:"state"`
	VirtualIP         string `json:"virtual_ip"`
	IKESPIi           string `json:"ike_spi_i"`
	Reauthentications int    `json:"reauthentications"`
}

func reauthState(r *lab.Roam) (reauthStatus, bool) {
	return statusEntry[reauthStatus](r, "corp")
}

// reauthWatch follows the client while the test's traffic runs: every
// IKE SA seen, every state and inner address, and whether the TUN device
// was ever replaced.
type reauthWatch struct {
	spis, states, vips map[string]bool
	tunChanged         []string
	last               reauthStatus
}

// watchReauth follows the client while ping runs (its result bounded by
// timeout) and returns what it saw with the echoes sent and answered.
func watchReauth(t *testing.T, l *lab.Lab, r *lab.Roam, ping *pinger, timeout time.Duration) (w reauthWatch, sent, recv int) {
	t.Helper()
	stop := make(chan struct{})
	watched := make(chan reauthWatch, 1)
	go func() { watched <- pollReauth(l, r, stop) }()
	sent, recv = ping.result(t, timeout)
	close(stop)
	return <-watched, sent, recv
}

// pollReauth polls until stop is closed.
func pollReauth(l *lab.Lab, r *lab.Roam, stop <-chan struct{}) reauthWatch {
	w := reauthWatch{spis: map[string]bool{}, states: map[string]bool{}, vips: map[string]bool{}}
	index := tunIndex(l)
	for {
		select {
		case <-stop:
			return w
		case <-time.After(250 * time.Millisecond):
		}
		st, ok := reauthState(r)
		if !ok {
			w.states["(no status)"] = true
			continue
		}
		w.last = st
		w.spis[st.IKESPIi], w.states[st.State], w.vips[st.VirtualIP] = true, true, true
		if idx := tunIndex(l); idx != index {
			w.tunChanged = append(w.tunChanged, idx)
		}
	}
}

// countEvents counts the client's events of one kind.
func countEvents(out, kind string) (n int, reasons []string) {
	for _, ev := range lab.ParseEvents(out) {
		if ev.Profile == "corp" && ev.Event == kind {
			n++
			reasons = append(reasons, ev.Reason)
		}
	}
	return n, reasons
}

// TestReauthStrongSwan: a strongSwan gateway with reauth_time 15 s (3 s
// over_time, up to 3 s taken off at random) tells roam, which has a
// virtual IP, to reauthenticate with AUTH_LIFETIME (strongSwan cannot
// reauthenticate such a client itself). Over 3000 pings 10 ms apart (the
// lab's ping manages one per 15 ms or so: about 45 s)
// and an iperf3 TCP transfer, roam reauthenticates at least twice,
// make-before-break: every new IKE SA gets the same inner address
// (strongSwan reassigns the lease still online), the old IKE SA is deleted
// by roam before strongSwan's deadline, the TUN device stays, the state
// stays established, and echoes are not lost (at most one in a thousand
// tolerated, as in the rekey test, and reported).
func TestReauthStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	const run = 30 * time.Second
	conn := lab.GatewayConn("psk", goodPSK, nil, nil)
	conn.ReauthTime, conn.ReauthOver = 15*time.Second, 3*time.Second
	gw := startSwanConn(t, l, pki, conn)
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	var events *lab.Proc
	fail := failWith(t, swanLog("strongSwan gateway log", gw), clientLog(r), procOutput("roam events", &events))
	connectOnce(t, l, r, fail)
	before, ok := reauthState(r)
	if !ok || before.VirtualIP == "" {
		fail("status before: %+v", before)
	}
	var err error
	if events, err = r.StartEvents(); err != nil {
		t.Fatal(err)
	}
	defer events.Stop()
	acct := startEchoAccount(t, l)
	ping := startPinger(t, l, run)
	tcp := tcpInBackground(l.TCPTransferRate, run-5*time.Second, "20M")
	w, sent, recv := watchReauth(t, l, r, ping, 3*run)
	if err := <-tcp; err != nil {
		fail("TCP transfer through the reauthentications: %v", err)
	}
	events.Stop()
	n, reasons := countEvents(events.Output(), "reauthenticated")
	log := gw.Log()
	lifetimes := strings.Count(log, "N(AUTH_LFT)")
	reassigned := strings.Count(log, "reassigning online lease")
	deletes := strings.Count(log, "received DELETE for IKE_SA")
	t.Logf("%d reauthentications (%d IKE SAs seen, states %v); strongSwan: %d AUTH_LIFETIME sent, %d online leases reassigned, %d IKE SAs deleted by roam; %d echoes sent, %d answered, %d lost",
		n, len(w.spis), keys(w.states), lifetimes, reassigned, deletes, sent, recv, sent-recv)
	for _, r := range reasons {
		t.Logf("reauthenticated: %s", r)
	}
	if st, _, err := r.Status(); err == nil && len(st) == 1 {
		t.Logf("drops: %s", st[0].Drops)
	}
	if n < 2 || len(w.spis) < 3 || w.last.Reauthentications < 2 {
		fail("too few reauthentications in %v: %d events, %d IKE SAs, status %+v", run, n, len(w.spis), w.last)
	}
	if len(w.states) != 1 || !w.states["established"] {
		fail("states seen %v, want established throughout", keys(w.states))
	}
	if len(w.vips) != 1 || !w.vips[before.VirtualIP] {
		fail("inner addresses seen %v, want %s throughout", keys(w.vips), before.VirtualIP)
	}
	if len(w.tunChanged) > 0 {
		fail("TUN device replaced: ifindex %v", w.tunChanged)
	}
	// strongSwan told roam each time (N(AUTH_LFT) in the IKE_AUTH
	// response), gave the new SA the address the old one still held, and
	// the old SA went with roam's DELETE, never by strongSwan's timeout.
	if lifetimes < n+1 || reassigned < n || deletes < n {
		fail("strongSwan's log does not show each new IKE SA replacing the old one")
	}
	if strings.Contains(log, "did not reauthenticate as requested") {
		fail("strongSwan's reauthentication deadline passed before roam replaced the SA")
	}
	// strongSwan's userspace ESP overflows its own UDP socket now and then
	// under the TCP transfer, reauthentication or not (the rekey test
	// accounts for it the same way): only losses the gateway kernel's
	// overflow counters do not explain are the tunnel's.
	verdict := acct.verdict(t, sent, recv)
	t.Logf("%s", verdict)
	checkLoss(t, fail, ping.proc.Output(), events.Output(), sent, recv, verdict.unexplained())
	// One IKE SA with one Child SA at the end (a moment for a DELETE in
	// flight), with the same inner address.
	settle := time.Now().Add(8 * time.Second)
	for {
		sas, err := gw.ListSAs()
		if err == nil && len(sas) == 1 && len(sas[0].VirtualIPs) == 1 && sas[0].VirtualIPs[0].String() == before.VirtualIP {
			break
		}
		if time.Now().After(settle) {
			fail("strongSwan keeps %+v (%v)", sas, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReauthRoamGateway: roam's gateway with reauth_time 10 s sends
// AUTH_LIFETIME to a client that logs in with EAP-MSCHAPv2, its password
// typed into `roam connect` on a terminal (so kept only in the daemon's
// memory); the client reauthenticates at least twice, running EAP each
// time without asking again, under 2200 pings 10 ms apart (22-33 s),
// keeping its inner address without losing an echo; the gateway reports
// reauthentications, no disconnects, and ends with one SA for it.
func TestReauthRoamGateway(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	const run = 22 * time.Second
	g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "pubkey", PKI: pki, EAPPassword: eapPassword, ReauthTime: 10 * time.Second})
	p := lab.LabProfile("eap-mschapv2", "", pki, nil)
	p.EAPIdentity = lab.ClientID // the roam gateway's default eap_identity
	r := roamClient(t, l, bin, p)
	var events *lab.Proc
	fail := failWith(t, gatewayOutput(gp), clientLog(r), procOutput("roam events", &events))
	var out string
	var err error
	// The gateway needs a moment to bind.
	for i := 0; i < 3; i++ {
		if out, err = connectOnTerminal(t, r, "corp", eapPassword, 20*time.Second); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		fail("connect: %v\n%s", err, out)
	}
	noPassword(t, "the terminal", out)
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("ping through the tunnel: %v", err)
	}
	before, _ := reauthState(r)
	if events, err = r.StartEvents(); err != nil {
		t.Fatal(err)
	}
	defer events.Stop()
	gwEvents, err := g.StartEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer gwEvents.Stop()
	ping := startPinger(t, l, run)
	w, sent, recv := watchReauth(t, l, r, ping, 3*run)
	events.Stop()
	n, _ := countEvents(events.Output(), "reauthenticated")
	dlog := daemonLog(t, r)
	eaps := strings.Count(dlog, "EAP succeeded")
	t.Logf("%d reauthentications (%d IKE SAs seen, %d EAP logins); %d echoes sent, %d answered, %d lost", n, len(w.spis), eaps, sent, recv, sent-recv)
	if eaps < n+1 {
		fail("%d EAP logins for %d reauthentications: the new SAs did not run EAP", eaps, n)
	}
	noPassword(t, "the daemon's log", dlog)
	// The gateway reports each new SA as alice's reauthentication, and the
	// old SAs' ends as no disconnect.
	gwEvents.Stop()
	var gwReauths, gwDisconnects int
	for _, ev := range lab.ParseEvents(gwEvents.Output()) {
		switch ev.Event {
		case "reauthenticated":
			gwReauths++
		case "disconnected":
			gwDisconnects++
		}
	}
	t.Logf("gateway events: %d reauthenticated, %d disconnected", gwReauths, gwDisconnects)
	if gwReauths < n || gwDisconnects > 0 {
		fail("gateway events:\n%s", gwEvents.Output())
	}
	noPassword(t, "the events", events.Output())
	if n < 2 || len(w.spis) < 3 {
		fail("too few reauthentications in %v: %d events, %d IKE SAs", run, n, len(w.spis))
	}
	if len(w.states) != 1 || !w.states["established"] || len(w.vips) != 1 || !w.vips[before.VirtualIP] || len(w.tunChanged) > 0 {
		fail("states %v, inner addresses %v (had %s), TUN replaced %v", keys(w.states), keys(w.vips), before.VirtualIP, w.tunChanged)
	}
	checkLoss(t, fail, ping.proc.Output(), events.Output(), sent, recv, sent-recv)
	settle := time.Now().Add(8 * time.Second)
	for {
		st, _, err := g.Status()
		if err == nil && len(st) == 1 && st[0].VirtualIP == before.VirtualIP {
			break
		}
		if time.Now().After(settle) {
			fail("roam gateway lists %+v (%v), want one SA with %s", st, err, before.VirtualIP)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// reauthWindow is how close to a reauthentication an echo counts as
// crossing it: the new SA's negotiation, the switch and the old SA's
// deletion all happen within a few RTTs of the event.
const reauthWindow = time.Second

// checkLoss fails the test when an echo sent within reauthWindow of a
// reauthenticated event went unanswered: those are the ones a
// make-before-break switch must not lose. Others (the lab's two CPUs are
// shared with other tests; loss then comes in bursts unrelated to the
// tunnel) are reported and tolerated up to 2 %. unexplained is how many
// lost echoes congestion at the gateway's socket does not account for
// (all of them where the gateway is roam's): with none, losses near a
// reauthentication are congestion too.
func checkLoss(t *testing.T, fail func(string, ...any), pingOut, eventsOut string, sent, recv, unexplained int) {
	t.Helper()
	var at []time.Time
	for _, line := range strings.Split(eventsOut, "\n") {
		var ev struct {
			Time    time.Time `json:"time"`
			Profile string    `json:"profile"`
			Event   string    `json:"event"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Profile == "corp" && ev.Event == "reauthenticated" {
			at = append(at, ev.Time)
		}
	}
	near, lost := lossNear(pingOut, sent, at, reauthWindow)
	t.Logf("echoes lost: %d of %d, %d of them within %v of one of %d reauthentications", lost, sent, near, reauthWindow, len(at))
	if lost != sent-recv {
		t.Logf("(ping's own count: %d lost)", sent-recv)
	}
	if near > 0 && unexplained > 0 {
		fail("%d echoes lost across the reauthentications (%d lost echoes not explained by the gateway's socket overflows)", near, unexplained)
	}
	if lost > sent/50 {
		fail("%d of %d echoes lost", lost, sent)
	}
}

var pingReplyAt = regexp.MustCompile(`\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=(\d+) `)

// lossNear finds the echoes 1..count that `ping -D` saw no reply for, and
// how many of them were sent within window of one of at. A lost echo's
// send time is interpolated between its answered neighbours.
func lossNear(out string, count int, at []time.Time, window time.Duration) (near, lost int) {
	seen := map[int]time.Time{}
	for _, m := range pingReplyAt.FindAllStringSubmatch(out, -1) {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		frac, _ := strconv.ParseFloat("0."+m[2], 64)
		seq, _ := strconv.Atoi(m[3])
		seen[seq] = time.Unix(sec, int64(frac*1e9))
	}
	for k := 1; k <= count; k++ {
		if _, ok := seen[k]; ok {
			continue
		}
		lost++
		lo, hi := k-1, k+1
		for lo > 0 && seen[lo].IsZero() {
			lo--
		}
		for hi <= count && seen[hi].IsZero() {
			hi++
		}
		var sentAt time.Time
		switch {
		case lo > 0 && hi <= count:
			sentAt = seen[lo].Add(time.Duration(int64(seen[hi].Sub(seen[lo])) * int64(k-lo) / int64(hi-lo)))
		case lo > 0:
			sentAt = seen[lo].Add(time.Duration(k-lo) * 10 * time.Millisecond)
		case hi <= count:
			sentAt = seen[hi].Add(-time.Duration(hi-k) * 10 * time.Millisecond)
		default:
			near++ // nothing answered at all
			continue
		}
		for _, a := range at {
			if d := sentAt.Sub(a); d > -window && d < window {
				near++
				break
			}
		}
	}
	return near, lost
}

// TestLossNear checks the loss accounting on a synthetic `ping -D` output
// (no lab needed).
func TestLossNear(t *testing.T) {
	var b strings.Builder
	base := time.Unix(1_800_000_000, 0)
	for seq := 1; seq <= 100; seq++ {
		if seq == 20 || seq == 50 || seq == 51 || seq == 100 {
			continue
		}
		ts := base.Add(time.Duration(seq) * 10 * time.Millisecond)
		fmt.Fprintf(&b, "[%d.%06d] 64 bytes from 10.99.0.10: icmp_seq=%d ttl=63 time=0.5 ms\n", ts.Unix(), ts.Nanosecond()/1000, seq)
	}
	out := b.String()
	tests := []struct {
		name       string
		at         []time.Time
		window     time.Duration
		near, lost int
	}{
		{name: "no reauthentication", near: 0, lost: 4},
		{name: "one at echo 50", at: []time.Time{base.Add(505 * time.Millisecond)}, window: 50 * time.Millisecond, near: 2, lost: 4},
		{name: "one at echo 20, wide", at: []time.Time{base.Add(200 * time.Millisecond)}, window: time.Second, near: 4, lost: 4},
		{name: "far away", at: []time.Time{base.Add(time.Hour)}, window: time.Second, near: 0, lost: 4},
	}
	for _, tt := range tests {
		near, lost := lossNear(out, 100, tt.at, tt.window)
		if near != tt.near || lost != tt.lost {
			t.Errorf("%s: near %d lost %d, want %d %d", tt.name, near, lost, tt.near, tt.lost)
		}
	}
}
