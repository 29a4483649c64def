package netmon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/netpath"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Address is a usable local address on one interface.
type Address struct {
	Addr    netip.Addr
	Bits    int // prefix length of the address's subnet
	IfIndex int
	IfName  string
}

// Event is what a Monitor reports. It is one of AddressAdded,
// AddressRemoved, LinkUp, LinkDown, RouteChanged, Wake and Snapshot.
type Event interface {
	// Time is when the monitor learnt of the change: the arrival of the
	// first netlink message of the batch, or the clock check that saw a wake-up.
	Time() time.Time
}

// AddressAdded: an address became usable (added, its link came up, or its
// duplicate address detection finished).
type AddressAdded struct {
	Address
	At time.Time
}

// AddressRemoved: an address stopped being usable (removed, deprecated, or
// its link went down). Current is set when it is the caller's current
// address (SetCurrent); such a loss is reported without waiting for the
// debounce window.
type AddressRemoved struct {
	Address
	Current bool
	At      time.Time
}

// LinkUp: an interface became usable (up, with carrier).
type LinkUp struct {
	IfIndex int
	IfName  string
	At      time.Time
}

// LinkDown: an interface stopped being usable (down, lost carrier, or
// deleted). Current is set for the caller's current uplink, reported at once.
type LinkDown struct {
	IfIndex int
	IfName  string
	Current bool
	At      time.Time
}

// RouteChanged: routes outside our own interfaces changed; Updates is how
// many netlink route messages were coalesced into this event.
type RouteChanged struct {
	Updates int
	At      time.Time
}

// Wake: the monitor did not run for longer than Options.WakeAfter between
// two clock checks: the system was suspended (CLOCK_BOOTTIME advanced while
// CLOCK_MONOTONIC stood still) or the process was stopped (both advanced,
// far beyond the check interval). Either way the NAT mappings of our paths
// may be gone and the path must be tested. A stepped wall clock is no Wake.
type Wake struct {
	// Suspended is the time the system slept; Stopped the time the process
	// did not run while the system did.
	Suspended, Stopped time.Duration
	At                 time.Time
}

// Gap is how long the monitor was away: suspended plus stopped.
func (w Wake) Gap() time.Duration { return w.Suspended + w.Stopped }

// Snapshot is the full set of usable addresses, sorted by interface index
// and address. One ends every batch of changes; the first event of a
// monitor is a Snapshot of the initial state.
type Snapshot struct {
	Addrs []Address
	At    time.Time
}

func (e AddressAdded) Time() time.Time   { return e.At }
func (e AddressRemoved) Time() time.Time { return e.At }
func (e LinkUp) Time() time.Time         { return e.At }
func (e LinkDown) Time() time.Time       { return e.At }
func (e RouteChanged) Time() time.Time   { return e.At }
func (e Wake) Time() time.Time           { return e.At }
func (e Snapshot) Time() time.Time       { return e.At }

// Source is where a Monitor's netlink messages come from. The default reads
// rtnetlink; tests feed synthetic updates.
type Source interface {
	// Subscribe starts delivering address, link and route changes on the
	// channels in u. Each channel must be closed once done is closed or the
	// subscription fails, whether or not Subscribe returns an error; the
	// monitor drains them until then.
	Subscribe(done <-chan struct{}, u Updates, onErr func(error)) error
	// List dumps every link and address; it is called after Subscribe so
	// that no change falls between the dump and the subscription.
	List() ([]netlink.Link, []netlink.Addr, error)
	// RouteGet is `ip route get`.
	RouteGet(dst net.IP, opts *netlink.RouteGetOptions) ([]netlink.Route, error)
}

// Updates are the channels a Source delivers on.
type Updates struct {
	Addrs  chan<- netlink.AddrUpdate
	Links  chan<- netlink.LinkUpdate
	Routes chan<- netlink.RouteUpdate
}

// Clock reads the system's clocks; tests inject their own.
type Clock interface {
	Now() ClockReading
}

// Options configure a Monitor. The zero value watches every interface in
// the process's network namespace with the default timings.
type Options struct {
	// Ignore lists interface names (path.Match patterns) that never count
	// as uplinks: our own TUN device above all, whose addresses and routes
	// must not look like a new path. Loopback interfaces are always ignored.
	Ignore []string
	// Debounce is how long a burst of changes is collected before it is
	// reported (default 50 ms). The loss of the current address or uplink
	// is reported at once regardless.
	Debounce time.Duration
	// ClockInterval is how often the clocks are looked at (default
	// 500 ms: a wake-up is noticed within that). WakeAfter is the gap that
	// counts as a Wake (default DefaultWakeAfter).
	ClockInterval, WakeAfter time.Duration
	// Source defaults to rtnetlink in the namespace of the process.
	Source Source
	// Clock defaults to the system clocks.
	Clock Clock
	// OnError, if set, hears about netlink errors the monitor recovered from
	// (resubscriptions, unparsable messages).
	OnError func(error)
}

