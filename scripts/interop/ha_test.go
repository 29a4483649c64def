package interop

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
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

// Issue 5 HA failover (draft-smyslov-ipsecme-ikev2-r-mobike 4.2.1): two roam
// gateway nodes, gw active at R1 and gw2 standby at its own address, a
// client behind nat-wlan's masquerade. The active node is killed; the
// standby, from R1 (a non-local source), tells the client to switch to it
// and to sync Message IDs and replay counters (RFC 6311).

// haEnv is the pair with alice connected to the active node.
type haEnv struct {
	l                 *lab.Lab
	r                 *lab.Roam
	active, standby   *lab.Roam
	ap, sp            *lab.Proc
	aEvts, sEvts      *lab.Proc
	clEvts            *lab.Proc
	activeAt, standAt netip.Addr
	key, bin          string
}

// startHANode runs `roam gateway` in ns (lab.Gateway or lab.Gateway2)
// listening on addr with the [gateway.ha] table h.
func startHANode(t *testing.T, l *lab.Lab, bin, ns string, addr netip.Addr, h *lab.RoamHA) (*lab.Roam, *lab.Proc) {
	t.Helper()
	return startRoamGatewayIn(t, l, bin, ns, "roamha-", lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, Listen: []netip.Addr{addr}, HA: h})
}

func haKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k)
}

func startHAEnv(t *testing.T) *haEnv {
	t.Helper()
	l, bin := setupWith(t, lab.Options{HA: true})
	key := haKey(t)
	act, stby := lab.HAPair(key, 0)
	e := &haEnv{l: l, activeAt: lab.GatewayAddr1.Addr(), standAt: lab.Gateway2Addr.Addr(), key: key, bin: bin}
	e.standby, e.sp = startHANode(t, l, bin, lab.Gateway2, e.standAt, stby)
	e.active, e.ap = startHANode(t, l, bin, lab.Gateway, e.activeAt, act)
	e.r = roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, nil, nil))
	connectRoam(t, l, e.r, func(format string, args ...any) { t.Helper(); e.fail(t, format, args...) })
	var err error
	for _, s := range []struct {
		r *lab.Roam
		p **lab.Proc
	}{{e.active, &e.aEvts}, {e.standby, &e.sEvts}, {e.r, &e.clEvts}} {
		if *s.p, err = s.r.StartEvents(); err != nil {
			e.fail(t, "events: %v", err)
		}
		t.Cleanup((*s.p).Stop)
	}
	return e
}

func (e *haEnv) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("active node output:\n%s", e.ap.Output())
	t.Logf("standby node output:\n%s", e.sp.Output())
	for _, g := range []*lab.Roam{e.active, e.standby, e.r} {
		if g == nil {
			continue
		}
		if _, raw, err := g.Status(); err == nil {
			t.Logf("%s status:\n%s", g.NS, raw)
		}
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(e.r.Socket), "roam.log")); err == nil {
		t.Logf("roam client log:\n%s", b)
	}
	for _, p := range []*lab.Proc{e.aEvts, e.sEvts, e.clEvts} {
		if p != nil {
			t.Logf("events:\n%s", p.Output())
		}
	}
	t.Fatalf(format, args...)
}

