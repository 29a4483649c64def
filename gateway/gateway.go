package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/tun"
)

// gatewayTUN is the responder's device. Its MTU is the largest inner packet
// an IPv4 path over Ethernet carries: no smaller than any client's TUN
// device (a client's own MTU assumes an IPv6 outer header), so a full-sized
// segment the host sends a client fits the device and is held to that
// client's path by the dataplane's per-path check (ICMP to the host when it
// does not fit). At 1400 a host's first full segments to a 1418 client were
// refused here and retransmitted.
const gatewayTUN = "roam-gw"

// gatewayUplinkMTU is the Ethernet uplink the gateway's TUN MTU assumes.
const gatewayUplinkMTU = 1500

// gateway is a running responder: every client's IKE SA and Child SAs, one
// TUN device for all of them, and the sockets on each listen address.
type gateway struct {
	cfg  *config.Gateway
	log  *slog.Logger
	emit func(report.Event)

	dev    *tun.Device
	dp     *esp.Dataplane
	resp   *ike.Responder
	cancel context.CancelFunc
	done   chan struct{}
	err    error

	mu      sync.Mutex
	clients map[*ike.SA]*gatewayClient
	sw      gatewaySwitch   // gateway_switch.go
	ha      *gatewayHA      // gateway_ha.go; nil for a single node
	streams *gatewayStreams // gateway_stream.go; nil without tcp or tls_port
}

type gatewayClient struct {
	est  *ike.Established
	peer *esp.Peer
	at   time.Time
	// replaced: a reauthentication's new SA took over (gateway_reauth.go).
	replaced bool
	// health: whether the client's traffic flows (gateway_health.go),
	// under gateway.mu.
	health ikeesp.HealthTracker
}

