package lab

import (
	"net/netip"
	"strings"
	"testing"
)

// TestHATopology: the two gateway nodes reach each other over their
// replication link and the corp host over one LAN, the client reaches the
// standby's public address through its NAT, and the host's route to the
// client pool follows CorpRouteVia.
func TestHATopology(t *testing.T) {
	l := NewT(t, Options{HA: true})
	for _, c := range []struct {
		ns  string
		dst netip.Addr
	}{
		{Gateway, HALinkGW2.Addr()},
		{Gateway2, HALinkGW.Addr()},
		{Gateway, HostAddr.Addr()},
		{Gateway2, HostAddr.Addr()},
		{Client, Gateway2Addr.Addr()},
		{Client, GatewayAddr1.Addr()},
	} {
		if err := l.Ping(c.ns, c.dst, 1); err != nil {
			t.Errorf("%s -> %v: %v", c.ns, c.dst, err)
		}
	}
	for _, node := range []string{Gateway2, Gateway} {
		if err := l.CorpRouteVia(node); err != nil {
			t.Fatal(err)
		}
		out, err := l.Output(Host, "ip", "route", "get", VirtualIPPool.Addr().Next().String())
		if err != nil {
			t.Fatal(err)
		}
		want := GatewayLAN.Addr().String()
		if node == Gateway2 {
			want = Gateway2LAN.Addr().String()
		}
		if !strings.Contains(out, "via "+want) {
			t.Errorf("route to the pool after CorpRouteVia(%s): %s", node, out)
		}
	}
	if names, err := l.Namespaces(); err != nil || len(names) != len(Roles)+1 {
		t.Errorf("namespaces %v (%v), want %d", names, err, len(Roles)+1)
	}
}
