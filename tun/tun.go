// Package tun owns the tunnel's TUN device and everything configured around
// it: addresses, routes, the policy rules that keep full-tunnel routing from
// capturing the tunnel's own packets, and DNS. Close undoes all of it, so a
// daemon that calls Close on every exit path leaves the machine as it found
// it.
package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/roam-vpn/roam/esp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// DefaultMark marks the tunnel's own UDP packets (SO_MARK) so the full-tunnel
// rule lets them use the main table. "Roam" in ASCII.
const DefaultMark uint32 = 0x526f616d

// DefaultTable holds the full-tunnel default routes.
const DefaultTable = 0x526f

// rulePriority is where our two rules go: before the main table's default
// priority (32766) so that they apply, after local (0).
const rulePriority = 21000

// Device is a TUN device with the configuration roam added to it.
type Device struct {
	dev   wgtun.Device
	name  string
	index int

	mu     sync.Mutex
	closed bool
	addrs  []*netlink.Addr
	routes []*netlink.Route
	rules  []*netlink.Rule
	// aside are the rules that step the full tunnel aside (StepAside).
	aside []*netlink.Rule
	dns   *dnsState
	// journal records the device's state before a change (SetJournal).
	journal func(State) error
}

// Create makes the TUN device, sets its MTU and brings it up.
func Create(name string, mtu int) (*Device, error) {
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("TUN name: %w", err)
	}
	link, err := netlink.LinkByName(real)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("TUN %s: %w", real, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		dev.Close()
		return nil, fmt.Errorf("TUN %s up: %w", real, err)
	}
	return &Device{dev: dev, name: real, index: link.Attrs().Index}, nil
}

// Dev is the device for the dataplane's batch reads and writes.
func (d *Device) Dev() wgtun.Device { return d.dev }

// Name is the kernel's name for the device.
func (d *Device) Name() string { return d.name }

// Index is the kernel's interface index.
func (d *Device) Index() int { return d.index }

// AddAddress assigns an inner address. IPv6 addresses skip duplicate address
// detection: the address is ours by assignment from the gateway, and DAD
// would hold traffic back for a second.
func (d *Device) AddAddress(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("tun: device closed")
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	link := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: d.index, Name: d.name}}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("add address %s to %s: %w", p, d.name, err)
	}
	d.addrs = append(d.addrs, a)
	return nil
}

// AddRoutes sends the prefixes into the tunnel. A default route (0.0.0.0/0
// or ::/0) goes into table with two rules, as wg-quick does: packets without
// our fwmark look the tunnel table up, and the main table is consulted first
// for everything but its default route. The tunnel's own UDP socket carries
// the mark, so it keeps using the uplink whatever the uplink is after a move;
// no host route to the gateway is needed. Other prefixes go into the main
// table through the device. With a journal (SetJournal) the rules and routes
// are recorded before any of them is added.
func (d *Device) AddRoutes(ps []netip.Prefix, mark uint32, table int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("tun: device closed")
	}
	var rules []*netlink.Rule
	var routes []*netlink.Route
	for _, p := range ps {
		p = p.Masked()
		r := &netlink.Route{LinkIndex: d.index, Dst: prefixToIPNet(p), Scope: netlink.SCOPE_LINK}
		if p.Bits() == 0 {
			r.Table = table
			rules = append(rules, d.fullTunnelRules(rules, p.Addr().Is6(), mark, table)...)
		}
		routes = append(routes, r)
	}
	if d.journal != nil {
		st := d.state()
		st.Rules = append(st.Rules, rulesState(rules)...)
		st.Routes = append(st.Routes, routesState(routes)...)
		if err := d.journal(st); err != nil {
			return fmt.Errorf("recording the routes of %s for a crash: %w", d.name, err)
		}
	}
	for _, r := range rules {
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("policy rule (table %d): %w", r.Table, err)
		}
		d.rules = append(d.rules, r)
	}
	for _, r := range routes {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s: %w", r.Dst, d.name, err)
		}
		d.routes = append(d.routes, r)
	}
	return nil
}

// fullTunnelRules returns the two rules of a full tunnel for the family,
// none when the device or pending already has them.
func (d *Device) fullTunnelRules(pending []*netlink.Rule, v6 bool, mark uint32, table int) []*netlink.Rule {
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	for _, r := range append(d.rules[:len(d.rules):len(d.rules)], pending...) {
		if r.Family == family {
			return nil
		}
	}
	suppress := netlink.NewRule()
	suppress.Family = family
	suppress.Table = unix.RT_TABLE_MAIN
	suppress.SuppressPrefixlen = 0
	suppress.Priority = rulePriority
	tunnel := netlink.NewRule()
	tunnel.Family = family
	tunnel.Table = table
	tunnel.Mark = mark
	tunnel.Invert = true
	tunnel.Priority = rulePriority + 1
	return []*netlink.Rule{suppress, tunnel}
}

// Close removes DNS settings, rules, routes and addresses, then the device.
// It is safe to call more than once and after a partial setup; it carries on
// past individual failures so one stuck item does not leave the rest behind.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	if d.dns != nil {
		errs = append(errs, d.dns.restore())
		d.dns = nil
	}
	for _, r := range append(d.rules, d.aside...) {
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule: %w", err))
		}
	}
	for _, r := range d.routes {
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
		}
	}
	d.rules, d.aside, d.routes, d.addrs = nil, nil, nil, nil
	// Closing the TUN file removes the device, and with it its addresses and
	// any route still pointing at it.
	if err := d.dev.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close TUN %s: %w", d.name, err))
	}
	return errors.Join(errs...)
}

// Cleanup removes what a crashed earlier run may have left: our policy rules
// and the routes in our table. The device itself disappears with the process
// that held it.
func Cleanup(mark uint32, table int) error {
	var errs []error
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := netlink.RuleList(family)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rules {
			ours := (r.Table == table && r.Mark == mark && r.Invert) ||
				(r.Priority == rulePriority && r.Table == unix.RT_TABLE_MAIN && r.SuppressPrefixlen == 0) ||
				(r.Priority == asidePriority && r.Table == unix.RT_TABLE_MAIN)
			if ours {
				r := r
				if err := netlink.RuleDel(&r); err != nil {
					errs = append(errs, err)
				}
			}
		}
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range routes {
			r := r
			if err := netlink.RouteDel(&r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// MTUFor returns the inner MTU that keeps an ESP-in-UDP packet within the
// uplink MTU: outer IP (20 or 40) + UDP 8 + ESP header 8 + GCM IV 8 + ICV 16,
// and the encrypted part (inner + padding + 2 trailer bytes) is a multiple of
// 4. Below 576 (the IPv4 minimum every host must accept) the uplink is
// unusable anyway, so that is the floor.
func MTUFor(uplinkMTU int, ipv6Outer bool) int {
	return max(esp.InnerMTU(uplinkMTU, ipv6Outer), 576)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
