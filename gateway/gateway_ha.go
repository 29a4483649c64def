package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ha"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/report"
)

const (
	// haSeqDelta is how far past the last replicated outbound ESP sequence
	// number a standby starts (RFC 6311: a sequence number must never be
	// used twice under one key). The active replicates at least every
	// haPushEvery, so this covers about 1M packets/s for that long, and it
	// spends 1/4096 of a 32-bit sequence space per failover.
	haSeqDelta  = 1 << 20
	haPushEvery = time.Second
	// haTakeOverTimeout bounds one client's takeover exchange (the
	// INFORMATIONAL with its retransmissions).
	haTakeOverTimeout = 10 * time.Second
)

// gatewayHA is a gateway's half of an active/standby pair
// (draft-smyslov-ipsecme-ikev2-r-mobike 4.2.1): as active it replicates every
// client's SA state to the peer node, as standby it keeps them parked and,
// once the active node falls silent, moves every client to itself.
type gatewayHA struct {
	gw   *gateway
	cfg  *config.HA
	node *ha.Node
	log  *slog.Logger
	ctx  context.Context
	wg   sync.WaitGroup

	mu     sync.Mutex
	keys   map[*ike.SA]ha.SAKey   // active: the key each SA was last replicated under
	parked map[ha.SAKey]*parkedSA // standby
}

type parkedSA struct {
	sa   *ike.SA
	seqs []ha.ChildSeq
	meta haMeta
}

// haMeta is what the gateway itself knows of a client beyond the IKE SA
// (its status line), replicated beside the ike blob.
type haMeta struct {
	PeerID     string       `json:"peer_id"`
	VirtualIPs []netip.Addr `json:"virtual_ips,omitempty"`
	NAT        bool         `json:"nat,omitempty"`
	UDPEncap   bool         `json:"udp_encap,omitempty"`
	MOBIKE     bool         `json:"mobike,omitempty"`
	Proposal   string       `json:"proposal,omitempty"`
	At         time.Time    `json:"at"`
}

func newGatewayHA(gw *gateway, cfg *config.HA) (*gatewayHA, error) {
	h := &gatewayHA{gw: gw, cfg: cfg, log: gw.log, keys: map[*ike.SA]ha.SAKey{}, parked: map[ha.SAKey]*parkedSA{}}
	role := ha.Active
	if cfg.Role == "standby" {
		role = ha.Standby
	}
	var err error
	h.node, err = ha.New(ha.Config{
		Key: cfg.Key, Listen: cfg.Listen, Peer: cfg.Peer, Role: role,
		Heartbeat: min(ha.DefaultHeartbeat, cfg.DeadAfter/5), DeadAfter: cfg.DeadAfter, Log: gw.log,
	}, h)
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	return h, nil
}

// startListen is the addresses RunGateway opens sockets on: none for a
// standby until it takes over (it must not answer clients meanwhile).
func (gw *gateway) startListen() []netip.Addr {
	if gw.cfg.HA != nil && gw.cfg.HA.Role == "standby" {
		return nil
	}
	return gw.cfg.Listen
}

// openListen opens the sockets a standby skipped at start: UDP, and the
// stream listeners when the gateway takes streams.
func (gw *gateway) openListen() error {
	for _, a := range gw.cfg.Listen {
		for _, port := range []uint16{500, 4500} {
			s, err := esp.ListenUDP(netip.AddrPortFrom(a, port), 0)
			if err != nil {
				return err
			}
			gw.transparent(s)
			gw.dp.AddSocket(s)
		}
	}
	if gw.streams != nil {
		if err := gw.streams.listen(gw.cfg.Listen); err != nil {
			return fmt.Errorf("streams: %w", err)
		}
	}
	return nil
}

