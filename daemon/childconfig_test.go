package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/roam-vpn/roam/ike"
	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

func tsRange(from, to string) wire.TrafficSelector {
	return wire.TrafficSelector{Start: netip.MustParseAddr(from), End: netip.MustParseAddr(to)}
}

// TestChildConfigSelectors: every install path (client, gateway, HA
// standby, rekeys) builds its dataplane child with childConfig, which
// must hand the dataplane both ends' selectors: the peer's route outbound
// traffic and bound inbound sources, ours bound inbound destinations.
func TestChildConfigSelectors(t *testing.T) {
	tests := []struct {
		name              string
		local, remote     []wire.TrafficSelector
		wantLocal, wantRm []string
	}{
		{"client with a virtual IP",
			[]wire.TrafficSelector{tsRange("10.99.200.7", "10.99.200.7")},
			[]wire.TrafficSelector{tsRange("0.0.0.0", "255.255.255.255")},
			[]string{"10.99.200.7/32"}, []string{"0.0.0.0/0"}},
		{"gateway side, both families",
			[]wire.TrafficSelector{tsRange("10.99.0.0", "10.99.0.255"), tsRange("fd00::", "fd00::ffff")},
			[]wire.TrafficSelector{tsRange("10.99.200.7", "10.99.200.7")},
			[]string{"10.99.0.0/24", "fd00::/112"}, []string{"10.99.200.7/32"}},
		{"a range that is not one prefix",
			[]wire.TrafficSelector{tsRange("10.0.0.1", "10.0.0.6")},
			[]wire.TrafficSelector{tsRange("10.1.0.0", "10.1.0.0")},
			[]string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}, []string{"10.1.0.0/32"}},
	}
	key := make([]byte, 20)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := ike.ChildSA{
				SPIIn: 0x1001, SPIOut: 0x2002, KeyIn: key, KeyOut: key, LocalTS: tt.local, RemoteTS: tt.remote,
				Transforms: []wire.Transform{{Type: wire.TransformEncr, ID: ikecrypto.EncrAESGCM16, KeyLength: 128}},
			}
			for _, pending := range []bool{false, true} {
				cfg, err := childConfig(ch, selectorsToPrefixes(ch.RemoteTS), pending)
				if err != nil {
					t.Fatal(err)
				}
				if got := prefixStrings(cfg.Local); !slices.Equal(got, tt.wantLocal) {
					t.Errorf("local %v, want %v", got, tt.wantLocal)
				}
				if got := prefixStrings(cfg.Remote); !slices.Equal(got, tt.wantRm) {
					t.Errorf("remote %v, want %v", got, tt.wantRm)
				}
				if cfg.OutboundPending != pending {
					t.Errorf("pending %v, want %v", cfg.OutboundPending, pending)
				}
			}
		})
	}
}
