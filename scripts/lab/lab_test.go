package lab

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestOwnerPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"roamlab123-4-client", 123, true},
		{"roamlab123-4-nat-wlan", 123, true},
		{"roamlab123-4-", 0, false},
		{"roamlab123-client", 0, false},
		{"roamlabx-1-gw", 0, false},
		{"roamlab0-1-gw", 0, false},
		{"other123-4-client", 0, false},
		{"roamlab-12-4-gw", 0, false},
	} {
		pid, ok := ownerPID(tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}

// TestTopology checks reachability the way the VPN tests rely on it: both
// uplinks reach both gateway addresses through their NAT, the gateway sees
// the NAT's public address, and the host is not reachable from the client
// without a tunnel.
func TestTopology(t *testing.T) {
	l := NewT(t, Options{})
	for _, src := range []string{WLAN, WWAN} {
		for _, dst := range []string{GatewayAddr1.Addr().String(), GatewayAddr2.Addr().String()} {
			if _, err := l.Output(Client, "ping", "-n", "-q", "-c", "1", "-W", "2", "-I", src, dst); err != nil {
				t.Errorf("ping via %s to %s: %v", src, dst, err)
			}
		}
	}
	// masquerade: the NAT's mapping rewrites the client to its public address.
	if err := l.Exec(Client, "ping", "-n", "-q", "-c", "1", "-W", "2", "-I", WLAN, GatewayAddr1.Addr().String()); err != nil {
		t.Fatal(err)
	}
	out, err := l.Output(NATWLAN, "conntrack", "-L", "-p", "icmp")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "src="+ClientWLAN.Addr().String()) || !strings.Contains(out, "dst="+PublicWLAN.Addr().String()) {
		t.Errorf("NAT conntrack does not show the masquerade mapping:\n%s", out)
	}
	// IPv6: wwan reaches both gateway addresses, routed without NAT (the
	// gateway reaches the client's own address); wlan has no IPv6 beyond
	// link-local; nothing is tentative.
	for _, dst := range []netip.Prefix{GatewayAddr1V6, GatewayAddr2V6} {
		if err := l.Exec(Client, "ping", "-6", "-n", "-q", "-c", "1", "-W", "2", "-I", WWAN, dst.Addr().String()); err != nil {
			t.Errorf("ping -6 via wwan to %s: %v", dst.Addr(), err)
		}
		if err := l.Exec(Gateway, "ping", "-6", "-n", "-q", "-c", "1", "-W", "2", "-I", dst.Addr().String(), ClientWWANV6.Addr().String()); err != nil {
			t.Errorf("ping -6 from the gateway's %s to the client: %v", dst.Addr(), err)
		}
	}
	if out, err := l.Output(Client, "ip", "-6", "addr", "show", "dev", WLAN, "scope", "global"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("wlan has global IPv6 addresses: %q %v", out, err)
	}
	for _, ns := range []string{Client, Gateway} {
		if out, err := l.Output(ns, "ip", "-6", "addr", "show", "tentative"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("tentative IPv6 addresses in %s: %q %v", ns, out, err)
		}
	}
	if err := l.Exec(Client, "ping", "-n", "-q", "-c", "1", "-W", "1", HostAddr.Addr().String()); err == nil {
		t.Error("host reachable from the client without a tunnel")
	}
	if err := l.Ping(Gateway, HostAddr.Addr(), 1); err != nil {
		t.Error(err)
	}
	// The client's resolv.conf is the lab's, not the machine's.
	out, err = l.Output(Client, "cat", "/etc/resolv.conf")
	if err != nil || out != ResolvConf {
		t.Errorf("client resolv.conf = %q, %v", out, err)
	}
	// Link down on the preferred uplink moves the default route to wwan.
	if err := l.LinkDown(Client, WLAN); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(Client, GatewayAddr1.Addr(), 1); err != nil {
		t.Errorf("ping over wwan after wlan down: %v", err)
	}
	if err := l.LinkUp(Client, WLAN); err != nil {
		t.Fatal(err)
	}
	if err := l.FlushConntrack(NATWLAN); err != nil {
		t.Error(err)
	}
	// A NAT that changes its public address: new mappings use it, and the
	// gateway's replies still come back.
	if err := l.Exec(Client, "ip", "route", "replace", "default", "via", RouterWLAN.Addr().String(), "dev", WLAN, "metric", "100"); err != nil {
		t.Fatal(err) // the link went down and took its route with it
	}
	if err := l.ChangeNATAddress(NATWLAN); err != nil {
		t.Fatal(err)
	}
	if err := l.Exec(Client, "ping", "-n", "-q", "-c", "1", "-W", "2", "-I", WLAN, GatewayAddr1.Addr().String()); err != nil {
		t.Fatalf("ping through the NAT after its address changed: %v", err)
	}
	out, err = l.Output(NATWLAN, "conntrack", "-L", "-p", "icmp")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "dst="+NewPublic[NATWLAN].String()) {
		t.Errorf("NAT conntrack does not show the new public address:\n%s", out)
	}
}