// startHA runs the replication channel until ctx ends; the returned func
// waits for it.
func (gw *gateway) startHA(ctx context.Context) (wait func()) {
	h := gw.ha
	if h == nil {
		return func() {}
	}
	h.ctx = ctx
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		if err := h.node.Run(ctx); err != nil {
			h.log.Error("HA replication stopped", "err", err)
			gw.emit(report.Event{Event: report.EventError, Reason: err.Error()})
		}
	}()
	go func() {
		defer h.wg.Done()
		h.pushLoop(ctx)
	}()
	return h.wg.Wait
}

// haEvent follows the responder's events after the gateway handled them.
func (gw *gateway) haEvent(ev ike.Event) {
	h := gw.ha
	if h == nil || h.node.Role() != ha.Active {
		return
	}
	switch ev := ev.(type) {
	case *ike.StateChanged:
		h.push(ev.SA)
	case *ike.Established:
		h.push(ev.SA)
	case *ike.Deleted:
		h.mu.Lock()
		k, ok := h.keys[ev.SA]
		delete(h.keys, ev.SA)
		h.mu.Unlock()
		if ok {
			h.node.Delete(k)
		}
	}
}

// pushLoop replicates every SA periodically, so the standby's ESP sequence
// numbers stay within haSeqDelta of ours.
func (h *gatewayHA) pushLoop(ctx context.Context) {
	t := time.NewTicker(haPushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Without a standby connected there is no one to tell; the full
		// push when it connects covers everything.
		if h.node.Role() != ha.Active || !h.node.Connected() {
			continue
		}
		h.gw.mu.Lock()
		sas := make([]*ike.SA, 0, len(h.gw.clients))
		for sa := range h.gw.clients {
			sas = append(sas, sa)
		}
		h.gw.mu.Unlock()
		for _, sa := range sas {
			h.push(sa)
		}
	}
}

func (h *gatewayHA) push(sa *ike.SA) {
	if st, ok := h.state(sa); ok {
		h.node.Push(st)
	}
}

// state exports one installed client; an IKE rekey gave it new SPIs, so
// the standby forgets the copy under the old ones.
func (h *gatewayHA) state(sa *ike.SA) (ha.State, bool) {
	c := h.gw.client(sa)
	if c == nil {
		return ha.State{}, false
	}
	blob, err := sa.ExportState()
	if err != nil {
		h.log.Warn("HA: state not exported", "peer", c.est.PeerID, "err", err)
		return ha.State{}, false
	}
	spii, spir := sa.SPIs()
	st := ha.State{SA: ha.SAKey{SPIi: spii, SPIr: spir}, Blob: blob}
	for _, ch := range sa.Children() {
		out, _ := h.gw.dp.ChildOutboundSeq(ch.SPIIn)
		in, _ := h.gw.dp.ChildInboundSeq(ch.SPIIn)
		st.Seqs = append(st.Seqs, ha.ChildSeq{SPIOut: ch.SPIOut, Seq: out, InSeq: in})
	}
	st.Meta, _ = json.Marshal(haMeta{
		PeerID: c.est.PeerID, VirtualIPs: c.est.VirtualIPs, NAT: c.est.NATRemote, UDPEncap: c.est.UDPEncap,
		MOBIKE: c.est.PeerMOBIKE, Proposal: c.est.Proposal, At: c.at,
	})
	h.mu.Lock()
	old, had := h.keys[sa]
	h.keys[sa] = st.SA
	h.mu.Unlock()
	if had && old != st.SA {
		h.node.Delete(old)
	}
	return st, true
}

// Snapshot is every installed client, for a standby that just connected.
func (h *gatewayHA) Snapshot() []ha.State {
	h.gw.mu.Lock()
	sas := make([]*ike.SA, 0, len(h.gw.clients))
	for sa := range h.gw.clients {
		sas = append(sas, sa)
	}
	h.gw.mu.Unlock()
	var out []ha.State
	for _, sa := range sas {
		if st, ok := h.state(sa); ok {
			out = append(out, st)
		}
	}
	return out
}

