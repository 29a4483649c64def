package netmon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var monNetnsSeq atomic.Int32

// monNetns is a throwaway network namespace for the root tests, with a
// netlink handle to configure it from any thread.
type monNetns struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
}

func newMonNetns(t *testing.T) *monNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netmon root test: needs root to create a network namespace")
	}
	name := fmt.Sprintf("rm%dnm%d", os.Getpid(), monNetnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("netmon root test: cannot create netns: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	return &monNetns{name: name, ns: ns, h: h}
}

func (n *monNetns) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

// veth creates a pair with both ends in the namespace, up; taking the peer
// down takes the carrier from name.
func (n *monNetns) veth(t *testing.T, name string) netlink.Link {
	t.Helper()
	if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	n.setUp(t, name+"p", true)
	n.setUp(t, name, true)
	return n.link(t, name)
}

func (n *monNetns) setUp(t *testing.T, name string, up bool) {
	t.Helper()
	l := n.link(t, name)
	f := n.h.LinkSetDown
	if up {
		f = n.h.LinkSetUp
	}
	if err := f(l); err != nil {
		t.Fatalf("set %s up=%v: %v", name, up, err)
	}
}

func (n *monNetns) addAddr(t *testing.T, link netlink.Link, prefix string, flags int) {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	ipn := prefixNet(p)
	if err := n.h.AddrAdd(link, &netlink.Addr{IPNet: &ipn, Flags: flags}); err != nil {
		t.Fatalf("add %s to %s: %v", prefix, link.Attrs().Name, err)
	}
}

func (n *monNetns) delAddr(t *testing.T, link netlink.Link, prefix string) {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	ipn := prefixNet(p)
	if err := n.h.AddrDel(link, &netlink.Addr{IPNet: &ipn}); err != nil {
		t.Fatalf("delete %s from %s: %v", prefix, link.Attrs().Name, err)
	}
}

// monRun starts a Monitor in the namespace and returns its event stream,
// checked as it goes: nothing from an ignored interface, loopback or a
// link-local address may ever be reported.
func monRun(t *testing.T, n *monNetns, opts Options) (*Monitor, <-chan Event) {
	t.Helper()
	opts.Source = &NetlinkSource{Namespace: &n.ns}
	opts.Ignore = append(opts.Ignore, "roam*")
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	checked := make(chan Event, 256)
	go func() {
		defer close(checked)
		for ev := range m.Events() {
			checked <- ev
		}
	}()
	t.Cleanup(func() {
		cancel()
		for range checked {
		}
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	out := make(chan Event, 256)
	go func() {
		defer close(out)
		for ev := range checked {
			for _, a := range eventAddrs(ev) {
				if a.IfName == "lo" || a.IfName == "roam0" || a.Addr.IsLinkLocalUnicast() || a.Addr.IsLoopback() {
					t.Errorf("ignored address reported: %#v", ev)
				}
			}
			out <- ev
		}
	}()
	return m, out
}

func eventAddrs(ev Event) []Address {
	switch e := ev.(type) {
	case AddressAdded:
		return []Address{e.Address}
	case AddressRemoved:
		return []Address{e.Address}
	case Snapshot:
		return e.Addrs
	}
	return nil
}

// nextBatch returns the events up to and including the next Snapshot. The
// timeout only guards against a hang: it is far below the debounce windows
// that the immediate-loss tests rely on never having elapsed.
func nextBatch(t *testing.T, evs <-chan Event) []Event {
	t.Helper()
	var batch []Event
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatalf("event stream ended after %q", kinds(batch))
			}
			batch = append(batch, ev)
			if _, ok := ev.(Snapshot); ok {
				return batch
			}
		case <-timeout:
			t.Fatalf("no Snapshot within 10 s; got %q", kinds(batch))
		}
	}
}

// batchUntil returns batches until one satisfies pred, ignoring those that
// only carry routes and kernel housekeeping; pred sees each batch.
func batchUntil(t *testing.T, evs <-chan Event, pred func([]Event) bool) []Event {
	t.Helper()
	for range 20 {
		b := nextBatch(t, evs)
		if pred(b) {
			return b
		}
	}
	t.Fatal("no matching batch in 20")
	return nil
}

func has(b []Event, want string) bool {
	for _, k := range kinds(b) {
		if k == want {
			return true
		}
	}
	return false
}

