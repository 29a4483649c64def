package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/tun"
)

// keepaliveInterval is RFC 3948's suggestion; NAT bindings for UDP rarely
// live shorter.
const keepaliveInterval = 20 * time.Second

// closeTimeout bounds the DELETE exchange on disconnect: a gateway that does
// not answer must not hold the user's disconnect hostage.
const closeTimeout = 3 * time.Second

// conn is one client tunnel: an IKE SA, its Child SAs installed in the
// dataplane, and the TUN device they carry traffic for.
type conn struct {
	profile *config.Profile
	log     *slog.Logger
	emit    func(Event)

	cancel context.CancelFunc
	dev    *tun.Device
	dp     *esp.Dataplane
	dpDone chan struct{}
	sa     atomic.Pointer[ike.SA]
	peer   *esp.Peer
	gw     netip.AddrPort

	mu          sync.Mutex
	est         *ike.Established
	established time.Time
	ifname      string
	state       string
	nat         bool
	pathChanges int
	life        context.Context

	// ending is the reason for an end the connection decided itself (the
	// outage limit); it wins over the nil of the IKE DELETE that follows.
	ending error

	closeOnce sync.Once
	done      chan struct{}
	err       error
}

// DialTunnel connects a profile: it returns once the tunnel carries traffic,
// or with an error whose text is the reason for the user.
func DialTunnel(ctx context.Context, p *config.Profile, emit func(Event)) (Tunnel, error) {
	log := slog.Default().With("profile", p.Name)
	gw, err := resolveGateway(ctx, p)
	if err != nil {
		return nil, err
	}
	route, err := netmon.RouteTo(gw.Addr(), tun.DefaultMark)
	if err != nil {
		return nil, fmt.Errorf("gateway unreachable: %w", err)
	}
	localAuth, peerAuth, err := authenticators(p)
	if err != nil {
		return nil, err
	}

	// The connection outlives the connect request, so it gets its own
	// context; the request's ctx only bounds the wait for establishment.
	life, cancel := context.WithCancel(context.Background())
	c := &conn{profile: p, log: log, emit: emit, cancel: cancel, gw: gw, done: make(chan struct{}), state: "connecting", life: life}
	fail := func(err error) (Tunnel, error) {
		c.teardown(err)
		return nil, err
	}

	// With MOBIKE the tunnel may move to an IPv6 outer path later: size
	// the inner MTU for the larger header from the start, as an MTU that
	// shrinks under open TCP connections would cost them packets.
	c.dev, err = tun.Create(tunName(p.Name), tun.MTUFor(route.MTU, gw.Addr().Is6() || p.MOBIKE))
	if err != nil {
		return fail(err)
	}
	c.ifname = route.IfName
	c.dp = esp.NewDataplane(c.dev.Dev(), c.handleIKE, log)
	socks, err := clientSockets(gw.Addr(), p.MOBIKE, log)
	if err != nil {
		return fail(err)
	}
	sock := socks[0]
	for _, s := range socks {
		c.dp.AddSocket(s)
	}
	c.dpDone = make(chan struct{})
	go func() {
		defer close(c.dpDone)
		if err := c.dp.Run(life); err != nil && life.Err() == nil {
			log.Error("dataplane stopped", "err", err)
		}
	}()

	events := make(chan ike.Event, 16)
	cfg := ike.InitiatorConfig{
		Path:      esp.Path{Local: netip.AddrPortFrom(route.Src, sock.LocalPort()), Remote: gw, IfIndex: route.IfIndex},
		LocalAuth: localAuth,
		PeerAuth:  peerAuth,
		RemoteID:  p.RemoteID,
		IKE:       proposals(p.IKE),
		ESP:       proposals(p.ESP),
		RemoteTS:  p.RemoteTS,
		VirtualIP: p.VirtualIP,
		MOBIKE:    p.MOBIKE,
		// Unknown path MTU: the fragments take RFC 7383's safe sizes.
		NoFragmentation: !p.Fragmentation,
		ChildRekeyTime:  p.ChildRekey, ChildLifeTime: p.ChildLife, RekeyJitter: p.ChildLife - p.ChildRekey,
		IKERekeyTime: p.IKERekey,
		ForbidNAT:    !p.AllowNAT,
		// Short first timeouts: an unreachable gateway is reported within
		// about ten seconds instead of strongSwan's minutes.
		Retransmit: ike.ConnectRetransmit,
		Log:        log,
	}
	emit(Event{Event: "connecting", Profile: p.Name, To: gw.String(), Interface: route.IfName})
	sa, err := ike.Dial(life, cfg, c.dp, events)
	if err != nil {
		return fail(err)
	}
	c.sa.Store(sa)

	select {
	case ev := <-events:
		switch ev := ev.(type) {
		case *ike.Established:
			if err := c.install(ev); err != nil {
				sa.Close(ctx)
				return fail(err)
			}
		case *ike.Deleted:
			return fail(userError(ev.Reason))
		default:
			return fail(fmt.Errorf("unexpected IKE event %T before establishment", ev))
		}
	case <-ctx.Done():
		return fail(fmt.Errorf("connect cancelled: %w", ctx.Err()))
	}
	go c.watch(events)
	return c, nil
}