// Import parks a replicated SA (standby).
func (h *gatewayHA) Import(st ha.State) {
	var meta haMeta
	if err := json.Unmarshal(st.Meta, &meta); err != nil {
		h.log.Warn("HA: replicated SA without a readable record", "sa", st.SA.String(), "err", err)
	}
	if h.node.Role() != ha.Standby {
		return // promoted while this record was on its way
	}
	sa, err := h.gw.resp.ImportState(st.Blob)
	if err != nil {
		h.log.Warn("HA: replicated SA not imported", "sa", st.SA.String(), "peer", meta.PeerID, "err", err)
		return
	}
	h.mu.Lock()
	h.parked[st.SA] = &parkedSA{sa: sa, seqs: st.Seqs, meta: meta}
	h.mu.Unlock()
}

// Drop forgets a parked SA the active node deleted.
func (h *gatewayHA) Drop(k ha.SAKey) {
	h.mu.Lock()
	_, ok := h.parked[k]
	delete(h.parked, k)
	h.mu.Unlock()
	if ok {
		h.gw.resp.DropState(k.SPIr)
	}
}

// Keep forgets every parked SA the active node's inventory lacks.
func (h *gatewayHA) Keep(keys []ha.SAKey) {
	h.mu.Lock()
	var gone []ha.SAKey
	for k := range h.parked {
		if !slices.Contains(keys, k) {
			gone = append(gone, k)
			delete(h.parked, k)
		}
	}
	h.mu.Unlock()
	for _, k := range gone {
		h.gw.resp.DropState(k.SPIr)
	}
}

// PeerDead starts the takeover; the node is active from now on.
func (h *gatewayHA) PeerDead() {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.takeOver(h.ctx, time.Now())
	}()
}

