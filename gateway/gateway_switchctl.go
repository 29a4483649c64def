package gateway

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/roam-vpn/roam/report"
)

// switchCandidate is one client SA as the switch command sees it.
type switchCandidate struct {
	ID     string
	Remote netip.AddrPort // the client's current address (its NAT's, behind one)
}

// matchPeer picks the one candidate that peer names: by identity, by
// address:port, or by address alone when only one client uses it.
func matchPeer(cands []switchCandidate, peer string) (int, error) {
	var hits []int
	ap, apErr := netip.ParseAddrPort(peer)
	a, aErr := netip.ParseAddr(peer)
	for i, c := range cands {
		switch {
		case c.ID == peer:
		case apErr == nil && netip.AddrPortFrom(c.Remote.Addr().Unmap(), c.Remote.Port()) == netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()):
		case aErr == nil && c.Remote.Addr().Unmap() == a.Unmap():
		default:
			continue
		}
		hits = append(hits, i)
	}
	switch len(hits) {
	case 0:
		return -1, fmt.Errorf("%w connected as %q (give its identity or its address as `roam status` shows it)", report.ErrUnknownPeer, peer)
	case 1:
		return hits[0], nil
	}
	var names []string
	for _, i := range hits {
		names = append(names, cands[i].ID+" at "+cands[i].Remote.String())
	}
	return -1, fmt.Errorf("%q: %w (%s); name it by address:port", peer, report.ErrAmbiguousPeer, strings.Join(names, ", "))
}

// checkSwitchTarget is the gateway's side of the draft's precondition: it
// must already receive on to, so to is one of the listen addresses, and
// the client can reach it only in the family it uses now.
func checkSwitchTarget(listen []netip.Addr, from netip.Addr, to netip.Addr) error {
	to = to.Unmap()
	ours := false
	for _, a := range listen {
		if a.Unmap() == to {
			ours = true
		}
	}
	if !ours {
		s := make([]string, len(listen))
		for i, a := range listen {
			s[i] = a.String()
		}
		return fmt.Errorf("%s is %w (listen = [%s])", to, report.ErrNotListenAddress, strings.Join(s, ", "))
	}
	from = from.Unmap()
	if from == to {
		return fmt.Errorf("the client already uses %s", to)
	}
	if from.IsValid() && from.Is4() != to.Is4() {
		return fmt.Errorf("%s and the client's current gateway address %s are of different IP families", to, from)
	}
	return nil
}

// switchTarget picks where to move SAs off gone: the first listen address
// of the same family other than gone that is usable now.
func switchTarget(listen []netip.Addr, usable func(netip.Addr) bool, gone netip.Addr) (netip.Addr, bool) {
	gone = gone.Unmap()
	for _, a := range listen {
		a = a.Unmap()
		if a != gone && a.Is4() == gone.Is4() && usable(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}
