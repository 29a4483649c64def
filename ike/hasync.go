package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// RFC 6311 (Protocol Support for High Availability of IKEv2/IPsec) with the
// r-mobike draft's 4.2.1 addition: a gateway node that takes an IKE SA over
// from a failed peer node sends ONE INFORMATIONAL request with Message ID
// zero carrying IKEV2_MESSAGE_ID_SYNC, optionally IPSEC_REPLAY_COUNTER_SYNC,
// and (the draft) SWITCH_TO_IP_ADDRESS with its own address. The client
// answers with its own counters; both ends then use the larger ones. Both
// ends must have sent IKEV2_MESSAGE_ID_SYNC_SUPPORTED in IKE_AUTH (and
// IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED for the replay counters); otherwise a
// Message ID zero request is an ordinary one, or dropped.

// msgIDSync is the data of IKEV2_MESSAGE_ID_SYNC (RFC 6311 5.1): the
// request's nonce (echoed in the response) and the sender's next request
// Message ID and the next one it expects from its peer.
type msgIDSync struct {
	nonce      [4]byte
	send, recv uint32
}

func (m msgIDSync) notify() *wire.Notify {
	d := make([]byte, 12)
	copy(d, m.nonce[:])
	binary.BigEndian.PutUint32(d[4:], m.send)
	binary.BigEndian.PutUint32(d[8:], m.recv)
	return &wire.Notify{Type: wire.NotifyIKEv2MessageIDSync, Data: d}
}

var errBadSyncNotify = errors.New("malformed synchronisation notify")

func decodeMessageIDSync(n *wire.Notify) (msgIDSync, error) {
	if n.Protocol != 0 || len(n.SPI) != 0 || len(n.Data) != 12 {
		return msgIDSync{}, fmt.Errorf("%w: IKEV2_MESSAGE_ID_SYNC with protocol %d, %d-octet SPI, %d octets of data",
			errBadSyncNotify, n.Protocol, len(n.SPI), len(n.Data))
	}
	var m msgIDSync
	copy(m.nonce[:], n.Data)
	m.send = binary.BigEndian.Uint32(n.Data[4:])
	m.recv = binary.BigEndian.Uint32(n.Data[8:])
	return m, nil
}

// replaySyncNotify asks the peer to skip delta sequence numbers on its
// outbound (our inbound) Child SAs. The delta is 32 bits on the wire; a
// larger one (only of use with ESN) takes 64.
func replaySyncNotify(delta uint64) *wire.Notify {
	if delta <= 0xffffffff {
		return &wire.Notify{Type: wire.NotifyIPsecReplayCounterSync, Data: binary.BigEndian.AppendUint32(nil, uint32(delta))}
	}
	return &wire.Notify{Type: wire.NotifyIPsecReplayCounterSync, Data: binary.BigEndian.AppendUint64(nil, delta)}
}

func decodeReplaySync(n *wire.Notify) (uint64, error) {
	if n.Protocol != 0 || len(n.SPI) != 0 {
		return 0, fmt.Errorf("%w: IPSEC_REPLAY_COUNTER_SYNC with protocol %d, %d-octet SPI", errBadSyncNotify, n.Protocol, len(n.SPI))
	}
	switch len(n.Data) {
	case 4:
		return uint64(binary.BigEndian.Uint32(n.Data)), nil
	case 8:
		return binary.BigEndian.Uint64(n.Data), nil
	}
	return 0, fmt.Errorf("%w: IPSEC_REPLAY_COUNTER_SYNC with %d octets of data", errBadSyncNotify, len(n.Data))
}

// MessageIDSynced reports (to the initiator's owner) that an HA gateway
// node synchronised the IKE SA's Message IDs (RFC 6311): NextRequest is
// the Message ID of our next request, NextPeerRequest the one we expect
// from the gateway. ReplayDelta is how far our outbound ESP sequence
// numbers were advanced (InitiatorConfig.AdvanceSeq). When the request
// carried SWITCH_TO_IP_ADDRESS, SwitchTo is its address; Switched says we
// accepted it and answered there, and the owner must now move the SA to
// it with UpdateAddresses (the draft: at once).
type MessageIDSynced struct {
	SA                           *SA
	NextRequest, NextPeerRequest uint32
	ReplayDelta                  uint64
	SwitchTo                     netip.Addr
	Switched                     bool
}

func (*MessageIDSynced) event() {}

