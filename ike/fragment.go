package ike

import (
	"fmt"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// fragState is RFC 7383's: whether fragmentation was negotiated, and the
// fragmented message being collected.
type fragState struct {
	ok    bool
	reasm *reassembly
}

// IKE fragmentation (RFC 7383). A message too large for the path goes out
// as several Encrypted Fragment (SKF) payloads, each in its own IKE message
// and each protected on its own, so that no IP fragmentation is needed:
// many NATs and firewalls drop IP fragments, and IKE_AUTH with certificate
// chains easily exceeds any MTU.

// Default sizes of a whole IKE message (without the non-ESP marker) when
// the path MTU is not known: RFC 7383 2.5.1 recommends what fits the
// minimum IPv6 MTU of 1280 and the 576 octets every IPv4 host accepts.
const (
	defaultFragmentIPv4 = 576 - 20 - 8 - 4
	defaultFragmentIPv6 = 1280 - 40 - 8 - 4
	// minFragment keeps a configured size sane: below this the header and
	// ICV overhead leave almost nothing of the message per fragment.
	minFragment = 256
)

// Reassembly limits: what a peer can make us hold for one message.
const (
	maxFragments      = 64
	maxReassembled    = 64 << 10
	reassemblyTimeout = 30 * time.Second
)

// reassembly collects the fragments of one message.
type reassembly struct {
	msgID      uint32
	response   bool
	total      uint16
	firstInner wire.PayloadType
	parts      [][]byte // decrypted inner bytes by fragment number - 1
	have       int
	size       int
	started    time.Time
}

// fragmentSize is the largest IKE message we send whole on path.
func (sa *SA) fragmentSize() int {
	if n := sa.cfg.fragmentMTU; n > 0 {
		overhead := 20 + 8 + 4
		if sa.Path().Remote.Addr().Is6() {
			overhead = 40 + 8 + 4
		}
		return max(n-overhead, minFragment)
	}
	if sa.Path().Remote.Addr().Is6() {
		return defaultFragmentIPv6
	}
	return defaultFragmentIPv4
}

// sealOut encrypts a message and, when fragmentation was negotiated and the
// message does not fit the path, also as fragments; frags is nil when the
// message goes whole.
func (sa *SA) sealOut(h wire.Header, ps []wire.Payload) (pkt []byte, frags [][]byte, err error) {
	pkt, err = sa.seal(h, ps)
	if err != nil || !sa.frag.ok {
		return pkt, nil, err
	}
	limit := sa.fragmentSize()
	if len(pkt) <= limit {
		return pkt, nil, nil
	}
	first, body, err := wire.EncodePayloads(ps)
	if err != nil {
		return nil, nil, fmt.Errorf("ike: encoding %s payloads: %w", h.Exchange, err)
	}
	// The IKE header, the SKF generic header and its number and total.
	chunk := sa.skOut.MaxPlainLen(limit - wire.HeaderLen - 8)
	if chunk <= 0 {
		return nil, nil, fmt.Errorf("ike: fragment size %d leaves no room for data", limit)
	}
	if frags, err = sa.fragments(h, first, body, chunk); err != nil {
		return nil, nil, err
	}
	return pkt, frags, nil
}

// fragments seals body (the encoded inner payloads, first naming the
// first of them) in pieces of chunk bytes, one SKF message each.
func (sa *SA) fragments(h wire.Header, first wire.PayloadType, body []byte, chunk int) ([][]byte, error) {
	total := (len(body) + chunk - 1) / chunk
	if total > maxFragments {
		return nil, fmt.Errorf("ike: %s of %d bytes needs %d fragments (at most %d)", h.Exchange, len(body), total, maxFragments)
	}
	frags := make([][]byte, 0, total)
	for i := range total {
		part := body[i*chunk : min((i+1)*chunk, len(body))]
		aad := wire.EncryptedFragmentHeader(h, first, uint16(i+1), uint16(total), sa.skOut.SealedLen(len(part)))
		data, err := sa.skOut.Seal(aad, part)
		if err != nil {
			return nil, fmt.Errorf("ike: encrypting %s fragment %d: %w", h.Exchange, i+1, err)
		}
		frags = append(frags, append(aad[:len(aad):len(aad)], data...))
	}
	sa.stats.fragmentsSent.Add(uint64(total))
	return frags, nil
}

// send transmits a message, as its fragments when it has them.
func (sa *SA) send(pkt []byte, frags [][]byte, path netpath.Path) {
	if sa.ha.parked.Load() {
		return // a standby SA sends nothing until TakeOver
	}
	if frags == nil {
		frags = [][]byte{pkt}
	}
	for _, f := range frags {
		if err := sa.tr.SendIKE(f, path); err != nil {
			sa.log.Debug("send failed", "err", err)
			return
		}
	}
}

// handleFragment takes one SKF message: it is authenticated on its own,
// kept until all fragments of its message are in, and the reassembled
// payloads are then handled like those of an unfragmented message.
func (sa *SA) handleFragment(p inPacket, msg *wire.Message, f *wire.EncryptedFragment) {
	h := msg.Header
	response := h.Flags&wire.FlagResponse != 0
	if !sa.frag.ok || sa.skIn == nil || h.Exchange == wire.ExchangeIKESAInit {
		sa.stats.unexpected.Add(1)
		return
	}
	if !response && sa.lastResp != nil && h.MessageID == sa.lastResp.msgID {
		// A retransmitted request: answer once per retransmission, on its
		// first fragment (RFC 7383 2.6.1), without reassembling it again.
		if f.Number == 1 {
			sa.stats.dupRequests.Add(1)
			sa.resendCached(sa.lastResp, sa.lastResp.dest(p.path))
		}
		return
	}
	switch {
	case response && (sa.out == nil || h.MessageID != sa.out.msgID || h.Exchange != sa.out.exchange):
		sa.stats.unexpected.Add(1)
		return
	case !response && h.MessageID != sa.peerNextMsgID:
		sa.stats.unexpected.Add(1)
		return
	}
	if f.Total > maxFragments {
		sa.stats.fragmentsDropped.Add(1)
		return
	}
	if f.Offset < wire.HeaderLen || f.Offset > len(p.pkt) {
		sa.stats.malformed.Add(1)
		return
	}
	plain, err := sa.skIn.Open(p.pkt[:f.Offset], f.Data)
	if err != nil {
		sa.stats.undecryptable.Add(1)
		return
	}
	now := sa.cfg.clock.Now()
	r := sa.frag.reasm
	if r != nil && (r.msgID != h.MessageID || r.response != response || now.Sub(r.started) > reassemblyTimeout) {
		r = nil
	}
	// RFC 7383 2.6.2: a larger total means the sender refragmented for a
	// smaller MTU, so the old pieces are useless; a smaller one is a stale
	// copy of an earlier attempt.
	if r != nil && f.Total > r.total {
		r = nil
	}
	if r != nil && f.Total < r.total {
		sa.stats.fragmentsDropped.Add(1)
		return
	}
	if r == nil {
		r = &reassembly{msgID: h.MessageID, response: response, total: f.Total, parts: make([][]byte, f.Total), started: now}
		sa.frag.reasm = r
	}
	idx := int(f.Number) - 1
	if r.parts[idx] != nil {
		return // a duplicate
	}
	if r.size+len(plain) > maxReassembled {
		sa.stats.fragmentsDropped.Add(1)
		sa.frag.reasm = nil
		return
	}
	if f.Number == 1 {
		r.firstInner = f.FirstInner
	}
	r.parts[idx] = plain
	r.have++
	r.size += len(plain)
	if r.have < int(r.total) {
		return
	}
	sa.frag.reasm = nil
	body := make([]byte, 0, r.size)
	for _, part := range r.parts {
		body = append(body, part...)
	}
	ps, err := wire.DecodePayloads(r.firstInner, body)
	if err != nil {
		sa.stats.malformed.Add(1)
		return
	}
	p.payloads, p.plain, p.first = ps, body, r.firstInner
	if response {
		sa.handleResponse(p, msg)
		return
	}
	sa.handleRequest(p, msg)
}
