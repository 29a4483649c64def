package tun

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestStepAside checks in a throwaway namespace that stepping aside sends
// unmarked traffic over the uplink, that stepping back puts it into the
// tunnel again, that the journal follows, and that Close and Undo remove a
// rule left aside.
func TestStepAside(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	d := createWithUplink(t)
	var journal State
	d.SetJournal(func(s State) error { journal = s; return nil })
	if err := d.AddAddress(netip.MustParsePrefix("10.99.200.7/32")); err != nil {
		t.Fatal(err)
	}
	if err := d.AddRoutes([]netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("0.0.0.0/0")}, DefaultMark, DefaultTable); err != nil {
		t.Fatal(err)
	}
	dev := func(dst string) string {
		out := nstest.Exec(t, "ip", "route", "get", dst)
		for _, d := range []string{"roamt0", "up0"} {
			if strings.Contains(out, "dev "+d) {
				return d
			}
		}
		return out
	}
	asideRules := func(st State) int {
		n := 0
		for _, r := range st.Rules {
			if r.Priority == asidePriority {
				n++
			}
		}
		return n
	}
	for _, step := range []struct {
		name     string
		on       bool
		internet string // where 198.51.100.7 goes
		rules    int    // step-aside rules in the journal
	}{
		{"aside", true, "up0", 1},
		{"aside again", true, "up0", 1},
		{"back", false, "roamt0", 0},
		{"back again", false, "roamt0", 0},
		{"aside for Close", true, "up0", 1},
	} {
		if err := d.StepAside(step.on); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := dev("198.51.100.7"); got != step.internet {
			t.Errorf("%s: 198.51.100.7 goes to %s, want %s", step.name, got, step.internet)
		}
		if got := asideRules(journal); got != step.rules {
			t.Errorf("%s: journal holds %d step-aside rules, want %d", step.name, got, step.rules)
		}
		if d.SteppedAside() != step.on {
			t.Errorf("%s: SteppedAside() = %v", step.name, !step.on)
		}
	}
	// A crashed daemon's journal removes the rule it left (only that rule
	// here, so that the device and its table stay for the check).
	var left State
	for _, r := range journal.Rules {
		if r.Priority == asidePriority {
			left.Rules = append(left.Rules, r)
		}
	}
	if err := Undo(left); err != nil {
		t.Fatal(err)
	}
	if got := dev("198.51.100.7"); got != "roamt0" {
		t.Errorf("after Undo 198.51.100.7 goes to %s, want roamt0", got)
	}
	if err := d.StepAside(false); err != nil {
		t.Fatalf("back after Undo: %v", err)
	}
	if err := d.StepAside(true); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	rules, _ := netlink.RuleList(unix.AF_INET)
	for _, r := range rules {
		if r.Priority == asidePriority {
			t.Errorf("step-aside rule left after Close: %+v", r)
		}
	}
}
