package tunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"
	"github.com/roam-vpn/roam/tun"
)

// Handoff is the start of a connection made by another process: `roam
// connect` that has to start the daemon resolves the gateway, opens the
// tunnel's sockets and sends IKE_SA_INIT (Presend) while the daemon
// starts, and passes them with its connect request. The daemon's Dial goes
// on from the gateway's answer (ike.InitiatorConfig.First), so the
// daemon's start overlaps the first round trip instead of preceding it.
type Handoff struct {
	Profile string
	Gateway netip.AddrPort
	Route   netmon.Route
	First   ike.FirstMessage
	socks   []esp.Conn
}

// ErrNoPresend: the profile's first IKE message does not go out over the
// sockets a handoff carries (a TCP or TLS transport).
var ErrNoPresend = errors.New("the profile does not start over UDP")

// Presend does a connection's first steps for p in this process and
// returns them to be handed over: Dial there takes them from its context
// (report.WithHandoff with State and Files). The caller closes h.
func Presend(ctx context.Context, p *config.Profile) (*Handoff, error) {
	switch p.Transport.Mode {
	case config.TransportTCP, config.TransportTLS:
		return nil, ErrNoPresend
	}
	host := Host{}.withDefaults()
	gw, err := resolveGateway(ctx, p)
	if err != nil {
		return nil, err
	}
	route, err := host.RouteTo(gw.Addr(), tun.DefaultMark)
	if err != nil {
		return nil, fmt.Errorf("gateway unreachable: %w", err)
	}
	socks, err := clientSockets(host.ListenUDP, gw.Addr(), p.MOBIKE, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	h := &Handoff{Profile: p.Name, Gateway: gw, Route: route, socks: socks}
	path := netpath.Path{Local: netip.AddrPortFrom(route.Src, socks[0].LocalAddr().Port()), Remote: gw, IfIndex: route.IfIndex}
	first, err := ike.PrepareInit(initConfig(p, path))
	if err != nil {
		h.Close()
		return nil, err
	}
	h.First = *first
	// Taken before the send, so the daemon's first RTT sample errs long.
	h.First.SentAt = time.Now().UnixNano()
	if err := socks[0].WriteTo(ikeDatagram(first.Packet, path), path); err != nil {
		h.Close()
		return nil, fmt.Errorf("sending IKE_SA_INIT: %w", err)
	}
	return h, nil
}

// ikeDatagram is pkt as it goes over UDP on path: with RFC 3948's non-ESP
// marker unless port 500 is at either end (as the dataplane sends IKE).
func ikeDatagram(pkt []byte, path netpath.Path) []byte {
	if path.Remote.Port() == 500 || path.Local.Port() == 500 {
		return pkt
	}
	return append(make([]byte, 4, 4+len(pkt)), pkt...)
}

// initConfig is the part of the initiator's configuration that makes its
// IKE_SA_INIT: Presend and dialGateway must agree on it for the daemon to
// take the first message over.
func initConfig(p *config.Profile, path netpath.Path) ike.InitiatorConfig {
	return ike.InitiatorConfig{
		Path:           path,
		IKE:            ikeesp.Proposals(p.IKE),
		ESP:            ikeesp.Proposals(p.ESP),
		SwitchNotify:   wire.NotifyType(p.SwitchNotify),
		SwitchRevision: ikeesp.SwitchRevision(p.SwitchRevision),
		// Unknown path MTU: the fragments take RFC 7383's safe sizes.
		NoFragmentation: !p.Fragmentation,
		ForbidNAT:       !p.AllowNAT,
	}
}

// handoffState is a Handoff as it travels; the sockets go beside it as
// descriptors, in order.
type handoffState struct {
	Profile string           `json:"profile"`
	Gateway netip.AddrPort   `json:"gateway"`
	Route   netmon.Route     `json:"route"`
	First   ike.FirstMessage `json:"first"`
	Sockets int              `json:"sockets"`
}

// Marshal returns the handoff to pass to the daemon: its state, and
// duplicates of its sockets' descriptors (the caller closes them).
func (h *Handoff) Marshal() (state []byte, files []*os.File, err error) {
	for _, s := range h.socks {
		sock, ok := s.(interface{ File() (*os.File, error) })
		if !ok {
			closeFiles(files)
			return nil, nil, fmt.Errorf("socket %T cannot be passed", s)
		}
		f, err := sock.File()
		if err != nil {
			closeFiles(files)
			return nil, nil, fmt.Errorf("passing a socket: %w", err)
		}
		files = append(files, f)
	}
	state, err = json.Marshal(handoffState{Profile: h.Profile, Gateway: h.Gateway, Route: h.Route, First: h.First, Sockets: len(files)})
	if err != nil {
		closeFiles(files)
		return nil, nil, err
	}
	return state, files, nil
}

// Close closes the handoff's sockets in this process.
func (h *Handoff) Close() {
	for _, s := range h.socks {
		s.Close()
	}
	h.socks = nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// handoffFor is the handoff Dial's context carries for p, nil without
// one; a handoff that cannot be used is logged and left for a normal
// connect.
func handoffFor(ctx context.Context, p *config.Profile, log *slog.Logger) *Handoff {
	rh, ok := report.HandoffFrom(ctx)
	if !ok {
		return nil
	}
	h, err := decodeHandoff(rh.State, rh.Files)
	if err == nil && h.Profile != p.Name {
		h.Close()
		err = fmt.Errorf("it is for profile %q", h.Profile)
	}
	if err != nil {
		log.Warn("not taking over what roam connect started; connecting afresh", "err", err)
		return nil
	}
	return h
}

// decodeHandoff is the handoff state names, with its sockets made from
// files (which stay the caller's).
func decodeHandoff(state []byte, files []*os.File) (*Handoff, error) {
	var st handoffState
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	if st.Sockets < 1 || st.Sockets > 2 || st.Sockets != len(files) {
		return nil, fmt.Errorf("handoff: %d sockets named, %d passed", st.Sockets, len(files))
	}
	if !st.Gateway.IsValid() || !st.Route.Src.IsValid() || len(st.First.Packet) == 0 {
		return nil, errors.New("handoff: no gateway, route or first message")
	}
	h := &Handoff{Profile: st.Profile, Gateway: st.Gateway, Route: st.Route, First: st.First}
	for _, f := range files {
		s, err := esp.SocketFromFile(f)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("handoff: %w", err)
		}
		h.socks = append(h.socks, s)
	}
	if h.socks[0].LocalAddr().Addr().Is4() != st.Gateway.Addr().Is4() {
		h.Close()
		return nil, errors.New("handoff: the first socket is not of the gateway's family")
	}
	return h, nil
}
