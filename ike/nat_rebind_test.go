package ike

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/netsim"
)

// TestNATRebindingWithoutMOBIKE: a client without MOBIKE behind a NAT that
// gives it a new public port. Its next authenticated request moves the IKE
// SA, and ESP must follow (RFC 7296 2.23): the gateway reports PathUpdated.
func TestNATRebindingWithoutMOBIKE(t *testing.T) {
	e := newEnv(t, 900, nil)
	h := e.net.AddHost("client-nat", natInside)
	nat := e.net.AddNAT(natPublic, netsim.RestrictedCone)
	nat.Attach(h)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Path.Local = netip.AddrPortFrom(natInside, 40000)
	cfg.MOBIKE = false
	c := e.dialHost(h, cfg)
	if _, err := c.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	est := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	if !est.NATRemote || est.PeerMOBIKE {
		t.Fatalf("NATRemote %v PeerMOBIKE %v", est.NATRemote, est.PeerMOBIKE)
	}
	before := est.SA.Path()
	nat.Flush()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.sa.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
	after := est.SA.Path()
	if after.Remote == before.Remote {
		t.Fatalf("the NAT kept the mapping %v", before.Remote)
	}
	pu := nextEvent[*PathUpdated](t, e.respEvents, 2*time.Second)
	if pu.Path.Remote != after.Remote {
		t.Fatalf("ESP moved to %v, IKE is on %v", pu.Path.Remote, after.Remote)
	}
}
