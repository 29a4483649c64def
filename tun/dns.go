package tun

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// DNSOptions says how to apply DNS servers. ResolvConf is the file to
// rewrite when systemd-resolved is not running; tests point it at a temp
// file so they never touch the machine's own.
type DNSOptions struct {
	Servers    []netip.Addr
	Domains    []string // routing domains; empty with FullTunnel means all names ("~.")
	FullTunnel bool
	ResolvConf string // default /etc/resolv.conf
	// ResolvedSocket is where systemd-resolved listens; default its standard path.
	ResolvedSocket string
}

type dnsState struct {
	restore func() error
}

const resolvedSocket = "/run/systemd/resolve/io.systemd.Resolve"

// SetDNS applies the servers through systemd-resolved when it runs (per link,
// so it goes away with the device), otherwise by rewriting resolv.conf in
// place after keeping its exact contents for Close. In place, not by rename:
// resolv.conf is often a bind mount (containers, `ip netns`), where a rename
// fails.
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
	sock := o.ResolvedSocket
	if sock == "" {
		sock = resolvedSocket
	}
	if _, err := os.Stat(sock); err == nil {
		if _, err := exec.LookPath("resolvectl"); err == nil {
			st, err := setResolved(d.name, o)
			if err != nil {
				return err
			}
			d.dns = st
			return nil
		}
	}
	path := o.ResolvConf
	if path == "" {
		path = "/etc/resolv.conf"
	}
	st, err := setResolvConf(path, o)
	if err != nil {
		return err
	}
	d.dns = st
	return nil
}

func setResolved(ifname string, o DNSOptions) (*dnsState, error) {
	args := []string{"dns", ifname}
	for _, s := range o.Servers {
		args = append(args, s.String())
	}
	if out, err := exec.Command("resolvectl", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("resolvectl dns: %v: %s", err, bytes.TrimSpace(out))
	}
	domains := o.Domains
	if len(domains) == 0 && o.FullTunnel {
		domains = []string{"~."}
	}
	if len(domains) > 0 {
		if out, err := exec.Command("resolvectl", append([]string{"domain", ifname}, domains...)...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("resolvectl domain: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	return &dnsState{restore: func() error {
		// The link's settings vanish with the device; revert anyway in case
		// the device outlives this call.
		exec.Command("resolvectl", "revert", ifname).Run()
		return nil
	}}, nil
}

func setResolvConf(path string, o DNSOptions) (*dnsState, error) {
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
	if err := writeInPlace(path, []byte(b.String())); err != nil {
		return nil, err
	}
	return &dnsState{restore: func() error {
		if !existed {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", path, err)
			}
			return nil
		}
		return writeInPlace(path, orig)
	}}, nil
}

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
