package interop

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// pinger pings the host through the tunnel every 10 ms in the background
// and reports how many echoes were sent and answered.
type pinger struct {
	proc *lab.Proc
}

func startPinger(t *testing.T, l *lab.Lab, d time.Duration) *pinger {
	t.Helper()
	count := int(d / (10 * time.Millisecond))
	p, err := l.Start(lab.Client, "ping", "-n", "-D", "-O", "-i", "0.01", "-W", "1", "-c", strconv.Itoa(count), lab.HostAddr.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return &pinger{proc: p}
}

// tcpInBackground runs transfer (the lab's TCPTransferRate or
// TCPDownloadRate) between the client and the host through the tunnel for
// d, capped at rate, in the background: the traffic a test's event must
// live through. Its error arrives on the channel.
func tcpInBackground(transfer func(cliNS, srvNS string, dst netip.Addr, d time.Duration, rate string) (float64, error), d time.Duration, rate string) <-chan error {
	tcp := make(chan error, 1)
	go func() {
		_, err := transfer(lab.Client, lab.Host, lab.HostAddr.Addr(), d, rate)
		tcp <- err
	}()
	return tcp
}

// tcpSurvived waits up to a minute for a transfer tcpInBackground started
// to end, and fails unless it ended well: the connection lived through
// what (an outage, a restart).
func tcpSurvived(tcp <-chan error, what string, fail func(string, ...any)) {
	select {
	case err := <-tcp:
		if err != nil {
			fail("TCP connection through the tunnel broke: %v", err)
		}
	case <-time.After(60 * time.Second):
		fail("TCP transfer still running a minute after %s", what)
	}
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// result waits for ping to finish and returns sent and received.
func (p *pinger) result(t *testing.T, timeout time.Duration) (int, int) {
	t.Helper()
	select {
	case <-p.proc.Done():
	case <-time.After(timeout):
		// On a loaded machine ping can fall behind its schedule; SIGINT
		// makes it stop and print what it has.
		_ = p.proc.Signal(syscall.SIGINT)
		p.proc.Wait(5 * time.Second)
	}
	m := pingStats.FindStringSubmatch(p.proc.Output())
	if m == nil {
		t.Fatalf("no ping statistics in:\n%s", p.proc.Output())
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	return sent, recv
}

// mobikeScenario is one move of issue 3's lab list.
type mobikeScenario struct {
	name string
	// prepare, when set, runs before the pinger starts and must leave the
	// tunnel on prepareIf.
	prepare   func(l *lab.Lab) error
	prepareIf string
	// move changes the client's uplinks; the tunnel is on wlan before it.
	move func(l *lab.Lab) error
	// wantIf is the uplink the tunnel must end on.
	wantIf string
	// zeroLoss: make-before-break, no echo may be lost (but slack).
	zeroLoss bool
	// slack is the loss a zeroLoss scenario tolerates: strongSwan with
	// kernel-libipsec cannot move a CHILD_SA, so it rekeys it right after
	// every update, and an echo caught between its ESP and IKE threads
	// (old SA deleted while our packet on it is queued) is lost now and
	// then: one echo, in two of about ten full runs. roam gateway gets no
	// slack, and the benchmark (bench-roam) measures the loss too.
	slack int
	// sameUplink: the move gives no interface event (NAT state lost); the
	// tunnel stays on wantIf and recovers by refreshing its path.
	sameUplink bool
	// orMoveTo, when set, is an uplink the tunnel may end on instead of
	// wantIf, with a path change.
	orMoveTo string
	// wantEvent, when set, must be among the client's events after the
	// move (one of several, separated by "|").
	wantEvent string
	// maxLoss bounds the echoes lost when set.
	maxLoss int
	// after, when set, runs once the tunnel has recovered (extra checks
	// and diagnostics).
	after func(t *testing.T, l *lab.Lab, r *lab.Roam, st lab.Status, evs []lab.Event)
	// before, when set, checks the connection before the move; it may
	// skip the test (a gateway without a feature the move needs).
	before func(t *testing.T, st lab.Status)
	// download: the TCP connection carries data from the host to the
	// client instead of the other way.
	download bool
	// congestionExplains: echoes lost to the gateway's own full socket
	// buffer (RcvbufErrors in its namespace) are counted as congestion,
	// not as the move's loss. Only for strongSwan, whose userspace ESP
	// (kernel-libipsec) falls behind the TCP transfer on this 2-CPU
	// machine at any moment, move or not; roam gateway stays strict.
	congestionExplains bool
}

func wlanBack(l *lab.Lab) error {
	// What a laptop's network manager does when Wi-Fi returns: link up,
	// then the default route it learnt from DHCP.
	if err := l.LinkUp(lab.Client, lab.WLAN); err != nil {
		return err
	}
	return l.Exec(lab.Client, "ip", "route", "replace", "default", "via", lab.RouterWLAN.Addr().String(), "dev", lab.WLAN, "metric", "100")
}

var mobikeScenarios = []mobikeScenario{
	{name: "a-link-down", move: func(l *lab.Lab) error { return l.LinkDown(lab.Client, lab.WLAN) }, wantIf: lab.WWAN},
	{name: "b-address-removed", move: func(l *lab.Lab) error { return l.DelAddr(lab.Client, lab.WLAN, lab.ClientWLAN) }, wantIf: lab.WWAN},
	{name: "c-preferred-back",
		prepare:   func(l *lab.Lab) error { return l.LinkDown(lab.Client, lab.WLAN) },
		prepareIf: lab.WWAN,
		move:      wlanBack, wantIf: lab.WLAN, zeroLoss: true},
}

// debugCapture is, with ROAM_DEBUG_CAPTURE set, what tcpdump sees of a few
// pings in the client, nat-wwan and gateway namespaces.
func debugCapture(l *lab.Lab) evidence {
	return evidence{"captures", func() string {
		if os.Getenv("ROAM_DEBUG_CAPTURE") == "" {
			return ""
		}
		var b strings.Builder
		for _, ns := range []string{lab.Client, lab.NATWWAN, lab.Gateway} {
			pp, _ := l.Start(lab.Client, "ping", "-c", "4", "-i", "0.3", lab.HostAddr.Addr().String())
			out, _ := l.Output(ns, "timeout", "2", "tcpdump", "-ni", "any", "-c", "12", "udp or icmp")
			if pp != nil {
				pp.Wait(3 * time.Second)
			}
			fmt.Fprintf(&b, "in %s:\n%s\n", ns, out)
		}
		return b.String()
	}}
}

// runMobike connects roam on wlan, runs a 10 ms pinger and a TCP transfer
// through the tunnel, makes the move, and checks the tunnel followed it with
// the same inner address and the TCP connection intact.
func runMobike(t *testing.T, l *lab.Lab, r *lab.Roam, sc mobikeScenario, logs func() string) {
	t.Helper()
	fail := failWith(t, evidence{"gateway log", logs}, debugCapture(l), roamStatus("roam status", r), clientLog(r))
	connectOnce(t, l, r, fail)
	before := connected(t, r, "corp")
	if before.Interface != lab.WLAN {
		fail("tunnel starts on %q, want wlan", before.Interface)
	}
	if sc.prepare != nil {
		if err := sc.prepare(l); err != nil {
			fail("prepare: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for connected(t, r, "corp").Interface != sc.prepareIf {
			if time.Now().After(deadline) {
				fail("tunnel did not move to %s while preparing", sc.prepareIf)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			fail("ping after preparing: %v", err)
		}
		before = connected(t, r, "corp")
	}
	if sc.before != nil {
		sc.before(t, before)
	}
	// A long TCP connection that must survive the move.
	// Rate-capped: the point is a connection that lives through the
	// move, not a saturated queue that drops pings by itself.
	transfer := l.TCPTransferRate
	if sc.download {
		transfer = l.TCPDownloadRate
	}
	tcp := tcpInBackground(transfer, 8*time.Second, "20M")
	events, err := r.StartEvents()
	if err != nil {
		fail("roam events: %v", err)
	}
	defer events.Stop()
	var acct *echoAccount
	if sc.congestionExplains {
		acct = startEchoAccount(t, l)
	}
	p := startPinger(t, l, 7*time.Second)
	time.Sleep(1500 * time.Millisecond)
	if err := sc.move(l); err != nil {
		fail("move: %v", err)
	}
	sent, recv := p.result(t, 20*time.Second)
	t.Logf("%s: %d echoes sent, %d answered, %d lost", sc.name, sent, recv, sent-recv)
	// lost is the loss the move is judged by: with congestionExplains,
	// only what the gateway's socket overflows do not account for.
	lost := sent - recv
	if acct != nil {
		v := acct.verdict(t, sent, recv)
		lost = v.unexplained()
		t.Logf("%s: %s; %d not explained by congestion", sc.name, v, lost)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("tunnel did not recover: %v", err)
	}
	after := connected(t, r, "corp")
	evs := lab.ParseEvents(events.Output())
	for _, ev := range evs {
		if ev.Event != "path-test" {
			t.Logf("event: %s from=%s to=%s interface=%s took=%dms %s", ev.Event, ev.From, ev.To, ev.Interface, ev.TookMS, ev.Reason)
		}
	}
	switch {
	case sc.orMoveTo != "" && after.Interface == sc.orMoveTo && after.PathChanges > before.PathChanges:
		t.Logf("the tunnel moved to %s instead of staying on %s", sc.orMoveTo, sc.wantIf)
	case after.Interface != sc.wantIf || (!sc.sameUplink && after.PathChanges <= before.PathChanges):
		fail("after the move: interface %q, path changes %d; want %q", after.Interface, after.PathChanges, sc.wantIf)
	}
	if sc.wantEvent != "" && !hasEvent(evs, strings.Split(sc.wantEvent, "|")...) {
		fail("no %s event after the move; events:\n%s", sc.wantEvent, events.Output())
	}
	if sc.after != nil {
		sc.after(t, l, r, after, evs)
	}
	if sc.maxLoss > 0 && lost > sc.maxLoss {
		fail("%d echoes lost, want at most %d", lost, sc.maxLoss)
	}
	if after.VirtualIP != before.VirtualIP {
		fail("inner address changed from %s to %s", before.VirtualIP, after.VirtualIP)
	}
	if err := <-tcp; err != nil {
		fail("TCP connection through the tunnel broke: %v", err)
	}
	if sc.zeroLoss && lost > 0 && lost <= sc.slack {
		t.Logf("make-before-break lost %d echo(es), within the slack of %d for this gateway", lost, sc.slack)
	}
	if sc.zeroLoss && lost > sc.slack {
		var missing []string
		for _, line := range regexp.MustCompile(`(?m)^.*no answer yet.*$`).FindAllString(p.proc.Output(), 20) {
			missing = append(missing, line)
		}
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log"))
		t.Errorf("make-before-break lost %d echoes:\n%s\nroam log:\n%s", lost, strings.Join(missing, "\n"), b)
	}
}

func hasEvent(evs []lab.Event, kinds ...string) bool {
	for _, ev := range evs {
		for _, k := range kinds {
			if ev.Event == k {
				return true
			}
		}
	}
	return false
}

// TestMOBIKEStrongSwanGateway: issue 3 scenarios against strongSwan.
func TestMOBIKEStrongSwanGateway(t *testing.T) {
	for _, sc := range mobikeScenarios {
		t.Run(sc.name, func(t *testing.T) { mobikeSwan(t, sc) })
	}
}

// TestMOBIKERoamGateway: the same scenarios against roam gateway.
func TestMOBIKERoamGateway(t *testing.T) {
	for _, sc := range mobikeScenarios {
		t.Run(sc.name, func(t *testing.T) {
			out := mobikeRoamGW(t, sc)
			// Every scenario moves the client to the other NAT's public
			// address, new to the SA: ESP followed only after the return
			// routability check (RFC 4555 3.7), which must have passed.
			if !strings.Contains(out, "checking return routability") || strings.Contains(out, "return routability check failed") {
				t.Errorf("no passed return routability check in the gateway's output:\n%s", out)
			}
		})
	}
}

// mobikeSwan runs one scenario in a fresh lab against strongSwan.
func mobikeSwan(t *testing.T, sc mobikeScenario) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gw := startSwanGateway(t, l, pki, "psk", nil)
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	sc.slack = 1
	sc.congestionExplains = true
	runMobike(t, l, r, sc, gw.Log)
}

// mobikeRoamGW runs one scenario in a fresh lab against roam gateway and
// returns the gateway's output for checks of its own.
func mobikeRoamGW(t *testing.T, sc mobikeScenario) (gatewayOutput string) {
	l, bin := setup(t)
	r, gp, logs := roamGatewayClient(t, l, bin)
	runMobike(t, l, r, sc, logs)
	return gp.Output()
}

// roamGatewayClient starts roam gateway (psk) in l and a client with the
// lab's profile for it. logs is the gateway's output and status, the
// evidence of a failure.
func roamGatewayClient(t *testing.T, l *lab.Lab, bin string) (r *lab.Roam, gp *lab.Proc, logs func() string) {
	t.Helper()
	pki := newPKI(t, l)
	g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki})
	time.Sleep(300 * time.Millisecond) // listening
	r = roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	return r, gp, func() string {
		_, raw, _ := g.Status()
		return gp.Output() + "\ngateway status:\n" + raw
	}
}
