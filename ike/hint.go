package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// Unprotected error notifications (RFC 7296 2.21.4): a peer that lost its
// state (a restarted gateway) may answer our IKE requests with
// INVALID_IKE_SPI, and our ESP with INVALID_SPI, outside any IKE SA. Anyone
// on the path can forge such a message, so it never ends the SA by itself;
// it makes us test the peer at once, with an authenticated liveness check,
// instead of waiting for the DPD delay. Only a check that goes unanswered
// ends the SA (with ErrDeadPeer), exactly as dead peer detection would have
// later.

// PeerHint reports an unauthenticated sign that the peer lost the SA (an
// INVALID_IKE_SPI or INVALID_SPI it sent), and later whether the liveness
// check it started was answered (Refuted: the SA is fine after all). Its
// owner may prepare a replacement meanwhile, but must not drop the SA for
// it: anyone on the path can forge the notification.
type PeerHint struct {
	SA      *SA
	Notify  string
	Refuted bool
}

func (*PeerHint) event() {}

// hintInterval is the least time between two checks that hints start: a
// flood of forged notifications costs the peer one exchange per interval.
const hintInterval = 5 * time.Second

type hintState struct {
	count    atomic.Uint64 // hints received
	checking bool          // a check started by a hint is outstanding
	last     time.Time     // when the last such check started
}

// Hints returns how many unprotected INVALID_IKE_SPI or INVALID_SPI
// notifications that concern this SA have arrived.
func (sa *SA) Hints() uint64 { return sa.hint.count.Load() }

// unprotectedHint takes an unencrypted message that arrives on an
// established SA. It reports whether the message was a hint (and is
// consumed); anything else is left to the normal checks, which drop it.
func (sa *SA) unprotectedHint(p inPacket, msg *wire.Message) bool {
	if sa.state != stateEstablished || msg.Header.Exchange == wire.ExchangeIKESAInit || len(msg.Payloads) == 0 {
		return false
	}
	for _, pl := range msg.Payloads {
		switch pl.(type) {
		case *wire.Encrypted, *wire.EncryptedFragment:
			return false
		}
	}
	if !sa.fromPeer(p.path.Remote.Addr()) {
		return false
	}
	h := msg.Header
	var what string
	if n := wire.FindNotify(msg.Payloads, wire.NotifyInvalidIKESPI); n != nil && h.SPIi == sa.spii.Load() && h.SPIr == sa.spir.Load() {
		what = "INVALID_IKE_SPI"
	} else if n := wire.FindNotify(msg.Payloads, wire.NotifyInvalidSPI); n != nil && sa.ourOutboundSPI(n) {
		what = fmt.Sprintf("INVALID_SPI %x", n.Data)
	}
	if what == "" {
		return false
	}
	sa.hint.count.Add(1)
	now := sa.cfg.clock.Now()
	if sa.hint.checking || (!sa.hint.last.IsZero() && now.Sub(sa.hint.last) < hintInterval) {
		return true
	}
	sa.hint.checking, sa.hint.last = true, now
	sa.log.Info("unauthenticated notification from the peer: testing it now", "notify", what)
	sa.emit(&PeerHint{SA: sa, Notify: what})
	sa.startRequest(wire.ExchangeInformational,
		func() []wire.Payload { return nil },
		func(wire.Header, []wire.Payload, []byte) {
			sa.hint.checking = false
			sa.armDPD(sa.cfg.dpdDelay)
			sa.emit(&PeerHint{SA: sa, Notify: what, Refuted: true})
		},
		func(err error) {
			sa.hint.checking = false
			sa.die(fmt.Errorf("%w (after the peer's unauthenticated %s): %w", ErrDeadPeer, what, err))
		})
	return true
}

// fromPeer reports whether a is one of the peer's addresses.
func (sa *SA) fromPeer(a netip.Addr) bool {
	a = a.Unmap()
	return a == sa.Path().Remote.Addr().Unmap() || slices.Contains(sa.mobike.peerAddrs, a)
}

// ourOutboundSPI reports whether an INVALID_SPI notify names the SPI of one
// of our Child SAs' outbound halves (the SPI the peer could not find).
func (sa *SA) ourOutboundSPI(n *wire.Notify) bool {
	var spi uint32
	switch {
	case len(n.Data) == 4:
		spi = binary.BigEndian.Uint32(n.Data)
	case len(n.SPI) == 4:
		spi = binary.BigEndian.Uint32(n.SPI)
	default:
		return false
	}
	return slices.ContainsFunc(sa.children, func(c ChildSA) bool { return c.SPIOut == spi })
}
