package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// State is what a Device has changed on the machine, in the form a later
// process needs to undo it after this one was killed (Undo): the device, the
// policy rules of a full tunnel and the routes. Addresses are not listed:
// they go with the device.
type State struct {
	Device string       `json:"device"`
	Rules  []RuleState  `json:"rules,omitempty"`
	Routes []RouteState `json:"routes,omitempty"`
}

// RuleState is one policy rule as added.
type RuleState struct {
	Family            int    `json:"family"`
	Priority          int    `json:"priority"`
	Table             int    `json:"table"`
	Mark              uint32 `json:"mark,omitempty"`
	Invert            bool   `json:"invert,omitempty"`
	SuppressPrefixlen int    `json:"suppress_prefixlen"`
}

// RouteState is one route through the device.
type RouteState struct {
	Dst   netip.Prefix `json:"dst"`
	Table int          `json:"table,omitempty"`
}

// SetJournal makes the device call record with its state-to-be before
// every change to rules or routes; the change is made only when record
// succeeds. The daemon writes the state to disk there, so that what a
// killed daemon changed can be undone (Undo).
func (d *Device) SetJournal(record func(State) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.journal = record
}

// State is what the device has changed so far.
func (d *Device) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state()
}

func (d *Device) state() State {
	return State{Device: d.name, Rules: rulesState(append(d.rules[:len(d.rules):len(d.rules)], d.aside...)), Routes: routesState(d.routes)}
}

func rulesState(rs []*netlink.Rule) []RuleState {
	out := make([]RuleState, 0, len(rs))
	for _, r := range rs {
		out = append(out, RuleState{Family: r.Family, Priority: r.Priority, Table: r.Table, Mark: r.Mark, Invert: r.Invert, SuppressPrefixlen: r.SuppressPrefixlen})
	}
	return out
}

func routesState(rs []*netlink.Route) []RouteState {
	out := make([]RouteState, 0, len(rs))
	for _, r := range rs {
		ones, _ := r.Dst.Mask.Size()
		a, _ := netip.AddrFromSlice(r.Dst.IP)
		out = append(out, RouteState{Dst: netip.PrefixFrom(a.Unmap(), ones), Table: r.Table})
	}
	return out
}

// Undo removes what a killed process's device left: its policy rules
// (they outlive the process) and, should the device still exist (a process
// that could not be killed cleanly, a device made persistent), its routes
// and the device itself. The kernel removes a dead process's TUN device
// and the routes through it by itself, so usually only the rules are left.
// What is already gone is no error.
func Undo(s State) error {
	var errs []error
	for i := len(s.Rules) - 1; i >= 0; i-- {
		rs := s.Rules[i]
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table, r.Mark, r.Invert, r.SuppressPrefixlen = rs.Family, rs.Priority, rs.Table, rs.Mark, rs.Invert, rs.SuppressPrefixlen
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule (priority %d, table %d): %w", rs.Priority, rs.Table, err))
		}
	}
	if s.Device == "" {
		return errors.Join(errs...)
	}
	link, err := netlink.LinkByName(s.Device)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound), errors.Is(err, unix.ENODEV):
		return errors.Join(errs...)
	case err != nil:
		return errors.Join(append(errs, fmt.Errorf("TUN %s: %w", s.Device, err))...)
	}
	// Only a TUN device of that name is ours: another kind was made by
	// someone else since.
	if link.Type() != "tuntap" {
		return errors.Join(errs...)
	}
	for _, rs := range s.Routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixToIPNet(rs.Dst), Table: rs.Table, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", rs.Dst, err))
		}
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("delete TUN %s: %w", s.Device, err))
	}
	return errors.Join(errs...)
}
