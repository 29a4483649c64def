package netmon

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeSource is a kernel in miniature: it keeps links and addresses, answers
// dumps from them, and sends the matching netlink updates to the subscriber.
type fakeSource struct {
	mu         sync.Mutex
	links      map[int]netlink.LinkAttrs
	addrs      map[addrKey]netlink.Addr
	sub        *Updates
	subErr     error // returned by the next Subscribe calls while set
	subscribes int
	lists      int

	routeOpts *netlink.RouteGetOptions
	routes    []netlink.Route
	routeErr  error
}

func newFakeSource() *fakeSource {
	return &fakeSource{links: make(map[int]netlink.LinkAttrs), addrs: make(map[addrKey]netlink.Addr)}
}

func (f *fakeSource) Subscribe(done <-chan struct{}, u Updates, onErr func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subscribes++
	if f.subErr != nil {
		close(u.Addrs)
		close(u.Links)
		close(u.Routes)
		return f.subErr
	}
	f.sub = &u
	go func() {
		<-done
		f.mu.Lock()
		defer f.mu.Unlock()
		f.closeLocked(&u)
	}()
	return nil
}

func (f *fakeSource) closeLocked(u *Updates) {
	if f.sub != u {
		return // already closed by fail
	}
	close(u.Addrs)
	close(u.Links)
	close(u.Routes)
	f.sub = nil
}

// fail ends the subscription the way the library does after a receive
// error such as ENOBUFS: the channels close while done is still open.
func (f *fakeSource) fail() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sub != nil {
		f.closeLocked(f.sub)
	}
}

func (f *fakeSource) List() ([]netlink.Link, []netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	var links []netlink.Link
	for _, a := range f.links {
		links = append(links, &netlink.Device{LinkAttrs: a})
	}
	var addrs []netlink.Addr
	for _, a := range f.addrs {
		addrs = append(addrs, a)
	}
	return links, addrs, nil
}

func (f *fakeSource) RouteGet(dst net.IP, opts *netlink.RouteGetOptions) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := *opts
	f.routeOpts = &o
	return f.routes, f.routeErr
}

const upFlags = unix.IFF_UP | unix.IFF_LOWER_UP | unix.IFF_RUNNING

// setLink creates or changes a link; silent skips the notification, as if
// it had been lost.
func (f *fakeSource) setLink(index int, name string, flags uint32, oper netlink.LinkOperState, silent bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := netlink.LinkAttrs{Index: index, Name: name, RawFlags: flags, OperState: oper}
	f.links[index] = a
	if f.sub != nil && !silent {
		f.sub.Links <- netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: &netlink.Device{LinkAttrs: a}}
	}
}

func (f *fakeSource) delLink(index int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.links[index]
	delete(f.links, index)
	for k := range f.addrs {
		if k.ifindex == index {
			delete(f.addrs, k)
		}
	}
	if f.sub != nil {
		f.sub.Links <- netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_DELLINK}, Link: &netlink.Device{LinkAttrs: a}}
	}
}

func prefixNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (f *fakeSource) addAddr(index int, prefix string, flags, scope int, silent bool) {
	p := netip.MustParsePrefix(prefix)
	n := prefixNet(p)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[addrKey{index, p.Addr()}] = netlink.Addr{IPNet: &n, LinkIndex: index, Flags: flags, Scope: scope}
	if f.sub != nil && !silent {
		f.sub.Addrs <- netlink.AddrUpdate{LinkAddress: n, LinkIndex: index, Flags: flags, Scope: scope, NewAddr: true}
	}
}

func (f *fakeSource) delAddr(index int, prefix string) {
	p := netip.MustParsePrefix(prefix)
	n := prefixNet(p)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, addrKey{index, p.Addr()})
	if f.sub != nil {
		f.sub.Addrs <- netlink.AddrUpdate{LinkAddress: n, LinkIndex: index, NewAddr: false}
	}
}

func (f *fakeSource) route(u netlink.RouteUpdate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sub != nil {
		f.sub.Routes <- u
	}
}

func (f *fakeSource) counts() (subscribes, lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subscribes, f.lists
}

var errFakeSubscribe = errors.New("fake subscribe failure")

// fakeClock is a Clock that follows time.Now (inside a synctest bubble,
// fake too) and can be told that the system slept, the process stopped, or
// the wall clock was stepped.
type fakeClock struct {
	mu    sync.Mutex
	start time.Time
	// asleep is added to the boot clock alone; wallStep to the wall clock
	// alone. A stopped process needs no field: time simply passes without
	// the monitor running, which the test arranges by holding its ticker.
	asleep, wallStep time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{start: time.Now()} }

func (c *fakeClock) Now() ClockReading {
	c.mu.Lock()
	defer c.mu.Unlock()
	mono := time.Since(c.start)
	return ClockReading{Wall: c.start.Round(0).Add(mono + c.asleep + c.wallStep), Boot: mono + c.asleep, Mono: mono}
}

// sleep records a suspend of d that has just ended: boot and wall clocks
// moved on, the monotonic clock did not.
func (c *fakeClock) sleep(d time.Duration) {
	c.mu.Lock()
	c.asleep += d
	c.mu.Unlock()
}

// stepWall steps the wall clock alone, as NTP or `date -s` does.
func (c *fakeClock) stepWall(d time.Duration) {
	c.mu.Lock()
	c.wallStep += d
	c.mu.Unlock()
}