// DefaultWakeAfter is how long the monitor may go without running before
// it reports a Wake: the shortest UDP mapping lifetime common among NATs
// (Linux conntrack's 30 s for a flow not yet seen both ways; many home
// routers use 30 to 60 s). Our NAT keepalives (every 20 s) keep a mapping
// alive only while we run; a gap this long may have let it expire, so the
// path is retested before traffic resumes. Shorter gaps (a busy machine, a
// brief suspend) leave the mappings standing, and the dead-path detection
// covers one lost all the same.
const DefaultWakeAfter = 30 * time.Second

const (
	defaultDebounce       = 50 * time.Millisecond
	defaultClockInterval  = 500 * time.Millisecond
	maxResubscribeBackoff = 5 * time.Second
	eventBuffer           = 64
	updateBuffer          = 64
	dumpAttempts          = 5
)

// Monitor watches the host's interfaces and reports usable local addresses.
// Create it with New, start it with Run, and read Events until Run returns.
type Monitor struct {
	opts   Options
	ignore ignoreList
	src    Source
	clock  Clock
	events chan Event

	running atomic.Bool

	mu   sync.Mutex
	cur  current
	last []Address // the addresses of the last Snapshot sent

	// Owned by the Run goroutine.
	st      *netState
	emitted view
	routes  int
	batchAt time.Time
}

// New validates opts and returns a Monitor that does nothing until Run.
func New(opts Options) (*Monitor, error) {
	for _, p := range opts.Ignore {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("netmon: ignore pattern %q: %w", p, err)
		}
	}
	if opts.Debounce < 0 || opts.ClockInterval < 0 || opts.WakeAfter < 0 {
		return nil, errors.New("netmon: negative duration in options")
	}
	if opts.Debounce == 0 {
		opts.Debounce = defaultDebounce
	}
	if opts.ClockInterval == 0 {
		opts.ClockInterval = defaultClockInterval
	}
	if opts.WakeAfter == 0 {
		opts.WakeAfter = DefaultWakeAfter
	}
	m := &Monitor{
		opts:   opts,
		ignore: ignoreList(opts.Ignore),
		src:    opts.Source,
		clock:  opts.Clock,
		events: make(chan Event, eventBuffer),
		st:     newNetState(),
	}
	if m.src == nil {
		m.src = &NetlinkSource{}
	}
	if m.clock == nil {
		m.clock = systemClock{}
	}
	return m, nil
}

// Events delivers the monitor's events; it is closed when Run returns. The
// monitor waits for the reader, so a reader that stalls delays events (and
// may make the kernel drop netlink messages, which the monitor recovers from
// with a fresh dump).
func (m *Monitor) Events() <-chan Event { return m.events }

// SetCurrent names the address and uplink the tunnel uses now. Their loss
// is reported at once instead of after the debounce window. An invalid addr
// clears the current address; ifindex 0 means no current uplink (the
// address then matches on any interface).
func (m *Monitor) SetCurrent(addr netip.Addr, ifindex int) {
	m.mu.Lock()
	m.cur = current{addr: addr.Unmap(), ifindex: ifindex}
	m.mu.Unlock()
}

// FollowPath watches the address and uplink of the confirmed path as its
// owner changes it (netpath.Current.Follow): their loss is the one
// reported at once.
func (m *Monitor) FollowPath(s netpath.State) {
	m.SetCurrent(s.Path.Local.Addr(), s.Path.IfIndex)
}

func (m *Monitor) current() current {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// Addresses returns the usable addresses as of the last Snapshot event.
func (m *Monitor) Addresses() []Address {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Address(nil), m.last...)
}

// Usable dumps the links and addresses once and returns the usable
// addresses, as Run's first Snapshot would report them. It needs no Run:
// an IKE_AUTH announces our addresses before the watching starts.
func (m *Monitor) Usable() ([]Address, error) {
	links, addrs, err := m.list()
	if err != nil {
		return nil, err
	}
	st := newNetState()
	st.reset(links, addrs)
	return st.view(m.ignore).list(), nil
}

