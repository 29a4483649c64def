package ike

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/roam-vpn/roam/esp"
	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// PathUpdated reports (to a responder's owner) that the initiator moved the
// SA with UPDATE_SA_ADDRESSES: ESP must follow to Path.
type PathUpdated struct {
	SA        *SA
	Path      esp.Path
	NATRemote bool
}

func (*PathUpdated) event() {}

// MoveResult is where a MOBIKE update landed.
type MoveResult struct {
	Path     esp.Path // as the response arrived (local address and interface filled in)
	NATLocal bool     // a NAT is in front of us on this path
	RTT      time.Duration
}

// MoveRetransmit is the per-path schedule of UPDATE_SA_ADDRESSES: short, as
// a path that does not answer within a few RTTs is not worth waiting for
// while the user's traffic is stalled.
var MoveRetransmit = Retransmit{Initial: 200 * time.Millisecond, Factor: 1.5, Max: 2 * time.Second, Retries: 8}

// ErrNoMOBIKE is returned when the peer did not negotiate MOBIKE.
var ErrNoMOBIKE = errors.New("ike: the peer does not support MOBIKE")

// failedUpdate remembers an UPDATE_SA_ADDRESSES that got no answer: the
// peer may have received it (and moved), or not. The next update reuses its
// message ID and COOKIE2, so either way the peer and we agree afterwards.
type failedUpdate struct {
	msgID   uint32
	cookie2 []byte
}

// PeerAddresses returns the peer's addresses: the current one first, then
// those it announced (ADDITIONAL_IP4/6_ADDRESS).
func (sa *SA) PeerAddresses() []netip.Addr {
	res := make(chan []netip.Addr, 1)
	if !sa.post(func() {
		out := []netip.Addr{sa.path.Remote.Addr()}
		for _, a := range sa.peerAddrs {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
		res <- out
	}) {
		return []netip.Addr{sa.Path().Remote.Addr()}
	}
	select {
	case a := <-res:
		return a
	case <-sa.done:
		return []netip.Addr{sa.Path().Remote.Addr()}
	}
}

// natdFor returns the NAT detection notifies for a path. With forced UDP
// encapsulation the source hash stays deliberately wrong, as in IKE_SA_INIT.
func (sa *SA) natdFor(path esp.Path) []wire.Payload {
	spii, spir := sa.SPIs()
	src := natHash(spii, spir, path.Local)
	if sa.forcedEncap {
		src = sa.randBytes(len(src))
	}
	return []wire.Payload{
		&wire.Notify{Type: wire.NotifyNATDetectionSourceIP, Data: src},
		&wire.Notify{Type: wire.NotifyNATDetectionDestinationIP, Data: natHash(spii, spir, path.Remote)},
	}
}

// UpdateAddresses moves the SA to the first of paths over which the peer
// answers an UPDATE_SA_ADDRESSES (RFC 4555 3.5). One request is sent and
// retransmitted round-robin over the paths, each retransmission with the
// NAT detection payloads of its own path, so the answer itself is the path
// test. On success the SA's path is the one the answer arrived on.
func (sa *SA) UpdateAddresses(ctx context.Context, paths []esp.Path) (MoveResult, error) {
	if len(paths) == 0 {
		return MoveResult{}, errors.New("ike: no path to update to")
	}
	type outcome struct {
		res MoveResult
		err error
	}
	done := make(chan outcome, 1)
	start := time.Now()
	ok := sa.post(func() {
		if !sa.initiator {
			done <- outcome{err: errors.New("ike: only the initiator updates addresses")}
			return
		}
		if sa.state != stateEstablished {
			done <- outcome{err: fmt.Errorf("ike: address update in state %s", sa.state)}
			return
		}
		if !sa.peerMOBIKE {
			done <- outcome{err: ErrNoMOBIKE}
			return
		}
		// A newer update replaces one still being retransmitted: the
		// newest addresses win (RFC 4555 3.5).
		if sa.out != nil && sa.out.keepSA && sa.out.exchange == wire.ExchangeInformational && sa.out.paths != nil {
			r := sa.out
			r.paths = func(n int) (esp.Path, bool) { return paths[n%len(paths)], true }
			return
		}
		cookie2 := sa.randBytes(16)
		msgID := sa.nextMsgID
		if f := sa.failedUpdate; f != nil {
			cookie2, msgID = f.cookie2, f.msgID
		}
		sa.failedUpdate = nil
		sa.cookie2 = cookie2
		build := func(path esp.Path) []wire.Payload {
			ps := []wire.Payload{&wire.Notify{Type: wire.NotifyUpdateSAAddresses}}
			ps = append(ps, sa.natdFor(path)...)
			return append(ps, &wire.Notify{Type: wire.NotifyCookie2, Data: cookie2})
		}
		r := &request{exchange: wire.ExchangeInformational, msgID: msgID, keepSA: true, sched: &MoveRetransmit,
			paths: func(n int) (esp.Path, bool) { return paths[n%len(paths)], true }}
		r.rebuild = func(path esp.Path) ([]byte, error) {
			return sa.seal(sa.header(wire.ExchangeInformational, msgID, false), build(path))
		}
		r.onResponse = func(_ wire.Header, ps []wire.Payload, _ []byte) {
			n := findNotify(ps, wire.NotifyCookie2)
			if n == nil || subtle.ConstantTimeCompare(n.Data, cookie2) != 1 {
				done <- outcome{err: &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeInformational, Remote: true,
					Err: errors.New("COOKIE2 missing or wrong in the UPDATE_SA_ADDRESSES response")}}
				return
			}
			if e := firstError(ps); e != nil {
				done <- outcome{err: &NotifyError{Type: e.Type, Exchange: wire.ExchangeInformational, Remote: true}}
				return
			}
			path := sa.respPath
			path.IfIndex = r.sentOn.IfIndex
			spii, spir := sa.SPIs()
			dstOK, _ := natMatches(ps, wire.NotifyNATDetectionDestinationIP, spii, spir, path.Local)
			sa.setPath(path)
			sa.natLocal = !dstOK
			sa.learnAddresses(ps)
			done <- outcome{res: MoveResult{Path: path, NATLocal: !dstOK, RTT: time.Since(start)}}
		}
		r.onTimeout = func(err error) {
			sa.failedUpdate = &failedUpdate{msgID: msgID, cookie2: cookie2}
			done <- outcome{err: err}
		}
		send := func() {
			if sa.nextMsgID == msgID {
				sa.nextMsgID++
			}
			sa.sendRequest(r)
		}
		if sa.out != nil {
			sa.queue = append([]func(){send}, sa.queue...)
			return
		}
		send()
	})
	if !ok {
		return MoveResult{}, ErrClosed
	}
	select {
	case o := <-done:
		return o.res, o.err
	case <-sa.done:
		return MoveResult{}, ErrClosed
	case <-ctx.Done():
		return MoveResult{}, ctx.Err()
	}
}