// RunGateway starts the responder for g; it serves until ctx ends.
func RunGateway(ctx context.Context, g *config.Gateway, emit func(report.Event)) (report.GatewayHandle, error) {
	log := report.LoggerFrom(ctx).With("gateway", g.LocalID)
	local, localFor, peerFor, certReqs, err := gatewayAuth(g)
	if err != nil {
		return nil, err
	}
	eapFor, err := gatewayEAP(g)
	if err != nil {
		return nil, err
	}
	pool, err := ike.NewPool([]netip.Prefix{g.Pool})
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	// The engine (responder, dataplane, streams) runs on life, which
	// outlives ctx by the stop's DELETE exchanges: cancelled together,
	// the SAs would die before telling their clients.
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	gw := &gateway{cfg: g, log: log, emit: emit, cancel: cancel, done: make(chan struct{}), clients: map[*ike.SA]*gatewayClient{}}
	fail := func(err error) (report.GatewayHandle, error) {
		cancel()
		if gw.dev != nil {
			gw.dev.Close()
		}
		return nil, err
	}
	if gw.dev, err = tun.Create(gatewayTUN, tun.MTUFor(gatewayUplinkMTU, false)); err != nil {
		return fail(err)
	}
	peerTS, routed, err := gatewayClientTS(g)
	if err != nil {
		return fail(err)
	}
	if err := gw.dev.AddRoutes(append([]netip.Prefix{g.Pool}, routed...), 0, 0); err != nil {
		return fail(err)
	}
	gw.dp = esp.NewDataplane(gw.dev.Dev(), gw.handleIKE, log)
	if g.HA != nil {
		if gw.ha, err = newGatewayHA(gw, g.HA); err != nil {
			return fail(err)
		}
	}
	for _, a := range gw.startListen() {
		for _, port := range []uint16{500, 4500} {
			s, err := esp.ListenUDP(netip.AddrPortFrom(a, port), 0)
			if err != nil {
				return fail(err)
			}
			gw.transparent(s)
			gw.dp.AddSocket(s)
		}
	}
	events := make(chan ike.Event, 64)
	gw.resp, err = ike.NewResponder(life, ike.ResponderConfig{
		LocalAuth:    local,
		LocalAuthFor: localFor,
		PeerAuth:     peerFor,
		EAPServer:    eapFor,
		CertReqs:     certReqs,
		IKE:          ikeesp.Proposals(g.IKE),
		ESP:          ikeesp.Proposals(g.ESP),
		LocalTS:      g.LocalTS,
		Pool:         pool,
		PeerTS:       peerTS,
		// What one client, or everyone together, can make us hold.
		MaxIKESAs: g.MaxIKESAs, MaxIKESAsPerIdentity: g.MaxIKESAsPerClient,
		MaxChildSAs: g.MaxChildSAs, HalfOpenPerSource: g.HalfOpenPerSource,
		DNS:        g.DNS,
		DNSDomains: g.DNSDomains,
		MOBIKE:     g.MOBIKE,
		// MOBIKE (RFC 4555): our other listen addresses are announced,
		// clients may move only to addresses we can answer from, and ESP
		// follows a move to a new address after the return routability
		// check unless the gateway file turns it off (going ahead within
		// the amplification limit meanwhile, early_move).
		Addresses:           announced(g),
		AcceptPeerAddress:   ike.AcceptRoutable(g.Listen),
		NoReturnRoutability: !g.ReturnRoutability,
		EarlyMove:           g.EarlyMove,
		NoFragmentation:     !g.Fragmentation,
		ChildRekeyTime:      g.ChildRekey, ChildLifeTime: g.ChildLife, RekeyJitter: g.ChildLife - g.ChildRekey,
		IKERekeyTime: g.IKERekey, IKELifeTime: g.IKELife,
		// Reaps clients that vanished without a DELETE (a laptop closed
		// for good), so their addresses go back to the pool.
		DPDDelay: g.DPDDelay,
		Log:      log,
		// RFC 4478: clients are told to authenticate again in time.
		ReauthTime: g.ReauthTime,

		// SWITCH_TO_IP_ADDRESS (gateway_switch.go).
		SwitchNotify:            wire.NotifyType(g.SwitchNotify),
		SwitchRevision:          ikeesp.SwitchRevision(g.SwitchRevision),
		SwitchReturnRoutability: g.SwitchReturnRoutability,
		// RFC 6311 sync support for an HA pair (gateway_ha.go).
		HA: g.HA != nil,
	}, gw.dp, events)
	if err != nil {
		return fail(err)
	}
	if gw.streams, err = gw.listenStreams(life, gw.startListen()); err != nil {
		return fail(err)
	}
	dpDone := make(chan error, 1)
	go func() { dpDone <- gw.dp.Run(life) }()
	waitSwitching := func() {}
	if g.AutoSwitch {
		waitSwitching = gw.startSwitching(ctx)
	}
	waitHA := gw.startHA(ctx)
	go func() {
		defer close(gw.done)
		gw.loop(ctx, events)
		waitSwitching()
		waitHA()
		// A single gateway tells its clients it is going (DELETE), so
		// they reconnect at once instead of after dead-peer detection.
		// An HA node does not: its peer takes the clients' SAs over.
		if gw.ha == nil {
			closeCtx, cancelClose := context.WithTimeout(context.Background(), ikeesp.CloseTimeout)
			gw.resp.Close(closeCtx)
			cancelClose()
		}
		gw.cancel()
		if err := gw.dev.Close(); err != nil {
			log.Error("TUN cleanup", "err", err)
		}
		if err := <-dpDone; err != nil {
			gw.err = err
		}
		gw.streams.wait()
	}()
	return gw, nil
}

func (gw *gateway) handleIKE(pkt []byte, path netpath.Path) { gw.resp.HandlePacket(pkt, path) }

