package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/roam-vpn/roam/netpath"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/tcpencap"
	"github.com/roam-vpn/roam/tun"
)

// udpFallbackAfter is how long transport = "auto" waits for any answer to
// IKE_SA_INIT over UDP before it tries TCP in the same attempt: two
// transmissions (0.5 s apart) unanswered, well within the ten seconds after
// which a gateway counts as unreachable.
const udpFallbackAfter = 1200 * time.Millisecond

// streamDialTimeout bounds one TCP (and TLS) connect to the gateway.
const streamDialTimeout = 5 * time.Second

// clientStream is a connection's RFC 9329 stream to its gateway. It
// outlives IKE SAs like the UDP sockets do, and reconnects on its own when
// the TCP connection breaks.
type clientStream struct {
	cl   *tcpencap.Client
	path netpath.Path
	tls  bool
	stop context.CancelFunc
}

// transportName is what status and the established event say for path.
func (c *conn) transportName(path netpath.Path) string {
	if !path.Stream {
		return config.TransportUDP
	}
	c.mu.Lock()
	st := c.stream
	c.mu.Unlock()
	if st != nil && st.tls {
		return config.TransportTLS
	}
	return config.TransportTCP
}

// publishKey carries, in a dial's context, the function that makes a new
// SA the one the dataplane hands the gateway's IKE messages to.
type publishKey struct{}

// publishSA hands sa its inbound IKE messages from now on (establish).
func publishSA(ctx context.Context, sa *ike.SA) {
	if publish, ok := ctx.Value(publishKey{}).(func(*ike.SA)); ok {
		publish(sa)
	}
}