// install puts the negotiated Child SAs into the dataplane and configures
// the TUN device for them.
func (c *conn) install(est *ike.Established) error {
	c.peer = c.dp.NewPeer(est.Path)
	var routes []netip.Prefix
	for _, ch := range est.Children {
		remote := selectorsToPrefixes(ch.RemoteTS)
		if err := c.installChild(ch, remote, false); err != nil {
			return err
		}
		routes = append(routes, remote...)
	}
	for _, a := range est.VirtualIPs {
		if err := c.dev.AddAddress(netip.PrefixFrom(a, a.BitLen())); err != nil {
			return err
		}
	}
	if err := c.dev.AddRoutes(routes, tun.DefaultMark, tun.DefaultTable); err != nil {
		return err
	}
	if c.profile.DNS && len(est.DNS) > 0 {
		full := false
		for _, r := range routes {
			full = full || r.Bits() == 0
		}
		if err := c.dev.SetDNS(tun.DNSOptions{Servers: est.DNS, FullTunnel: full}); err != nil {
			return err
		}
	}
	if est.UDPEncap || est.NATLocal {
		c.peer.SetKeepalive(keepaliveInterval)
	}
	c.mu.Lock()
	c.est, c.established, c.state, c.nat = est, time.Now(), "established", est.NATLocal
	c.mu.Unlock()
	if c.profile.MOBIKE && est.PeerMOBIKE {
		if err := c.startMobility(c.life, est.SA); err != nil {
			return err
		}
	}
	ev := Event{Event: "established", Profile: c.profile.Name, To: est.Path.Remote.String(), Interface: c.ifname}
	if len(est.VirtualIPs) > 0 {
		ev.VirtualIP = est.VirtualIPs[0].String()
	}
	if len(est.Children) > 0 {
		ev.Proposal = est.Children[0].Proposal
	}
	c.emit(ev)
	return nil
}

// installChild puts a Child SA pair into the dataplane; pending (a rekey we
// answered) keeps outbound traffic on the old pair until the peer uses the
// new one.
func (c *conn) installChild(ch ike.ChildSA, remote []netip.Prefix, pending bool) error {
	cfg, err := childConfig(ch, remote, pending)
	if err != nil {
		return err
	}
	return c.dp.InstallChild(c.peer, cfg)
}

