package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// reauthState is RFC 4478's: the lifetime the responder announced
// (initiator), and the responder's deadline for a replacement.
type reauthState struct {
	lifetime time.Duration
	timer    Timer
}

// Repeated authentication (RFC 4478). The original responder tells the
// original initiator, with an AUTH_LIFETIME notify in the IKE_AUTH
// response or in a later INFORMATIONAL request, how many seconds remain
// before the initiator must authenticate again. Reauthentication itself is
// a new IKE SA made from scratch (IKE_SA_INIT + IKE_AUTH) by the owner of
// the SA (tunnel/reauth.go), who then deletes the old one: the engine only
// carries the lifetime, leaves INITIAL_CONTACT out of the new IKE_AUTH
// (InitiatorConfig.NoInitialContact) so the gateway keeps the old SA until
// the new one works, and asks for the old inner addresses
// (InitiatorConfig.RequestVIPs).

// ErrReauthExpired ends a responder's IKE SA whose initiator did not
// reauthenticate within the AUTH_LIFETIME it was given (and a grace).
var ErrReauthExpired = errors.New("initiator did not reauthenticate in time")

// AuthLifetime reports an AUTH_LIFETIME that arrived after establishment
// (in an INFORMATIONAL request): the initiator must reauthenticate within
// Lifetime from now. One in the IKE_AUTH response is in
// Established.AuthLifetime instead.
type AuthLifetime struct {
	SA       *SA
	Lifetime time.Duration
}

func (*AuthLifetime) event() {}

// maxAuthLifetime caps what a peer may announce (the 32-bit field allows
// 136 years; timers that far out only overflow arithmetic).
const maxAuthLifetime = 10 * 365 * 24 * time.Hour

// parseAuthLifetime returns the lifetime of the AUTH_LIFETIME notify in ps:
// ok is false when there is none or it is malformed (not four octets).
func parseAuthLifetime(ps []wire.Payload) (d time.Duration, present, ok bool) {
	n := wire.FindNotify(ps, wire.NotifyAuthLifetime)
	if n == nil {
		return 0, false, false
	}
	if len(n.Data) != 4 {
		return 0, true, false
	}
	// Zero asks for a reauthentication now; a second keeps "none" (0)
	// apart from it in Established.AuthLifetime.
	d = time.Duration(binary.BigEndian.Uint32(n.Data)) * time.Second
	return min(max(d, time.Second), maxAuthLifetime), true, true
}

// authLifetimeNotify encodes d, rounded up to whole seconds (a peer told
// less than we mean would only reauthenticate early).
func authLifetimeNotify(d time.Duration) *wire.Notify {
	secs := (d + time.Second - 1) / time.Second
	secs = min(max(secs, 0), 1<<32-1)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(secs))
	return &wire.Notify{Type: wire.NotifyAuthLifetime, Data: b[:]}
}

// noteAuthLifetime records the AUTH_LIFETIME of the IKE_AUTH response ps
// (initiator). A malformed one is counted and ignored: the gateway then
// ends the SA at its deadline and we reconnect, which is no worse than an
// implementation without RFC 4478.
func (sa *SA) noteAuthLifetime(ps []wire.Payload) {
	d, present, ok := parseAuthLifetime(ps)
	if present && !ok {
		sa.stats.badNotifies.Add(1)
		return
	}
	if ok {
		sa.reauth.lifetime = d
		sa.log.Info("gateway asks for reauthentication", "auth_lifetime", d)
	}
}

// handleAuthLifetimeRequest looks for an AUTH_LIFETIME in an INFORMATIONAL
// request; it returns the report for the owner to send after the response.
func (sa *SA) handleAuthLifetimeRequest(ps []wire.Payload) func() {
	d, present, ok := parseAuthLifetime(ps)
	if present && !ok {
		sa.stats.badNotifies.Add(1)
	}
	if !ok || !sa.initiator {
		// RFC 4478 defines it from the original responder only.
		return nil
	}
	sa.reauth.lifetime = d
	sa.log.Info("gateway announced a new authentication lifetime", "auth_lifetime", d)
	ev := &AuthLifetime{SA: sa, Lifetime: d}
	return func() { sa.emit(ev) }
}

// reauthGrace is how long past the announced lifetime a responder waits
// before it deletes an SA that was not replaced: long enough for a
// reauthentication started at the last moment over a slow path.
func reauthGrace(lifetime time.Duration) time.Duration {
	return max(lifetime/10, 10*time.Second)
}

// armReauthDeadline (responder) ends the SA if the initiator has not
// replaced it when its authentication lifetime and the grace have passed.
// An IKE SA rekey does not reset it: new keys are not a new authentication.
func (sa *SA) armReauthDeadline(lifetime time.Duration) {
	if lifetime <= 0 {
		return
	}
	if sa.reauth.timer != nil {
		sa.reauth.timer.Stop()
	}
	sa.reauth.timer = sa.cfg.clock.AfterFunc(lifetime+reauthGrace(lifetime), func() {
		sa.post(func() {
			if sa.state != stateEstablished {
				return
			}
			sa.log.Warn("initiator did not reauthenticate in time: deleting the IKE SA", "peer", sa.peerID, "auth_lifetime", lifetime)
			sa.deleteIKE(ErrReauthExpired)
		})
	})
}

// SendAuthLifetime (responder) tells the initiator in an INFORMATIONAL
// request that it must reauthenticate within d, and moves our own
// deadline accordingly; it returns when the initiator has answered.
func (sa *SA) SendAuthLifetime(ctx context.Context, d time.Duration) error {
	return sa.await(ctx, func(res chan<- error) {
		if sa.initiator {
			res <- errors.New("ike: AUTH_LIFETIME is the original responder's to send")
			return
		}
		if sa.state != stateEstablished {
			res <- fmt.Errorf("ike: AUTH_LIFETIME in state %s", sa.state)
			return
		}
		sa.armReauthDeadline(d)
		sa.startRequest(wire.ExchangeInformational,
			func() []wire.Payload { return []wire.Payload{authLifetimeNotify(d)} },
			func(wire.Header, []wire.Payload, []byte) { res <- nil },
			func(err error) { res <- err })
	})
}

// cpRequest is the CFG_REQUEST of IKE_AUTH: an address of each family and
// DNS servers, with the addresses in want filled in (RFC 7296 3.15.1 lets
// the initiator name the address it would like, here the one it had, so a
// reauthentication or reconnect keeps applications' connections).
func cpRequest(want []netip.Addr) *wire.Config {
	v4 := wire.ConfigAttribute{Type: cfgIP4Address}
	v6 := wire.ConfigAttribute{Type: cfgIP6Address}
	for _, a := range want {
		switch {
		case a.Is4() && v4.Value == nil:
			v4.Value = a.AsSlice()
		case a.Is6() && !a.Is4In6() && v6.Value == nil:
			v6.Value = append(a.AsSlice(), 128)
		}
	}
	return &wire.Config{CfgType: wire.CfgRequest, Attributes: []wire.ConfigAttribute{
		v4, {Type: cfgIP4DNS}, v6, {Type: cfgIP6DNS}, {Type: cfgDNSDomain}}}
}
