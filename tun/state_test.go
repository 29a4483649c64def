package tun

import (
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/internal/nstest"
	"github.com/vishvananda/netlink"
)

// machine is what `ip` shows of rules, routes and links: what a crash may
// leave behind and Undo must put back.
func machine(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-4", "rule"}, {"-6", "rule"},
		{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
		{"-o", "link"},
	} {
		b.WriteString(nstest.Exec(t, "ip", args...))
	}
	return b.String()
}

// TestUndoAfterCrash: a device whose owner died without Close leaves its
// policy rules (the device and its routes go with the TUN file) or, when
// the device survives, everything; Undo with the state the journal saw
// before the changes puts the namespace back as it was.
func TestUndoAfterCrash(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	withUplink(t)
	routes := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

	tests := []struct {
		name string
		// crash ends the device the way a killed process would.
		crash func(t *testing.T, d *Device)
	}{
		{"device gone with the process", func(t *testing.T, d *Device) {
			// The TUN file closes, nothing else is undone.
			if err := d.dev.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"device survives", func(t *testing.T, d *Device) {
			// Persistent, so it outlives the file: Undo must remove it.
			if out, err := exec.Command("ip", "tuntap", "add", "dev", d.name, "mode", "tun").CombinedOutput(); err != nil {
				t.Skipf("ip tuntap: %v: %s", err, out)
			}
			if err := d.dev.Close(); err != nil {
				t.Fatal(err)
			}
			nstest.Exec(t, "ip", "link", "set", d.name, "up")
			nstest.Exec(t, "ip", "route", "add", "10.99.0.0/24", "dev", d.name)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := machine(t)
			var recorded []State
			d, err := Create("roamt2", 1400)
			if err != nil {
				t.Fatal(err)
			}
			d.SetJournal(func(s State) error {
				recorded = append(recorded, s)
				return nil
			})
			if err := d.AddRoutes(routes, DefaultMark, DefaultTable); err != nil {
				t.Fatal(err)
			}
			if len(recorded) != 1 {
				t.Fatalf("journal called %d times, want once before the changes", len(recorded))
			}
			st := recorded[0]
			if len(st.Rules) != 4 || len(st.Routes) != 3 || st.Device != "roamt2" {
				t.Fatalf("recorded %+v, want the device, 4 rules and 3 routes", st)
			}
			if got := d.State(); len(got.Rules) != 4 || len(got.Routes) != 3 {
				t.Errorf("State() = %+v after the changes", got)
			}
			tt.crash(t, d)
			if machine(t) == before {
				t.Fatal("the crash left nothing behind: the test shows nothing")
			}
			if err := Undo(st); err != nil {
				t.Fatal(err)
			}
			if after := machine(t); after != before {
				t.Errorf("after Undo:\n%s\nwant as before:\n%s", after, before)
			}
			if err := Undo(st); err != nil {
				t.Errorf("second Undo: %v", err)
			}
		})
	}
}

// TestJournalRefusal: a change the journal could not record is not made.
func TestJournalRefusal(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	before := machine(t)
	d, err := Create("roamt3", 1400)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	full := errors.New("disk full")
	d.SetJournal(func(State) error { return full })
	if err := d.AddRoutes([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, DefaultMark, DefaultTable); !errors.Is(err, full) {
		t.Fatalf("AddRoutes with a failing journal: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("roamt3"); err == nil {
		t.Error("device left")
	}
	if after := machine(t); after != before {
		t.Errorf("a refused change was made:\n%s\nwant:\n%s", after, before)
	}
}