// childConfig makes the dataplane's SA pair from a negotiated Child SA.
func childConfig(ch ike.ChildSA, remote []netip.Prefix, pending bool) (esp.ChildConfig, error) {
	cipher, err := espCipher(ch.Transforms)
	if err != nil {
		return esp.ChildConfig{}, fmt.Errorf("child SA %08x: %w", ch.SPIIn, err)
	}
	in, err := esp.NewInboundSAWith(cipher, ch.SPIIn, ch.KeyIn, ch.ESN)
	if err != nil {
		return esp.ChildConfig{}, fmt.Errorf("child SA %08x: %w", ch.SPIIn, err)
	}
	out, err := esp.NewOutboundSAWith(cipher, ch.SPIOut, ch.KeyOut, ch.ESN)
	if err != nil {
		return esp.ChildConfig{}, fmt.Errorf("child SA %08x: %w", ch.SPIOut, err)
	}
	return esp.ChildConfig{In: in, Out: out, Remote: remote, Proposal: ch.Proposal, OutboundPending: pending}, nil
}

// espCipher maps a Child SA's negotiated encryption transform to the
// dataplane's cipher; the dataplane has AEAD ciphers with 16-octet ICVs only.
func espCipher(ts []wire.Transform) (esp.Cipher, error) {
	for _, t := range ts {
		if t.Type != wire.TransformEncr {
			continue
		}
		switch t.ID {
		case ikecrypto.EncrAESGCM16:
			return esp.AESGCM16, nil
		case ikecrypto.EncrChaCha20Poly1305:
			return esp.ChaCha20Poly1305, nil
		}
		return 0, fmt.Errorf("ESP encryption transform %d is not supported by the dataplane", t.ID)
	}
	return 0, errors.New("no ESP encryption transform negotiated")
}

// watch follows the IKE SA after establishment until it ends.
func (c *conn) watch(events <-chan ike.Event) {
	for ev := range events {
		switch ev := ev.(type) {
		case *ike.ChildRekeyed:
			// The new SA goes in before the old one leaves (on a DELETE),
			// so no packet finds neither. When we only answered the rekey,
			// we send on it once the peer shows it has installed it.
			if err := c.installChild(ev.Child, selectorsToPrefixes(ev.Child.RemoteTS), !ev.Initiated); err != nil {
				c.log.Error("installing rekeyed child SA", "err", err)
				c.emit(Event{Event: EventError, Reason: err.Error()})
				continue
			}
			c.emit(Event{Event: EventRekeyed, Reason: fmt.Sprintf("child SA %08x replaced by %08x", ev.OldSPIIn, ev.Child.SPIIn)})
		case *ike.IKERekeyed:
			c.emit(Event{Event: EventRekeyed, Reason: fmt.Sprintf("IKE SA now %016x_i %016x_r", ev.SPIi, ev.SPIr)})
		case *ike.ChildDeleted:
			c.dp.RetireChild(ev.SPIIn, esp.RetireGrace)
		case *ike.Deleted:
			reason := ev.Reason
			if errors.Is(reason, ike.ErrClosed) {
				reason = nil
			}
			c.teardown(userError(reason))
			return
		}
	}
}

