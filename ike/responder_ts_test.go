package ike

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

// TestInitiatorTSNarrowedToGrant: a client's TSi is narrowed to what the
// gateway gave it (its leased addresses and the prefixes configured for its
// identity), never to what it asks for. Bob, logged in, must not get alice's
// inner address nor any address of his choosing.
func TestInitiatorTSNarrowedToGrant(t *testing.T) {
	bobNet := netip.MustParsePrefix("10.99.201.0/24")
	tests := []struct {
		name    string
		bobVIP  bool           // bob sends a CFG_REQUEST
		bobTS   []netip.Prefix // bob's TSi (nil: alice's address, found at run time)
		granted []netip.Prefix // the gateway's prefixes for bob
		want    []netip.Prefix // bob's narrowed TSi; nil means TS_UNACCEPTABLE
		wantVIP bool           // plus bob's leased address
	}{
		{"no-cp-claims-alice", false, nil, nil, nil, false},
		{"no-cp-asks-everything", false, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, nil, nil, false},
		{"no-cp-claims-alice-granted-other", false, nil, []netip.Prefix{bobNet}, nil, false},
		{"no-cp-granted-prefix", false, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, []netip.Prefix{bobNet}, []netip.Prefix{bobNet}, false},
		{"no-cp-granted-part", false, []netip.Prefix{netip.MustParsePrefix("10.99.201.128/25")}, []netip.Prefix{bobNet}, []netip.Prefix{netip.MustParsePrefix("10.99.201.128/25")}, false},
		{"cp-claims-alice", true, nil, nil, nil, false},
		{"cp-asks-everything", true, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, nil, nil, true},
		{"cp-and-granted", true, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, []netip.Prefix{bobNet}, []netip.Prefix{bobNet}, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(300+i), func(r *ResponderConfig) {
				r.PeerTS = func(id *wire.Identification) []netip.Prefix {
					if identityString(id) == "bob@example.com" {
						return tc.granted
					}
					return nil
				}
			})
			alice := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
			aest, err := alice.wait(t, 5*time.Second)
			if err != nil {
				t.Fatalf("alice: %v", err)
			}
			var aliceV4 netip.Addr
			for _, a := range aest.VirtualIPs {
				if a.Is4() {
					aliceV4 = a
				}
			}
			nextEvent[*Established](t, e.respEvents, 2*time.Second)
			cfg := defaultInitiatorConfig(t, "bob@example.com")
			cfg.Path.Local = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.77"), 40000)
			cfg.VirtualIP = tc.bobVIP
			cfg.LocalTS = tc.bobTS
			if cfg.LocalTS == nil {
				cfg.LocalTS = []netip.Prefix{netip.PrefixFrom(aliceV4, 32)}
			}
			est, err := e.dial(cfg).wait(t, 5*time.Second)
			if tc.want == nil && !tc.wantVIP {
				if !errors.Is(err, ErrTSUnacceptable) {
					t.Fatalf("bob: error %v, Established %+v; want TS_UNACCEPTABLE", err, est)
				}
				return
			}
			if err != nil {
				t.Fatalf("bob: %v", err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			want := PrefixesTS(tc.want)
			if tc.wantVIP {
				for _, a := range est.VirtualIPs {
					if a.Is4() {
						want = append([]wire.TrafficSelector{AddrTS(a)}, want...)
					}
				}
			}
			got := gw.Children[0].RemoteTS
			if len(got) != len(want) {
				t.Fatalf("gateway's TSi for bob %+v, want %+v", got, want)
			}
			for j := range got {
				if got[j] != want[j] {
					t.Fatalf("gateway's TSi for bob %+v, want %+v", got, want)
				}
				if got[j].Start.Compare(aliceV4) <= 0 && got[j].End.Compare(aliceV4) >= 0 {
					t.Fatalf("bob got alice's address %v: %+v", aliceV4, got)
				}
			}
		})
	}
}
