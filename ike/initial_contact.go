package ike

import (
	"errors"
	"slices"

	"github.com/roam-vpn/roam/ike/wire"
)

// INITIAL_CONTACT (RFC 7296 2.4): an initiator that sends it in IKE_AUTH
// says the new IKE SA is the only one between it and us, so the responder
// drops the others of that identity (a client that restarted or lost its
// state cannot delete them itself, and they would hold Child SAs, pool
// leases and DPD work until they time out). A reauthentication leaves it
// out (reauth.go), and the old SA then lives until its DELETE.

// ErrReplacedByInitialContact ends a responder's IKE SA whose peer made a
// new one with INITIAL_CONTACT.
var ErrReplacedByInitialContact = errors.New("replaced: the peer made a new IKE SA with INITIAL_CONTACT")

// ErrIdentityLimit ends the oldest IKE SA of an identity that made more than
// ResponderConfig.MaxIKESAsPerIdentity.
var ErrIdentityLimit = errors.New("replaced: the identity made more IKE SAs than it may have")

// registerIdentity (responder, on sa's goroutine once it is established)
// lists sa under its peer's identity until it dies; with INITIAL_CONTACT
// in ps, the other SAs of that identity are ended.
func (r *Responder) registerIdentity(sa *SA, key string, ps []wire.Payload) {
	r.mu.Lock()
	if r.byIdentity == nil {
		r.byIdentity = map[string][]*SA{}
	}
	var others []*SA
	sa.initialContact = wire.FindNotify(ps, wire.NotifyInitialContact) != nil
	if sa.initialContact {
		others = slices.Clone(r.byIdentity[key])
	} else if n := len(r.byIdentity[key]) + 1 - r.cfg.MaxIKESAsPerIdentity; n > 0 {
		// A client that reconnects and never deletes what it left
		// behind keeps its newest SAs only.
		others = slices.Clone(r.byIdentity[key][:n])
	}
	r.byIdentity[key] = append(r.byIdentity[key], sa)
	r.mu.Unlock()
	sa.onDead = append(sa.onDead, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.byIdentity[key] = slices.DeleteFunc(r.byIdentity[key], func(x *SA) bool { return x == sa })
		if len(r.byIdentity[key]) == 0 {
			delete(r.byIdentity, key)
		}
	})
	why := ErrReplacedByInitialContact
	if !sa.initialContact {
		why = ErrIdentityLimit
	}
	for _, old := range others {
		sa.log.Info("dropping the peer's older IKE SA", "old_spii", spiHex(old.spii.Load()), "reason", why)
		// Not waited for: old's goroutine may itself be posting to ours.
		go old.post(func() { old.die(why) })
	}
}
