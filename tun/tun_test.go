package tun

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestMTUFor(t *testing.T) {
	tests := []struct {
		uplink int
		v6     bool
		want   int
	}{
		{1500, false, 1438},
		{1500, true, 1418},
		{1280, true, 1198},
		{9000, false, 8938},
		{100, false, 576},
	}
	for _, tt := range tests {
		got := MTUFor(tt.uplink, tt.v6)
		if got != tt.want {
			t.Errorf("MTUFor(%d, %v) = %d, want %d", tt.uplink, tt.v6, got, tt.want)
		}
		// The largest inner packet must fit the uplink once encapsulated.
		outer := 20
		if tt.v6 {
			outer = 40
		}
		enc := (got + 2 + 3) / 4 * 4
		if tt.uplink >= 600 && outer+8+8+8+enc+16 > tt.uplink {
			t.Errorf("MTUFor(%d, %v) = %d overflows the uplink", tt.uplink, tt.v6, got)
		}
	}
}

// withUplink gives the throwaway namespace an uplink with a default route,
// like a laptop's Wi-Fi: veth up0 (192.0.2.2/24) via 192.0.2.1.
func withUplink(t *testing.T) {
	t.Helper()
	nstest.Exec(t, "ip", "link", "set", "lo", "up")
	nstest.Exec(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	nstest.Exec(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "up0")
	nstest.Exec(t, "ip", "link", "set", "up0", "up")
	nstest.Exec(t, "ip", "link", "set", "up1", "up")
	nstest.Exec(t, "ip", "route", "add", "default", "via", "192.0.2.1")
}

// createWithUplink is device roamt0 (MTU 1400) in a throwaway namespace
// given an uplink by withUplink; it is closed when the test ends, if the
// test did not close it.
func createWithUplink(t *testing.T) *Device {
	t.Helper()
	withUplink(t)
	d, err := Create("roamt0", 1400)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestDeviceLifecycle creates a device in a throwaway namespace, configures
// a split and a full tunnel, checks the kernel's view, and checks that Close
// leaves nothing behind.
func TestDeviceLifecycle(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	d := createWithUplink(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o644)

	if err := d.AddAddress(netip.MustParsePrefix("10.99.200.7/32")); err != nil {
		t.Fatal(err)
	}
	if err := d.AddAddress(netip.MustParsePrefix("fd00:99::7/128")); err != nil {
		t.Fatal(err)
	}
	if err := d.AddRoutes([]netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, DefaultMark, DefaultTable); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDNS(DNSOptions{Servers: []netip.Addr{netip.MustParseAddr("10.99.0.53")}, FullTunnel: true, ResolvConf: resolv, Resolver: "file", StateDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}

	routeGet := func(dst string, mark string) string {
		args := []string{"route", "get", dst}
		if mark != "" {
			args = append(args, "mark", mark)
		}
		return nstest.Exec(t, "ip", args...)
	}
	tests := []struct {
		dst, mark, wantDev string
	}{
		{"10.99.0.10", "", "roamt0"},          // split route, main table
		{"198.51.100.7", "", "roamt0"},        // full tunnel catches unmarked traffic
		{"198.51.100.7", "0x526f616d", "up0"}, // the tunnel's own packets keep the uplink
		{"192.0.2.1", "", "up0"},              // the uplink's own subnet stays local (suppress_prefixlength 0)
	}
	for _, tt := range tests {
		if out := routeGet(tt.dst, tt.mark); !strings.Contains(out, "dev "+tt.wantDev) {
			t.Errorf("route get %s mark %q: %s, want dev %s", tt.dst, tt.mark, out, tt.wantDev)
		}
	}
	if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "10.99.0.53") {
		t.Errorf("DNS not applied: %s", b)
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := netlink.LinkByName("roamt0"); err == nil {
		t.Error("TUN device left after Close")
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, _ := netlink.RuleList(fam)
		for _, r := range rules {
			if r.Table == DefaultTable || r.Priority == rulePriority {
				t.Errorf("rule left after Close: %+v", r)
			}
		}
		routes, _ := netlink.RouteListFiltered(fam, &netlink.Route{Table: DefaultTable}, netlink.RT_FILTER_TABLE)
		if len(routes) != 0 {
			t.Errorf("routes left in table %d: %v", DefaultTable, routes)
		}
	}
	if b, _ := os.ReadFile(resolv); string(b) != "nameserver 192.0.2.53\n" {
		t.Errorf("resolv.conf not restored: %q", b)
	}
	if out := routeGet("198.51.100.7", ""); !strings.Contains(out, "dev up0") {
		t.Errorf("after Close traffic should use the uplink: %s", out)
	}
}

// TestCleanupRemovesLeftovers simulates a crashed daemon: rules and routes
// exist without a Device to close them.
func TestCleanupRemovesLeftovers(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	nstest.Exec(t, "ip", "link", "set", "lo", "up")
	d, err := Create("roamt1", 1400)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.AddRoutes([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, DefaultMark, DefaultTable); err != nil {
		t.Fatal(err)
	}
	// Keep the device but forget what we added: the state a crash leaves.
	d.rules, d.routes = nil, nil
	if err := Cleanup(DefaultMark, DefaultTable); err != nil {
		t.Fatal(err)
	}
	rules, _ := netlink.RuleList(unix.AF_INET)
	for _, r := range rules {
		if r.Table == DefaultTable || r.Priority == rulePriority {
			t.Errorf("rule left after Cleanup: %+v", r)
		}
	}
	routes, _ := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: DefaultTable}, netlink.RT_FILTER_TABLE)
	if len(routes) != 0 {
		t.Errorf("routes left: %v", routes)
	}
	d.Close()
}