// RouteVia asks the kernel how a packet to dst would leave through the
// interface ifindex when its socket carries mark: the source address to use
// and the next hop (invalid when dst is on-link). Path tests use it to send
// one probe through each uplink.
func (m *Monitor) RouteVia(dst netip.Addr, ifindex int, mark uint32) (src, gw netip.Addr, err error) {
	dst = dst.Unmap()
	if !dst.IsValid() || ifindex <= 0 {
		return src, gw, fmt.Errorf("netmon: route to %v via interface %d: invalid argument", dst, ifindex)
	}
	rs, err := m.src.RouteGet(net.IP(dst.AsSlice()), &netlink.RouteGetOptions{OifIndex: ifindex, Mark: mark})
	if err != nil {
		return src, gw, fmt.Errorf("netmon: route to %v via interface %d: %w", dst, ifindex, err)
	}
	for _, r := range rs {
		if r.LinkIndex != 0 && r.LinkIndex != ifindex {
			continue
		}
		s, ok := netip.AddrFromSlice(r.Src)
		if !ok || s.IsUnspecified() {
			continue
		}
		src = s.Unmap()
		if g, ok := netip.AddrFromSlice(r.Gw); ok && !g.IsUnspecified() {
			gw = g.Unmap()
		}
		if err := m.checkLinkDown(dst, ifindex, mark); err != nil {
			return netip.Addr{}, netip.Addr{}, err
		}
		return src, gw, nil
	}
	return src, gw, fmt.Errorf("netmon: route to %v via interface %d: no route with a source address", dst, ifindex)
}

// checkLinkDown fails if the route found runs over a link without carrier.
// The kernel keeps such routes and answers a plain lookup with them, but a
// probe sent that way would only be dropped; only the FIB entry itself
// (fibmatch) carries the linkdown flag.
func (m *Monitor) checkLinkDown(dst netip.Addr, ifindex int, mark uint32) error {
	rs, err := m.src.RouteGet(net.IP(dst.AsSlice()), &netlink.RouteGetOptions{OifIndex: ifindex, Mark: mark, FIBMatch: true})
	if err != nil {
		return fmt.Errorf("netmon: route to %v via interface %d: %w", dst, ifindex, err)
	}
	for _, r := range rs {
		if r.Flags&unix.RTNH_F_LINKDOWN != 0 {
			return fmt.Errorf("netmon: route to %v via interface %d: link has no carrier", dst, ifindex)
		}
		for _, nh := range r.MultiPath {
			if nh != nil && nh.LinkIndex == ifindex && nh.Flags&unix.RTNH_F_LINKDOWN != 0 {
				return fmt.Errorf("netmon: route to %v via interface %d: link has no carrier", dst, ifindex)
			}
		}
	}
	return nil
}

// subscription is one live Source subscription.
type subscription struct {
	done   chan struct{}
	addrs  chan netlink.AddrUpdate
	links  chan netlink.LinkUpdate
	routes chan netlink.RouteUpdate
}

func (m *Monitor) subscribe() (*subscription, error) {
	s := &subscription{
		done:   make(chan struct{}),
		addrs:  make(chan netlink.AddrUpdate, updateBuffer),
		links:  make(chan netlink.LinkUpdate, updateBuffer),
		routes: make(chan netlink.RouteUpdate, updateBuffer),
	}
	err := m.src.Subscribe(s.done, Updates{Addrs: s.addrs, Links: s.links, Routes: s.routes}, m.reportError)
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("netmon: subscribe: %w", err)
	}
	return s, nil
}

// stop ends the subscription and waits for the source to let go of its
// channels, so that no goroutine is left blocked on a send.
func (s *subscription) stop() {
	close(s.done)
	for range s.addrs {
	}
	for range s.links {
	}
	for range s.routes {
	}
}

func (m *Monitor) reportError(err error) {
	if m.opts.OnError != nil && err != nil {
		m.opts.OnError(err)
	}
}