func (gw *gateway) loop(ctx context.Context, events <-chan ike.Event) {
	health := time.NewTicker(gatewayHealthEvery)
	defer health.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-health.C:
			gw.mu.Lock()
			gw.checkClientHealth(now)
			gw.mu.Unlock()
		case ev := <-events:
			if gw.switchEvent(ev) {
				continue
			}
			switch ev := ev.(type) {
			case *ike.Established:
				gw.install(ev)
			case *ike.ChildRekeyed:
				gw.installRekeyed(ev)
			case *ike.ChildCreated:
				gw.installCreated(ev)
			case *ike.IKERekeyed:
				c := gw.client(ev.SA)
				if c != nil {
					gw.emit(report.Event{Event: report.EventRekeyed, Profile: c.est.PeerID, Reason: ikeesp.RekeyedReason(ev)})
				}
			case *ike.ChildDeleted:
				gw.binder().Retire(ev.SPIIn)
			case *ike.PathUpdated:
				c := gw.client(ev.SA)
				switch {
				case c == nil:
				case ev.Unproved:
					// ESP goes ahead within the amplification limit;
					// path-changed waits for the proof.
					gw.binder().MoveUnproved(c.peer, ev.Path, ev.Credit)
				default:
					gw.binder().Move(c.peer, ev.Path)
					if !ev.Back {
						gw.emit(report.Event{Event: report.EventPathChanged, Profile: c.est.PeerID, To: ev.Path.Remote.String(), From: ev.Path.Local.String()})
					}
				}
			case *ike.Deleted:
				gw.remove(ev)
			}
			gw.haEvent(ev)
		}
	}
}

func (gw *gateway) install(est *ike.Established) {
	peer := gw.dp.NewPeer(est.Path)
	peer.SetRTT(ikeesp.IKERTT(est.SA))
	for _, ch := range est.Children {
		if _, err := gw.binder().InstallChild(peer, est.SA, ch, ikeesp.Install{}); err != nil {
			gw.log.Error("installing child SA", "peer", est.PeerID, "err", err)
			gw.emit(report.Event{Event: report.EventError, Profile: est.PeerID, Reason: err.Error()})
		}
	}
	gw.mu.Lock()
	gw.clients[est.SA] = &gatewayClient{est: est, peer: peer, at: time.Now()}
	gw.mu.Unlock()
	ev := report.Event{Event: report.EventEstablished, Profile: est.PeerID, From: est.Path.Remote.String(), To: est.Path.Local.String(), Transport: gw.transportOf(est.Path)}
	if len(est.VirtualIPs) > 0 {
		ev.VirtualIP = est.VirtualIPs[0].String()
	}
	gw.emit(gw.reauthEvent(est, ev))
}

// client is the installed client whose IKE SA is sa, or nil.
func (gw *gateway) client(sa *ike.SA) *gatewayClient {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	return gw.clients[sa]
}

// installRekeyed adds the Child SA a rekey created. When the client ran the
// rekey, the gateway keeps sending on the old pair until the client uses the
// new one or deletes the old, as the client does for the gateway's.
func (gw *gateway) installRekeyed(ev *ike.ChildRekeyed) {
	c := gw.client(ev.SA)
	if c == nil {
		return
	}
	if _, err := gw.binder().InstallRekeyed(c.peer, ev.SA, ev); err != nil {
		gw.log.Error("installing rekeyed child SA", "peer", c.est.PeerID, "err", err)
		gw.emit(report.Event{Event: report.EventError, Profile: c.est.PeerID, Reason: err.Error()})
		return
	}
	gw.emit(report.Event{Event: report.EventRekeyed, Profile: c.est.PeerID, Reason: ikeesp.RekeyedReason(ev)})
}

