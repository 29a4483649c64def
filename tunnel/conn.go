package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/lockdown"
	"github.com/roam-vpn/roam/internal/undo"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/tun"
)

// keepaliveInterval is RFC 3948's suggestion; NAT bindings for UDP rarely
// live shorter.
const keepaliveInterval = 20 * time.Second

// conn is one client tunnel: an IKE SA, its Child SAs installed in the
// dataplane, and the TUN device they carry traffic for. The TUN device, the
// socket and the dataplane outlive IKE SAs: a reconnect (reconnect.go)
// replaces the SA and its Child SAs underneath them.
type conn struct {
	profile *config.Profile
	log     *slog.Logger
	emit    func(report.Event)

	cancel context.CancelFunc
	// host gives the device, sockets, route lookups and interface
	// monitors (host.go): the machine's own unless a test hands others.
	host      Host
	dev       DeviceSettings
	dp        *esp.Dataplane
	dpDone    chan struct{}
	sa        atomic.Pointer[ike.SA]
	pending   atomic.Pointer[ike.SA] // a replacement SA being negotiated
	gw        netip.AddrPort
	localPort uint16 // of the socket of the gateway's address family
	// portV4, portV6: the local port of each family's socket (0: none).
	portV4, portV6 uint16
	localAuth      ike.LocalAuth
	peerAuth       ike.PeerAuth

	// dialIKE starts an IKE SA to the gateway (dialGateway; tests fake
	// it) and returns it with its events and the uplink it leaves by.
	dialIKE func(ctx context.Context) (*ike.SA, <-chan ike.Event, string, error)
	// jitter returns a number in [0, 1) that spreads reconnect attempts.
	jitter func() float64
	// dpdHold, when set, replaces ike.SA.HoldDPD (tests).
	dpdHold func(hold bool)

	mu          sync.Mutex
	peer        *esp.Peer
	est         *ike.Established
	established time.Time
	// ifname is the uplink the setup found, then the one the installed SA
	// was dialed on, shown when there is no cur: the installed SA's path
	// (ike.SA.Current, which its Mover sets), which status follows.
	ifname      string
	cur         *netpath.Current
	state       report.State
	nat         bool
	pathChanges int
	life        context.Context
	// attempt and lastErr describe a reconnect in progress.
	attempt int
	lastErr string
	// altGateways are the gateway's addresses of the other family (MOBIKE
	// told us), tried by a reconnect when the configured one has no route.
	altGateways []netip.AddrPort
	// What the TUN device carries, across SAs.
	vips       []netip.Prefix
	routes     map[netip.Prefix]bool
	dns        []netip.Addr
	dnsDomains []string
	// dnsShown is what status reports of the DNS settings; under mu.
	dnsShown struct {
		servers, domains []string
		method           string
	}

	// suspendCause is why the state is suspended: mobility's reason, then
	// the error of each path test that failed since (health.go).
	suspendCause string
	// mover runs the installed SA's path changes (nil without MOBIKE);
	// health reads whether a test is in flight.
	mover  atomic.Pointer[mobility.Mover]
	health connHealth

	// ending is the reason for an end the connection decided itself (the
	// outage limit); it wins over the nil of the IKE DELETE that follows.
	ending error
	// closing: Close has begun; nothing reconnects from then on.
	closing atomic.Bool
	// suspect and resume come from mobility (mobike.go): every path
	// failed with addresses at hand, or a path works again.
	suspect chan string
	resume  chan struct{}

	closeOnce sync.Once
	done      chan struct{}
	err       error

	// Reauthentication (reauth.go): its schedule, and an SA replaced by
	// one that still gets its IKE messages until its DELETE is answered.
	ra       reauthState
	retiring atomic.Pointer[ike.SA]

	// budget is the first connect's time per step (budget.go), under mu.
	budget *report.ConnectBudget
	// lateTUN starts the dataplane and makes the TUN device (dev) beside
	// the first IKE exchange; abandonTUN is its teardown when that never
	// began. nil when the device was there from the start (tests).
	lateTUN    *lateTUN
	abandonTUN func()
	// startDataplane starts the dataplane's loops, once: with the device
	// (lateTUN), or before it when the dial took over roam connect's
	// IKE_SA_INIT (tookOver).
	startDataplane func()
	// firstRoute is Dial's route to the gateway, for the first dial to
	// take instead of asking the kernel again; nil once taken.
	firstRoute atomic.Pointer[netmon.Route]
	// first is the IKE_SA_INIT roam connect already sent (a Handoff),
	// for the first dial to take over.
	first atomic.Pointer[ike.FirstMessage]

	// lock is the profile's lockdown (lockdown.go); nil without one.
	lock *lockdown.Rules
	// captive is the captive portal holding the uplink (captive.go), under
	// mu; captiveRetry asks a waiting reconnect attempt to start now.
	captive      *captiveState
	captiveRetry chan struct{}

	// undo records, before each change to the machine, how to undo it
	// should the daemon be killed (undo.go); tunName names the records.
	undo    undo.Dir
	tunName string
	// stream is the TCP or TLS stream to the gateway (transport.go);
	// nil while the connection uses UDP only.
	stream *clientStream
}