// list dumps the kernel state, retrying dumps interrupted by concurrent
// changes, which would otherwise leave holes in the state.
func (m *Monitor) list() ([]netlink.Link, []netlink.Addr, error) {
	var err error
	for range dumpAttempts {
		var links []netlink.Link
		var addrs []netlink.Addr
		links, addrs, err = m.src.List()
		if err == nil {
			return links, addrs, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, nil, fmt.Errorf("netmon: dump links and addresses: %w", err)
}

// Run watches until ctx is done, then closes Events and returns nil. It
// returns an error, without watching, if the first subscription or dump
// fails. Later netlink failures (a receive buffer overrun, say) are
// recovered by subscribing again and reconciling a fresh dump.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("netmon: Run called twice")
	}
	defer close(m.events)

	sub, err := m.subscribe()
	if err != nil {
		return err
	}
	defer func() {
		if sub != nil {
			sub.stop()
		}
	}()
	links, addrs, err := m.list()
	if err != nil {
		return err
	}
	m.st.reset(links, addrs)
	now := time.Now()
	m.emitted = m.st.view(m.ignore)
	if !m.send(ctx, []Event{Snapshot{Addrs: m.emitted.list(), At: now}}) {
		return nil
	}

	clockTick := time.NewTicker(m.opts.ClockInterval)
	defer clockTick.Stop()
	wakes := wakeDetector{interval: m.opts.ClockInterval, threshold: m.opts.WakeAfter}
	wakes.observe(m.clock.Now())

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	armed := false

	var retry *time.Timer
	var retryC <-chan time.Time
	backoff := 50 * time.Millisecond
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()

	// lostSub drops a failed subscription and schedules a new one.
	lostSub := func(what string) {
		m.reportError(fmt.Errorf("netmon: %s subscription ended; resubscribing", what))
		sub.stop()
		sub = nil
		retry = time.NewTimer(0)
		retryC = retry.C
	}
	// flush reports everything pending.
	flush := func() bool {
		if armed {
			debounce.Stop()
			armed = false
		}
		return m.flush(ctx)
	}
	// changed is called after each update folded into the state; route
	// updates cannot take an address away, so they skip the loss check.
	changed := func(mayLose bool) bool {
		if m.batchAt.IsZero() {
			m.batchAt = time.Now()
		}
		if mayLose && m.current().lost(m.emitted, m.st.view(m.ignore)) {
			return flush()
		}
		if !armed {
			debounce.Reset(m.opts.Debounce)
			armed = true
		}
		return true
	}

	// Nil channels block, so a lost subscription simply drops out of the
	// select until it is replaced.
	var addrC <-chan netlink.AddrUpdate
	var linkC <-chan netlink.LinkUpdate
	var routeC <-chan netlink.RouteUpdate
	attach := func() {
		if sub == nil {
			addrC, linkC, routeC = nil, nil, nil
			return
		}
		addrC, linkC, routeC = sub.addrs, sub.links, sub.routes
	}
	attach()

	for {
		ok := true
		select {
		case <-ctx.Done():
			return nil
		case u, open := <-addrC:
			if !open {
				lostSub("address")
				attach()
				continue
			}
			if m.st.applyAddr(u) {
				ok = changed(true)
			} else {
				m.reportError(errors.New("netmon: unusable address update dropped"))
			}
		case u, open := <-linkC:
			if !open {
				lostSub("link")
				attach()
				continue
			}
			if m.st.applyLink(u) {
				ok = changed(true)
			} else {
				m.reportError(errors.New("netmon: unusable link update dropped"))
			}
		case u, open := <-routeC:
			if !open {
				lostSub("route")
				attach()
				continue
			}
			if m.st.routeRelevant(u, m.ignore) {
				m.routes++
				ok = changed(false)
			}
		case <-debounce.C:
			armed = false
			ok = m.flush(ctx)
		case <-clockTick.C:
			if w, woke := wakes.observe(m.clock.Now()); woke {
				// Stamped like every other event, with a monotonic
				// reading: durations measured from it ignore wall steps.
				w.At = time.Now()
				ok = m.send(ctx, []Event{w})
				// Netlink messages may have been lost while asleep; a
				// fresh dump costs little and settles it.
				if ok && sub != nil {
					ok = m.resync(ctx, flush)
				}
			}
		case <-retryC:
			retryC = nil
			s, err := m.subscribe()
			if err == nil {
				sub = s
				attach()
				ok = m.resync(ctx, flush)
				backoff = 50 * time.Millisecond
				break
			}
			m.reportError(err)
			retry.Reset(backoff)
			retryC = retry.C
			backoff = min(2*backoff, maxResubscribeBackoff)
		}
		if !ok {
			return nil
		}
	}
}

// resync replaces the state with a fresh dump and reports the difference
// at once. A failed dump is reported and left to the next change or resync.
func (m *Monitor) resync(ctx context.Context, flush func() bool) bool {
	links, addrs, err := m.list()
	if err != nil {
		m.reportError(err)
		return true
	}
	m.st.reset(links, addrs)
	if m.batchAt.IsZero() {
		m.batchAt = time.Now()
	}
	// Routes may have changed unseen while the subscription was down.
	m.routes++
	return flush()
}

// flush reports the difference between what was last reported and the
// current state. It returns false if ctx ended while sending.
func (m *Monitor) flush(ctx context.Context) bool {
	now := m.st.view(m.ignore)
	at := m.batchAt
	if at.IsZero() {
		at = time.Now()
	}
	evs := diff(m.emitted, now, m.current(), m.routes, at)
	m.emitted = now
	m.routes = 0
	m.batchAt = time.Time{}
	return m.send(ctx, evs)
}

func (m *Monitor) send(ctx context.Context, evs []Event) bool {
	for _, ev := range evs {
		if s, ok := ev.(Snapshot); ok {
			m.mu.Lock()
			m.last = append([]Address(nil), s.Addrs...)
			m.mu.Unlock()
		}
		select {
		case m.events <- ev:
		case <-ctx.Done():
			return false
		}
	}
	return true
}