// installCreated adds a further Child SA the client asked for. It sends at
// once, on the client's packets from its own selectors: the client holds
// ESP for an SPI it has not installed yet for a moment (esp early hold).
func (gw *gateway) installCreated(ev *ike.ChildCreated) {
	c := gw.client(ev.SA)
	if c == nil {
		return
	}
	ch := ev.Child
	cfg, err := gw.binder().InstallChild(c.peer, ev.SA, ch, ikeesp.Install{})
	if err != nil {
		gw.log.Error("installing child SA", "peer", c.est.PeerID, "err", err)
		gw.emit(report.Event{Event: report.EventError, Profile: c.est.PeerID, Reason: err.Error()})
		return
	}
	gw.log.Info("child SA added", "peer", c.est.PeerID, "spi_in", fmt.Sprintf("%08x", ch.SPIIn), "local_ts", cfg.Local)
}

// binder installs the clients' SAs into the gateway's dataplane.
func (gw *gateway) binder() ikeesp.Binder {
	return ikeesp.Binder{DP: gw.dp, RekeyPackets: gw.cfg.ChildRekeyPackets, Log: gw.log}
}

func (gw *gateway) remove(ev *ike.Deleted) {
	gw.mu.Lock()
	c, ok := gw.clients[ev.SA]
	delete(gw.clients, ev.SA)
	gw.mu.Unlock()
	if !ok {
		return
	}
	gw.dp.RemovePeer(c.peer)
	if c.replaced {
		return // the client is still there, on its new SA
	}
	out := report.Event{Event: report.EventDisconnected, Profile: c.est.PeerID}
	if ev.Reason != nil && !errors.Is(ev.Reason, ike.ErrClosed) {
		out.Reason = ev.Reason.Error()
	}
	gw.emit(out)
}

// Status lists the connected clients.
func (gw *gateway) Status() []report.Status {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	var out []report.Status
	now := time.Now()
	for sa, c := range gw.clients {
		path := sa.Path()
		spii, spir := sa.SPIs()
		st := report.Status{
			Name: c.est.PeerID, State: report.StateEstablished, Gateway: path.Local.String(),
			Local: path.Local.String(), Remote: path.Remote.String(), NAT: c.est.NATRemote,
			MOBIKE: c.est.PeerMOBIKE, IKESPIi: fmt.Sprintf("%016x", spii), IKESPIr: fmt.Sprintf("%016x", spir),
			EstablishedAt: c.at, Transport: gw.transportOf(path),
		}
		if gs := gw.streams; gs != nil {
			st.StreamsGarbage, st.StreamsRefused = gs.garbage.Load(), gs.refused.Load()
		}
		if len(c.est.VirtualIPs) > 0 {
			st.VirtualIP = c.est.VirtualIPs[0].String()
		}
		st.Children = ikeesp.ChildStatuses(gw.dp.ChildStats(c.peer))
		d := gw.dp.Drops()
		st.Drops = report.DropsFrom(d)
		ms := gw.dp.MTUStats()
		st.PathMTU, st.ICMPTooBig, st.MSSClamped = c.peer.MTU(), ms.ICMPTooBig, ms.MSSClamped
		gw.clientTraffic(&st, sa, c, now)
		out = append(out, st)
	}
	return out
}

// Wait blocks until the gateway has released everything.
func (gw *gateway) Wait() error {
	<-gw.done
	return gw.err
}

