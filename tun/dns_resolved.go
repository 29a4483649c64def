package tun

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/godbus/dbus/v5"
)

// systemd-resolved's D-Bus names (org.freedesktop.resolve1(5)).
const (
	resolvedName    = "org.freedesktop.resolve1"
	resolvedPath    = "/org/freedesktop/resolve1"
	resolvedManager = "org.freedesktop.resolve1.Manager"
)

// resolvedAddr is one element of SetLinkDNS's a(iay).
type resolvedAddr struct {
	Family  int32
	Address []byte
}

// resolvedDomain is one element of SetLinkDomains's a(sb).
type resolvedDomain struct {
	Domain    string
	RouteOnly bool
}

// resolvedLinkConfig is what roam sets on the link, in call order.
func resolvedLinkConfig(o DNSOptions) (defaultRoute bool, domains []resolvedDomain, servers []resolvedAddr) {
	for _, d := range o.Domains {
		domains = append(domains, resolvedDomain{Domain: d, RouteOnly: true})
	}
	if o.FullTunnel {
		// "~." makes the link the preferred one for every name, not just a
		// candidate among the default routes.
		domains = append(domains, resolvedDomain{Domain: ".", RouteOnly: true})
	}
	for _, s := range o.Servers {
		fam := int32(2) // AF_INET
		if s.Is6() && !s.Is4In6() {
			fam = 10 // AF_INET6
		}
		servers = append(servers, resolvedAddr{Family: fam, Address: s.Unmap().AsSlice()})
	}
	return o.FullTunnel, domains, servers
}

// setResolved configures the link in systemd-resolved over the system bus
// (DBUS_SYSTEM_BUS_ADDRESS, else the standard socket). Routing first, then
// servers: a link that got servers before its domains and default route
// would briefly take queries meant for other links.
func setResolved(ifindex int, o DNSOptions) (*dnsState, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("resolved: system bus: %v: %w", err, errUnavailable)
	}
	var running bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, resolvedName).Store(&running); err != nil {
		conn.Close()
		return nil, fmt.Errorf("resolved: system bus: %v: %w", err, errUnavailable)
	}
	if !running {
		conn.Close()
		return nil, fmt.Errorf("resolved: not running: %w", errUnavailable)
	}
	mgr := conn.Object(resolvedName, resolvedPath)
	idx := int32(ifindex)
	defaultRoute, domains, servers := resolvedLinkConfig(o)
	calls := []struct {
		method string
		args   []any
	}{
		{"SetLinkDefaultRoute", []any{idx, defaultRoute}},
		{"SetLinkDomains", []any{idx, domains}},
		{"SetLinkDNS", []any{idx, servers}},
	}
	for _, c := range calls {
		if err := mgr.Call(resolvedManager+"."+c.method, 0, c.args...).Err; err != nil {
			mgr.Call(resolvedManager+".RevertLink", 0, idx)
			conn.Close()
			return nil, fmt.Errorf("resolved: %s: %w", c.method, err)
		}
	}
	return &dnsState{method: "resolved", restore: func() error {
		defer conn.Close()
		// The link's settings vanish with the device; reverting first
		// matters when the device outlives this call (a reconnect).
		if err := mgr.Call(resolvedManager+".RevertLink", 0, idx).Err; err != nil {
			return fmt.Errorf("resolved: RevertLink: %w", err)
		}
		return nil
	}}, nil
}

// setResolvconf hands the servers to resolvconf (Debian's or openresolv)
// as one interface's record, which resolvconf merges and takes back with
// -d. The systemd shim of that name is left out: it needs resolved, which
// was tried first.
func setResolvconf(ifname string, o DNSOptions) (*dnsState, error) {
	bin, err := exec.LookPath("resolvconf")
	if err != nil {
		return nil, fmt.Errorf("resolvconf: %v: %w", err, errUnavailable)
	}
	if real, err := filepath.EvalSymlinks(bin); err == nil && strings.Contains(filepath.Base(real), "resolvectl") {
		return nil, fmt.Errorf("resolvconf is systemd's shim: %w", errUnavailable)
	}
	record, args, input := resolvconfRecord(ifname, isOpenresolv(bin), o)
	undo := DNSUndo{Method: "resolvconf", Interface: record}
	if err := recordDNS(o.StateDir, o.Name, undo); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		forgetDNS(o.StateDir, o.Name)
		return nil, fmt.Errorf("resolvconf -a %s: %v: %s", record, err, bytes.TrimSpace(out))
	}
	return &dnsState{method: "resolvconf", restore: func() error {
		if err := undo.Undo(); err != nil {
			return err
		}
		return forgetDNS(o.StateDir, o.Name)
	}}, nil
}

// resolvconfRecord is the record for device ifname: its name, resolvconf's
// arguments and the resolv.conf lines it reads from stdin.
//
// glibc asks the servers in resolv.conf's order and takes the first answer,
// a "no such name" too, so the tunnel's servers must come first or the
// tunnel's domains never resolve. Both programs order records by name:
// Debian's by /etc/resolvconf/interface-order, where "vpn*" comes before
// every Ethernet and Wi-Fi record, openresolv by its dynamic_order, where
// "vpn.*" comes right after loopback. openresolv gets no metric (-m): a
// record with any metric goes after every record without one, and DHCP
// clients add theirs without. A full tunnel is exclusive (-x, openresolv
// only): its servers alone.
func resolvconfRecord(ifname string, openresolv bool, o DNSOptions) (record string, args []string, input string) {
	var b strings.Builder
	for _, s := range o.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(o.Domains) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(o.Domains, " "))
	}
	record = "vpn." + ifname
	args = []string{"-a", record}
	if openresolv && o.FullTunnel {
		args = append(args, "-x")
	}
	return record, args, b.String()
}

func isOpenresolv(bin string) bool {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	return err == nil && bytes.Contains(bytes.ToLower(out), []byte("openresolv"))
}
