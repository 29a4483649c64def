package interop

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestLockdown: with lockdown = true nothing but the tunnel (and IKE to the
// gateway) leaves the client while the profile is up, through a MOBIKE move
// and with the gateway gone; `roam disconnect` lifts the rules, and those a
// killed daemon leaves stay (fail closed) until `roam disconnect --all`.
func TestLockdown(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gwCfg := lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki}
	_, gp := startRoamGateway(t, l, bin, gwCfg)
	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.Lockdown = true
	// A lost gateway is noticed within seconds, so the test sees the
	// profile reconnecting.
	p.DPDDelay = 2 * time.Second
	r := roamClient(t, l, bin, p)

	// Beyond the uplinks: each NAT router's inside address, the inet
	// router behind the NATs, and the gateway itself for anything but IKE.
	outside := []netip.Addr{lab.RouterWLAN.Addr(), lab.RouterWWAN.Addr(), lab.InetWLAN.Addr(), lab.GatewayAddr1.Addr()}
	reachable := func(when string) {
		t.Helper()
		for _, a := range outside {
			if err := l.WaitPing(lab.Client, a, 5*time.Second); err != nil {
				t.Fatalf("%s: %s unreachable: %v", when, a, err)
			}
		}
	}
	blocked := func(when string) {
		t.Helper()
		for _, a := range outside {
			if err := l.Ping(lab.Client, a, 1); err == nil {
				t.Errorf("%s: %s reachable outside the tunnel", when, a)
			}
		}
	}
	table := func() bool {
		_, err := l.Output(lab.Client, "nft", "list", "table", "inet", "roam")
		return err == nil
	}
	debug := func() {
		if out, err := l.Output(lab.Client, "nft", "list", "ruleset"); err == nil {
			t.Logf("client ruleset:\n%s", out)
		}
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log")); err == nil {
			t.Logf("roam daemon log:\n%s", b)
		}
	}

	reachable("before connecting")
	if out, err := r.Connect("corp", 20*time.Second); err != nil {
		debug()
		t.Fatalf("connect: %v\n%s", err, out)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		debug()
		t.Fatalf("no traffic through the tunnel under lockdown: %v", err)
	}
	if !table() {
		t.Fatal("connected with lockdown = true, but no table inet roam")
	}
	blocked("connected")
	if st := connected(t, r, "corp"); !st.Lockdown || !slices.Contains(st.LockdownGateways, lab.GatewayAddr1.Addr().String()) {
		t.Errorf("status: lockdown %v, gateways %v; want on, with %s", st.Lockdown, st.LockdownGateways, lab.GatewayAddr1.Addr())
	}

	// One MOBIKE move: the tunnel goes on over wwan, still locked down.
	before := connected(t, r, "corp")
	if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for st := connected(t, r, "corp"); st.Interface != lab.WWAN || st.PathChanges <= before.PathChanges; st = connected(t, r, "corp") {
		if time.Now().After(deadline) {
			debug()
			t.Fatalf("tunnel did not move to wwan under lockdown: interface %q, path changes %d", st.Interface, st.PathChanges)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		debug()
		t.Fatalf("no traffic through the tunnel after the move: %v", err)
	}
	if err := l.LinkUp(lab.Client, lab.WLAN); err != nil {
		t.Fatal(err)
	}
	// wlan's default route went with its link; the wlan router itself is
	// on link again, so it is a leak target like the others.
	if err := l.Exec(lab.Client, "ip", "route", "replace", "default", "via", lab.RouterWLAN.Addr().String(), "dev", lab.WLAN, "metric", "100"); err != nil {
		t.Fatal(err)
	}

	// The gateway goes away: the profile reconnects, and nothing leaks.
	gp.Stop()
	deadline = time.Now().Add(30 * time.Second)
	if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 1); err == nil {
		t.Error("the host answered with the gateway gone")
	}
	for st := connected(t, r, "corp"); st.State != "reconnecting"; st = connected(t, r, "corp") {
		if time.Now().After(deadline) || st.State == "disconnected" {
			debug()
			t.Fatalf("state %q with the gateway gone, want reconnecting", st.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !table() {
		t.Fatal("reconnecting without table inet roam")
	}
	blocked("gateway gone, reconnecting")

	if out, err := r.Disconnect("corp"); err != nil {
		t.Fatalf("disconnect: %v\n%s", err, out)
	}
	if table() {
		t.Error("table inet roam left after roam disconnect")
	}
	reachable("after roam disconnect")

	// A daemon killed under lockdown leaves the rules: fail closed.
	startRoamGateway(t, l, bin, gwCfg)
	if out, err := r.Connect("corp", 20*time.Second); err != nil {
		debug()
		t.Fatalf("second connect: %v\n%s", err, out)
	}
	pids := r.Processes()
	if len(pids) == 0 {
		t.Fatal("no roam daemon in the client namespace")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); len(r.Processes()) > 0; {
		if time.Now().After(deadline) {
			t.Fatal("killed daemon still running")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !table() {
		t.Fatal("the killed daemon's lockdown is gone: want it kept (fail closed)")
	}
	blocked("daemon killed")
	out, err := r.Run(15*time.Second, "disconnect", "--all")
	if err != nil {
		t.Fatalf("disconnect --all: %v\n%s", err, out)
	}
	if !strings.Contains(out, "removed leftover lockdown rules") {
		t.Errorf("disconnect --all said %q, want it to name the leftover rules it removed", out)
	}
	if table() {
		t.Error("table inet roam left after roam disconnect --all")
	}
	reachable("after roam disconnect --all")
}

// TestLockdownStream: with lockdown = true and transport = "tcp" the
// kill switch lets the stream to the gateway's tcp_port out (and nothing
// else beside the tunnel): roam connects over TCP and carries traffic,
// while the gateway and the routers stay unreachable outside the tunnel.
func TestLockdownStream(t *testing.T) {
	l, bin := setup(t)
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, TCP: true})
	p := lab.LabProfile("psk", goodPSK, nil, nil)
	p.Lockdown = true
	p.Transport = "tcp"
	r := roamClient(t, l, bin, p)
	debug := func() {
		if out, err := l.Output(lab.Client, "nft", "list", "ruleset"); err == nil {
			t.Logf("client ruleset:\n%s", out)
		}
		t.Logf("roam gateway output:\n%s", gp.Output())
	}
	if err := r.ConnectRetry("corp"); err != nil {
		debug()
		t.Fatalf("connect over TCP under lockdown: %v", err)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		debug()
		t.Fatalf("no traffic through the tunnel: %v", err)
	}
	tcpTransfer(t, l)
	if st := connected(t, r, "corp"); st.Transport != "tcp" || !st.Lockdown {
		t.Errorf("status: transport %q lockdown %v, want tcp under lockdown", st.Transport, st.Lockdown)
	}
	for _, a := range []netip.Addr{lab.RouterWLAN.Addr(), lab.InetWLAN.Addr(), lab.GatewayAddr1.Addr()} {
		if err := l.Ping(lab.Client, a, 1); err == nil {
			t.Errorf("%s reachable outside the tunnel", a)
		}
	}
	if out, err := r.Disconnect("corp"); err != nil {
		t.Fatalf("disconnect: %v\n%s", err, out)
	}
}
