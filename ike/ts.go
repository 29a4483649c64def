package ike

import (
	"net/netip"

	"github.com/roam-vpn/roam/ike/wire"
)

// PrefixTS returns the selector covering prefix p, all protocols and ports.
func PrefixTS(p netip.Prefix) wire.TrafficSelector {
	p = p.Masked()
	return wire.TrafficSelector{StartPort: 0, EndPort: 65535, Start: p.Addr(), End: lastAddr(p)}
}

// AddrTS returns the selector covering the single address a.
func AddrTS(a netip.Addr) wire.TrafficSelector {
	return wire.TrafficSelector{StartPort: 0, EndPort: 65535, Start: a, End: a}
}

// PrefixesTS converts prefixes to selectors.
func PrefixesTS(ps []netip.Prefix) []wire.TrafficSelector {
	out := make([]wire.TrafficSelector, 0, len(ps))
	for _, p := range ps {
		out = append(out, PrefixTS(p))
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func tsValid(t wire.TrafficSelector) bool {
	return t.Start.IsValid() && t.End.IsValid() && t.Start.Is4() == t.End.Is4() &&
		t.Start.Compare(t.End) <= 0 && t.StartPort <= t.EndPort
}

// intersectTS returns the overlap of two selectors.
func intersectTS(a, b wire.TrafficSelector) (wire.TrafficSelector, bool) {
	if !tsValid(a) || !tsValid(b) || a.Start.Is4() != b.Start.Is4() {
		return wire.TrafficSelector{}, false
	}
	var r wire.TrafficSelector
	switch {
	case a.IPProtocol == 0:
		r.IPProtocol = b.IPProtocol
	case b.IPProtocol == 0 || a.IPProtocol == b.IPProtocol:
		r.IPProtocol = a.IPProtocol
	default:
		return r, false
	}
	r.StartPort, r.EndPort = max(a.StartPort, b.StartPort), min(a.EndPort, b.EndPort)
	r.Start, r.End = a.Start, a.End
	if b.Start.Compare(r.Start) > 0 {
		r.Start = b.Start
	}
	if b.End.Compare(r.End) < 0 {
		r.End = b.End
	}
	if r.StartPort > r.EndPort || r.Start.Compare(r.End) > 0 {
		return wire.TrafficSelector{}, false
	}
	return r, true
}

// NarrowTS narrows the requested selectors to what allowed permits
// (RFC 7296 2.9): every non-empty pairwise intersection, without duplicates.
// An empty result means TS_UNACCEPTABLE.
func NarrowTS(requested, allowed []wire.TrafficSelector) []wire.TrafficSelector {
	var out []wire.TrafficSelector
	for _, r := range requested {
		for _, a := range allowed {
			x, ok := intersectTS(r, a)
			if !ok || containsTS(out, x) {
				continue
			}
			out = append(out, x)
		}
	}
	return out
}

func containsTS(list []wire.TrafficSelector, t wire.TrafficSelector) bool {
	for _, x := range list {
		if x == t {
			return true
		}
	}
	return false
}

// subsetTS reports whether every selector in got lies within one of want.
func subsetTS(got, want []wire.TrafficSelector) bool {
	for _, g := range got {
		ok := false
		for _, w := range want {
			if x, in := intersectTS(g, w); in && x == g {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
