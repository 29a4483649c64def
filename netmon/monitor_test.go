package netmon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestUsableLocalAddr(t *testing.T) {
	tests := []struct {
		addr  string
		flags int
		scope int
		want  bool
	}{
		{"192.0.2.10", 0, unix.RT_SCOPE_UNIVERSE, true},
		{"2001:db8::1", unix.IFA_F_PERMANENT, unix.RT_SCOPE_UNIVERSE, true},
		{"fd00::1", 0, unix.RT_SCOPE_UNIVERSE, true},
		{"10.0.0.1", unix.IFA_F_SECONDARY, unix.RT_SCOPE_UNIVERSE, true},
		{"::ffff:192.0.2.1", 0, unix.RT_SCOPE_UNIVERSE, true},
		{"127.0.0.1", 0, unix.RT_SCOPE_HOST, false},
		{"127.0.0.2", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"::1", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"169.254.1.1", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"fe80::1", 0, unix.RT_SCOPE_LINK, false},
		{"fe80::1", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"0.0.0.0", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"::", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"224.0.0.251", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"ff02::1", 0, unix.RT_SCOPE_UNIVERSE, false},
		{"192.0.2.10", 0, unix.RT_SCOPE_LINK, false},
		{"192.0.2.10", 0, unix.RT_SCOPE_HOST, false},
		{"192.0.2.10", 0, unix.RT_SCOPE_NOWHERE, false},
		{"2001:db8::1", unix.IFA_F_TENTATIVE, unix.RT_SCOPE_UNIVERSE, false},
		{"2001:db8::1", unix.IFA_F_TENTATIVE | unix.IFA_F_OPTIMISTIC, unix.RT_SCOPE_UNIVERSE, true},
		{"2001:db8::1", unix.IFA_F_DADFAILED | unix.IFA_F_TENTATIVE, unix.RT_SCOPE_UNIVERSE, false},
		{"2001:db8::1", unix.IFA_F_DEPRECATED, unix.RT_SCOPE_UNIVERSE, false},
		{"2001:db8::1", unix.IFA_F_TEMPORARY, unix.RT_SCOPE_UNIVERSE, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%#x/%d", tt.addr, tt.flags, tt.scope), func(t *testing.T) {
			ip := netip.MustParseAddr(tt.addr).Unmap()
			if got := usableLocalAddr(ip, tt.flags, tt.scope); got != tt.want {
				t.Errorf("usableLocalAddr(%v, %#x, %d) = %v, want %v", ip, tt.flags, tt.scope, got, tt.want)
			}
		})
	}
	if usableLocalAddr(netip.Addr{}, 0, 0) {
		t.Error("the zero Addr is usable")
	}
}