// haSA is an SA's HA state; the SA goroutine owns all but parked, notified.
type haSA struct {
	// Negotiated in IKE_AUTH: both ends sent the _SUPPORTED notify.
	msgIDSync, replaySync bool
	// parked: an imported standby copy (ha.go); gone: replaced by a newer
	// import or dropped. Both change under the Responder's lock, so an
	// import never replaces a copy that TakeOver has just made active.
	parked, gone atomic.Bool
	// id names the SA across IKE rekeys in the HA pair (ha.go).
	id uint64
	// notified: a StateChanged went out and no ExportState followed yet;
	// lastSum is the digest of the state last reported or exported.
	notified atomic.Bool
	lastSum  [32]byte
	// lastSync is our answer to the last synchronisation request, resent
	// when that request is retransmitted (its nonce repeats).
	lastSync *syncAnswer
	// childBorn: when each Child SA (by inbound SPI) was made, so the
	// lifetimes of a copy taken over run from then (ha.go).
	childBorn map[uint32]time.Time
}

// aged records a Child SA's birth the first time its lifetimes are armed
// and shortens them by its age after that (a standby's copy).
func (h *haSA) aged(spi uint32, now time.Time, soft, hard time.Duration) (time.Duration, time.Duration) {
	born, ok := h.childBorn[spi]
	if !ok {
		if h.childBorn == nil {
			h.childBorn = make(map[uint32]time.Time)
		}
		h.childBorn[spi] = now
		return soft, hard
	}
	age := now.Sub(born)
	shorten := func(d time.Duration) time.Duration {
		if d <= 0 {
			return d // never
		}
		return max(d-age, time.Millisecond)
	}
	return shorten(soft), shorten(hard)
}

type syncAnswer struct {
	nonce [4]byte
	pkt   []byte
	path  netpath.Path
}

// haSupportNotifies are the initiator's RFC 6311 offers in IKE_AUTH.
func (sa *SA) haSupportNotifies() []wire.Payload {
	if sa.icfg == nil || !(sa.icfg.HASync || sa.icfg.Switch) {
		return nil
	}
	return []wire.Payload{
		&wire.Notify{Type: wire.NotifyIKEv2MessageIDSyncSupported},
		&wire.Notify{Type: wire.NotifyIPsecReplayCounterSyncSupported},
	}
}

// noteHASupport records what the responder's IKE_AUTH answer granted.
func (sa *SA) noteHASupport(ps []wire.Payload) {
	if sa.icfg == nil || !(sa.icfg.HASync || sa.icfg.Switch) {
		return
	}
	sa.ha.msgIDSync = wire.FindNotify(ps, wire.NotifyIKEv2MessageIDSyncSupported) != nil
	sa.ha.replaySync = sa.ha.msgIDSync && wire.FindNotify(ps, wire.NotifyIPsecReplayCounterSyncSupported) != nil
}

// answerHASupport is the responder's side: an HA gateway echoes what the
// initiator offered.
func (sa *SA) answerHASupport(ps []wire.Payload) []wire.Payload {
	if sa.resp == nil || !sa.resp.cfg.HA || wire.FindNotify(ps, wire.NotifyIKEv2MessageIDSyncSupported) == nil {
		return nil
	}
	sa.ha.msgIDSync = true
	out := []wire.Payload{&wire.Notify{Type: wire.NotifyIKEv2MessageIDSyncSupported}}
	if wire.FindNotify(ps, wire.NotifyIPsecReplayCounterSyncSupported) != nil {
		sa.ha.replaySync = true
		out = append(out, &wire.Notify{Type: wire.NotifyIPsecReplayCounterSyncSupported})
	}
	return out
}

// HASync reports what RFC 6311 support was negotiated: Message ID
// synchronisation, and replay counter synchronisation.
func (sa *SA) HASync() (msgIDs, replay bool) {
	type r struct{ a, b bool }
	ch := make(chan r, 1)
	if !sa.post(func() { ch <- r{sa.ha.msgIDSync, sa.ha.replaySync} }) {
		return false, false
	}
	select {
	case v := <-ch:
		return v.a, v.b
	case <-sa.done:
		return false, false
	}
}

