package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/roam-vpn/roam/ike/wire"
)

// Several Child SAs under one IKE SA (RFC 7296 1.3.1). The initiator
// negotiates the first in IKE_AUTH and each further one with a
// CREATE_CHILD_SA without REKEY_SA, right after, before it reports
// Established, so the owner installs them all at once; CreateChild adds
// one later. The responder answers such a request within its Child SA cap
// and narrows the selectors as in IKE_AUTH: the initiator's side to what
// it was granted (its inner addresses and ResponderConfig.PeerTS), ours to
// LocalTS. Each Child SA is rekeyed and deleted on its own; all of them
// use the IKE SA's path, so a MOBIKE move or a NAT change moves them
// together.

// Selectors are the traffic selectors of one Child SA to negotiate, as
// prefixes. An empty Local means the full ranges of Remote's families.
type Selectors struct {
	Local, Remote []netip.Prefix
}

// ChildCreated reports a Child SA added to an established IKE SA by a
// CREATE_CHILD_SA that rekeyed nothing. Initiated: we asked for it (the
// peer installed it before answering, so our traffic may use it at once);
// otherwise the peer did, and installs it when our answer arrives.
type ChildCreated struct {
	SA        *SA
	Child     ChildSA
	Initiated bool
}

func (*ChildCreated) event() {}

// FailedChild is a Child SA the initiator asked for after IKE_AUTH that the
// peer refused or that failed otherwise; the IKE SA and its other Child SAs
// are unaffected.
type FailedChild struct {
	Remote []netip.Prefix
	Err    error
}

