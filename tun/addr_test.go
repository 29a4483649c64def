package tun

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/internal/nstest"
)

// TestRemoveAddress: a reconnect that gets another inner address swaps it on
// the device; removing an address that is gone already is harmless.
func TestRemoveAddress(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	d, err := Create("roamt1", 1400)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	old, next := netip.MustParsePrefix("10.99.200.1/32"), netip.MustParsePrefix("10.99.200.2/32")
	if err := d.AddAddress(old); err != nil {
		t.Fatal(err)
	}
	if err := d.AddAddress(next); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveAddress(old); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveAddress(old); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	out := nstest.Exec(t, "ip", "-o", "addr", "show", "dev", "roamt1")
	if strings.Contains(out, "10.99.200.1/") || !strings.Contains(out, "10.99.200.2/") {
		t.Fatalf("addresses after the swap: %s", out)
	}
	if len(d.addrs) != 1 {
		t.Fatalf("device remembers %d addresses, want 1", len(d.addrs))
	}
}