// takeOver serves every parked client from this node: it opens our own
// sockets and one on the failed node's address (transparent: we do not
// have that address, the clients' NATs only pass what comes from it),
// installs the Child SAs with their sequence numbers moved past anything
// the failed node can have sent, and runs each SA's takeover exchange
// (SWITCH_TO_IP_ADDRESS + RFC 6311 syncs) at once.
func (h *gatewayHA) takeOver(ctx context.Context, dead time.Time) {
	gw := h.gw
	h.mu.Lock()
	parked := h.parked
	h.parked = map[ha.SAKey]*parkedSA{}
	h.mu.Unlock()
	if err := gw.openListen(); err != nil {
		h.log.Error("HA takeover: cannot listen", "err", err)
		gw.emit(report.Event{Event: report.EventError, Reason: "failover: " + err.Error()})
		return
	}
	froms := map[netip.AddrPort]bool{}
	for _, p := range parked {
		from := p.sa.Path().Local
		if !from.Addr().IsValid() || from.Addr().IsUnspecified() {
			from = netip.AddrPortFrom(h.cfg.TakeoverAddress, 4500)
		}
		if froms[from] {
			continue
		}
		froms[from] = true
		s, err := esp.ListenUDP(from, 0)
		if err == nil {
			err = s.SetTransparent()
			if err != nil {
				s.Close()
			}
		}
		if err != nil {
			h.log.Error("HA takeover: no socket on the failed node's address", "addr", from.String(), "err", err)
			continue
		}
		gw.dp.AddSocket(s)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		moved int
		to    netip.Addr
	)
	for _, p := range parked {
		from, dst, ok := h.install(p)
		if !ok {
			continue
		}
		to = dst
		wg.Add(1)
		go func() {
			defer wg.Done()
			tctx, cancel := context.WithTimeout(ctx, haTakeOverTimeout)
			defer cancel()
			err := p.sa.TakeOver(tctx, ike.TakeOverOptions{From: from, To: dst, ReplayDelta: haSeqDelta})
			if err != nil {
				h.log.Warn("HA takeover failed", "peer", p.meta.PeerID, "err", err)
				gw.emit(report.Event{Event: report.EventError, Profile: p.meta.PeerID, Reason: "failover: " + err.Error()})
				return
			}
			mu.Lock()
			moved++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	took := time.Since(dead)
	ev := report.Event{Event: report.EventFailover, From: h.cfg.TakeoverAddress.String(), TookMS: max(1, took.Milliseconds()),
		Reason: fmt.Sprintf("%d of %d peers moved; the active node was silent for %v", moved, len(parked), h.cfg.DeadAfter)}
	if to.IsValid() {
		ev.To = to.String()
	}
	h.log.Info("HA: took over", "moved", moved, "of", len(parked), "took", took.String())
	gw.emit(ev)
}

// install puts one parked client into the dataplane and the client table,
// so ESP flows and its UPDATE_SA_ADDRESSES finds it, before the takeover
// exchange starts. It returns the takeover's From and To.
func (h *gatewayHA) install(p *parkedSA) (from netip.AddrPort, to netip.Addr, ok bool) {
	gw := h.gw
	path := p.sa.Path()
	from = path.Local
	if !from.Addr().IsValid() || from.Addr().IsUnspecified() {
		from = netip.AddrPortFrom(h.cfg.TakeoverAddress, 4500)
		path.Local = from
	}
	for _, a := range gw.cfg.Listen {
		if a.Is4() == path.Remote.Addr().Unmap().Is4() {
			to = a
			break
		}
	}
	if !to.IsValid() {
		h.log.Error("HA takeover: no listen address of the client's family", "peer", p.meta.PeerID, "remote", path.Remote.String())
		return from, to, false
	}
	seqs := map[uint32]ha.ChildSeq{}
	for _, s := range p.seqs {
		seqs[s.SPIOut] = s
	}
	peer := gw.dp.NewPeer(path)
	children := p.sa.Children()
	for _, ch := range children {
		s := seqs[ch.SPIOut]
		// A taken-over SA may be near its limit already: the first packet
		// then starts the rekey.
		if _, err := gw.binder().InstallChild(peer, p.sa, ch, ikeesp.Install{OutboundSeq: s.Seq + haSeqDelta, InboundSeq: s.InSeq}); err != nil {
			h.log.Error("HA takeover: installing child SA", "peer", p.meta.PeerID, "err", err)
			gw.emit(report.Event{Event: report.EventError, Profile: p.meta.PeerID, Reason: err.Error()})
		}
	}
	spii, spir := p.sa.SPIs()
	est := &ike.Established{
		SA: p.sa, SPIi: spii, SPIr: spir, Path: path, NATRemote: p.meta.NAT, UDPEncap: p.meta.UDPEncap,
		PeerMOBIKE: p.meta.MOBIKE, PeerID: p.meta.PeerID, Proposal: p.meta.Proposal, Children: children,
		VirtualIPs: p.meta.VirtualIPs,
	}
	at := p.meta.At
	if at.IsZero() {
		at = time.Now()
	}
	gw.mu.Lock()
	gw.clients[p.sa] = &gatewayClient{est: est, peer: peer, at: at}
	gw.mu.Unlock()
	h.mu.Lock()
	h.keys[p.sa] = ha.SAKey{SPIi: spii, SPIr: spir}
	h.mu.Unlock()
	return from, to, true
}

// announced is the address list the responder gives clients in IKE_AUTH
// (RFC 4555 ADDITIONAL_*_ADDRESS): our own listen addresses and, in an HA
// pair, the other node's, which the cluster may move them to. A client
// that accepts switches only to announced addresses (accept_switch =
// "announced", the default) then follows a failover.
func announced(g *config.Gateway) []netip.Addr {
	if g.HA == nil || slices.Contains(g.Listen, g.HA.TakeoverAddress) {
		return g.Listen
	}
	return append(slices.Clip(g.Listen), g.HA.TakeoverAddress)
}