// gatewayAuth builds the responder's authenticators: with PSKs, each client
// has its own key, which also keys our AUTH to that client.
// certReqs name our CA so certificate clients send their certificate
// (strongSwan's default is to send it only when asked).
func gatewayAuth(g *config.Gateway) (local ike.LocalAuth, localFor func(*wire.Identification) (ike.LocalAuth, error),
	peerFor func(*wire.Identification) (ike.PeerAuth, error), certReqs []*wire.CertReq, err error) {
	type clientAuth struct {
		local ike.LocalAuth
		peer  ike.PeerAuth
	}
	byID := map[string]clientAuth{}
	var certLocal ike.LocalAuth
	var certPeer ike.PeerAuth
	if g.Auth == "pubkey" {
		certPEM, err := os.ReadFile(g.Cert)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("cert: %w", err)
		}
		keyPEM, err := os.ReadFile(g.Key)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("key: %w", err)
		}
		caPEM, err := os.ReadFile(g.CA)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("ca: %w", err)
		}
		if certLocal, err = ike.NewCertAuth(g.LocalID, certPEM, keyPEM); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("cert/key: %w", err)
		}
		if certPeer, err = ike.NewCertPeer("", caPEM, ikeesp.SHA1RSA(g.AllowSHA1RSA)...); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("ca: %w", err)
		}
	}
	for _, c := range g.Clients {
		if len(c.PSK) == 0 {
			continue
		}
		id, err := ike.ParseIdentity(c.ID)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("client %q: %w", c.ID, err)
		}
		local, err := ike.NewPSKAuth(g.LocalID, c.PSK)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("local_id: %w", err)
		}
		peer, err := ike.NewPSKPeer(c.ID, c.PSK)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("client %q: %w", c.ID, err)
		}
		byID[ike.FormatIdentity(id)] = clientAuth{local, peer}
	}
	if certPeer != nil {
		certReqs = certPeer.CertReqs()
	}
	local = certLocal
	if local == nil {
		// The identity before IDi is known; the key is never used to sign.
		if local, err = ike.NewPSKAuth(g.LocalID, []byte("identity only")); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("local_id: %w", err)
		}
	}
	lookup := func(id *wire.Identification) (clientAuth, bool) {
		ca, ok := byID[ike.FormatIdentity(id)]
		return ca, ok
	}
	localFor = func(id *wire.Identification) (ike.LocalAuth, error) {
		if ca, ok := lookup(id); ok {
			return ca.local, nil
		}
		if certLocal != nil {
			return certLocal, nil
		}
		return nil, errors.New("unknown client")
	}
	allowed, err := certClientsAllowed(g)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	peerFor = func(id *wire.Identification) (ike.PeerAuth, error) {
		if ca, ok := lookup(id); ok {
			return ca.peer, nil
		}
		if certPeer != nil {
			if !allowed(id) {
				return nil, errors.New("identity not allowed by clients_match")
			}
			return certPeer, nil
		}
		return nil, errors.New("unknown client")
	}
	return local, localFor, peerFor, certReqs, nil
}

// gatewayClientTS returns what each client may use as inner source besides
// its pool address (its ts prefixes), and all of those prefixes, which the
// TUN device must route to us.
func gatewayClientTS(g *config.Gateway) (func(*wire.Identification) []netip.Prefix, []netip.Prefix, error) {
	byID := map[string][]netip.Prefix{}
	var all []netip.Prefix
	for _, c := range g.Clients {
		if len(c.TS) == 0 {
			continue
		}
		id, err := ike.ParseIdentity(c.ID)
		if err != nil {
			return nil, nil, fmt.Errorf("client %q: %w", c.ID, err)
		}
		byID[ike.FormatIdentity(id)] = c.TS
		all = append(all, c.TS...)
	}
	return func(id *wire.Identification) []netip.Prefix { return byID[ike.FormatIdentity(id)] }, all, nil
}

// certClientsAllowed decides which identities may log in with a certificate
// of the gateway's CA: with clients_match, those matching it or listed in
// clients; without, any (the CA alone decides).
func certClientsAllowed(g *config.Gateway) (func(*wire.Identification) bool, error) {
	if g.ClientsMatch == "" {
		return func(*wire.Identification) bool { return true }, nil
	}
	listed := map[string]bool{}
	for _, c := range g.Clients {
		id, err := ike.ParseIdentity(c.ID)
		if err != nil {
			return nil, fmt.Errorf("client %q: %w", c.ID, err)
		}
		listed[strings.ToLower(ike.FormatIdentity(id))] = true
	}
	pattern := strings.ToLower(g.ClientsMatch)
	return func(id *wire.Identification) bool {
		s := strings.ToLower(ike.FormatIdentity(id))
		ok, err := path.Match(pattern, s)
		return listed[s] || (err == nil && ok)
	}, nil
}