func TestLinkUsable(t *testing.T) {
	tests := []struct {
		name  string
		flags uint32
		oper  netlink.LinkOperState
		want  bool
	}{
		{"up", upFlags, netlink.OperUp, true},
		{"dummy reports unknown", upFlags, netlink.OperUnknown, true},
		{"admin down", unix.IFF_LOWER_UP, netlink.OperDown, false},
		{"no carrier", unix.IFF_UP, netlink.OperLowerLayerDown, false},
		{"no carrier though oper up", unix.IFF_UP, netlink.OperUp, false},
		{"dormant (authenticating)", upFlags, netlink.OperDormant, false},
		{"oper down", upFlags, netlink.OperDown, false},
		{"loopback", upFlags | unix.IFF_LOOPBACK, netlink.OperUnknown, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := linkUsable(linkRec{name: "x", flags: tt.flags, oper: tt.oper}); got != tt.want {
				t.Errorf("linkUsable = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIgnoreList(t *testing.T) {
	il := ignoreList{"roam*", "wg0"}
	for name, want := range map[string]bool{"roam0": true, "roam": true, "wg0": true, "wg1": false, "eth0": false, "xroam0": false} {
		if got := il.match(name); got != want {
			t.Errorf("match(%q) = %v, want %v", name, got, want)
		}
	}
}

func mkView(links map[int]string, addrs ...Address) view {
	v := view{links: links, addrs: make(map[addrKey]Address)}
	for _, a := range addrs {
		v.addrs[addrKey{a.IfIndex, a.Addr}] = a
	}
	return v
}

func addr(s string, idx int, name string) Address {
	p := netip.MustParsePrefix(s)
	return Address{Addr: p.Addr(), Bits: p.Bits(), IfIndex: idx, IfName: name}
}

// checkEvents fails the test unless the events are want (as kinds renders
// them) and each carries the time at.
func checkEvents(t *testing.T, evs []Event, want []string, at time.Time) {
	t.Helper()
	if got := kinds(evs); !reflect.DeepEqual(got, want) {
		t.Errorf("events\n %q\nwant\n %q", got, want)
	}
	for _, ev := range evs {
		if !ev.Time().Equal(at) {
			t.Errorf("%T at %v, want %v", ev, ev.Time(), at)
		}
	}
}

// kinds renders events compactly for comparison.
func kinds(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		switch e := ev.(type) {
		case AddressAdded:
			out = append(out, fmt.Sprintf("+%v@%s", e.Addr, e.IfName))
		case AddressRemoved:
			s := fmt.Sprintf("-%v@%s", e.Addr, e.IfName)
			if e.Current {
				s += "!"
			}
			out = append(out, s)
		case LinkUp:
			out = append(out, "up:"+e.IfName)
		case LinkDown:
			s := "down:" + e.IfName
			if e.Current {
				s += "!"
			}
			out = append(out, s)
		case RouteChanged:
			out = append(out, "route")
		case Wake:
			out = append(out, "clock")
		case Snapshot:
			var as []string
			for _, a := range e.Addrs {
				as = append(as, a.Addr.String())
			}
			out = append(out, "snap["+strings.Join(as, " ")+"]")
		default:
			out = append(out, fmt.Sprintf("%T", ev))
		}
	}
	return out
}

func TestDiff(t *testing.T) {
	a1 := addr("192.0.2.10/24", 2, "eth0")
	a2 := addr("198.51.100.7/24", 3, "wlan0")
	a3 := addr("2001:db8::7/64", 3, "wlan0")
	both := map[int]string{2: "eth0", 3: "wlan0"}
	tests := []struct {
		name     string
		old, now view
		cur      current
		routes   int
		want     []string
	}{
		{"no change", mkView(both, a1), mkView(both, a1), current{}, 0, nil},
		{"route only", mkView(both, a1), mkView(both, a1), current{}, 3, []string{"route", "snap[192.0.2.10]"}},
		{"add", mkView(both, a1), mkView(both, a1, a2), current{}, 0,
			[]string{"+198.51.100.7@wlan0", "snap[192.0.2.10 198.51.100.7]"}},
		{"link up with address", mkView(map[int]string{2: "eth0"}, a1), mkView(both, a1, a2), current{}, 1,
			[]string{"up:wlan0", "+198.51.100.7@wlan0", "route", "snap[192.0.2.10 198.51.100.7]"}},
		{"losses before gains", mkView(both, a1), mkView(both, a2), current{}, 0,
			[]string{"-192.0.2.10@eth0", "+198.51.100.7@wlan0", "snap[198.51.100.7]"}},
		{"current link down first", mkView(both, a1, a2, a3), mkView(map[int]string{2: "eth0"}, a1),
			current{addr: a2.Addr, ifindex: 3}, 0,
			[]string{"down:wlan0!", "-198.51.100.7@wlan0!", "-2001:db8::7@wlan0", "snap[192.0.2.10]"}},
		{"current address before other losses", mkView(both, a1, a2), mkView(both),
			current{addr: a2.Addr}, 0,
			[]string{"-198.51.100.7@wlan0!", "-192.0.2.10@eth0", "snap[]"}},
		{"same address elsewhere is not current", mkView(both, a1, addr("192.0.2.10/24", 3, "wlan0")), mkView(both, a1),
			current{addr: a1.Addr, ifindex: 2}, 0,
			[]string{"-192.0.2.10@wlan0", "snap[192.0.2.10]"}},
		{"rename is a snapshot", mkView(both, a1), mkView(map[int]string{2: "lan0", 3: "wlan0"}, addr("192.0.2.10/24", 2, "lan0")),
			current{}, 0, []string{"snap[192.0.2.10]"}},
		{"prefix length change is a snapshot", mkView(both, a1), mkView(both, addr("192.0.2.10/25", 2, "eth0")),
			current{}, 0, []string{"snap[192.0.2.10]"}},
	}
	at := time.Unix(1000, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkEvents(t, diff(tt.old, tt.now, tt.cur, tt.routes, at), tt.want, at)
		})
	}
}

func TestCurrentLost(t *testing.T) {
	a1 := addr("192.0.2.10/24", 2, "eth0")
	a2 := addr("198.51.100.7/24", 3, "wlan0")
	both := map[int]string{2: "eth0", 3: "wlan0"}
	tests := []struct {
		name     string
		cur      current
		old, now view
		want     bool
	}{
		{"nothing current", current{}, mkView(both, a1), mkView(both), false},
		{"current address removed", current{addr: a1.Addr, ifindex: 2}, mkView(both, a1, a2), mkView(both, a2), true},
		{"current address on any link", current{addr: a1.Addr}, mkView(both, a1), mkView(both), true},
		{"other address removed", current{addr: a1.Addr, ifindex: 2}, mkView(both, a1, a2), mkView(both, a1), false},
		{"current link down", current{ifindex: 3}, mkView(both), mkView(map[int]string{2: "eth0"}), true},
		{"other link down", current{addr: a2.Addr, ifindex: 3}, mkView(both, a1, a2), mkView(map[int]string{3: "wlan0"}, a2), false},
		{"already reported", current{addr: a1.Addr, ifindex: 2}, mkView(both), mkView(both), false},
		{"address on another link", current{addr: a1.Addr, ifindex: 3}, mkView(both, a1), mkView(both), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cur.lost(tt.old, tt.now); got != tt.want {
				t.Errorf("lost = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRouteRelevant(t *testing.T) {
	st := newNetState()
	st.links[2] = linkRec{name: "eth0", flags: upFlags}
	st.links[9] = linkRec{name: "roam0", flags: upFlags}
	ignore := ignoreList{"roam*"}
	tests := []struct {
		name string
		u    netlink.RouteUpdate
		want bool
	}{
		{"default via uplink", netlink.RouteUpdate{Route: netlink.Route{LinkIndex: 2, Table: unix.RT_TABLE_MAIN}}, true},
		{"via our tun", netlink.RouteUpdate{Route: netlink.Route{LinkIndex: 9, Table: unix.RT_TABLE_MAIN}}, false},
		{"policy table via our tun", netlink.RouteUpdate{Route: netlink.Route{LinkIndex: 9, Table: 51820}}, false},
		{"local table", netlink.RouteUpdate{Route: netlink.Route{LinkIndex: 2, Table: unix.RT_TABLE_LOCAL}}, false},
		{"cloned", netlink.RouteUpdate{Route: netlink.Route{LinkIndex: 2, Flags: unix.RTM_F_CLONED}}, false},
		{"unknown link", netlink.RouteUpdate{Route: netlink.Route{LinkIndex: 77, Table: unix.RT_TABLE_MAIN}}, true},
		{"unreachable", netlink.RouteUpdate{Route: netlink.Route{Type: unix.RTN_UNREACHABLE, Table: unix.RT_TABLE_MAIN}}, true},
		{"multipath partly ours", netlink.RouteUpdate{Route: netlink.Route{Table: unix.RT_TABLE_MAIN,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: 9}, {LinkIndex: 2}}}}, true},
		{"multipath all ours", netlink.RouteUpdate{Route: netlink.Route{Table: unix.RT_TABLE_MAIN,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: 9}, nil}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := st.routeRelevant(tt.u, ignore); got != tt.want {
				t.Errorf("routeRelevant = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNetStateDropsBadUpdates(t *testing.T) {
	st := newNetState()
	if st.applyAddr(netlink.AddrUpdate{LinkAddress: net.IPNet{IP: net.IP{1, 2, 3}}, LinkIndex: 2, NewAddr: true}) {
		t.Error("3-byte address accepted")
	}
	if st.applyAddr(netlink.AddrUpdate{LinkAddress: prefixNet(netip.MustParsePrefix("192.0.2.1/24")), LinkIndex: 0, NewAddr: true}) {
		t.Error("address without interface accepted")
	}
	if st.applyLink(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}}) {
		t.Error("link update without link accepted")
	}
	if st.applyLink(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWROUTE}, Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2}}}) {
		t.Error("link update of wrong type accepted")
	}
	if len(st.addrs) != 0 || len(st.links) != 0 {
		t.Errorf("state changed by bad updates: %+v", st)
	}
	// A deleted link takes its addresses with it even if their own
	// deletion has not arrived yet.
	st.applyLink(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0", RawFlags: upFlags}}})
	st.applyAddr(netlink.AddrUpdate{LinkAddress: prefixNet(netip.MustParsePrefix("192.0.2.1/24")), LinkIndex: 2, NewAddr: true})
	st.applyLink(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_DELLINK}, Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0"}}})
	if len(st.addrs) != 0 {
		t.Errorf("addresses survive their link: %v", st.addrs)
	}
}

func TestWakeDetector(t *testing.T) {
	const iv = 500 * time.Millisecond
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type reading struct {
		wall, boot, mono time.Duration // wall since base
	}
	// steady is the n-th regular look.
	steady := func(n int) reading { d := time.Duration(n) * iv; return reading{d, d, d} }
	tests := []struct {
		name     string
		readings []reading
		want     []Wake // At left out
	}{
		{"steady", []reading{steady(0), steady(1), steady(2)}, nil},
		{"late tick on a busy machine", []reading{steady(0), {5 * time.Second, 5 * time.Second, 5 * time.Second}}, nil},
		{"wall clock stepped ahead an hour", []reading{steady(0), steady(1), {time.Hour + 2*iv, 2 * iv, 2 * iv}, {time.Hour + 3*iv, 3 * iv, 3 * iv}}, nil},
		{"wall clock stepped back an hour", []reading{steady(0), {-time.Hour + iv, iv, iv}}, nil},
		{"suspended a minute", []reading{steady(0), steady(1), {61*time.Second + 2*iv, 61*time.Second + 2*iv, 2 * iv}, {61*time.Second + 3*iv, 61*time.Second + 3*iv, 3 * iv}},
			[]Wake{{Suspended: 61 * time.Second}}},
		{"suspended briefly", []reading{steady(0), {10 * time.Second, 10 * time.Second, iv}}, nil},
		{"stopped 40 s (SIGSTOP)", []reading{steady(0), {40 * time.Second, 40 * time.Second, 40 * time.Second}},
			[]Wake{{Stopped: 40*time.Second - iv}}},
		{"stopped, clocks read a moment apart", []reading{steady(0), {40 * time.Second, 40*time.Second + 3*time.Microsecond, 40 * time.Second}},
			[]Wake{{Stopped: 40*time.Second - iv + 3*time.Microsecond}}},
		{"stopped, then suspended", []reading{steady(0), {50 * time.Second, 50 * time.Second, 20 * time.Second}},
			[]Wake{{Suspended: 30 * time.Second, Stopped: 20*time.Second - iv}}},
		{"suspended with the wall clock stepped back", []reading{steady(0), {-time.Hour, time.Minute + iv, iv}},
			[]Wake{{Suspended: time.Minute}}},
		{"gap at the threshold", []reading{steady(0), {30*time.Second + iv, 30*time.Second + iv, iv}}, nil},
		{"gap just over the threshold", []reading{steady(0), {30*time.Second + iv + 1, 30*time.Second + iv + 1, iv}},
			[]Wake{{Suspended: 30*time.Second + 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := wakeDetector{interval: iv, threshold: DefaultWakeAfter}
			var got []Wake
			for _, r := range tt.readings {
				if w, ok := d.observe(ClockReading{Wall: base.Add(r.wall), Boot: r.boot, Mono: r.mono}); ok {
					if !w.At.Equal(base.Add(r.wall)) {
						t.Errorf("wake stamped %v, want the reading's wall time %v", w.At, base.Add(r.wall))
					}
					w.At = time.Time{}
					got = append(got, w)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("wakes = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestSystemClock: the real clocks are read and move forward.
func TestSystemClock(t *testing.T) {
	a := systemClock{}.Now()
	b := systemClock{}.Now()
	if a.Mono <= 0 || a.Boot <= 0 || b.Mono < a.Mono || b.Boot < a.Boot || a.Wall.IsZero() {
		t.Fatalf("readings %+v then %+v", a, b)
	}
}

// harness runs a Monitor over a fakeSource inside a synctest bubble.
type harness struct {
	t      *testing.T
	src    *fakeSource
	clock  *fakeClock
	m      *Monitor
	cancel context.CancelFunc
	done   chan error
}

func startHarness(t *testing.T, opts Options, setup func(f *fakeSource)) *harness {
	t.Helper()
	h := &harness{t: t, src: newFakeSource(), clock: newFakeClock(), done: make(chan error, 1)}
	if setup != nil {
		setup(h.src)
	}
	if opts.Ignore == nil {
		opts.Ignore = []string{"roam*"}
	}
	opts.Source = h.src
	opts.Clock = h.clock
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- m.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	for range h.m.Events() {
	}
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
}

// drain returns the events available once every goroutine in the bubble is
// blocked, without letting fake time advance.
func (h *harness) drain() []Event {
	synctest.Wait()
	var evs []Event
	for {
		select {
		case ev := <-h.m.Events():
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

func (h *harness) expect(what string, want ...string) {
	h.t.Helper()
	if got := kinds(h.drain()); !reflect.DeepEqual(got, want) {
		h.t.Errorf("%s: events\n %q\nwant\n %q", what, got, want)
	}
}

func twoUplinks(f *fakeSource) {
	f.setLink(1, "lo", upFlags|unix.IFF_LOOPBACK, netlink.OperUnknown, false)
	f.addAddr(1, "127.0.0.1/8", 0, unix.RT_SCOPE_HOST, false)
	f.setLink(2, "eth0", upFlags, netlink.OperUp, false)
	f.addAddr(2, "192.0.2.10/24", 0, unix.RT_SCOPE_UNIVERSE, false)
	f.addAddr(2, "fe80::2/64", unix.IFA_F_PERMANENT, unix.RT_SCOPE_LINK, false)
	f.setLink(3, "wlan0", upFlags, netlink.OperUp, false)
	f.addAddr(3, "198.51.100.7/24", 0, unix.RT_SCOPE_UNIVERSE, false)
	f.setLink(9, "roam0", upFlags, netlink.OperUnknown, false)
	f.addAddr(9, "10.99.200.2/32", 0, unix.RT_SCOPE_UNIVERSE, false)
}

func TestMonitorInitialSnapshotIgnoresInterfaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Options{Ignore: []string{"roam*"}}, twoUplinks)
		h.expect("initial", "snap[192.0.2.10 198.51.100.7]")
		if got := h.m.Addresses(); len(got) != 2 || got[0].IfName != "eth0" || got[1].IfName != "wlan0" {
			t.Errorf("Addresses() = %v", got)
		}
		// Nothing on the ignored or loopback interfaces, nor link-local or
		// tentative addresses, ever shows.
		h.src.addAddr(9, "10.99.200.3/32", 0, unix.RT_SCOPE_UNIVERSE, false)
		h.src.addAddr(1, "127.0.0.2/8", 0, unix.RT_SCOPE_HOST, false)
		h.src.addAddr(2, "fe80::99/64", 0, unix.RT_SCOPE_LINK, false)
		h.src.addAddr(2, "2001:db8::9/64", unix.IFA_F_TENTATIVE, unix.RT_SCOPE_UNIVERSE, false)
		h.src.route(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{LinkIndex: 9, Table: 51820}})
		h.src.setLink(9, "roam0", unix.IFF_UP, netlink.OperDown, false)
		time.Sleep(time.Second)
		h.expect("ignored changes")
		// DAD finishing makes the address usable.
		h.src.addAddr(2, "2001:db8::9/64", unix.IFA_F_PERMANENT, unix.RT_SCOPE_UNIVERSE, false)
		time.Sleep(time.Second)
		h.expect("dad done", "+2001:db8::9@eth0", "snap[192.0.2.10 2001:db8::9 198.51.100.7]")
	})
}

func TestMonitorDebounce(t *testing.T) {
	tests := []struct {
		name     string
		debounce time.Duration
		act      func(f *fakeSource)
		want     []string
	}{
		{"burst coalesced", 0, func(f *fakeSource) {
			f.addAddr(3, "2001:db8:1::7/64", 0, unix.RT_SCOPE_UNIVERSE, false)
			f.route(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{LinkIndex: 3, Table: unix.RT_TABLE_MAIN}})
			f.route(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{LinkIndex: 3, Table: unix.RT_TABLE_MAIN}})
			f.delAddr(2, "192.0.2.10/24")
		}, []string{"-192.0.2.10@eth0", "+2001:db8:1::7@wlan0", "route", "snap[198.51.100.7 2001:db8:1::7]"}},
		{"flap within window is silent", 0, func(f *fakeSource) {
			f.delAddr(3, "198.51.100.7/24")
			f.addAddr(3, "198.51.100.7/24", 0, unix.RT_SCOPE_UNIVERSE, false)
		}, nil},
		{"link down takes addresses", 20 * time.Millisecond, func(f *fakeSource) {
			f.setLink(3, "wlan0", unix.IFF_UP, netlink.OperLowerLayerDown, false)
		}, []string{"down:wlan0", "-198.51.100.7@wlan0", "snap[192.0.2.10]"}},
		{"new uplink", 0, func(f *fakeSource) {
			f.setLink(4, "wwan0", upFlags, netlink.OperUnknown, false)
			f.addAddr(4, "203.0.113.5/30", 0, unix.RT_SCOPE_UNIVERSE, false)
		}, []string{"up:wwan0", "+203.0.113.5@wwan0", "snap[192.0.2.10 198.51.100.7 203.0.113.5]"}},
		{"link deleted", 0, func(f *fakeSource) { f.delLink(3) },
			[]string{"down:wlan0", "-198.51.100.7@wlan0", "snap[192.0.2.10]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, Options{Debounce: tt.debounce}, twoUplinks)
				h.drain()
				window := tt.debounce
				if window == 0 {
					window = defaultDebounce
				}
				start := time.Now()
				tt.act(h.src)
				h.expect("before the window")
				time.Sleep(window - 1)
				h.expect("just before the window")
				time.Sleep(1)
				// After the window: the events carry the time of the
				// batch's first message.
				checkEvents(t, h.drain(), tt.want, start)
			})
		})
	}
}

func TestMonitorImmediateLoss(t *testing.T) {
	tests := []struct {
		name    string
		current current
		act     func(f *fakeSource)
		want    []string
	}{
		{"current address removed", current{addr: netip.MustParseAddr("198.51.100.7"), ifindex: 3},
			func(f *fakeSource) { f.delAddr(3, "198.51.100.7/24") },
			[]string{"-198.51.100.7@wlan0!", "snap[192.0.2.10]"}},
		{"current uplink loses carrier", current{addr: netip.MustParseAddr("198.51.100.7"), ifindex: 3},
			func(f *fakeSource) { f.setLink(3, "wlan0", unix.IFF_UP, netlink.OperLowerLayerDown, false) },
			[]string{"down:wlan0!", "-198.51.100.7@wlan0!", "snap[192.0.2.10]"}},
		{"current uplink set down", current{ifindex: 3},
			func(f *fakeSource) { f.setLink(3, "wlan0", 0, netlink.OperDown, false) },
			[]string{"down:wlan0!", "-198.51.100.7@wlan0", "snap[192.0.2.10]"}},
		{"current address deprecated", current{addr: netip.MustParseAddr("198.51.100.7")},
			func(f *fakeSource) {
				f.addAddr(3, "198.51.100.7/24", unix.IFA_F_DEPRECATED, unix.RT_SCOPE_UNIVERSE, false)
			},
			[]string{"-198.51.100.7@wlan0!", "snap[192.0.2.10]"}},
		{"pending changes ride along", current{addr: netip.MustParseAddr("198.51.100.7"), ifindex: 3},
			func(f *fakeSource) {
				f.addAddr(2, "192.0.2.11/24", 0, unix.RT_SCOPE_UNIVERSE, false)
				f.delAddr(3, "198.51.100.7/24")
			},
			[]string{"-198.51.100.7@wlan0!", "+192.0.2.11@eth0", "snap[192.0.2.10 192.0.2.11]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, Options{Debounce: time.Second}, twoUplinks)
				h.drain()
				h.m.SetCurrent(tt.current.addr, tt.current.ifindex)
				start := time.Now()
				tt.act(h.src)
				// No fake time passes: the loss cannot have waited for the
				// debounce timer.
				checkEvents(t, h.drain(), tt.want, start)
				if elapsed := time.Since(start); elapsed != 0 {
					t.Errorf("%v of fake time passed", elapsed)
				}
				// Nothing left for the debounce timer to report.
				time.Sleep(2 * time.Second)
				h.expect("after the window")
			})
		})
	}
}

func TestMonitorResubscribes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var errs []error
		h := startHarness(t, Options{OnError: func(err error) { errs = append(errs, err) }}, twoUplinks)
		h.drain()
		// Overrun: the channels close; meanwhile the kernel changes and the
		// messages are lost.
		h.src.mu.Lock()
		h.src.subErr = errFakeSubscribe
		h.src.mu.Unlock()
		h.src.fail()
		h.src.delAddr(2, "192.0.2.10/24") // not delivered: no subscriber
		h.src.setLink(4, "wwan0", upFlags, netlink.OperUp, true)
		h.src.addAddr(4, "203.0.113.5/30", 0, unix.RT_SCOPE_UNIVERSE, true)
		time.Sleep(time.Second)
		h.expect("while subscriptions fail")
		subs, _ := h.src.counts()
		if subs < 3 {
			t.Errorf("%d subscribe attempts in a second of failures, want several", subs)
		}
		h.src.mu.Lock()
		h.src.subErr = nil
		h.src.mu.Unlock()
		time.Sleep(maxResubscribeBackoff)
		h.expect("after resubscribing",
			"-192.0.2.10@eth0", "up:wwan0", "+203.0.113.5@wwan0", "route", "snap[198.51.100.7 203.0.113.5]")
		if len(errs) == 0 {
			t.Error("OnError never heard of the lost subscription")
		}
		// The new subscription delivers again.
		h.src.delAddr(4, "203.0.113.5/30")
		time.Sleep(time.Second)
		h.expect("on the new subscription", "-203.0.113.5@wwan0", "snap[198.51.100.7]")
	})
}

func TestMonitorWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Options{ClockInterval: time.Second}, twoUplinks)
		h.drain()
		time.Sleep(10 * time.Second)
		h.expect("steady clocks")
		// An NTP step is no wake-up: nothing to report, nothing to dump.
		_, listsBefore := h.src.counts()
		h.clock.stepWall(2 * time.Hour)
		time.Sleep(3 * time.Second)
		h.expect("after a wall-clock step")
		if _, lists := h.src.counts(); lists != listsBefore {
			t.Errorf("%d dumps after a wall-clock step, want none", lists-listsBefore)
		}
		h.clock.sleep(45 * time.Second)
		time.Sleep(time.Second)
		evs := h.drain()
		if len(evs) == 0 {
			t.Fatal("no event after a 45 s suspend")
		}
		w, ok := evs[0].(Wake)
		if !ok || w.Suspended != 45*time.Second || w.Stopped != 0 {
			t.Errorf("first event %#v, want a Wake after 45 s suspended", evs[0])
		}
		// The resume triggers a fresh dump, which finds nothing new but routes.
		if _, lists := h.src.counts(); lists != listsBefore+1 {
			t.Errorf("%d dumps after the wake, want 1", lists-listsBefore)
		}
		time.Sleep(10 * time.Second)
		h.expect("steady again")
	})
}

func TestMonitorRunTwiceAndStartFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Options{}, twoUplinks)
		h.drain()
		if err := h.m.Run(context.Background()); err == nil {
			t.Error("second Run succeeded")
		}
	})
	f := newFakeSource()
	f.subErr = errFakeSubscribe
	m, err := New(Options{Source: f})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "subscribe") {
		t.Errorf("Run with a failing source = %v", err)
	}
	if _, open := <-m.Events(); open {
		t.Error("Events not closed after a failed Run")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{Ignore: []string{"[bad"}}); err == nil {
		t.Error("bad pattern accepted")
	}
	if _, err := New(Options{Debounce: -time.Second}); err == nil {
		t.Error("negative debounce accepted")
	}
}

func TestRouteVia(t *testing.T) {
	tests := []struct {
		name    string
		routes  []netlink.Route
		err     error
		wantSrc string
		wantGw  string
		wantErr bool
	}{
		{"via gateway", []netlink.Route{{LinkIndex: 3, Src: net.ParseIP("198.51.100.7"), Gw: net.ParseIP("198.51.100.1")}},
			nil, "198.51.100.7", "198.51.100.1", false},
		{"on link", []netlink.Route{{LinkIndex: 3, Src: net.ParseIP("198.51.100.7")}}, nil, "198.51.100.7", "", false},
		{"v6", []netlink.Route{{LinkIndex: 3, Src: net.ParseIP("2001:db8::7"), Gw: net.ParseIP("fe80::1")}},
			nil, "2001:db8::7", "fe80::1", false},
		{"other interface", []netlink.Route{{LinkIndex: 2, Src: net.ParseIP("192.0.2.10")}}, nil, "", "", true},
		{"no source", []netlink.Route{{LinkIndex: 3}}, nil, "", "", true},
		{"no carrier", []netlink.Route{{LinkIndex: 3, Src: net.ParseIP("198.51.100.7"), Flags: unix.RTNH_F_LINKDOWN}}, nil, "", "", true},
		{"unreachable", nil, unix.ENETUNREACH, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSource()
			f.routes, f.routeErr = tt.routes, tt.err
			m, err := New(Options{Source: f})
			if err != nil {
				t.Fatal(err)
			}
			src, gw, err := m.RouteVia(netip.MustParseAddr("::ffff:203.0.113.1"), 3, 0x51)
			if (err != nil) != tt.wantErr {
				t.Fatalf("RouteVia error = %v, wantErr %v", err, tt.wantErr)
			}
			if f.routeOpts == nil || f.routeOpts.OifIndex != 3 || f.routeOpts.Mark != 0x51 {
				t.Errorf("route lookup options %+v", f.routeOpts)
			}
			if tt.wantErr {
				return
			}
			if src.String() != tt.wantSrc {
				t.Errorf("src = %v, want %v", src, tt.wantSrc)
			}
			if (tt.wantGw == "" && gw.IsValid()) || (tt.wantGw != "" && gw.String() != tt.wantGw) {
				t.Errorf("gw = %v, want %q", gw, tt.wantGw)
			}
		})
	}
	m, _ := New(Options{Source: newFakeSource()})
	if _, _, err := m.RouteVia(netip.Addr{}, 3, 0); err == nil {
		t.Error("RouteVia accepted an invalid destination")
	}
}