// dialTransport starts the IKE SA over the profile's transport: cfg.Path
// is the UDP path; auto falls back to a stream when UDP gets no answer.
func (c *conn) dialTransport(ctx context.Context, cfg ike.InitiatorConfig, events chan ike.Event) (*ike.SA, error) {
	t := c.profile.Transport
	switch t.Mode {
	case config.TransportTCP, config.TransportTLS:
		path, err := c.ensureStream(ctx, cfg.Path.Remote.Addr(), t.Mode == config.TransportTLS)
		if err != nil {
			return nil, err
		}
		cfg.Path = path
		return ike.Dial(ctx, cfg, ikeOut{c}, events)
	case config.TransportAuto:
	default:
		sa, err := ike.Dial(ctx, cfg, ikeOut{c}, events)
		if err == nil && cfg.First != nil {
			c.tookOver(ctx, sa)
		}
		return sa, err
	}
	uctx, ucancel := context.WithCancel(ctx)
	udpEvents := make(chan ike.Event, 16)
	sa, err := ike.Dial(uctx, cfg, ikeOut{c}, udpEvents)
	if err != nil {
		ucancel()
		return nil, err
	}
	// Its answer must reach it while we wait for one below.
	publishSA(ctx, sa)
	if cfg.First != nil {
		c.tookOver(ctx, sa)
	}
	keepUDP := func() (*ike.SA, error) {
		// The UDP SA keeps its events; forward them, and drop the SA with
		// the dial's context.
		go func() {
			defer ucancel()
			for {
				select {
				case ev := <-udpEvents:
					select {
					case events <- ev:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
		return sa, nil
	}
	if answered(sa, udpFallbackAfter) {
		return keepUDP()
	}
	// No answer yet. A gateway that takes no streams (refused, or no
	// route) keeps the UDP attempt going with its full retransmission
	// schedule: it may just be slow or still starting.
	path, err := c.ensureStream(ctx, cfg.Path.Remote.Addr(), false)
	if err != nil {
		c.log.Info("no answer over UDP yet, and no TCP stream; UDP goes on", "after", udpFallbackAfter, "tcp_port", t.TCPPort, "err", err)
		return keepUDP()
	}
	ucancel()
	c.log.Info("no answer over UDP; using TCP", "after", udpFallbackAfter, "tcp_port", t.TCPPort)
	cfg.Path = path
	return ike.Dial(ctx, cfg, ikeOut{c}, events)
}

// answered reports whether sa hears from its peer within d.
func answered(sa *ike.SA, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	select {
	case <-sa.Heard():
		return true
	case <-deadline.C:
	case <-sa.Done():
	}
	return !sa.LastHeard().IsZero()
}

// ensureStream returns the stream path to gw, opening the stream first
// when there is none (or it goes to another address or transport).
func (c *conn) ensureStream(ctx context.Context, gw netip.Addr, useTLS bool) (netpath.Path, error) {
	remote := netip.AddrPortFrom(gw, c.streamPort(useTLS))
	c.mu.Lock()
	st := c.stream
	c.mu.Unlock()
	if st != nil && st.path.Remote == remote && st.tls == useTLS {
		return st.path, nil
	}
	return c.openStream(ctx, remote, useTLS, tcpencap.DialOptions{})
}

func (c *conn) streamPort(useTLS bool) uint16 {
	if useTLS {
		return c.profile.Transport.TLSPort
	}
	return c.profile.Transport.TCPPort
}

// openStream opens a new stream to remote and makes it the connection's
// one: the dataplane's stream paths to remote go through it from now on.
func (c *conn) openStream(ctx context.Context, remote netip.AddrPort, useTLS bool, o tcpencap.DialOptions) (netpath.Path, error) {
	o.Mark = tun.DefaultMark
	if useTLS {
		var err error
		if o.TLS, err = clientTLSConfig(c.profile); err != nil {
			return netpath.Path{}, err
		}
	}
	cl := tcpencap.NewClient(func(ctx context.Context) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, streamDialTimeout)
		defer cancel()
		return tcpencap.Dial(dctx, remote, o)
	})
	if err := cl.Connect(ctx); err != nil {
		return netpath.Path{}, err
	}
	local := tcpencap.AddrPort(cl.Local())
	path := netpath.Path{Local: local, Remote: remote, IfIndex: o.IfIndex, Stream: true}
	sctx, stop := context.WithCancel(c.life)
	next := &clientStream{cl: cl, path: path, tls: useTLS, stop: stop}
	if old := c.swapStream(next); old != nil {
		old.stop()
	}
	c.dp.AddStream(remote, cl)
	in := c.dp.NewStreamInput(path)
	go cl.Run(sctx, in, func() { c.streamReconnected(sctx, path) })
	c.log.Info("stream to the gateway open", "transport", map[bool]string{false: "tcp", true: "tls"}[useTLS], "local", local, "remote", remote)
	return path, nil
}

// closeStream ends the connection's stream after the SA moved off it.
func (c *conn) closeStream() {
	if st := c.swapStream(nil); st != nil {
		st.stop()
		c.dp.RemoveStream(st.path.Remote, st.cl)
	}
}

// swapStream makes next (nil: none) the connection's stream and returns
// the one it replaces, for the caller to stop.
func (c *conn) swapStream(next *clientStream) *clientStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.stream
	c.stream = next
	return old
}

// streamReconnected tells the gateway about a new stream after the old one
// broke (RFC 9329 section 6): it learns the stream from an authenticated
// request on it, an UPDATE_SA_ADDRESSES with MOBIKE (only that moves a
// MOBIKE SA), a liveness check otherwise.
func (c *conn) streamReconnected(ctx context.Context, path netpath.Path) {
	sa := c.sa.Load()
	c.mu.Lock()
	current := c.stream != nil && c.stream.path == path
	c.mu.Unlock()
	if sa == nil || sa.Path() != path || !current {
		return
	}
	c.log.Info("stream to the gateway reopened")
	c.mu.Lock()
	mobike := c.est != nil && c.est.PeerMOBIKE && c.profile.MOBIKE
	c.mu.Unlock()
	go func() {
		if mobike {
			if _, err := sa.UpdateAddresses(ctx, []netpath.Path{path}); err != nil {
				c.log.Warn("address update over the new stream", "err", err)
			}
			return
		}
		if err := sa.CheckLiveness(ctx); err != nil {
			c.log.Warn("liveness check over the new stream", "err", err)
		}
	}()
}

// clientTLSConfig verifies the gateway like any TLS server: the chain
// against tls_ca (or the profile's ca; "system": the system roots) and
// the name against remote_id.
func clientTLSConfig(p *config.Profile) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: p.RemoteID}
	if p.RemoteID == "" {
		return nil, errors.New(`remote_id: missing (transport = "tls" checks the gateway's certificate against it)`)
	}
	if p.Transport.TLSCA != config.TLSCASystem {
		pem, err := os.ReadFile(p.Transport.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_ca: %s holds no PEM certificate", p.Transport.TLSCA)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// update moves sa to the first of paths that answers UPDATE_SA_ADDRESSES,
// over the profile's transports (RFC 9329 section 7): with auto, UDP
// first; when UDP gets no answer within udpFallbackAfter (or the profile
// says tcp or tls), a new stream opened on the first path's uplink
// carries the update instead. A UDP move leaves the stream behind.
func (c *conn) update(ctx context.Context, sa *ike.SA, paths []netpath.Path) (ike.MoveResult, error) {
	mode := c.profile.Transport.Mode
	// With auto, a connection that started on UDP falls back to a stream
	// too: the new uplink may pass no UDP. A gateway that takes no streams
	// refuses the connect, and the UDP update goes on as it was.
	if mode == config.TransportUDP || len(paths) == 0 {
		return sa.UpdateAddresses(ctx, paths)
	}
	cur := sa.Path()
	var udp []netpath.Path
	for _, p := range paths {
		if !p.Stream {
			udp = append(udp, c.udpPath(p, cur))
		}
	}
	useTLS := mode == config.TransportTLS
	// The current stream still counts when it is among the paths (a
	// refresh of the path in use); otherwise a new one on the first path's
	// uplink.
	stream := func() (netpath.Path, error) {
		for _, p := range paths {
			if p.Stream && p == cur {
				return p, nil
			}
		}
		first := paths[0]
		sp, err := c.openStream(ctx, netip.AddrPortFrom(first.Remote.Addr(), c.streamPort(useTLS)), useTLS,
			tcpencap.DialOptions{Local: first.Local.Addr(), IfIndex: first.IfIndex})
		if err != nil {
			return netpath.Path{}, fmt.Errorf("stream from %s: %w", first.Local.Addr(), err)
		}
		return sp, nil
	}
	if mode == config.TransportAuto && len(udp) > 0 {
		type outcome struct {
			r   ike.MoveResult
			err error
		}
		res := make(chan outcome, 1)
		go func() {
			r, err := sa.UpdateAddresses(ctx, udp)
			res <- outcome{r, err}
		}()
		select {
		case o := <-res:
			if o.err == nil {
				c.closeStream()
			}
			return o.r, o.err
		case <-time.After(udpFallbackAfter):
		}
		// UDP is slow or blocked: a stream joins the update in flight (the
		// newest paths win, both calls end alike). A gateway that takes no
		// streams refuses it, and the UDP update goes on as it was.
		sp, err := stream()
		if err != nil {
			o := <-res
			if o.err == nil {
				c.closeStream()
			}
			return o.r, o.err
		}
		c.log.Info("no answer over UDP on the new path; moving to TCP", "local", sp.Local)
		r, err := sa.UpdateAddresses(ctx, []netpath.Path{sp})
		<-res
		return r, err
	}
	sp, err := stream()
	if err != nil {
		return ike.MoveResult{}, err
	}
	return sa.UpdateAddresses(ctx, []netpath.Path{sp})
}

// udpPath is p as a UDP path: mobility derives candidates from the current
// path, whose ports are a stream's while the tunnel runs over one.
func (c *conn) udpPath(p, cur netpath.Path) netpath.Path {
	if !cur.Stream {
		return p
	}
	port := c.portV4
	if p.Remote.Addr().Is6() {
		port = c.portV6
	}
	p.Local = netip.AddrPortFrom(p.Local.Addr(), port)
	p.Remote = netip.AddrPortFrom(p.Remote.Addr(), 4500)
	return p
}

// tookOver starts the dataplane for an SA that took over the IKE_SA_INIT
// roam connect sent (Handoff): only once the SA is published, since the
// gateway's answer may be waiting in the socket and the dataplane's
// first read would otherwise find no SA for it. The device waits for the
// next send (IKE_AUTH, ikeOut), as it waits for IKE_SA_INIT's otherwise:
// its creation, a few milliseconds of the only P with a cold heap (the
// GRO tables' allocations start a GC cycle), would come between the
// gateway's answer, which may be waiting already, and IKE_AUTH; after
// that it has the round trip to itself.
func (c *conn) tookOver(ctx context.Context, sa *ike.SA) {
	publishSA(ctx, sa)
	if c.startDataplane != nil {
		c.startDataplane()
	}
}

// ikeOut is the IKE SAs' transport: the dataplane's sockets and stream.
// The first message sent starts the dataplane's loops and the TUN
// device's creation (lateTUN), which then run while the gateway answers.
type ikeOut struct{ c *conn }

func (o ikeOut) SendIKE(pkt []byte, path netpath.Path) error {
	err := o.c.dp.SendIKE(pkt, path)
	o.c.lateTUN.start()
	return err
}