// session is one IKE SA of a connection with what was installed for it.
type session struct {
	sa     *ike.SA
	events <-chan ike.Event
	cancel context.CancelFunc // drops the SA without a DELETE
	est    *ike.Established
	ifname string
	peer   *esp.Peer
	// stopMobility ends the SA's interface monitor and mover.
	stopMobility context.CancelFunc
	// mover runs the SA's path changes (nil without MOBIKE); a
	// gateway's switch request goes through it (switch.go).
	mover *mobility.Mover

	// Reauthentication (reauth.go): when the SA authenticated, the
	// gateway's AUTH_LIFETIME deadline and length, why the next (or this
	// session's) reauthentication happens, and whether this session is a
	// reauthentication's new SA.
	authAt           time.Time
	gwReauthDeadline time.Time
	gwLifetime       time.Duration
	reauthCause      string
	reauth           bool
}

func newConn(p *config.Profile, log *slog.Logger, emit func(report.Event)) *conn {
	// The connection outlives the connect request, so it gets its own
	// context; the request's ctx only bounds the wait for establishment.
	life, cancel := context.WithCancel(context.Background())
	return &conn{profile: p, log: log, emit: emit, cancel: cancel, done: make(chan struct{}), state: report.StateConnecting, life: life,
		host: Host{}.withDefaults(), routes: map[netip.Prefix]bool{}, suspect: make(chan string, 1), resume: make(chan struct{}, 1), jitter: rand.Float64,
		ra: reauthState{due: make(chan *session, 1)}, captiveRetry: make(chan struct{}, 1)}
}

// DialTunnel connects a profile: it returns once the tunnel carries traffic,
// or with an error whose text is the reason for the user.
func DialTunnel(ctx context.Context, p *config.Profile, emit func(report.Event)) (report.Tunnel, error) {
	return Dial(ctx, p, emit, Options{})
}

// Options are what a caller may hand Dial beside the profile.
type Options struct {
	// Host gives the tunnel its device, sockets, route lookups and
	// interface monitor; the zero value is the machine's own.
	Host Host
}

// Dial is DialTunnel with options: in-memory devices and networks for
// tests (internal/memrig).
func Dial(ctx context.Context, p *config.Profile, emit func(report.Event), opt Options) (report.Tunnel, error) {
	host := opt.Host.withDefaults()
	log := report.LoggerFrom(ctx).With("profile", p.Name)
	budget := newConnectBudget(time.Now())
	gw, err := resolveGateway(ctx, p)
	if err != nil {
		return nil, err
	}
	budget.mark("resolve", time.Now())
	// What roam connect started while this daemon started: its route,
	// sockets and first message, unless the gateway resolved elsewhere
	// meanwhile.
	handoff := handoffFor(ctx, p, log)
	if handoff != nil && handoff.Gateway != gw {
		log.Warn("not taking over what roam connect started; connecting afresh", "err", fmt.Errorf("it went to %v, the gateway is now %v", handoff.Gateway, gw))
		handoff.Close()
		handoff = nil
	}
	var route netmon.Route
	if handoff != nil {
		route = handoff.Route
	} else if route, err = host.RouteTo(gw.Addr(), tun.DefaultMark); err != nil {
		return nil, fmt.Errorf("gateway unreachable: %w", err)
	}
	budget.mark("route_lookup", time.Now())
	localAuth, peerAuth, err := authenticators(p)
	if err != nil {
		if handoff != nil {
			handoff.Close()
		}
		return nil, err
	}
	budget.mark("credentials", time.Now())

	c := newConn(p, log, emit)
	c.host = host
	c.gw, c.localAuth, c.peerAuth = gw, localAuth, peerAuth
	c.undo, c.tunName = report.StateDirFrom(ctx), tunName(p.Name)
	c.dialIKE = c.dialGateway
	fail := func(err error) (report.Tunnel, error) {
		if handoff != nil {
			handoff.Close() // the dataplane may not have them yet
		}
		c.teardown(err)
		return nil, err
	}
	if err := c.startLockdown(c.tunName, gw); err != nil {
		return fail(err)
	}
	budget.mark("lockdown", time.Now())

	// The dataplane and the device start once the first IKE message is
	// out (lateTUN, from the IKE transport): neither is needed before the
	// gateway answers, and on a busy machine their goroutines, the crash
	// record's sync and the device's creation (a few milliseconds) would
	// otherwise delay IKE_SA_INIT. The dataplane reads the device through a
	// stand-in until it exists. With MOBIKE the tunnel may move to an IPv6
	// outer path later: size the inner MTU for the larger header from the
	// start, as an MTU that shrinks under open TCP connections would cost
	// them packets.
	journal := func(s tun.State) error { return c.undo.Record(report.UndoTUN, c.tunName, s) }
	mtu := tun.MTUFor(route.MTU, gw.Addr().Is6() || p.MOBIKE)
	late := newLateDevice()
	c.dpDone = make(chan struct{})
	c.startDataplane = sync.OnceFunc(func() {
		go func() {
			defer close(c.dpDone)
			if err := c.dp.Run(c.life); err != nil && c.life.Err() == nil {
				log.Error("dataplane stopped", "err", err)
			}
		}()
	})
	c.lateTUN = newLateTUN(func() error {
		c.startDataplane()
		if err := c.undo.Record(report.UndoTUN, c.tunName, tun.State{Device: c.tunName}); err != nil {
			late.bind(nil)
			return fmt.Errorf("recording the TUN device for a crash: %w", err)
		}
		dev, err := host.CreateTUN(c.tunName, mtu, journal)
		if err != nil {
			c.undo.Forget(report.UndoTUN, c.tunName)
			late.bind(nil)
			return err
		}
		c.dev = dev
		late.bind(dev.Dev())
		return nil
	})
	c.abandonTUN = func() {
		// The connection's context has ended: the dataplane only closes
		// its sockets.
		late.bind(nil)
		c.startDataplane()
	}
	c.ifname = route.IfName
	c.firstRoute.Store(&route)
	c.dp = esp.NewDataplane(late, c.handleIKE, log)
	var socks []esp.Conn
	if handoff != nil {
		socks = handoff.socks
		c.first.Store(&handoff.First)
		handoff = nil // the dataplane's now
	} else if socks, err = clientSockets(host.ListenUDP, gw.Addr(), p.MOBIKE, log); err != nil {
		return fail(err)
	}
	for _, s := range socks {
		c.dp.AddConn(s)
	}
	c.localPort = socks[0].LocalAddr().Port()
	for _, s := range socks {
		if s.LocalAddr().Addr().Is4() {
			c.portV4 = s.LocalAddr().Port()
		} else {
			c.portV6 = s.LocalAddr().Port()
		}
	}
	budget.mark("sockets", time.Now())

	emit(report.Event{Event: report.EventConnecting, Profile: p.Name, To: gw.String(), Interface: route.IfName})
	go c.watchCaptive(c.life) // from the first attempt on: a portal may hold the uplink
	if err := c.connectThroughPortal(ctx, budget); err != nil {
		return fail(err)
	}
	log.Info("connect budget", budget.attrs()...)
	c.mu.Lock()
	c.budget = budget.report()
	c.mu.Unlock()
	go c.watchHealth(c.life)
	return c, nil
}