// waitReplicated waits until the standby's log shows the replication
// channel up and the active has pushed alice's SA (its periodic push runs
// every second).
func (e *haEnv) waitReplicated(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.sp.Output(), "ha: connected") {
		if time.Now().After(deadline) {
			e.fail(t, "the replication channel never came up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
}

// failover kills the active node's process and, once the standby reports
// the failover, points the corp host's route to the pool at the standby:
// what the cluster's routing does when the active node goes. It returns
// the time of the kill and the failover event.
func (e *haEnv) failover(t *testing.T) (time.Time, lab.Event) {
	t.Helper()
	killed := time.Now()
	if err := e.ap.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, ev := range lab.ParseEvents(e.sEvts.Output()) {
			if ev.Event == "failover" {
				if err := e.l.CorpRouteVia(e.standby.NS); err != nil {
					t.Fatal(err)
				}
				return killed, ev
			}
		}
		if time.Now().After(deadline) {
			e.fail(t, "the standby never reported a failover")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// restartAsStandby brings the killed node back with role = "standby": the
// node now active dials it and pushes everything, and the pair's roles swap.
func (e *haEnv) restartAsStandby(t *testing.T, bin string, h *lab.RoamHA) {
	t.Helper()
	e.ap.Wait(5 * time.Second)
	e.aEvts.Stop()
	ns, addr := e.active.NS, e.activeAt
	e.active, e.ap, e.aEvts, e.activeAt = e.standby, e.sp, e.sEvts, e.standAt
	var err error
	for i := 0; i < 20; i++ { // the killed process's TUN device may linger a moment
		e.standby, e.sp = startHANode(t, e.l, bin, ns, addr, h)
		if err = e.waitSocket(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.fail(t, "restarting %s as standby: %v", ns, err)
	}
	e.standAt = addr
	if e.sEvts, err = e.standby.StartEvents(); err != nil {
		e.fail(t, "events: %v", err)
	}
	t.Cleanup(e.sEvts.Stop)
}

func (e *haEnv) clientLog() string {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(e.r.Socket), "roam.log"))
	return string(b)
}

// waitSocket waits for the standby's control socket (or its exit).
func (e *haEnv) waitSocket() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(e.standby.Socket); err == nil {
			return nil
		}
		select {
		case <-e.sp.Done():
			return fmt.Errorf("exited: %s", e.sp.Output())
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("no control socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHAFailover: the active node is SIGKILLed under a 10 ms pinger and a
// long TCP connection; the tunnel comes back through the standby (ESP from
// its address reaches the client through the NAT), the TCP connection
// survives, and the outage is reported. The killed node then comes back as
// the standby and the same happens the other way.
func TestHAFailover(t *testing.T) {
	e := startHAEnv(t)
	st := connected(t, e.r, "corp")
	if !strings.HasPrefix(st.Remote, e.activeAt.String()+":") && !strings.HasPrefix(st.Gateway, e.activeAt.String()) {
		e.fail(t, "client connected to %q/%q, want the active node %s", st.Gateway, st.Remote, e.activeAt)
	}
	act, _ := lab.HAPair("", 0)
	backTable := &lab.RoamHA{Role: "standby", Listen: act.Listen, Peer: act.Peer, Key: e.key, Takeover: act.Takeover}
	for round := 1; round <= 2; round++ {
		if round == 2 {
			e.restartAsStandby(t, e.bin, backTable)
		}
		e.waitReplicated(t)
		from, to := e.activeAt, e.standAt
		// The client may come back on either uplink: its own dead-path
		// test (500 ms) starts before the standby's dead_after (1 s) ends.
		name := fmt.Sprintf("to%d", round)
		for _, router := range []string{lab.NATWLAN, lab.NATWWAN} {
			if err := e.l.CountFromGateway(router, name, to); err != nil {
				t.Fatal(err)
			}
		}
		p, tcp := startHATraffic(t, e.l, 8*time.Second)
		time.Sleep(2 * time.Second)
		killed, ev := e.failover(t)
		t.Logf("round %d, %s -> %s: failover event %.0f ms after the kill: %s (took_ms %d)", round, from, to, time.Since(killed).Seconds()*1000, ev.Reason, ev.TookMS)
		if !strings.HasPrefix(ev.Reason, "1 of 1 peers moved") {
			e.fail(t, "failover moved no one: %s", ev.Reason)
		}
		sent, recv, outage := p.resultOutage(t, 30*time.Second)
		t.Logf("round %d: %d echoes sent, %d answered, longest gap %v", round, sent, recv, outage)
		if err := <-tcp; err != nil {
			e.fail(t, "TCP connection through the tunnel broke: %v", err)
		}
		// The takeover request came from the failed node's address (the
		// only source the client's NAT passes) and the client synced.
		if n := strings.Count(e.clientLog(), "Message IDs synchronised by the gateway"); n != round {
			e.fail(t, "the client synchronised Message IDs %d times after %d failovers", n, round)
		}
		cl := connected(t, e.r, "corp")
		if !strings.HasPrefix(cl.Remote, to.String()+":") && !strings.HasPrefix(cl.Gateway, to.String()) {
			e.fail(t, "client after the failover: gateway %q remote %q, want the standby %s", cl.Gateway, cl.Remote, to)
		}
		wlan, _ := e.l.Counter(lab.NATWLAN, name+"_fwd")
		wwan, _ := e.l.Counter(lab.NATWWAN, name+"_fwd")
		t.Logf("round %d: packets from the standby forwarded to the client: %d by nat-wlan, %d by nat-wwan; client on %s", round, wlan, wwan, cl.Interface)
		if wlan+wwan == 0 {
			e.fail(t, "no ESP from the standby's address reached the client through a NAT")
		}
		if err := e.l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			e.fail(t, "tunnel after the failover: %v", err)
		}
		if recv == 0 || outage <= 0 {
			e.fail(t, "no echoes measured across the failover")
		}
	}
	if cev := lab.ParseEvents(e.clEvts.Output()); !hasEvent(cev, "switch-requested") {
		e.fail(t, "client events lack switch-requested")
	}
}

// haPinger is the 10 ms pinger with per-echo timestamps (ping -D).
type haPinger struct{ *pinger }

func startHATraffic(t *testing.T, l *lab.Lab, d time.Duration) (*haPinger, <-chan error) {
	tcp := tcpInBackground(l.TCPTransferRate, d+2*time.Second, "10M")
	return &haPinger{startPinger(t, l, d)}, tcp
}

var reEcho = regexp.MustCompile(`^\[(\d+\.\d+)\] \d+ bytes from`)

// resultOutage is result plus the longest gap between two answered
// echoes: the outage as the pinger saw it.
func (p *haPinger) resultOutage(t *testing.T, timeout time.Duration) (int, int, time.Duration) {
	t.Helper()
	sent, recv := p.result(t, timeout)
	var last, gap float64
	for _, line := range strings.Split(p.proc.Output(), "\n") {
		m := reEcho.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ts, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		if last > 0 && ts-last > gap {
			gap = ts - last
		}
		last = ts
	}
	return sent, recv, time.Duration(gap * float64(time.Second))
}
