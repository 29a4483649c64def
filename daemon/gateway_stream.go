package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/roam-vpn/roam/netpath"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/tcpencap"
)

// streamFirstRecord is how long an accepted stream may take to deliver its
// first record (after the prefix, and the TLS handshake); one that does not
// is closed, so idle connections cannot pile up.
const streamFirstRecord = 10 * time.Second

// gatewayStreams accepts clients' RFC 9329 streams (tcp = true, tls_port).
// What one source can make it hold is bounded: StreamsPerSource open
// streams, and per stream the decoder's two records at most while the
// first IKE_SA_INIT is still to come.
type gatewayStreams struct {
	gw      *gateway
	ctx     context.Context
	limit   int
	tlsConf *tls.Config // nil without tls_port

	mu        sync.Mutex
	perSource map[netip.Addr]int
	wg        sync.WaitGroup

	garbage, refused, accepted atomic.Uint64
}

// listenStreams opens the stream listeners on addrs and serves them until
// ctx ends; listen adds the addresses an HA standby opens on takeover.
func (gw *gateway) listenStreams(ctx context.Context, addrs []netip.Addr) (*gatewayStreams, error) {
	t := gw.cfg.GatewayTransport
	if !t.TCP && t.TLSPort == 0 {
		return nil, nil
	}
	gs := &gatewayStreams{gw: gw, ctx: ctx, limit: t.StreamsPerSource, perSource: map[netip.Addr]int{}}
	if t.TLSPort != 0 {
		cert, err := tls.LoadX509KeyPair(t.TLSCert, t.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls_cert/tls_key: %w", err)
		}
		gs.tlsConf = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	}
	if err := gs.listen(addrs); err != nil {
		return nil, err
	}
	return gs, nil
}

// listen opens the stream listeners on addrs, all or none, and serves them
// until the gateway's context ends.
func (gs *gatewayStreams) listen(addrs []netip.Addr) error {
	t := gs.gw.cfg.GatewayTransport
	var ls []net.Listener
	closeAll := func() {
		for _, l := range ls {
			l.Close()
		}
	}
	for _, a := range addrs {
		if t.TCP {
			l, err := net.Listen("tcp", netip.AddrPortFrom(a, t.TCPPort).String())
			if err != nil {
				closeAll()
				return fmt.Errorf("tcp: %w", err)
			}
			ls = append(ls, l)
		}
		if gs.tlsConf != nil {
			l, err := net.Listen("tcp", netip.AddrPortFrom(a, t.TLSPort).String())
			if err != nil {
				closeAll()
				return fmt.Errorf("tls_port: %w", err)
			}
			ls = append(ls, tls.NewListener(l, gs.tlsConf))
		}
	}
	if len(ls) == 0 {
		return nil
	}
	for _, l := range ls {
		gs.wg.Add(1)
		go func() { defer gs.wg.Done(); gs.accept(gs.ctx, l) }()
	}
	gs.wg.Add(1)
	go func() { defer gs.wg.Done(); <-gs.ctx.Done(); closeAll() }()
	return nil
}

// wait returns when every listener and stream has ended.
func (gs *gatewayStreams) wait() {
	if gs != nil {
		gs.wg.Wait()
	}
}

func (gs *gatewayStreams) accept(ctx context.Context, l net.Listener) {
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			gs.gw.log.Debug("stream accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		src := tcpencap.AddrPort(nc.RemoteAddr()).Addr()
		gs.mu.Lock()
		full := gs.perSource[src] >= gs.limit
		if !full {
			gs.perSource[src]++
		}
		gs.mu.Unlock()
		if full {
			gs.refused.Add(1)
			nc.Close()
			continue
		}
		gs.accepted.Add(1)
		gs.wg.Add(1)
		go func() {
			defer gs.wg.Done()
			gs.serve(ctx, nc)
			gs.mu.Lock()
			if gs.perSource[src]--; gs.perSource[src] <= 0 {
				delete(gs.perSource, src)
			}
			gs.mu.Unlock()
		}()
	}
}

// firstRecord lifts the accepted stream's deadline once a record came.
type firstRecord struct {
	*esp.StreamInput
	nc   net.Conn
	seen bool
}

func (f *firstRecord) Record(rec []byte, now int64) {
	if !f.seen {
		f.seen = true
		f.nc.SetReadDeadline(time.Time{})
	}
	f.StreamInput.Record(rec, now)
}

// serve runs one client stream: the dataplane sends to the client's
// address and port through it while it lasts.
func (gs *gatewayStreams) serve(ctx context.Context, nc net.Conn) {
	remote, local := tcpencap.AddrPort(nc.RemoteAddr()), tcpencap.AddrPort(nc.LocalAddr())
	nc.SetReadDeadline(time.Now().Add(streamFirstRecord))
	s := tcpencap.NewConn(nc, false)
	path := netpath.Path{Local: local, Remote: remote, Stream: true}
	dp := gs.gw.dp
	dp.AddStream(remote, s)
	defer dp.RemoveStream(remote, s)
	err := s.Run(ctx, &firstRecord{StreamInput: dp.NewStreamInput(path), nc: nc}, true)
	switch {
	case errors.Is(err, tcpencap.ErrGarbage):
		gs.garbage.Add(1)
		gs.gw.log.Info("closed a stream that sent garbage", "remote", remote, "err", err)
	case ctx.Err() == nil:
		gs.gw.log.Debug("stream ended", "remote", remote, "err", err)
	}
}

// transportOf names the transport of a client's path.
func (gw *gateway) transportOf(path netpath.Path) string {
	switch {
	case !path.Stream:
		return config.TransportUDP
	case gw.cfg.TLSPort != 0 && path.Local.Port() == gw.cfg.TLSPort:
		return config.TransportTLS
	}
	return config.TransportTCP
}