func TestAlive(t *testing.T) {
	if !alive(os.Getpid()) {
		t.Error("own process not alive")
	}
	if alive(99999999) {
		t.Error("impossible pid alive")
	}
	// A zombie: a child that exited and has not been waited for.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("exited child still counts as alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	if !Root() {
		t.Skip("needs root")
	}
	l, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Start(Gateway, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	// A process we did not start directly (as a daemon spawned by a command
	// would be) still dies with the lab.
	if err := l.Exec(Client, "sh", "-c", "sleep 60 >/dev/null 2>&1 &"); err != nil {
		t.Fatal(err)
	}
	dir := l.Dir
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("process still running after Close")
	}
	ns, err := l.Namespaces()
	if err != nil || len(ns) != 0 {
		t.Errorf("namespaces left: %v %v", ns, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("scratch dir left: %v", err)
	}
	if _, err := os.Stat("/etc/netns/" + l.NS(Client)); !os.IsNotExist(err) {
		t.Errorf("/etc/netns entry left: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSweepRemovesStale(t *testing.T) {
	if !Root() {
		t.Skip("needs root")
	}
	// A pid that cannot exist (above pid_max) stands for a killed run.
	name := Prefix + "99999999-1-client"
	if err := run("ip", "netns", "add", name); err != nil {
		t.Fatal(err)
	}
	live := Prefix + "1-1-client" // pid 1 is always alive: must survive
	if err := run("ip", "netns", "add", live); err != nil {
		t.Fatal(err)
	}
	defer run("ip", "netns", "delete", live)
	if err := Sweep(); err != nil {
		t.Fatal(err)
	}
	names, _ := listNamespaces()
	var haveStale, haveLive bool
	for _, n := range names {
		haveStale = haveStale || n == name
		haveLive = haveLive || n == live
	}
	if haveStale {
		t.Error("stale namespace not swept")
	}
	if !haveLive {
		t.Error("namespace of a live run was swept")
	}
}

func TestUDP4(t *testing.T) {
	p := UDP4(netip.MustParseAddrPort("203.0.113.26:4500"), netip.MustParseAddrPort("198.51.100.2:1025"), []byte{0, 0, 0, 0, 1})
	if len(p) != 33 || p[0] != 0x45 || p[9] != 17 || p[2] != 0 || p[3] != 33 {
		t.Fatalf("header % x", p[:20])
	}
	if got := netip.AddrFrom4([4]byte(p[12:16])); got.String() != "203.0.113.26" {
		t.Errorf("source %v", got)
	}
	if sport, dport, ulen := int(p[20])<<8|int(p[21]), int(p[22])<<8|int(p[23]), int(p[24])<<8|int(p[25]); sport != 4500 || dport != 1025 || ulen != 13 {
		t.Errorf("udp %d -> %d len %d", sport, dport, ulen)
	}
}

// TestGatewayAddrRemoveRestore: removing a gateway address makes it
// unreachable from the client and restoring it brings it back with its
// routes, for each of the gateway's four addresses.
func TestGatewayAddrRemoveRestore(t *testing.T) {
	l := NewT(t, Options{})
	for _, tc := range []struct {
		addr  netip.Addr
		via   string // the client uplink that reaches it
		table string // the address's own routing table
	}{
		{GatewayAddr1.Addr(), WLAN, "101"}, {GatewayAddr2.Addr(), WLAN, "102"},
		{GatewayAddr1V6.Addr(), WWAN, "101"}, {GatewayAddr2V6.Addr(), WWAN, "102"},
	} {
		t.Run(tc.addr.String(), func(t *testing.T) {
			ping := func() error {
				_, err := l.Output(Client, "ping", "-n", "-q", "-c", "1", "-W", "2", "-I", tc.via, tc.addr.String())
				return err
			}
			if err := ping(); err != nil {
				t.Fatalf("before: %v", err)
			}
			if err := l.RemoveGatewayAddr(tc.addr); err != nil {
				t.Fatal(err)
			}
			if err := ping(); err == nil {
				t.Fatal("the removed address still answers")
			}
			if err := l.RestoreGatewayAddr(tc.addr); err != nil {
				t.Fatal(err)
			}
			family := "-4"
			if tc.addr.Is6() {
				family = "-6"
			}
			out, err := l.Output(Gateway, "ip", family, "route", "show", "table", tc.table)
			if err != nil || !strings.Contains(out, "default") {
				t.Errorf("the address's table has no default route after the restore: %v\n%s", err, out)
			}
			var pingErr error
			for i := 0; i < 10; i++ { // an IPv6 address may be tentative for a moment
				if pingErr = ping(); pingErr == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if pingErr != nil {
				t.Errorf("after the restore: %v", pingErr)
			}
		})
	}
	if _, err := gatewayIfOf(HostAddr.Addr()); err == nil {
		t.Error("an address the gateway does not have was accepted")
	}
}