// localFor fills in s.Local for each family of s.Remote: our inner
// address of that family when we have one (what IKE_AUTH narrowed our side
// to; strongSwan refuses a wider TSi in CREATE_CHILD_SA), else the full
// range.
func (s Selectors) localFor(vips []netip.Addr) []netip.Prefix {
	if len(s.Local) > 0 {
		return s.Local
	}
	var out []netip.Prefix
	for _, p := range s.Remote {
		add := []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0)}
		if p.Addr().Is6() {
			add[0] = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		var own []netip.Prefix
		for _, a := range vips {
			if a.Is6() == p.Addr().Is6() {
				own = append(own, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		if len(own) > 0 {
			add = own
		}
		for _, q := range add {
			if !slices.Contains(out, q) {
				out = append(out, q)
			}
		}
	}
	return out
}

// CreateChild negotiates one more Child SA for sel and returns it once the
// peer answered; ChildCreated reports it too.
func (sa *SA) CreateChild(ctx context.Context, sel Selectors) (ChildSA, error) {
	var got ChildSA
	err := sa.await(ctx, func(res chan<- error) {
		if sa.state != stateEstablished {
			res <- fmt.Errorf("ike: creating a Child SA in state %s", sa.state)
			return
		}
		sa.createChild(sel, func(c ChildSA) {
			got = c
			sa.emit(&ChildCreated{SA: sa, Child: c, Initiated: true})
		}, res)
	})
	return got, err
}

// createChild sends the CREATE_CHILD_SA for a new Child SA for sel;
// created gets it (on the SA goroutine) before done gets nil.
func (sa *SA) createChild(sel Selectors, created func(ChildSA), done chan<- error) {
	if len(sel.Remote) == 0 {
		done <- errors.New("ike: a Child SA needs remote selectors")
		return
	}
	cr := &childRekey{
		old:      ChildSA{LocalTS: PrefixesTS(sel.localFor(sa.vips)), RemoteTS: PrefixesTS(sel.Remote)},
		ni:       sa.randBytes(32),
		newSPIIn: sa.randSPI32(),
		add:      true,
		created:  created,
	}
	sa.sendRekey(cr, pfsGroup(sa.cfg.esp), done)
}

// completeNewChild keeps a Child SA our CREATE_CHILD_SA made; narrowed
// says the peer's selectors are a non-empty part of those we asked for.
func (sa *SA) completeNewChild(cr *childRekey, child ChildSA, narrowed bool, done chan<- error) {
	if !narrowed {
		// The peer holds the SA now: it goes, unused and unreported.
		sa.deleteUnreported(child.SPIIn)
		sa.finishRekey(cr, done, &NotifyError{Type: wire.NotifyTSUnacceptable, Exchange: wire.ExchangeCreateChildSA,
			Err: errors.New("responder widened the traffic selectors")})
		return
	}
	sa.children = append(sa.children, child)
	sa.scheduleChild(child)
	sa.log.Info("Child SA created", "spi_in", fmt.Sprintf("%08x", child.SPIIn), "spi_out", fmt.Sprintf("%08x", child.SPIOut),
		"local_ts", tsText(child.LocalTS), "remote_ts", tsText(child.RemoteTS))
	if cr.created != nil {
		cr.created(child)
	}
	if done != nil {
		done <- nil
	}
}

// deleteUnreported deletes a Child SA the peer has but we never kept.
func (sa *SA) deleteUnreported(spiIn uint32) {
	var spi [4]byte
	binary.BigEndian.PutUint32(spi[:], spiIn)
	sa.startRequest(wire.ExchangeInformational,
		func() []wire.Payload {
			return []wire.Payload{&wire.Delete{Protocol: wire.ProtoESP, SPISize: 4, SPIs: [][]byte{spi[:]}}}
		}, func(wire.Header, []wire.Payload, []byte) {}, nil)
}

// createMoreChildren negotiates the Child SAs after the first, one after
// the other, and calls then with those that failed.
func (sa *SA) createMoreChildren(more []Selectors, then func(failed []FailedChild)) {
	var failed []FailedChild
	var next func(i int)
	next = func(i int) {
		if sa.state != stateEstablished {
			return // the SA ended meanwhile, and reported that
		}
		if i == len(more) {
			then(failed)
			return
		}
		res := make(chan error, 1)
		sa.createChild(more[i], nil, res)
		// createChild answers on res from the SA goroutine; the request's
		// callbacks run there too, so a goroutine waits for the outcome.
		go func() {
			var err error
			select {
			case err = <-res:
			case <-sa.done:
				return
			}
			sa.post(func() {
				if err != nil {
					sa.log.Warn("additional Child SA refused", "remote_ts", more[i].Remote, "err", err)
					failed = append(failed, FailedChild{Remote: more[i].Remote, Err: err})
				}
				next(i + 1)
			})
		}()
	}
	next(0)
}

// handleNewChildRequest answers a CREATE_CHILD_SA for an additional Child
// SA (responder).
func (sa *SA) handleNewChildRequest(ps []wire.Payload) ([]wire.Payload, func()) {
	refuse := func(t wire.NotifyType) ([]wire.Payload, func()) {
		return []wire.Payload{&wire.Notify{Type: t}}, nil
	}
	if sa.initiator || sa.resp == nil {
		// A gateway has no business adding Child SAs to a client.
		return refuse(wire.NotifyNoAdditionalSAs)
	}
	if sa.state != stateEstablished {
		// Keys from IKE_SA_INIT alone authenticate nobody.
		sa.stats.unexpected.Add(1)
		return refuse(wire.NotifyNoAdditionalSAs)
	}
	// One place stays free for the successor of a rekey.
	live := 0
	for _, c := range sa.children {
		if !sa.rekey.deleting[c.SPIIn] {
			live++
		}
	}
	if live+1 >= sa.cfg.maxChildren {
		sa.log.Warn("additional Child SA refused: too many Child SAs", "children", len(sa.children), "max", sa.cfg.maxChildren)
		return refuse(wire.NotifyNoAdditionalSAs)
	}
	offer, refusal := sa.childOffer(ps)
	if refusal != nil {
		return []wire.Payload{refusal}, nil
	}
	// The initiator's side is only what it was granted, as in IKE_AUTH.
	var allowedI []wire.TrafficSelector
	for _, a := range sa.vips {
		allowedI = append(allowedI, AddrTS(a))
	}
	allowedI = append(allowedI, PrefixesTS(sa.peerTS)...)
	nTSi := NarrowTS(offer.tsi.Selectors, allowedI)
	nTSr := NarrowTS(offer.tsr.Selectors, PrefixesTS(sa.resp.cfg.LocalTS))
	if len(nTSi) == 0 || len(nTSr) == 0 {
		sa.log.Info("additional Child SA refused: traffic selectors", "tsi", tsText(offer.tsi.Selectors), "tsr", tsText(offer.tsr.Selectors))
		return refuse(wire.NotifyTSUnacceptable)
	}
	chosen := offer.chosen
	nr := sa.randBytes(32)
	spiIn := sa.randSPI32()
	ev := &ChildCreated{SA: sa}
	install := func(shared []byte) error {
		child, err := sa.deriveChild(chosen.Transforms, spiIn, binary.BigEndian.Uint32(chosen.SPI), shared, offer.nonce.Data, nr, false)
		if err != nil {
			return err
		}
		child.LocalTS, child.RemoteTS = nTSr, nTSi
		sa.children = append(sa.children, child)
		sa.scheduleChild(child)
		ev.Child = child
		sa.log.Info("Child SA created by peer", "spi_in", fmt.Sprintf("%08x", spiIn), "local_ts", tsText(nTSr), "remote_ts", tsText(nTSi))
		return nil
	}
	var followup *wire.Notify
	if addKEs := addKETransforms(chosen.Transforms); len(addKEs) > 0 {
		followup = sa.deferAdditional(addKEs, offer.shared, false, func(all []byte) func() {
			if err := install(all); err != nil {
				sa.log.Error("deriving Child SA keys", "err", err)
				return nil
			}
			return func() { sa.emit(ev) }
		}, nil)
	} else if err := install(offer.shared); err != nil {
		sa.log.Error("deriving Child SA keys", "err", err)
		return refuse(wire.NotifyNoProposalChosen)
	}
	var spi [4]byte
	binary.BigEndian.PutUint32(spi[:], spiIn)
	resp := []wire.Payload{
		&wire.SA{Proposals: []wire.Proposal{{Number: chosen.Number, Protocol: wire.ProtoESP, SPI: spi[:], Transforms: chosen.Transforms}}},
		&wire.Nonce{Data: nr},
	}
	if offer.ourKE != nil {
		resp = append(resp, offer.ourKE)
	}
	resp = append(resp, &wire.TrafficSelectors{Selectors: nTSi}, &wire.TrafficSelectors{Responder: true, Selectors: nTSr})
	if followup != nil {
		return append(resp, followup), nil
	}
	return resp, func() { sa.emit(ev) }
}

// tsText is selectors for the log.
func tsText(ts []wire.TrafficSelector) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		for _, p := range wire.RangePrefixes(t.Start, t.End) {
			parts = append(parts, p.String())
		}
	}
	return strings.Join(parts, ",")
}