func TestRootMonitorAddresses(t *testing.T) {
	n := newMonNetns(t)
	n.setUp(t, "lo", true)
	up0 := n.veth(t, "up0")
	up1 := n.veth(t, "up1")
	// Stands in for our TUN device: up, with carrier, so only the ignore
	// list keeps it out (dummy devices need a module not always present).
	tun := n.veth(t, "roam0")
	n.addAddr(t, up0, "192.0.2.10/24", 0)
	n.addAddr(t, up0, "2001:db8::10/64", unix.IFA_F_NODAD)
	n.addAddr(t, tun, "10.99.200.2/32", 0)

	m, evs := monRun(t, n, Options{Debounce: 500 * time.Millisecond})
	first := nextBatch(t, evs)
	if got := kinds(first); len(got) != 1 || got[0] != "snap[192.0.2.10 2001:db8::10]" {
		t.Fatalf("initial events %q", got)
	}
	// A one-off dump, without Run, reports the same usable addresses.
	if usable, err := m.Usable(); err != nil {
		t.Fatal(err)
	} else if snap := first[0].(Snapshot); !reflect.DeepEqual(usable, snap.Addrs) {
		t.Fatalf("Usable() = %+v, first snapshot %+v", usable, snap.Addrs)
	}

	// A burst inside the debounce window comes as one batch.
	n.addAddr(t, up1, "198.51.100.10/24", 0)
	n.addAddr(t, up1, "198.51.100.11/24", 0)
	n.addAddr(t, tun, "10.99.200.3/32", 0)
	b := batchUntil(t, evs, func(b []Event) bool { return has(b, "+198.51.100.10@up1") })
	if !has(b, "+198.51.100.11@up1") {
		t.Errorf("burst split over batches: %q", kinds(b))
	}

	// A tentative address is withheld until duplicate address detection
	// has finished.
	n.addAddr(t, up1, "2001:db8:1::10/64", 0)
	if flags := addrFlags(t, n, up1, "2001:db8:1::10"); flags&unix.IFA_F_TENTATIVE == 0 {
		t.Logf("DAD already finished (flags %#x); tentative check not exercised", flags)
	}
	b = batchUntil(t, evs, func(b []Event) bool { return has(b, "+2001:db8:1::10@up1") })
	if flags := addrFlags(t, n, up1, "2001:db8:1::10"); flags&unix.IFA_F_TENTATIVE != 0 {
		t.Errorf("address reported while still tentative (flags %#x): %q", flags, kinds(b))
	}

	// Removing a non-current address is reported after the window; the
	// current one at once, together with what was pending.
	m.SetCurrent(netip.MustParseAddr("192.0.2.10"), up0.Attrs().Index)
	time.Sleep(100 * time.Millisecond) // let stray route/DAD batches settle
	drainBatches(evs)
	m2, evs2 := monRun(t, n, Options{Debounce: time.Minute})
	nextBatch(t, evs2)
	m2.SetCurrent(netip.MustParseAddr("192.0.2.10"), up0.Attrs().Index)
	n.delAddr(t, up1, "198.51.100.11/24") // pending in m2's minute-long window
	n.delAddr(t, up0, "192.0.2.10/24")    // the loss that flushes it
	b = nextBatch(t, evs2)
	got := kinds(b)
	if len(got) < 2 || got[0] != "-192.0.2.10@up0!" {
		t.Fatalf("immediate loss batch %q, want the current address's removal first", got)
	}
	// The pending removal rides along unless the kernel's messages for it
	// arrived after those of the loss (separate sockets are not ordered);
	// either way it was not held back for a minute.
	if !has(b, "-198.51.100.11@up1") {
		b2 := nextBatch(t, evs2)
		if !has(b2, "-198.51.100.11@up1") {
			t.Errorf("pending removal lost: %q then %q", got, kinds(b2))
		}
	}

	// The same removal under the short window also arrives, flagged Current.
	b = batchUntil(t, evs, func(b []Event) bool { return has(b, "-192.0.2.10@up0!") })
	if !has(b, "-198.51.100.11@up1") {
		t.Logf("short-window monitor split the removals: %q", kinds(b))
	}
	for _, a := range m.Addresses() {
		if a.Addr == netip.MustParseAddr("192.0.2.10") {
			t.Errorf("Addresses() still lists the removed current address")
		}
	}
}

func addrFlags(t *testing.T, n *monNetns, l netlink.Link, ip string) int {
	t.Helper()
	as, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.IP.Equal(net.ParseIP(ip)) {
			return a.Flags
		}
	}
	t.Fatalf("%s not on %s", ip, l.Attrs().Name)
	return 0
}