// connect negotiates the first IKE SA, installs it and starts following
// it; ctx bounds the negotiation only.
func (c *conn) connect(ctx context.Context, budget *connectBudget) error {
	// A device that cannot be made ends the attempt at once, not when IKE
	// is done (an unreachable gateway takes seconds).
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.lateTUN.cancelOnFailure(ectx, cancel)
	s, err := c.establish(ectx, false)
	if err != nil {
		if terr := c.lateTUN.failed(); terr != nil {
			return terr // the better reason
		}
		return err
	}
	budget.mark("ike", time.Now())
	err = c.lateTUN.wait()
	if c.lateTUN != nil {
		budget.overlapped("tun", c.lateTUN.took)
		budget.mark("tun_wait", time.Now())
	}
	if err == nil {
		err = c.install(s)
	}
	budget.mark("install", time.Now()) // children, addresses, routes, DNS
	if err != nil {
		if s.sa != nil {
			s.sa.Close(ctx)
		}
		s.cancel()
		return err
	}
	go c.supervise(s)
	return nil
}

// dialGateway starts an IKE SA from the uplink the kernel picks now: after
// a reconnect that may be another one than the first connect's.
func (c *conn) dialGateway(ctx context.Context) (*ike.SA, <-chan ike.Event, string, error) {
	p := c.profile
	// After a move to another address family (an IPv6-only uplink) the
	// configured address may have no route; the gateway's other addresses,
	// learnt through MOBIKE, may.
	c.mu.Lock()
	targets := append([]netip.AddrPort{c.gw}, c.altGateways...)
	c.mu.Unlock()
	for _, t := range targets {
		c.allowGateways(t.Addr())
	}
	gw, route, err := pickRoute(targets, func(a netip.Addr) (netmon.Route, error) {
		// The first dial goes where Dial just looked (a netlink round
		// trip less before IKE_SA_INIT); every later one asks afresh.
		if r := c.firstRoute.Swap(nil); r != nil && a == c.gw.Addr() {
			return *r, nil
		}
		return c.host.RouteTo(a, tun.DefaultMark)
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("gateway unreachable: %w", err)
	}
	port := c.localPort
	if gw.Addr().Is4() != c.gw.Addr().Is4() {
		port = c.portV4
		if gw.Addr().Is6() {
			port = c.portV6
		}
	}
	events := make(chan ike.Event, 16)
	// What makes IKE_SA_INIT comes from initConfig, which Presend uses too.
	cfg := initConfig(p, netpath.Path{Local: netip.AddrPortFrom(route.Src, port), Remote: gw, IfIndex: route.IfIndex})
	cfg.IfName = route.IfName
	cfg.LocalAuth, cfg.PeerAuth = c.localAuth, c.peerAuth
	cfg.RemoteID = p.RemoteID
	cfg.RemoteTS, cfg.MoreChildren = firstTS(p), moreChildren(p)
	cfg.VirtualIP, cfg.MOBIKE = p.VirtualIP, p.MOBIKE
	// The gateway may move us to another of its addresses (switch.go).
	cfg.Switch, cfg.AcceptSwitch = p.MOBIKE && p.Switch, acceptSwitch(p)
	// An HA gateway's standby may take the SA over (Switch offers RFC
	// 6311; conn_ha.go).
	cfg.AdvanceSeq = c.advanceSeq
	// Inbound ESP is a sign of life too: a busy tunnel is never probed.
	cfg.DPDDelay, cfg.LastInbound = p.DPDDelay, c.lastInbound
	cfg.ChildRekeyTime, cfg.ChildLifeTime, cfg.RekeyJitter = p.ChildRekey, p.ChildLife, p.ChildLife-p.ChildRekey
	cfg.IKERekeyTime, cfg.IKELifeTime = p.IKERekey, p.IKELife
	// MOBIKE: the gateway learns our other addresses (RFC 4555 3.4).
	cfg.LocalAddresses = c.prefetchAddresses()
	// Short first timeouts: an unreachable gateway is reported within
	// about ten seconds instead of strongSwan's minutes.
	cfg.Retransmit = ike.ConnectRetransmit
	cfg.Log = c.log
	// The inner addresses we have, asked for again; and no
	// INITIAL_CONTACT beside a live SA (reauth.go).
	cfg.RequestVIPs = c.requestVIPs()
	cfg.NoInitialContact = dialOptionsOf(ctx).reauth
	// The first dial, to where roam connect already sent IKE_SA_INIT,
	// takes that over (dialTransport then starts the dataplane: tookOver).
	if first := c.first.Swap(nil); first != nil && gw == c.gw {
		cfg.First = first
	}
	sa, err := c.dialTransport(ctx, cfg, events)
	if err != nil {
		return nil, nil, "", err
	}
	return sa, events, route.IfName, nil
}

// moreChildren splits the profile's remote_ts into one Child SA each with
// children = "per_ts"; dialGateway's RemoteTS is then the first's only.
func moreChildren(p *config.Profile) []ike.Selectors {
	if p.Children != config.ChildrenPerTS {
		return nil
	}
	var out []ike.Selectors
	for _, ts := range p.RemoteTS[min(1, len(p.RemoteTS)):] {
		out = append(out, ike.Selectors{Remote: []netip.Prefix{ts}})
	}
	return out
}

// firstTS is the remote_ts of the Child SA in IKE_AUTH.
func firstTS(p *config.Profile) []netip.Prefix {
	if p.Children == config.ChildrenPerTS && len(p.RemoteTS) > 1 {
		return p.RemoteTS[:1]
	}
	return p.RemoteTS
}

// pickRoute returns the first target the kernel has a route to (with its
// socket's family), or the first target's error.
func pickRoute(targets []netip.AddrPort, routeTo func(netip.Addr) (netmon.Route, error)) (netip.AddrPort, netmon.Route, error) {
	var first error
	for _, t := range targets {
		r, err := routeTo(t.Addr())
		if err == nil {
			return t, r, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = errors.New("no gateway address")
	}
	return netip.AddrPort{}, netmon.Route{}, first
}

// localAddresses lists our usable addresses for the IKE_AUTH announcement;
// the TUN device is not one of them. The first IKE_AUTH may go out while
// the device is still being made, so it goes by the device's name.
func (c *conn) localAddresses() []netip.Addr {
	mon, err := c.host.NewMonitor([]string{c.tunName})
	if err != nil {
		return nil
	}
	addrs, err := mon.Usable()
	if err != nil {
		c.log.Debug("listing local addresses", "err", err)
		return nil
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Addr)
	}
	return out
}

// prefetchAddresses starts listing our addresses at once, while
// IKE_SA_INIT is under way, instead of when IKE_AUTH is built (a netlink
// dump of 0.25 ms on the connect's path); the first call takes that list,
// later ones (a gateway's switch request) list afresh.
func (c *conn) prefetchAddresses() func() []netip.Addr {
	first := make(chan []netip.Addr, 1)
	go func() { first <- c.localAddresses() }()
	var taken atomic.Bool
	return func() []netip.Addr {
		if taken.CompareAndSwap(false, true) {
			return <-first
		}
		return c.localAddresses()
	}
}

// lastInbound is when ESP last came from the gateway.
func (c *conn) lastInbound() time.Time {
	if peer := c.curPeer(); peer != nil {
		_, recv := peer.Activity()
		return recv
	}
	return time.Time{}
}

// establish negotiates a new IKE SA and waits, bounded by ctx, for it to be
// usable. A pending SA is a replacement negotiated while the current one
// is still installed: it gets the IKE messages addressed to it only.
func (c *conn) establish(ctx context.Context, pending bool) (*session, error) {
	slot := &c.sa
	if pending {
		slot = &c.pending
	}
	// The SA must get its IKE messages from the moment its first request
	// is out: a dial that waits for an answer before returning (transport
	// auto, transport.go) would otherwise drop the gateway's response and
	// wait for a retransmission.
	var published atomic.Pointer[ike.SA]
	publish := func(sa *ike.SA) {
		slot.Store(sa)
		published.Store(sa)
	}
	sctx, cancel := context.WithCancel(context.WithValue(context.WithValue(c.life, dialOptionsKey{}, dialOptionsOf(ctx)), publishKey{}, publish))
	sa, events, ifname, err := c.dialIKE(sctx)
	if err != nil {
		cancel()
		if p := published.Load(); p != nil {
			slot.CompareAndSwap(p, nil)
		}
		return nil, err
	}
	slot.Store(sa)
	drop := func() {
		cancel()
		slot.CompareAndSwap(sa, nil)
	}
	select {
	case ev := <-events:
		switch ev := ev.(type) {
		case *ike.Established:
			return &session{sa: sa, events: events, cancel: cancel, est: ev, ifname: ifname, authAt: time.Now()}, nil
		case *ike.Deleted:
			drop()
			return nil, userError(ev.Reason)
		default:
			drop()
			return nil, fmt.Errorf("unexpected IKE event %T before establishment", ev)
		}
	case <-ctx.Done():
		drop()
		return nil, fmt.Errorf("connect cancelled: %w", ctx.Err())
	}
}

// install puts the negotiated Child SAs into the dataplane and configures
// the TUN device for them. After a reconnect the device keeps its
// addresses and routes; only what changed is touched, so applications see a
// pause, and a new inner address replaces the old one.
func (c *conn) install(s *session) error {
	est := s.est
	c.mu.Lock()
	prev := c.est
	c.mu.Unlock()
	s.peer = c.dp.NewPeer(est.Path)
	s.peer.SetRTT(ikeesp.IKERTT(est.SA))
	// The round trips of the inner traffic refine the current IKE SA's
	// estimate (a rekey replaces it), which the dead-path check's window
	// and status read: IKE's own samples are few.
	s.peer.SetEchoRTT(func(p netpath.Path, rtt time.Duration) {
		if sa := c.sa.Load(); sa != nil {
			sa.NoteRTT(p, rtt)
		}
	})
	var routes []netip.Prefix
	for _, ch := range est.Children {
		remote := ikeesp.SelectorsToPrefixes(ch.RemoteTS)
		if err := c.installChild(s, ch, remote, false); err != nil {
			c.dp.RemovePeer(s.peer)
			return err
		}
		routes = append(routes, remote...)
	}
	for _, f := range est.FailedChildren {
		// The tunnel is worth having for the networks that did work; the
		// others stay outside it, which the user must hear of.
		c.log.Warn("child SA refused", "remote_ts", f.Remote, "err", f.Err)
		c.emit(report.Event{Event: report.EventError, Profile: c.profile.Name, Reason: fmt.Sprintf("child SA for %s: %v", ikeesp.PrefixList(f.Remote), userError(f.Err))})
	}
	oldVIPs := c.vipStrings()
	if err := c.setAddresses(est.VirtualIPs); err != nil {
		c.dp.RemovePeer(s.peer)
		return err
	}
	if err := c.addRoutes(routes); err != nil {
		c.dp.RemovePeer(s.peer)
		return err
	}
	if c.profile.DNS && len(est.DNS) > 0 && (!slices.Equal(est.DNS, c.dns) || !slices.Equal(est.DNSDomains, c.dnsDomains)) {
		full := false
		for r := range c.routes {
			full = full || r.Bits() == 0
		}
		domains := dnsDomains(c.profile.DNSDomains, est.DNSDomains)
		if !full && len(domains) == 0 {
			c.log.Warn("split tunnel without DNS domains: no names go to the gateway's DNS servers; list them in dns_domains", "servers", est.DNS)
		}
		err := c.dev.SetDNS(tun.DNSOptions{Servers: est.DNS, Domains: domains, FullTunnel: full, Name: c.profile.Name})
		switch {
		case errors.Is(err, tun.ErrResolvConfManaged):
			// Not ours to rewrite; the tunnel is still worth having.
			c.log.Warn("DNS servers not applied", "err", err)
		case err != nil:
			c.dp.RemovePeer(s.peer)
			return err
		default:
			method := c.dev.DNSMethod()
			c.log.Info("DNS applied", "servers", est.DNS, "domains", domains, "default_route", full, "method", method)
			var servers []string
			for _, a := range est.DNS {
				servers = append(servers, a.String())
			}
			c.mu.Lock()
			c.dnsShown.servers, c.dnsShown.domains, c.dnsShown.method = servers, domains, method
			c.mu.Unlock()
		}
		c.dns = slices.Clone(est.DNS)
		c.dnsDomains = slices.Clone(est.DNSDomains)
	}
	if est.UDPEncap || est.NATLocal {
		s.peer.SetKeepalive(keepaliveInterval)
	}
	c.sa.Store(s.sa)
	c.pending.CompareAndSwap(s.sa, nil)
	var alt []netip.AddrPort
	if s.sa != nil && est.PeerMOBIKE {
		c.allowGateways(s.sa.PeerAddresses()...)
		for _, a := range s.sa.PeerAddresses() {
			if a != c.gw.Addr() && a.Is4() != c.gw.Addr().Is4() {
				alt = append(alt, netip.AddrPortFrom(a, c.gw.Port()))
			}
		}
	}
	c.mu.Lock()
	if alt != nil {
		c.altGateways = alt
	}
	attempts := c.attempt
	c.est, c.established, c.state, c.nat, c.peer, c.ifname = est, time.Now(), report.StateEstablished, est.NATLocal, s.peer, s.ifname
	c.cur = nil
	if s.sa != nil {
		c.cur = s.sa.Current()
	}
	c.suspendCause = "" // the new SA has a path
	c.attempt, c.lastErr = 0, ""
	c.mu.Unlock()
	if c.profile.MOBIKE && est.PeerMOBIKE {
		mctx, stop := context.WithCancel(c.life)
		s.stopMobility = stop
		mover, err := c.startMobility(mctx, s.sa)
		if err != nil {
			return err
		}
		s.mover = mover
		c.mover.Store(mover)
	} else {
		c.mover.Store(nil)
	}
	ev := report.Event{Event: report.EventEstablished, Profile: c.profile.Name, To: est.Path.Remote.String(), Interface: s.ifname, Transport: c.transportName(est.Path)}
	if len(est.VirtualIPs) > 0 {
		ev.VirtualIP = est.VirtualIPs[0].String()
	}
	if len(est.Children) > 0 {
		ev.Proposal = est.Children[0].Proposal
	}
	if attempts > 0 {
		ev.Reason = fmt.Sprintf("reconnected after %d attempts", attempts)
		if attempts == 1 {
			ev.Reason = "reconnected after 1 attempt"
		}
		if now := c.vipStrings(); len(oldVIPs) > 0 && !slices.Equal(oldVIPs, now) {
			ev.Reason += fmt.Sprintf("; virtual IP changed from %s to %s", strings.Join(oldVIPs, ","), strings.Join(now, ","))
		}
	}
	if s.reauth {
		ev = c.reauthEvent(ev, s, prev, oldVIPs)
	}
	c.emit(ev)
	c.scheduleReauth(s, est.AuthLifetime)
	return nil
}

// setAddresses makes the device's inner addresses those of the new SA:
// new ones first, so there is never a moment without a source address.
func (c *conn) setAddresses(vips []netip.Addr) error {
	want := make([]netip.Prefix, 0, len(vips))
	for _, a := range vips {
		want = append(want, netip.PrefixFrom(a, a.BitLen()))
	}
	for _, p := range want {
		if slices.Contains(c.vips, p) {
			continue
		}
		if err := c.dev.AddAddress(p); err != nil {
			return err
		}
	}
	for _, p := range c.vips {
		if slices.Contains(want, p) {
			continue
		}
		if err := c.dev.RemoveAddress(p); err != nil {
			c.log.Warn("removing the old inner address", "addr", p, "err", err)
		}
	}
	c.mu.Lock()
	c.vips = want
	c.mu.Unlock()
	return nil
}

// addRoutes routes the prefixes not routed into the tunnel yet.
func (c *conn) addRoutes(ps []netip.Prefix) error {
	var add []netip.Prefix
	for _, p := range ps {
		if !c.routes[p.Masked()] && !slices.Contains(add, p.Masked()) {
			add = append(add, p.Masked())
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := c.dev.AddRoutes(add, tun.DefaultMark, tun.DefaultTable); err != nil {
		return err
	}
	for _, p := range add {
		c.routes[p] = true
	}
	return nil
}

func (c *conn) vipStrings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.vips))
	for i, p := range c.vips {
		out[i] = p.Addr().String()
	}
	return out
}

