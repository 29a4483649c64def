// Package ikesim sets up IKE over the in-memory network of internal/netsim
// for tests: a gateway that authenticates as GatewayID and accepts
// ClientID, both by pre-shared key, and a client that dials it. The
// configs come complete with the settings most tests share; a test changes
// the fields it is about before it calls Listen or Dial.
//
// It owns no network and runs nothing beyond the responder and SA it
// starts; a test builds the network (netsim.New) and its hosts and closes
// them.
package ikesim

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// The identities and the pre-shared key of the two ends.
const (
	GatewayID = "vpn.example.com"
	ClientID  = "alice@example.com"
	PSK       = "correct horse battery staple"
)

// The proposals both ends offer, in roam's profile syntax.
const (
	IKEProposal = "aes128gcm16-prfsha256-x25519"
	ESPProposal = "aes128gcm16"
)

// FastRetransmit suits an in-memory network: a lost message is sent again
// after tens of milliseconds, not seconds, and an exchange gives up within
// about two seconds.
func FastRetransmit() ike.Retransmit {
	return ike.Retransmit{Initial: 40 * time.Millisecond, Factor: 1.5, Max: 200 * time.Millisecond, Retries: 10}
}

// Proposals is the engine's form of the one proposal s, which parse reads
// (config.ParseIKEProposal or config.ParseESPProposal); tb fails if s does
// not parse. (Not through ikeesp, whose own tests use this package.)
func Proposals(tb testing.TB, parse func(string) (config.Proposal, error), s string) []ike.Proposal {
	tb.Helper()
	p, err := parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return []ike.Proposal{ike.Proposal(p)}
}

// ResponderConfig is the gateway's config: PSK authentication both ways,
// IKEProposal and ESPProposal, inner addresses from 10.99.200.0/24 for
// the clients, 10.99.0.0/24 behind the gateway, and FastRetransmit.
func ResponderConfig(tb testing.TB) ike.ResponderConfig {
	tb.Helper()
	local, err := ike.NewPSKAuth(GatewayID, []byte(PSK))
	if err != nil {
		tb.Fatal(err)
	}
	pool, err := ike.NewPool([]netip.Prefix{netip.MustParsePrefix("10.99.200.0/24")})
	if err != nil {
		tb.Fatal(err)
	}
	return ike.ResponderConfig{
		LocalAuth:  local,
		PeerAuth:   func(*wire.Identification) (ike.PeerAuth, error) { return ike.NewPSKPeer(ClientID, []byte(PSK)) },
		IKE:        Proposals(tb, config.ParseIKEProposal, IKEProposal),
		ESP:        Proposals(tb, config.ParseESPProposal, ESPProposal),
		Pool:       pool,
		LocalTS:    []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
		Retransmit: FastRetransmit(),
	}
}

// InitiatorConfig is the client's config for the gateway at remote, from
// local: PSK authentication both ways, IKEProposal and ESPProposal, a
// virtual IP asked for, 10.99.0.0/24 wanted behind the gateway, and
// FastRetransmit.
func InitiatorConfig(tb testing.TB, local, remote netip.AddrPort) ike.InitiatorConfig {
	tb.Helper()
	auth, err := ike.NewPSKAuth(ClientID, []byte(PSK))
	if err != nil {
		tb.Fatal(err)
	}
	peer, err := ike.NewPSKPeer(GatewayID, []byte(PSK))
	if err != nil {
		tb.Fatal(err)
	}
	return ike.InitiatorConfig{
		Path:      netpath.Path{Local: local, Remote: remote},
		LocalAuth: auth, PeerAuth: peer, RemoteID: GatewayID,
		IKE:       Proposals(tb, config.ParseIKEProposal, IKEProposal),
		ESP:       Proposals(tb, config.ParseESPProposal, ESPProposal),
		RemoteTS:  []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
		VirtualIP: true, Retransmit: FastRetransmit(),
	}
}

// Listen runs a responder with cfg on host, which hands it every IKE
// message that arrives there, until ctx is done.
func Listen(ctx context.Context, tb testing.TB, host *netsim.Host, cfg ike.ResponderConfig, events chan<- ike.Event) *ike.Responder {
	tb.Helper()
	r, err := ike.NewResponder(ctx, cfg, host, events)
	if err != nil {
		tb.Fatal(err)
	}
	host.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		r.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
	})
	return r
}

// Dial starts the client's exchange with cfg from host and returns its SA
// without waiting for it. The host hands the SA every IKE message that
// arrives, the first answer included: the SA is known to the handler
// before the request leaves.
func Dial(ctx context.Context, tb testing.TB, host *netsim.Host, cfg ike.InitiatorConfig, events chan<- ike.Event) *ike.SA {
	tb.Helper()
	var mu sync.Mutex
	var sa *ike.SA
	host.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		mu.Lock()
		s := sa
		mu.Unlock()
		if s != nil {
			s.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
		}
	})
	mu.Lock()
	s, err := ike.Dial(ctx, cfg, host, events)
	sa = s
	mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Established is the first Established event on events, or tb fails
// after timeout; the events before it are dropped.
func Established(tb testing.TB, events <-chan ike.Event, timeout time.Duration) *ike.Established {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-events:
			if est, ok := ev.(*ike.Established); ok {
				return est
			}
		case <-deadline:
			tb.Fatal("no Established event")
			return nil
		}
	}
}
