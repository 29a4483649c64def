package wire

import (
	"math/big"
	"net/netip"
)

// SelectorFromPrefix returns the traffic selector covering p, all protocols
// and ports.
func SelectorFromPrefix(p netip.Prefix) TrafficSelector {
	p = p.Masked()
	return TrafficSelector{StartPort: 0, EndPort: 0xffff, Start: p.Addr(), End: lastAddr(p)}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// RangePrefixes returns the smallest list of prefixes that exactly covers
// the inclusive range start..end (empty when the range is invalid), so a
// narrowed selector like 10.0.0.5-10.0.0.9 can become routes.
func RangePrefixes(start, end netip.Addr) []netip.Prefix {
	if !start.IsValid() || !end.IsValid() || start.Is4() != end.Is4() || end.Less(start) {
		return nil
	}
	bits := start.BitLen()
	lo := new(big.Int).SetBytes(start.AsSlice())
	hi := new(big.Int).SetBytes(end.AsSlice())
	one := big.NewInt(1)
	var out []netip.Prefix
	for lo.Cmp(hi) <= 0 {
		// The largest block aligned at lo that does not pass hi.
		size := 0
		for size < bits {
			next := size + 1
			mask := new(big.Int).Sub(new(big.Int).Lsh(one, uint(next)), one)
			if new(big.Int).And(lo, mask).Sign() != 0 {
				break
			}
			top := new(big.Int).Add(lo, mask)
			if top.Cmp(hi) > 0 {
				break
			}
			size = next
		}
		buf := make([]byte, bits/8)
		lo.FillBytes(buf)
		a, _ := netip.AddrFromSlice(buf)
		out = append(out, netip.PrefixFrom(a, bits-size))
		lo.Add(lo, new(big.Int).Lsh(one, uint(size)))
	}
	return out
}
