package ikesim

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/netsim"
)

// TestDialEstablishes: the client's config and the gateway's agree, over
// a clean network and over one that loses and reorders, and the client
// gets an inner address from the gateway's pool.
func TestDialEstablishes(t *testing.T) {
	for _, tt := range []struct {
		name string
		link netsim.Impairment
	}{
		{"clean", netsim.Impairment{}},
		{"lossy", netsim.Impairment{Loss: 0.2, Delay: 5 * time.Millisecond, Jitter: 5 * time.Millisecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			n := netsim.New(3)
			n.SetDefault(tt.link)
			t.Cleanup(func() { cancel(); n.Close() })
			gw, client := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.10")
			gwEvents := make(chan ike.Event, 16)
			Listen(ctx, t, n.AddHost("gw", gw), ResponderConfig(t), gwEvents)
			clHost := n.AddHost("client", client)
			sa := Dial(ctx, t, clHost, InitiatorConfig(t, netip.AddrPortFrom(client, 40000), netip.AddrPortFrom(gw, 500)), make(chan ike.Event, 16))
			wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
			defer wcancel()
			est, err := sa.Wait(wctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(est.VirtualIPs) != 1 || !netip.MustParsePrefix("10.99.200.0/24").Contains(est.VirtualIPs[0]) {
				t.Fatalf("virtual IPs %v, want one from 10.99.200.0/24", est.VirtualIPs)
			}
			if gwEst := Established(t, gwEvents, 20*time.Second); gwEst.PeerID != ClientID {
				t.Fatalf("the gateway established %q, want %q", gwEst.PeerID, ClientID)
			}
		})
	}
}
