package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// DNSOptions says which servers and domains to give the system resolver
// for this device.
type DNSOptions struct {
	Servers []netip.Addr
	// Domains are routed to Servers (split DNS): lower case, without "~".
	Domains []string
	// FullTunnel makes the device the resolver's default route: names
	// outside Domains go to Servers too.
	FullTunnel bool
	// Name names the saved state (the profile's name); default the
	// device's name.
	Name string
	// StateDir holds what a crash must undo (default DefaultStateDir).
	StateDir string
	// ResolvConf is the file to rewrite as the last resort; default
	// /etc/resolv.conf. Tests point it at a temp file.
	ResolvConf string
	// Resolver forces a method: "" picks the first that works among
	// "resolved", "resolvconf" and "file".
	Resolver string
}

// DefaultStateDir is where undo state lives: a tmpfs that a reboot empties,
// which is right, since what it undoes does not survive a reboot either.
const DefaultStateDir = "/run/roam"

type dnsState struct {
	method  string
	restore func() error
}

// ErrResolvConfManaged reports a resolv.conf that another program owns (a
// symlink, as systemd-resolved, NetworkManager and resolvconf make it):
// rewriting it would fight that program, so roam leaves it alone.
var ErrResolvConfManaged = errors.New("resolv.conf is managed by another program")

// SetDNS gives the system resolver the servers, in this order of
// preference: systemd-resolved over D-Bus (per link, so nothing outlives
// the device), resolvconf/openresolv per interface, and last a rewrite of
// resolv.conf whose original is saved under StateDir first, so that
// RestoreDNS puts it back after a crash.
func (d *Device) SetDNS(o DNSOptions) error {
	if len(o.Servers) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("tun: device closed")
	}
	if d.dns != nil {
		if err := d.dns.restore(); err != nil {
			return err
		}
		d.dns = nil
	}
	if o.Name == "" {
		o.Name = d.name
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	var errs []error
	for _, m := range []string{"resolved", "resolvconf", "file"} {
		if o.Resolver != "" && o.Resolver != m {
			continue
		}
		var st *dnsState
		var err error
		switch m {
		case "resolved":
			st, err = setResolved(d.index, o)
		case "resolvconf":
			st, err = setResolvconf(d.name, o)
		case "file":
			st, err = setResolvConfFile(o)
		}
		if err == nil {
			d.dns = st
			return nil
		}
		if !errors.Is(err, errUnavailable) {
			return err
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("tun: no way to set DNS: %w", errors.Join(errs...))
}

// DNSMethod names how the device's DNS settings were applied ("" none).
func (d *Device) DNSMethod() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dns == nil {
		return ""
	}
	return d.dns.method
}

// errUnavailable marks a method that this machine does not offer, so the
// next one is tried.
var errUnavailable = errors.New("unavailable")

func setResolvConfFile(o DNSOptions) (*dnsState, error) {
	path := o.ResolvConf
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, _ := os.Readlink(path)
		return nil, fmt.Errorf("%s is a symlink to %s: %w; not rewriting it", path, target, ErrResolvConfManaged)
	}
	orig, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	existed := err == nil
	var b strings.Builder
	b.WriteString("# written by roam while the tunnel is up; restored on disconnect\n")
	for _, s := range o.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(o.Domains) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(o.Domains, " "))
	}
	if !o.FullTunnel {
		// Split tunnel: the old servers stay as fallbacks after ours.
		for _, line := range strings.Split(string(orig), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "nameserver") {
				b.WriteString(line + "\n")
			}
		}
	}
	written := []byte(b.String())
	state := DNSUndo{Method: "file", Path: path, Original: string(orig), Existed: existed, Written: string(written)}
	// The original goes to disk before the file changes: a crash between
	// the two leaves an undo that finds the file unchanged and drops itself.
	if err := recordDNS(o.StateDir, o.Name, state); err != nil {
		return nil, err
	}
	if err := writeInPlace(path, written); err != nil {
		forgetDNS(o.StateDir, o.Name)
		return nil, err
	}
	return &dnsState{method: "file", restore: func() error {
		if err := state.Undo(); err != nil {
			return err
		}
		return forgetDNS(o.StateDir, o.Name)
	}}, nil
}

// writeInPlace rewrites path without renaming: resolv.conf is often a bind
// mount (containers, `ip netns`), where a rename fails.
func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
