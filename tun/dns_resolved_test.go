package tun

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/roam-vpn/roam/internal/nstest"
)

// TestResolvedSplitDNS runs a real systemd-resolved against a private
// dbus-daemon inside a throwaway network and mount namespace (ip netns exec
// makes the mounts private), sets a split and then a full tunnel's DNS on a
// TUN device and reads back what resolved holds for the link.
func TestResolvedSplitDNS(t *testing.T) {
	bin := nstest.NeedResolved(t)
	if !nstest.InNamespace(t) {
		return
	}
	dir := t.TempDir()
	// resolved reaches the bus socket after dropping root.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	// resolved drops privileges to systemd-resolve; the user exists only in
	// this mount namespace's copy of passwd and group.
	sock := filepath.Join(dir, "bus.sock")
	conf, passwd, group := nstest.ResolvedFiles(t, dir, "unix:path="+sock)
	nstest.Exec(t, "mount", "--bind", passwd, "/etc/passwd")
	nstest.Exec(t, "mount", "--bind", group, "/etc/group")
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o644)
	nstest.Exec(t, "mount", "--bind", resolv, "/etc/resolv.conf")
	os.MkdirAll("/run/systemd", 0o755)
	nstest.Exec(t, "mount", "-t", "tmpfs", "tmpfs", "/run/systemd")
	nstest.Exec(t, "ip", "link", "set", "lo", "up")

	start := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	start("dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile")
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+sock)
	var conn *dbus.Conn
	for i := 0; conn == nil; i++ {
		c, err := dbus.Connect("unix:path=" + sock)
		if err == nil {
			conn = c
			break
		}
		if i == 100 {
			t.Fatalf("private bus: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	start(bin)
	for i := 0; ; i++ {
		var has bool
		if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, resolvedName).Store(&has); err != nil {
			t.Fatal(err)
		}
		if has {
			break
		}
		if i == 200 {
			t.Fatal("systemd-resolved did not take its bus name")
		}
		time.Sleep(50 * time.Millisecond)
	}

	d, err := Create("roamdns0", 1400)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	link := func() (dns []resolvedAddr, domains []resolvedDomain, defRoute bool) {
		t.Helper()
		var path dbus.ObjectPath
		mgr := conn.Object(resolvedName, resolvedPath)
		if err := mgr.Call(resolvedManager+".GetLink", 0, int32(d.index)).Store(&path); err != nil {
			t.Fatal(err)
		}
		obj := conn.Object(resolvedName, path)
		get := func(prop string, v any) {
			p, err := obj.GetProperty("org.freedesktop.resolve1.Link." + prop)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Store(v); err != nil {
				t.Fatalf("%s: %v", prop, err)
			}
		}
		get("DNS", &dns)
		get("Domains", &domains)
		get("DefaultRoute", &defRoute)
		return
	}
	state := t.TempDir()
	tests := []struct {
		name     string
		o        DNSOptions
		dns      []resolvedAddr
		domains  []resolvedDomain
		defRoute bool
	}{
		{"split", DNSOptions{Servers: []netip.Addr{netip.MustParseAddr("10.99.0.53")}, Domains: []string{"corp.example", "lab.example"}},
			[]resolvedAddr{{2, []byte{10, 99, 0, 53}}}, []resolvedDomain{{"corp.example", true}, {"lab.example", true}}, false},
		{"full", DNSOptions{Servers: []netip.Addr{netip.MustParseAddr("10.99.0.54")}, Domains: []string{"corp.example"}, FullTunnel: true},
			[]resolvedAddr{{2, []byte{10, 99, 0, 54}}}, []resolvedDomain{{"corp.example", true}, {".", true}}, true},
	}
	for _, tt := range tests {
		tt.o.StateDir, tt.o.ResolvConf, tt.o.Name = state, resolv, "corp"
		if err := d.SetDNS(tt.o); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if m := d.DNSMethod(); m != "resolved" {
			t.Fatalf("%s: method %q, want resolved", tt.name, m)
		}
		dns, domains, defRoute := link()
		slices.SortFunc(domains, func(a, b resolvedDomain) int { return cmpDomain(a, b, tt.domains) })
		if !reflect.DeepEqual(dns, tt.dns) || !reflect.DeepEqual(domains, tt.domains) || defRoute != tt.defRoute {
			t.Errorf("%s: link has DNS %v domains %v default_route %v; want %v %v %v", tt.name, dns, domains, defRoute, tt.dns, tt.domains, tt.defRoute)
		}
	}
	if b, _ := os.ReadFile(resolv); string(b) != "nameserver 192.0.2.53\n" {
		t.Errorf("resolv.conf touched with resolved running: %q", b)
	}
	d.mu.Lock()
	err = d.dns.restore()
	d.dns = nil
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if dns, domains, _ := link(); len(dns) != 0 || len(domains) != 0 {
		t.Errorf("after revert the link still has DNS %v domains %v", dns, domains)
	}
}

// cmpDomain orders got like want, as resolved need not keep the order.
func cmpDomain(a, b resolvedDomain, want []resolvedDomain) int {
	return slices.Index(want, a) - slices.Index(want, b)
}