// curPeer is the dataplane peer of the installed SA (nil while a lost SA
// is being replaced).
func (c *conn) curPeer() *esp.Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}

// installChild puts a Child SA pair into the dataplane; pending (a rekey we
// answered) keeps outbound traffic on the old pair until the peer uses the
// new one.
func (c *conn) installChild(s *session, ch ike.ChildSA, remote []netip.Prefix, pending bool) error {
	_, err := c.binder().InstallChild(s.peer, s.sa, ch, ikeesp.Install{Remote: remote, Pending: pending})
	return err
}

// binder installs this connection's SAs into its dataplane.
func (c *conn) binder() ikeesp.Binder {
	return ikeesp.Binder{DP: c.dp, RekeyPackets: c.profile.ChildRekeyPackets, Log: c.log}
}

// handleChildEvent follows the Child SAs (and in-place IKE SA rekeys) of
// the installed SA.
func (c *conn) handleChildEvent(s *session, ev ike.Event) {
	switch ev := ev.(type) {
	case *ike.ChildRekeyed:
		// The new SA goes in before the old one leaves (on a DELETE),
		// so no packet finds neither. When we only answered the rekey,
		// we send on it once the peer shows it has installed it.
		if _, err := c.binder().InstallRekeyed(s.peer, s.sa, ev); err != nil {
			c.log.Error("installing rekeyed child SA", "err", err)
			c.emit(report.Event{Event: report.EventError, Reason: err.Error()})
			return
		}
		c.emit(report.Event{Event: report.EventRekeyed, Reason: ikeesp.RekeyedReason(ev)})
	case *ike.ChildCreated:
		remote := ikeesp.SelectorsToPrefixes(ev.Child.RemoteTS)
		if err := c.installChild(s, ev.Child, remote, false); err != nil {
			c.log.Error("installing child SA", "err", err)
			c.emit(report.Event{Event: report.EventError, Reason: err.Error()})
			return
		}
		if err := c.addRoutes(remote); err != nil {
			c.log.Error("routing child SA", "err", err)
			c.emit(report.Event{Event: report.EventError, Reason: err.Error()})
		}
	case *ike.IKERekeyed:
		c.emit(report.Event{Event: report.EventRekeyed, Reason: ikeesp.RekeyedReason(ev)})
	case *ike.ChildDeleted:
		c.binder().Retire(ev.SPIIn)
	case *ike.SwitchRequested:
		c.followSwitch(s, ev)
	case *ike.AuthLifetime:
		c.scheduleReauth(s, ev.Lifetime)
	case *ike.MessageIDSynced:
		c.followSync(s, ev)
	case *ike.PeerHint:
		// The gateway may have restarted: a replacement is negotiated
		// alongside at once (make-before-break), instead of after the
		// liveness check the SA runs has timed out.
		if ev.Refuted {
			c.saAnswered()
		} else {
			c.suspectLost("the gateway sent an unauthenticated " + ev.Notify)
		}
	}
}

