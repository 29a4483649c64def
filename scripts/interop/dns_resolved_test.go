package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/roam-vpn/roam/internal/nstest"
	"github.com/roam-vpn/roam/scripts/lab"
)

// TestDNSResolved: a real systemd-resolved runs in the client namespace
// (its own mounts: a passwd with its user, a tmpfs /run/systemd) on a
// private dbus-daemon; roam gateway sends DNS servers and dns_domains in
// CP, and the roam daemon sets them on the tunnel's link over D-Bus: the
// servers, each domain as a routing domain, no default route for this split
// tunnel; the namespace's resolv.conf stays as it was.
func TestDNSResolved(t *testing.T) {
	bin := nstest.NeedResolved(t)
	l, roamBin := setup(t)
	pki := newPKI(t, l)
	startRoamGateway(t, l, roamBin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, DNSDomains: []string{"corp.example", "lab.example"}})

	dir := labTempDir(t, l, "resolved-")
	// resolved reaches the bus socket after dropping root.
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	sock := filepath.Join(dir, "bus.sock")
	addr := "unix:path=" + sock
	// resolved drops root to systemd-resolve, a user only the script's
	// mount namespace knows.
	nstest.ResolvedFiles(t, dir, addr)
	// ip netns exec gives the script a mount namespace of its own (slave
	// of the machine's), so these mounts never reach the machine.
	script := filepath.Join(dir, "resolved.sh")
	os.WriteFile(script, []byte(fmt.Sprintf(`set -e
mount --bind %[1]s/passwd /etc/passwd
mount --bind %[1]s/group /etc/group
mount -t tmpfs tmpfs /run/systemd
# The bus sees the same passwd as resolved, so it knows resolved's user.
dbus-daemon --config-file=%[1]s/bus.conf --nofork --nopidfile &
export DBUS_SYSTEM_BUS_ADDRESS=%[2]s
while [ ! -S %[1]s/bus.sock ]; do sleep 0.05; done
%[3]s
kill $!
`, dir, addr, bin)), 0o755)
	os.MkdirAll("/run/systemd", 0o755)

	resolved, err := l.Start(lab.Client, "sh", script)
	if err != nil {
		t.Fatal(err)
	}
	var conn *dbus.Conn
	for i := 0; conn == nil; i++ {
		if conn, err = dbus.Connect(addr); err != nil && i == 200 {
			t.Fatalf("private bus: %v\n%s", err, resolved.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	for i := 0; ; i++ {
		var has bool
		if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, "org.freedesktop.resolve1").Store(&has); err != nil {
			t.Fatal(err)
		}
		if has {
			break
		}
		if i == 200 {
			t.Fatalf("systemd-resolved did not take its bus name:\n%s", resolved.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}

	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.DNS = true
	r := roamClient(t, l, roamBin, p)
	r.Env = append(r.Env, "DBUS_SYSTEM_BUS_ADDRESS="+addr)
	if out, err := r.Connect("corp", 20*time.Second); err != nil {
		t.Fatalf("connect: %v\n%s", err, out)
	}
	out, err := l.Output(lab.Client, "sh", "-c", "for d in /sys/class/net/*; do [ -e $d/tun_flags ] && cat $d/ifindex; done; true")
	if err != nil {
		t.Fatal(err)
	}
	index, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("no single TUN device in the client namespace: %q", out)
	}
	var path dbus.ObjectPath
	mgr := conn.Object("org.freedesktop.resolve1", "/org/freedesktop/resolve1")
	if err := mgr.Call("org.freedesktop.resolve1.Manager.GetLink", 0, int32(index)).Store(&path); err != nil {
		t.Fatal(err)
	}
	link := conn.Object("org.freedesktop.resolve1", path)
	var servers []struct {
		Family  int32
		Address []byte
	}
	var domains []struct {
		Domain    string
		RouteOnly bool
	}
	var defRoute bool
	for _, g := range []struct {
		prop string
		v    any
	}{{"DNS", &servers}, {"Domains", &domains}, {"DefaultRoute", &defRoute}} {
		v, err := link.GetProperty("org.freedesktop.resolve1.Link." + g.prop)
		if err == nil {
			err = v.Store(g.v)
		}
		if err != nil {
			t.Fatalf("%s: %v", g.prop, err)
		}
	}
	if len(servers) != 1 || servers[0].Family != 2 || !slices.Equal(servers[0].Address, []byte{10, 99, 0, 53}) {
		t.Errorf("link DNS %v, want 10.99.0.53 from CP", servers)
	}
	var names []string
	for _, d := range domains {
		if !d.RouteOnly {
			t.Errorf("domain %s is a search domain, want a routing domain", d.Domain)
		}
		names = append(names, d.Domain)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"corp.example", "lab.example"}) {
		t.Errorf("link domains %v, want corp.example and lab.example from CP", names)
	}
	if defRoute {
		t.Error("split tunnel's link is resolved's default route")
	}
	if st := connected(t, r, "corp"); st.DNSMethod != "resolved" || !slices.Equal(st.DNSServers, []string{"10.99.0.53"}) || !slices.Equal(st.DNSDomains, []string{"corp.example", "lab.example"}) {
		t.Errorf("status: dns_method %q servers %v domains %v; want resolved, 10.99.0.53, corp.example lab.example", st.DNSMethod, st.DNSServers, st.DNSDomains)
	}
	if b, _ := os.ReadFile(filepath.Join("/etc/netns", l.NS(lab.Client), "resolv.conf")); string(b) != lab.ResolvConf {
		t.Errorf("resolv.conf rewritten with resolved running: %q", b)
	}
}