// learnAddresses records the peer's ADDITIONAL_IP*_ADDRESS notifies; a
// NO_ADDITIONAL_ADDRESSES clears them.
func (sa *SA) learnAddresses(ps []wire.Payload) {
	var addrs []netip.Addr
	seen := false
	for _, n := range wire.NotifiesIn(ps) {
		switch n.Type {
		case wire.NotifyAdditionalIP4Address, wire.NotifyAdditionalIP6Address:
			seen = true
			if a, ok := netip.AddrFromSlice(n.Data); ok && (len(n.Data) == 4) == (n.Type == wire.NotifyAdditionalIP4Address) {
				addrs = append(addrs, a)
			}
		case wire.NotifyNoAdditionalAddresses:
			seen = true
		}
	}
	if seen {
		sa.peerAddrs = addrs
	}
}

// handleMOBIKERequest handles the MOBIKE parts of an INFORMATIONAL request:
// NAT detection payloads are answered in kind, and an UPDATE_SA_ADDRESSES
// from the initiator moves the SA to the path it came from.
func (sa *SA) handleMOBIKERequest(ps []wire.Payload, from esp.Path) (resp []wire.Payload, moved bool) {
	if findNotify(ps, wire.NotifyNATDetectionSourceIP) != nil {
		spii, spir := sa.SPIs()
		resp = append(resp,
			&wire.Notify{Type: wire.NotifyNATDetectionSourceIP, Data: natHash(spii, spir, from.Local)},
			&wire.Notify{Type: wire.NotifyNATDetectionDestinationIP, Data: natHash(spii, spir, from.Remote)})
	}
	if c := findNotify(ps, wire.NotifyCookie2); c != nil {
		resp = append(resp, &wire.Notify{Type: wire.NotifyCookie2, Data: slices.Clone(c.Data)})
	}
	if findNotify(ps, wire.NotifyUpdateSAAddresses) == nil || sa.initiator || !sa.peerMOBIKE {
		return resp, false
	}
	sa.learnAddresses(ps)
	sa.movePath(from)
	return resp, true
}

// movePath moves a responder's SA (and, through PathUpdated, its ESP) to
// the path an UPDATE_SA_ADDRESSES came from.
func (sa *SA) movePath(p esp.Path) {
	old := sa.path
	sa.setPath(p)
	sa.log.Info("peer moved", "from", old.Remote.String(), "to", p.Remote.String())
	sa.emit(&PathUpdated{SA: sa, Path: p, NATRemote: sa.natRemote})
}

