package ikeesp

import (
	"net/netip"
	"testing"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
)

func mustProposals(t *testing.T, parse func(string) (config.Proposal, error), s string) []ike.Proposal {
	t.Helper()
	p, err := parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return Proposals([]config.Proposal{p})
}

var (
	simR1     = netip.MustParseAddr("198.51.100.1")
	simClient = netip.MustParseAddr("192.0.2.10")
	simPSK    = []byte("correct horse battery staple")
)