func (c *conn) handleIKE(pkt []byte, path esp.Path) {
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
		c.cancel()
		// Closing the device ends the dataplane's blocked TUN read, so it
		// comes before waiting for the dataplane.
		if c.dev != nil {
			if err := c.dev.Close(); err != nil {
				c.log.Error("TUN cleanup", "err", err)
			}
		}
		if c.dpDone != nil {
			<-c.dpDone
		}
		c.mu.Lock()
		c.state = "disconnected"
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

// Close sends the IKE DELETE (bounded in time) and tears the tunnel down.
func (c *conn) Close(ctx context.Context) error {
	if sa := c.sa.Load(); sa != nil {
		ctx, cancel := context.WithTimeout(ctx, closeTimeout)
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
func (c *conn) Status() Status {
	c.mu.Lock()
	est, at, state, ifname, nat, changes := c.est, c.established, c.state, c.ifname, c.nat, c.pathChanges
	c.mu.Unlock()
	st := Status{Name: c.profile.Name, State: state, Gateway: c.gw.String(), Interface: ifname, MOBIKE: c.profile.MOBIKE, NAT: nat, PathChanges: changes}
	if est == nil {
		return st
	}
	path := est.Path
	if sa := c.sa.Load(); sa != nil {
		path = sa.Path()
		spii, spir := sa.SPIs()
		st.IKESPIi, st.IKESPIr = fmt.Sprintf("%016x", spii), fmt.Sprintf("%016x", spir)
	}
	st.Local, st.Remote = path.Local.String(), path.Remote.String()
	if state == stateSuspended {
		st.Local = "" // no uplink: the last one is in the suspended event
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
	for _, cs := range c.dp.ChildStats(c.peer) {
		st.Children = append(st.Children, childStatus(cs))
	}
	d := c.dp.Drops()
	st.Drops = &Drops{Malformed: d.Malformed, UnknownSPI: d.UnknownSPI, Replayed: d.Replayed, BadICV: d.BadICV, NoPath: d.NoPath}
	return st
}

func childStatus(cs esp.ChildStats) ChildStatus {
	return ChildStatus{
		SPIIn: fmt.Sprintf("%08x", cs.SPIIn), SPIOut: fmt.Sprintf("%08x", cs.SPIOut),
		BytesIn: cs.BytesIn, BytesOut: cs.BytesOut, PacketsIn: cs.PacketsIn, PacketsOut: cs.PacketsOut,
		Proposal: cs.Proposal,
	}
}

// userError turns an engine failure into the one line `roam connect`
// prints; the engine's errors already name the notify or exchange.
func userError(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, ike.ErrAuthenticationFailed):
		return fmt.Errorf("authentication failed: %w", err)
	case errors.Is(err, ike.ErrNoProposalChosen):
		return fmt.Errorf("no proposal chosen: %w", err)
	case errors.Is(err, ike.ErrTSUnacceptable):
		return fmt.Errorf("traffic selectors unacceptable: %w", err)
	case errors.Is(err, ike.ErrUnreachable):
		return err
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
		certPEM, err := os.ReadFile(p.Cert)
		if err != nil {
			return nil, nil, fmt.Errorf("cert: %w", err)
		}
		keyPEM, err := os.ReadFile(p.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("key: %w", err)
		}
		caPEM, err := os.ReadFile(p.CA)
		if err != nil {
			return nil, nil, fmt.Errorf("ca: %w", err)
		}
		local, err := ike.NewCertAuth(p.LocalID, certPEM, keyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("cert/key: %w", err)
		}
		peer, err := ike.NewCertPeer(p.RemoteID, caPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("ca: %w", err)
		}
		return local, peer, nil
	case config.AuthEAPMSCHAPv2, config.AuthEAPTLS:
		return eapAuthenticators(p)
	}
	return nil, nil, fmt.Errorf("auth: %q is not psk, pubkey, %s or %s", p.Auth, config.AuthEAPMSCHAPv2, config.AuthEAPTLS)
}

func proposals(ps []config.Proposal) []ike.Proposal {
	out := make([]ike.Proposal, len(ps))
	for i, p := range ps {
		out[i] = ike.Proposal(p)
	}
	return out
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
func clientSockets(gw netip.Addr, mobike bool, log *slog.Logger) ([]*esp.Socket, error) {
	first, err := esp.ListenUDP(netip.AddrPortFrom(unspecified(gw), 0), tun.DefaultMark)
	if err != nil {
		return nil, fmt.Errorf("UDP socket: %w", err)
	}
	socks := []*esp.Socket{first}
	if !mobike {
		return socks, nil
	}
	other := netip.IPv6Unspecified()
	if gw.Is6() {
		other = netip.IPv4Unspecified()
	}
	second, err := esp.ListenUDP(netip.AddrPortFrom(other, first.LocalPort()), tun.DefaultMark)
	if err != nil {
		second, err = esp.ListenUDP(netip.AddrPortFrom(other, 0), tun.DefaultMark)
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

func selectorsToPrefixes(ts []wire.TrafficSelector) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range ts {
		out = append(out, wire.RangePrefixes(t.Start, t.End)...)
	}
	return out
}