// handleIKE hands an IKE message to its SA: a replacement being negotiated
// gets those with its SPI, the installed SA everything else.
func (c *conn) handleIKE(pkt []byte, path netpath.Path) {
	if p := c.pending.Load(); p != nil && len(pkt) >= 8 {
		if spii, _ := p.SPIs(); binary.BigEndian.Uint64(pkt[:8]) == spii {
			p.HandlePacket(pkt, path)
			return
		}
	}
	if old := c.retiring.Load(); old != nil && len(pkt) >= 8 {
		if spii, _ := old.SPIs(); binary.BigEndian.Uint64(pkt[:8]) == spii {
			old.HandlePacket(pkt, path)
			return
		}
	}
	if sa := c.sa.Load(); sa != nil {
		sa.HandlePacket(pkt, path)
	}
}

// teardown releases everything the connection holds. It runs once; the
// first reason wins, after the one end recorded.
func (c *conn) teardown(reason error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		if c.ending != nil {
			reason = c.ending
		}
		c.mu.Unlock()
		c.closing.Store(true)
		c.cancel()
		c.stopReauth()
		// Closing the device ends the dataplane's blocked TUN read, so it
		// comes before waiting for the dataplane; a device never begun
		// ends that read too.
		c.lateTUN.abandon(c.abandonTUN)
		if c.dev != nil {
			// What Close could not undo stays recorded for the next daemon.
			if err := c.dev.Close(); err != nil {
				c.log.Error("TUN cleanup", "err", err)
			} else if err := c.undo.Forget(report.UndoTUN, c.tunName); err != nil {
				c.log.Warn("TUN cleanup: record not removed", "err", err)
			}
		}
		if c.dpDone != nil {
			<-c.dpDone
		}
		c.stopLockdown()
		c.mu.Lock()
		c.state = report.StateDisconnected
		c.err = reason
		c.mu.Unlock()
		close(c.done)
	})
}