func drainBatches(evs <-chan Event) {
	for {
		select {
		case <-evs:
		default:
			return
		}
	}
}

func TestRootMonitorLinkDownAndRoutes(t *testing.T) {
	n := newMonNetns(t)
	n.setUp(t, "lo", true)
	up0 := n.veth(t, "up0")
	up1 := n.veth(t, "up1")
	n.addAddr(t, up0, "192.0.2.10/24", 0)
	n.addAddr(t, up1, "198.51.100.10/24", 0)
	for _, r := range []struct {
		link   netlink.Link
		gw     string
		metric int
	}{{up0, "192.0.2.1", 100}, {up1, "198.51.100.1", 200}} {
		err := n.h.RouteAdd(&netlink.Route{LinkIndex: r.link.Attrs().Index, Gw: net.ParseIP(r.gw), Priority: r.metric})
		if err != nil {
			t.Fatalf("default route via %s: %v", r.gw, err)
		}
	}

	m, evs := monRun(t, n, Options{Debounce: time.Minute})
	nextBatch(t, evs)

	// Each uplink has its own way out towards the same gateway.
	dst := netip.MustParseAddr("203.0.113.1")
	for _, c := range []struct {
		link    netlink.Link
		src, gw string
	}{{up0, "192.0.2.10", "192.0.2.1"}, {up1, "198.51.100.10", "198.51.100.1"}} {
		src, gw, err := m.RouteVia(dst, c.link.Attrs().Index, 0)
		if err != nil {
			t.Fatalf("RouteVia %s: %v", c.link.Attrs().Name, err)
		}
		if src.String() != c.src || gw.String() != c.gw {
			t.Errorf("RouteVia %s = %v via %v, want %s via %s", c.link.Attrs().Name, src, gw, c.src, c.gw)
		}
	}

	// The current uplink losing carrier is reported at once (the window is
	// a minute), the link before its address.
	m.SetCurrent(netip.MustParseAddr("192.0.2.10"), up0.Attrs().Index)
	n.setUp(t, "up0p", false)
	b := batchUntil(t, evs, func(b []Event) bool { return has(b, "down:up0!") })
	if got := kinds(b); got[0] != "down:up0!" || !has(b, "-192.0.2.10@up0!") {
		t.Errorf("loss batch %q", got)
	}
	if src, gw, err := m.RouteVia(dst, up0.Attrs().Index, 0); err == nil {
		t.Errorf("RouteVia up0 without carrier = %v via %v, want an error", src, gw)
	}

	// Carrier back: with the current uplink restored, nothing is lost, so
	// the gain waits for the window; a second monitor with a short window
	// reports it.
	_, evs2 := monRun(t, n, Options{Debounce: 100 * time.Millisecond})
	first := nextBatch(t, evs2)
	if has(first, "snap[192.0.2.10 198.51.100.10]") {
		t.Errorf("up0's address usable without carrier: %q", kinds(first))
	}
	n.setUp(t, "up0p", true)
	b = batchUntil(t, evs2, func(b []Event) bool { return has(b, "up:up0") })
	if !has(b, "+192.0.2.10@up0") {
		t.Errorf("link up batch without the address kept on the link: %q", kinds(b))
	}

	// Route changes through an uplink are reported; the monitor with the
	// short window sees them.
	err := n.h.RouteAdd(&netlink.Route{LinkIndex: up1.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(203, 0, 113, 0), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("198.51.100.1")})
	if err != nil {
		t.Fatal(err)
	}
	batchUntil(t, evs2, func(b []Event) bool { return has(b, "route") })

	// Deleting the current link: the first monitor hears of it at once too.
	m.SetCurrent(netip.MustParseAddr("198.51.100.10"), up1.Attrs().Index)
	if err := n.h.LinkDel(up1); err != nil {
		t.Fatal(err)
	}
	// The kernel reports the address and the link on separate sockets, so
	// either may come first; each is a loss of the current path, reported
	// at once and ahead of anything else in its batch.
	var sawLink, sawAddr bool
	for !sawLink || !sawAddr {
		b = nextBatch(t, evs)
		got := kinds(b)
		if has(b, "down:up1!") || has(b, "-198.51.100.10@up1!") {
			if got[0] != "down:up1!" && got[0] != "-198.51.100.10@up1!" {
				t.Errorf("deletion batch %q does not start with the loss", got)
			}
		}
		sawLink = sawLink || has(b, "down:up1!")
		sawAddr = sawAddr || has(b, "-198.51.100.10@up1!")
	}
}
