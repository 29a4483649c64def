package interop

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// freeze is how long TestSuspendStoppedDaemon keeps the client daemon
// stopped: beyond netmon.DefaultWakeAfter (30 s) with room for a loaded
// machine, and short enough for CI.
const freeze = 38 * time.Second

// TestSuspendStoppedDaemon: the client daemon is stopped (SIGSTOP, as a
// frozen laptop's process would be) for longer than a NAT mapping lives,
// and meanwhile the NAT forgets its mappings (conntrack -F) and a packet
// from the gateway takes the client's old public port, so the client's
// flow comes out on a new one. After SIGCONT the daemon must see the
// wake-up, test its path (UPDATE_SA_ADDRESSES tells the gateway the new
// mapping) and carry traffic again with the same IKE SA: no new
// negotiation, the same SPIs, and events that show the wake.
func TestSuspendStoppedDaemon(t *testing.T) {
	l, bin := setup(t)
	// One uplink: the recovery must be on the same path, not a move.
	_, r, fail := wlanOnlyTunnel(t, l, bin, newPKI(t, l))
	before := connected(t, r, "corp")
	spis := func(st lab.Status) string {
		var b strings.Builder
		b.WriteString(st.IKESPIi)
		for _, c := range st.Children {
			fmt.Fprintf(&b, " %s/%s", c.SPIIn, c.SPIOut)
		}
		return b.String()
	}
	pids := r.Processes()
	if len(pids) != 1 {
		fail("roam processes in the client namespace: %v, want the daemon alone", pids)
	}
	daemon := pids[0]
	evp, err := r.StartEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer evp.Stop()
	oldPort := clientPublicPort(t, l)

	if err := syscall.Kill(daemon, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	continued := false
	defer func() {
		if !continued {
			_ = syscall.Kill(daemon, syscall.SIGCONT)
		}
	}()
	if err := l.FlushConntrack(lab.NATWLAN); err != nil {
		t.Fatal(err)
	}
	// The gateway's next packet to the old mapping (a DPD request, data
	// for the client) reaches the NAT before the client's: it takes the
	// old public port, so the client's flow gets a new one (lab.md).
	public := netip.AddrPortFrom(lab.PublicWLAN.Addr(), oldPort)
	if err := l.SendUDPFrom(lab.Gateway, netip.AddrPortFrom(lab.GatewayAddr1.Addr(), 4500), public, []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(freeze - time.Since(stopped))
	if err := syscall.Kill(daemon, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued = true
	woke := time.Now()

	// Traffic again: a ping answered within a few seconds (the path test
	// takes one round trip; the budget is for a loaded machine).
	var flowing time.Duration
	for flowing == 0 {
		if time.Since(woke) > 10*time.Second {
			fail("no ping answered within 10 s of SIGCONT")
		}
		// A short wait per ping: the figure is the first one answered.
		if _, err := l.Output(lab.Client, "ping", "-n", "-q", "-c", "1", "-W", "0.2", lab.HostAddr.Addr().String()); err == nil {
			flowing = time.Since(woke)
		}
	}
	after := connected(t, r, "corp")
	if spis(after) != spis(before) {
		fail("SAs changed across the freeze: %s -> %s", spis(before), spis(after))
	}
	newPort := clientPublicPort(t, l)
	if newPort == oldPort {
		fail("the NAT kept the client's public port %d: the scenario did not change the mapping", oldPort)
	}
	var back time.Duration
	for back == 0 {
		st, ok := healthOf(r)
		if ok && st.Health == "ok" {
			back = time.Since(woke)
			break
		}
		if time.Since(woke) > 10*time.Second {
			fail("health not ok 10 s after SIGCONT: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	time.Sleep(300 * time.Millisecond)
	var suspended, resumed, healthSuspended bool
	var resumeTook int64
	for _, ev := range lab.ParseEvents(evp.Output()) {
		switch ev.Event {
		case "suspended":
			suspended = suspended || strings.HasPrefix(ev.Reason, "woke up: process stopped for ")
		case "resumed":
			resumed, resumeTook = true, ev.TookMS
		case "health":
			healthSuspended = healthSuspended || ev.To == "suspended"
		case "connecting", "established", "reconnecting", "disconnected":
			fail("%s event across the freeze: the SA was to survive it\n%s", ev.Event, evp.Output())
		}
	}
	if !suspended || !resumed || !healthSuspended {
		fail("events do not show the wake-up (suspended %v, resumed %v, health suspended %v):\n%s",
			suspended, resumed, healthSuspended, evp.Output())
	}
	// The path test is one round trip in the lab; 1 s is the bound.
	if resumeTook > 1000 {
		fail("resumed %d ms after the wake-up, want within 1 s", resumeTook)
	}
	t.Logf("stopped %v; public port %d -> %d; resumed %d ms after the wake-up; ping answered %v and health ok %v after SIGCONT; SAs kept (%s)",
		freeze, oldPort, newPort, resumeTook, flowing.Round(time.Millisecond), back.Round(time.Millisecond), spis(after))
}

// clientPublicPort is the public port nat-wlan gives the client's flow to
// the gateway's 4500.
func clientPublicPort(t *testing.T, l *lab.Lab) uint16 {
	t.Helper()
	out, err := l.NATMappings(lab.NATWLAN)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		m := reMapping.FindStringSubmatch(line)
		if m == nil || m[1] != lab.ClientWLAN.Addr().String() || m[3] != "4500" {
			continue
		}
		p, err := strconv.ParseUint(m[4], 10, 16)
		if err != nil {
			t.Fatal(err)
		}
		return uint16(p)
	}
	t.Fatalf("no mapping of the client's flow to the gateway in nat-wlan:\n%s", out)
	return 0
}