// end closes the connection for a reason of its own, which the
// disconnected event reports.
func (c *conn) end(reason error) {
	c.mu.Lock()
	if c.ending == nil {
		c.ending = reason
	}
	c.mu.Unlock()
	c.log.Warn("ending the connection", "reason", reason)
	c.Close(context.Background())
}

// Close sends the IKE DELETE (bounded in time) and tears the tunnel down;
// a reconnect in progress stops.
func (c *conn) Close(ctx context.Context) error {
	c.closing.Store(true)
	if p := c.pending.Load(); p != nil {
		p.Close(ctx)
	}
	if sa := c.sa.Load(); sa != nil {
		ctx, cancel := context.WithTimeout(ctx, ikeesp.CloseTimeout)
		err := sa.Close(ctx)
		cancel()
		if err != nil && !errors.Is(err, ike.ErrClosed) {
			c.log.Warn("IKE delete not acknowledged", "err", err)
		}
	}
	c.teardown(nil)
	return nil
}

func (c *conn) Done() <-chan struct{} { return c.done }

func (c *conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Status reports the connection for `roam status`.
func (c *conn) Status() report.Status {
	// Fresh, not the watcher's last look: status must not say ok for a
	// connection that has just been suspended.
	c.checkHealth(time.Now())
	c.mu.Lock()
	est, at, state, nat, changes, peer := c.est, c.established, c.state, c.nat, c.pathChanges, c.peer
	cur, lostPath, ifname := c.cur, c.suspendCause != "", c.ifname
	attempt, lastErr := c.attempt, c.lastErr
	dns := c.dnsShown
	var budget *report.ConnectBudget
	if c.budget != nil {
		b := *c.budget
		budget = &b
	}
	c.mu.Unlock()
	var path netpath.Path
	if cur != nil {
		s := cur.Load()
		ifname, path = s.IfName, s.Path
	}
	if state == report.StateSuspended || (state == report.StateReconnecting && lostPath) {
		ifname = "" // no working path: the last one is in the events
	}
	st := report.Status{Name: c.profile.Name, State: state, Gateway: c.gw.String(), Interface: ifname, MOBIKE: c.profile.MOBIKE, NAT: nat, PathChanges: changes,
		ReconnectAttempt: attempt, LastError: lastErr, DNSServers: dns.servers, DNSDomains: dns.domains, DNSMethod: dns.method,
		ConnectBudget: budget}
	c.lockdownStatus(&st)
	c.captiveStatus(&st)
	if est == nil {
		return st
	}
	if cur == nil {
		path = est.Path
	}
	if sa := c.sa.Load(); sa != nil {
		spii, spir := sa.SPIs()
		st.IKESPIi, st.IKESPIr = fmt.Sprintf("%016x", spii), fmt.Sprintf("%016x", spir)
	}
	st.Local, st.Remote = path.Local.String(), path.Remote.String()
	st.Transport = c.transportName(path)
	if state == report.StateSuspended || state == report.StateReconnecting {
		st.Local = "" // no working path: the last one is in the events
	}
	st.MOBIKE = c.profile.MOBIKE && est.PeerMOBIKE
	if st.MOBIKE {
		if sa := c.sa.Load(); sa != nil {
			for _, a := range sa.PeerAddresses() {
				st.PeerAddresses = append(st.PeerAddresses, a.String())
			}
		}
	}
	if len(est.VirtualIPs) > 0 {
		st.VirtualIP = est.VirtualIPs[0].String()
	}
	st.EstablishedAt = at
	st.Proposal = est.Proposal
	if peer != nil {
		st.Children = ikeesp.ChildStatuses(c.dp.ChildStats(peer))
	}
	c.reauthStatus(&st)
	d := c.dp.Drops()
	st.Drops = report.DropsFrom(d)
	if peer != nil {
		st.PathMTU = peer.MTU()
	}
	ms := c.dp.MTUStats()
	st.ICMPTooBig, st.MSSClamped = ms.ICMPTooBig, ms.MSSClamped
	c.trafficStatus(&st, peer)
	return st
}

// userError turns an engine failure into the one line `roam connect`
// prints; the engine's errors already name the notify or exchange.
func userError(err error) error {
	if err == nil {
		return nil
	}
	// The line starts with the class of failure; engine errors whose text
	// already does are not prefixed twice.
	class := func(name string) error {
		if strings.HasPrefix(err.Error(), name) {
			return err
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case errors.Is(err, ike.ErrAuthenticationFailed):
		return class("authentication failed")
	case errors.Is(err, ike.ErrNoProposalChosen):
		return class("no proposal chosen")
	case errors.Is(err, ike.ErrTSUnacceptable):
		return class("traffic selectors unacceptable")
	}
	return err
}

func resolveGateway(ctx context.Context, p *config.Profile) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(p.Gateway); err == nil {
		return netip.AddrPortFrom(a.Unmap(), p.GatewayPort), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", p.Gateway)
	if err != nil || len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("gateway %q: cannot resolve: %v", p.Gateway, err)
	}
	pick := addrs[0]
	for _, a := range addrs {
		if a.Unmap().Is4() {
			pick = a
			break
		}
	}
	return netip.AddrPortFrom(pick.Unmap(), p.GatewayPort), nil
}

func authenticators(p *config.Profile) (ike.LocalAuth, ike.PeerAuth, error) {
	switch p.Auth {
	case "psk":
		local, err := ike.NewPSKAuth(p.LocalID, p.PSK)
		if err != nil {
			return nil, nil, fmt.Errorf("local_id: %w", err)
		}
		peer, err := ike.NewPSKPeer(p.RemoteID, p.PSK)
		if err != nil {
			return nil, nil, fmt.Errorf("remote_id: %w", err)
		}
		return local, peer, nil
	case "pubkey":
		certPEM, keyPEM, err := readCertKey(p)
		if err != nil {
			return nil, nil, err
		}
		caPEM, err := os.ReadFile(p.CA)
		if err != nil {
			return nil, nil, fmt.Errorf("ca: %w", err)
		}
		local, err := ike.NewCertAuth(p.LocalID, certPEM, keyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("cert/key: %w", err)
		}
		peer, err := ike.NewCertPeer(p.RemoteID, caPEM, ikeesp.SHA1RSA(p.AllowSHA1RSA)...)
		if err != nil {
			return nil, nil, fmt.Errorf("ca: %w", err)
		}
		return local, peer, nil
	case config.AuthEAPMSCHAPv2, config.AuthEAPTLS:
		return eapAuthenticators(p)
	}
	return nil, nil, fmt.Errorf("auth: %q is not psk, pubkey, %s or %s", p.Auth, config.AuthEAPMSCHAPv2, config.AuthEAPTLS)
}

// readCertKey reads the profile's cert and key files (PEM).
func readCertKey(p *config.Profile) (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(p.Cert); err != nil {
		return nil, nil, fmt.Errorf("cert: %w", err)
	}
	if keyPEM, err = os.ReadFile(p.Key); err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	return certPEM, keyPEM, nil
}

// tunName derives the interface name from the profile, within the kernel's
// 15-byte limit.
func tunName(profile string) string {
	name := "roam-" + profile
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

// clientSockets opens the UDP socket for the gateway's address family and,
// with MOBIKE, one for the other family on the same port, so the tunnel can
// move between IPv4 and IPv6 outer paths (the dataplane sends each path
// through the socket of its family). The same port keeps our NAT detection
// hashes and the gateway's view of us alike on both. A host without the
// other family (IPv6 disabled) just has no such paths.
func clientSockets(listen func(netip.AddrPort, uint32) (esp.Conn, error), gw netip.Addr, mobike bool, log *slog.Logger) ([]esp.Conn, error) {
	first, err := listen(netip.AddrPortFrom(unspecified(gw), 0), tun.DefaultMark)
	if err != nil {
		return nil, fmt.Errorf("UDP socket: %w", err)
	}
	socks := []esp.Conn{first}
	if !mobike {
		return socks, nil
	}
	other := netip.IPv6Unspecified()
	if gw.Is6() {
		other = netip.IPv4Unspecified()
	}
	second, err := listen(netip.AddrPortFrom(other, first.LocalAddr().Port()), tun.DefaultMark)
	if err != nil {
		second, err = listen(netip.AddrPortFrom(other, 0), tun.DefaultMark)
	}
	if err != nil {
		log.Info("no UDP socket for the other address family; moves stay within one", "err", err)
		return socks, nil
	}
	return append(socks, second), nil
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// dnsDomains merges the profile's dns_domains with the gateway's (RFC
// 8598), the profile's first, without repeats.
func dnsDomains(profile, gateway []string) []string {
	out := slices.Clone(profile)
	for _, d := range gateway {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}
