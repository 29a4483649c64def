package tunnel

import (
	"log/slog"
	"net/netip"
	"os"
	"testing"
)

// With MOBIKE the client has a socket per address family on one port, so a
// move between IPv4 and IPv6 outer paths keeps the port its NAT detection
// hashes and the gateway know; without MOBIKE only the gateway's family.
func TestClientSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN; run as root")
	}
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name    string
		gw      netip.Addr
		mobike  bool
		wantV6s []bool
	}{
		{"IPv4 gateway, MOBIKE", netip.MustParseAddr("203.0.113.10"), true, []bool{false, true}},
		{"IPv6 gateway, MOBIKE", netip.MustParseAddr("2001:db8::10"), true, []bool{true, false}},
		{"IPv4 gateway, no MOBIKE", netip.MustParseAddr("203.0.113.10"), false, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socks, err := clientSockets(listenUDP, tc.gw, tc.mobike, log)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, s := range socks {
					s.Close()
				}
			}()
			if len(socks) != len(tc.wantV6s) {
				t.Fatalf("%d sockets, want %d", len(socks), len(tc.wantV6s))
			}
			for i, s := range socks {
				if s.LocalAddr().Addr().Is6() != tc.wantV6s[i] {
					t.Errorf("socket %d bound to %v", i, s.LocalAddr())
				}
				if s.LocalAddr().Port() != socks[0].LocalAddr().Port() {
					t.Errorf("socket %d on port %d, first on %d", i, s.LocalAddr().Port(), socks[0].LocalAddr().Port())
				}
			}
		})
	}
}