// handleCreateChildRequest answers a CREATE_CHILD_SA that rekeys one of our
// Child SAs (RFC 7296 1.3.3). Requests for additional Child SAs are refused.
func (sa *SA) handleCreateChildRequest(ps []wire.Payload) ([]wire.Payload, func()) {
	refuse := func(t wire.NotifyType, data []byte) ([]wire.Payload, func()) {
		return []wire.Payload{&wire.Notify{Type: t, Data: data}}, nil
	}
	rekey := findNotify(ps, wire.NotifyRekeySA)
	if rekey == nil {
		return refuse(wire.NotifyNoAdditionalSAs, nil)
	}
	if rekey.Protocol != wire.ProtoESP || len(rekey.SPI) != 4 {
		return refuse(wire.NotifyInvalidSyntax, nil)
	}
	oldOut := binary.BigEndian.Uint32(rekey.SPI)
	idx := slices.IndexFunc(sa.children, func(c ChildSA) bool { return c.SPIOut == oldOut })
	if idx < 0 {
		return []wire.Payload{&wire.Notify{Type: wire.NotifyChildSANotFound, Protocol: wire.ProtoESP, SPI: slices.Clone(rekey.SPI)}}, nil
	}
	old := sa.children[idx]
	if sa.deleting[old.SPIIn] {
		// We are deleting it (our own rekey of it finished first).
		return []wire.Payload{&wire.Notify{Type: wire.NotifyChildSANotFound, Protocol: wire.ProtoESP, SPI: slices.Clone(rekey.SPI)}}, nil
	}
	var saP *wire.SA
	var nonce *wire.Nonce
	var ke *wire.KE
	var tsi, tsr *wire.TrafficSelectors
	for _, p := range ps {
		switch p := p.(type) {
		case *wire.SA:
			saP = p
		case *wire.Nonce:
			nonce = p
		case *wire.KE:
			ke = p
		case *wire.TrafficSelectors:
			if p.Responder {
				tsr = p
			} else {
				tsi = p
			}
		}
	}
	if saP == nil || nonce == nil || tsi == nil || tsr == nil || len(nonce.Data) < 16 {
		return refuse(wire.NotifyInvalidSyntax, nil)
	}
	var props []wire.Proposal
	for _, p := range saP.Proposals {
		if len(p.SPI) == 4 {
			props = append(props, p)
		}
	}
	var preferDH uint16
	if ke != nil {
		preferDH = ke.Group
	}
	chosen, ok := selectProposal(sa.cfg.esp, props, wire.ProtoESP, preferDH)
	if !ok {
		chosen, ok = selectProposal(withPFS(sa.cfg.esp, preferDH), props, wire.ProtoESP, preferDH)
	}
	if !ok {
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	var shared []byte
	var ourKE *wire.KE
	if dh, ok := transformOf(chosen.Transforms, wire.TransformDH); ok && dh.ID != 0 {
		if ke == nil || ke.Group != dh.ID {
			var g [2]byte
			binary.BigEndian.PutUint16(g[:], dh.ID)
			return refuse(wire.NotifyInvalidKEPayload, g[:])
		}
		kx, err := ikecrypto.NewKeyExchange(dh.ID, sa.cfg.rand)
		if err != nil {
			return refuse(wire.NotifyNoProposalChosen, nil)
		}
		if shared, err = kx.SharedSecret(ke.Data); err != nil {
			return refuse(wire.NotifyInvalidSyntax, nil)
		}
		ourKE = &wire.KE{Group: dh.ID, Data: kx.PublicKey()}
	}
	nr := sa.randBytes(32)
	spiIn := sa.randSPI32()
	child, err := sa.deriveChild(chosen.Transforms, spiIn, binary.BigEndian.Uint32(chosen.SPI), shared, nonce.Data, nr, false)
	if err != nil {
		sa.log.Error("deriving rekeyed Child SA keys", "err", err)
		return refuse(wire.NotifyNoProposalChosen, nil)
	}
	// A rekey keeps the traffic selectors of the SA it replaces.
	child.LocalTS, child.RemoteTS = old.LocalTS, old.RemoteTS
	sa.children = append(sa.children, child)
	sa.notePeerRekey(old.SPIIn, spiIn, nonce.Data, nr)
	sa.scheduleChild(child)
	var spi [4]byte
	binary.BigEndian.PutUint32(spi[:], spiIn)
	resp := []wire.Payload{
		&wire.SA{Proposals: []wire.Proposal{{Number: chosen.Number, Protocol: wire.ProtoESP, SPI: spi[:], Transforms: chosen.Transforms}}},
		&wire.Nonce{Data: nr},
	}
	if ourKE != nil {
		resp = append(resp, ourKE)
	}
	resp = append(resp, &wire.TrafficSelectors{Selectors: tsi.Selectors}, &wire.TrafficSelectors{Responder: true, Selectors: tsr.Selectors})
	ev := &ChildRekeyed{SA: sa, OldSPIIn: old.SPIIn, Child: child}
	sa.log.Info("Child SA rekeyed by peer", "old_in", fmt.Sprintf("%08x", old.SPIIn), "new_in", fmt.Sprintf("%08x", spiIn))
	return resp, func() { sa.emit(ev) }
}

// withPFS adds the peer's group to our ESP proposals: a gateway configured
// for PFS rekeys with a KE payload even though the first Child SA (made in
// IKE_AUTH) had none.
func withPFS(ps []Proposal, group uint16) []Proposal {
	if group == 0 || !ikecrypto.SupportedGroup(group) {
		return nil
	}
	out := make([]Proposal, len(ps))
	for i, p := range ps {
		ts := slices.Clone(p.Transforms)
		ts = append(ts, wire.Transform{Type: wire.TransformDH, ID: group})
		out[i] = Proposal{Transforms: ts, Text: p.Text}
	}
	return out
}