// handleSyncRequest takes a Message ID zero INFORMATIONAL request that
// carries IKEV2_MESSAGE_ID_SYNC; false hands any other message back to the
// ordinary request path (a gateway's first request has Message ID zero
// too, so only the content tells).
func (sa *SA) handleSyncRequest(p inPacket, msg *wire.Message) bool {
	if sa.state != stateEstablished || msg.Header.Flags&wire.FlagResponse != 0 {
		return false
	}
	ps, err := sa.openPacket(p, msg)
	if err != nil {
		return false // counted where the ordinary path fails to open it
	}
	n := wire.FindNotify(ps, wire.NotifyIKEv2MessageIDSync)
	if n == nil {
		return false
	}
	drop := func(why string, err error) bool {
		sa.stats.syncDropped.Add(1)
		sa.log.Info("Message ID synchronisation dropped", "why", why, "err", err)
		return true
	}
	if !sa.initiator {
		// Only a gateway is a cluster here; the initiator has no standby.
		return drop("sent by the initiator", nil)
	}
	if !sa.ha.msgIDSync {
		return drop("not negotiated", nil)
	}
	m, err := decodeMessageIDSync(n)
	if err != nil {
		sa.stats.badNotifies.Add(1)
		return drop("malformed", err)
	}
	if c := sa.ha.lastSync; c != nil && c.nonce == m.nonce {
		sa.stats.dupRequests.Add(1)
		sa.send(c.pkt, nil, c.path)
		return true
	}
	// RFC 6311 5.1: a request whose sender counter is below one we have
	// already seen from the gateway is a replay.
	if m.send < sa.peerNextMsgID {
		return drop("stale", fmt.Errorf("sender's next Message ID %d, we expect at least %d", m.send, sa.peerNextMsgID))
	}
	var delta uint64
	if rn := wire.FindNotify(ps, wire.NotifyIPsecReplayCounterSync); rn != nil {
		d, err := decodeReplaySync(rn)
		if err != nil {
			sa.stats.badNotifies.Add(1)
			return drop("malformed", err)
		}
		if sa.ha.replaySync {
			delta = d
		}
	}
	// Our lowest Message ID not yet settled: an outstanding request (or an
	// unanswered address update) is retried under its ID, so the new node
	// must expect that one, not the next.
	next := sa.nextMsgID
	if f := sa.mobike.failed; f != nil {
		next = min(next, f.msgID)
	}
	if sa.out != nil && sa.out.exchange != wire.ExchangeIKESAInit {
		next = min(next, sa.out.msgID)
	}
	m2 := max(m.send, sa.peerNextMsgID)
	p2 := max(m.recv, next)
	sa.peerNextMsgID = m2
	sa.nextMsgID = max(sa.nextMsgID, p2)
	if f := sa.mobike.failed; f != nil && f.msgID < p2 {
		sa.mobike.failed = nil
	}
	if delta > 0 && sa.icfg.AdvanceSeq != nil {
		for _, c := range sa.children {
			sa.icfg.AdvanceSeq(c.SPIOut, delta)
		}
	}
	// The draft's SWITCH_TO_IP_ADDRESS in the same request (revisions -00
	// to -02; -03 dropped the failover) is decided by the switch policy
	// (switch.go): the answer goes to the new address when accepted, under
	// either SwitchRevision, as the failed node cannot receive it. MessageIDSynced alone reports it (not SwitchRequested
	// as well, so an owner moves once), and a refusal starts no liveness
	// check of the old address: the node there has failed.
	var to netip.Addr
	if sn := wire.FindNotify(ps, sa.switchType()); sn != nil && sa.icfg.Switch {
		to, _ = parseSwitchNotify(sn)
	}
	respPath, _ := sa.handleSwitchRequest(ps, p.path, true)
	switched := respPath.Remote != p.path.Remote
	if r := sa.out; switched && r != nil && r.paths == nil {
		// Our outstanding request went to the failed node; its
		// retransmissions go where the new one listens.
		r.paths = func(int) (netpath.Path, bool) { return respPath, true }
	}
	pkt, err := sa.seal(sa.header(wire.ExchangeInformational, 0, true), []wire.Payload{msgIDSync{m.nonce, p2, m2}.notify()})
	if err != nil {
		sa.log.Error("cannot build the synchronisation answer", "err", err)
		return true
	}
	sa.ha.lastSync = &syncAnswer{nonce: m.nonce, pkt: pkt, path: respPath}
	sa.send(pkt, nil, respPath)
	sa.log.Info("Message IDs synchronised by the gateway", "next_request", p2, "next_peer_request", m2,
		"replay_delta", delta, "switch_to", to, "switched", switched)
	sa.emit(&MessageIDSynced{SA: sa, NextRequest: p2, NextPeerRequest: m2, ReplayDelta: delta, SwitchTo: to, Switched: switched})
	return true
}
