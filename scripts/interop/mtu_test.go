package interop

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/scripts/lab"
)

// fragmenters are the namespaces whose kernels could fragment tunnel
// packets: the two ends and every router between them.
var fragmenters = []string{lab.Client, lab.NATWLAN, lab.NATWWAN, lab.Inet, lab.Gateway}

func fragCreates(t *testing.T, l *lab.Lab) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ns := range fragmenters {
		n, err := l.FragCreates(ns)
		if err != nil {
			t.Fatal(err)
		}
		out[ns] = n
	}
	return out
}

// TestPathMTURoamGateway: the client's cellular uplink (wwan) has an MTU
// of 1280, Wi-Fi (wlan) 1500. A TCP upload that starts on Wi-Fi keeps
// going when Wi-Fi goes down and MOBIKE moves the tunnel to wwan: the TUN
// device's MTU still says 1418, so the client's kernel sends segments the
// new path cannot carry, and roam answers them with ICMP "fragmentation
// needed" from the inner destination, which the kernel must accept (its
// route cache then holds the path's MTU). New TCP connections over the
// 1280 uplink, both ways, get their MSS clamped to fit. No kernel on the
// way creates a single outer fragment. Then a download crosses the same
// move, and the host behind the gateway must learn the MTU from the
// gateway's ICMP.
func TestPathMTURoamGateway(t *testing.T) {
	l, bin := setup(t)
	for _, c := range [][]string{
		{lab.Client, "ip", "link", "set", lab.WWAN, "mtu", "1280"},
		{lab.NATWWAN, "ip", "link", "set", "lan", "mtu", "1280"},
	} {
		if err := l.Exec(c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	pki := newPKI(t, l)
	g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki})
	time.Sleep(300 * time.Millisecond) // listening
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	fail := failWith(t, roamStatus("roam status", r), roamStatus("gateway status", g), evidence{"gateway output", gp.Output}, clientLog(r))
	connectOnce(t, l, r, fail)
	st := connected(t, r, "corp")
	if want := esp.InnerMTU(1500, false); st.Interface != lab.WLAN || st.PathMTU != want {
		fail("on %s with path MTU %d, want wlan and %d", st.Interface, st.PathMTU, want)
	}
	before := fragCreates(t, l)

	tcp := tcpInBackground(l.TCPTransferRate, 8*time.Second, "20M")
	time.Sleep(2 * time.Second)
	if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
		t.Fatal(err)
	}
	if err := <-tcp; err != nil {
		fail("the TCP upload broke across the move to the 1280 uplink: %v", err)
	}
	st = connected(t, r, "corp")
	if want := esp.InnerMTU(1280, false); st.Interface != lab.WWAN || st.PathMTU != want {
		fail("after the move: on %s with path MTU %d, want wwan and %d", st.Interface, st.PathMTU, want)
	}
	if st.ICMPTooBig == 0 {
		fail("no ICMP too big sent although the TUN MTU exceeds the new path's")
	}
	// The kernel took the ICMP: its route to the host learnt the MTU.
	route, err := l.Output(lab.Client, "ip", "route", "get", lab.HostAddr.Addr().String())
	if err != nil || !strings.Contains(route, fmt.Sprintf("mtu %d", st.PathMTU)) {
		fail("the client's kernel did not learn the path MTU from roam's ICMP: %v\n%s", err, route)
	}
	t.Logf("after the move: path MTU %d, %d ICMP too big; client route: %s", st.PathMTU, st.ICMPTooBig, strings.TrimSpace(route))

	up, err := l.TCPTransfer(lab.Client, lab.Host, lab.HostAddr.Addr(), 3*time.Second)
	if err != nil {
		fail("upload over the 1280 uplink: %v", err)
	}
	down, err := l.TCPDownloadRate(lab.Client, lab.Host, lab.HostAddr.Addr(), 3*time.Second, "")
	if err != nil {
		fail("download over the 1280 uplink: %v", err)
	}
	st = connected(t, r, "corp")
	if st.MSSClamped == 0 {
		fail("no TCP SYN clamped on the 1280 uplink")
	}
	t.Logf("over the 1280 uplink: upload %.0f Mbit/s, download %.0f Mbit/s, %d SYNs clamped", up, down, st.MSSClamped)
	after := fragCreates(t, l)
	for _, ns := range fragmenters {
		if n := after[ns] - before[ns]; n != 0 {
			fail("%s created %d IP fragments", ns, n)
		}
	}

	// Back to Wi-Fi, then a download across the same move: the host's
	// segments were sized for the 1500 uplink, and only the gateway can
	// tell it. Its kernel learns the smaller MTU from the router's ICMP,
	// roam's dataplane from the kernel, and the host from roam's ICMP,
	// forwarded by the gateway: the host's route cache shows it.
	if err := wlanBack(l); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); connected(t, r, "corp").Interface != lab.WLAN; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			fail("the tunnel did not return to wlan")
		}
	}
	// The client's kernel still holds the 1280 path's MTU for the host
	// and would advertise a small MSS; forget it, as after a while.
	if err := l.Exec(lab.Client, "ip", "route", "flush", "cache"); err != nil {
		t.Fatal(err)
	}
	if route, err := l.Output(lab.Client, "ip", "route", "get", lab.HostAddr.Addr().String()); err != nil || strings.Contains(route, "mtu") {
		fail("the client's route cache still has an MTU: %v\n%s", err, route)
	}
	tcp = tcpInBackground(l.TCPDownloadRate, 8*time.Second, "20M")
	time.Sleep(2 * time.Second)
	if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
		t.Fatal(err)
	}
	if err := <-tcp; err != nil {
		fail("the TCP download broke across the move to the 1280 uplink: %v", err)
	}
	gst, _, err := g.Status()
	if err != nil || len(gst) != 1 {
		fail("gateway status: %v (%d connections)", err, len(gst))
	}
	if gst[0].PathMTU != esp.InnerMTU(1280, false) || gst[0].ICMPTooBig == 0 {
		fail("gateway: path MTU %d, %d ICMP too big; want %d and some", gst[0].PathMTU, gst[0].ICMPTooBig, esp.InnerMTU(1280, false))
	}
	route, err = l.Output(lab.Host, "ip", "route", "get", st.VirtualIP)
	if err != nil || !strings.Contains(route, fmt.Sprintf("mtu %d", gst[0].PathMTU)) {
		fail("the host did not learn the path MTU from the gateway's ICMP: %v\n%s", err, route)
	}
	t.Logf("download across the move: gateway sent %d ICMP too big; host route: %s", gst[0].ICMPTooBig, strings.TrimSpace(route))
}
