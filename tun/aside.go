package tun

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// asidePriority is where StepAside's rule goes: just before the full
// tunnel's two rules, so that the main table (the uplink's default route)
// answers every lookup while it is in place.
const asidePriority = rulePriority - 1

// StepAside takes the full-tunnel routes out of the way (on) or puts them
// back (off): a rule sends every lookup to the main table first, so the
// uplink's own default route carries the traffic, as when a captive
// portal wants a login over the bare uplink. The tunnel's rules and routes
// stay; removing the one rule restores them at once. Only the families
// routed entirely into the tunnel get the rule, and with a journal it is
// recorded before it is added, so that a killed daemon's is removed too.
// Stepping aside twice, or back when not aside, changes nothing.
func (d *Device) StepAside(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("tun: device closed")
	}
	if !on {
		var errs []error
		for _, r := range d.aside {
			if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("policy rule (step aside): %w", err))
			}
		}
		d.aside = nil
		if d.journal != nil {
			errs = append(errs, d.journal(d.state()))
		}
		return errors.Join(errs...)
	}
	if len(d.aside) > 0 {
		return nil
	}
	var add []*netlink.Rule
	for _, fr := range d.rules {
		if fr.SuppressPrefixlen != 0 {
			continue // one per family: the suppressing rule
		}
		r := netlink.NewRule()
		r.Family = fr.Family
		r.Table = unix.RT_TABLE_MAIN
		r.Priority = asidePriority
		add = append(add, r)
	}
	if len(add) == 0 {
		return nil // a split tunnel leaves the uplink's default route alone
	}
	if d.journal != nil {
		st := d.state()
		st.Rules = append(st.Rules, rulesState(add)...)
		if err := d.journal(st); err != nil {
			return fmt.Errorf("recording the step-aside rules of %s for a crash: %w", d.name, err)
		}
	}
	for _, r := range add {
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("policy rule (step aside): %w", err)
		}
		d.aside = append(d.aside, r)
	}
	return nil
}

// SteppedAside reports whether StepAside's rules are in place.
func (d *Device) SteppedAside() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.aside) > 0
}
