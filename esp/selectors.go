package esp

import (
	"net/netip"
)

// Traffic selector checks on inbound packets (RFC 4301 5.2): after an
// inbound packet authenticates, its inner source must lie within the
// peer's selectors (the prefixes we route to the child) and its inner
// destination within ours (ChildConfig.Local). Otherwise a peer could
// inject traffic claiming any address, or send through us to addresses the
// SA was never negotiated for. Only addresses are checked: roam negotiates
// selectors of any protocol and port.

// admit reports whether the decrypted inner packet may go to the TUN
// device, counting the drop when not.
func (d *Dataplane) admit(c *child, inner []byte) bool {
	src, ok := innerSrc(inner)
	if !ok {
		d.drops.malformed.Add(1)
		return false
	}
	dst, _ := innerDst(inner) // innerSrc's checks cover innerDst's
	if !within(c.remote, src) || !within(c.local, dst) {
		d.drops.outsideSelectors.Add(1)
		return false
	}
	return true
}

func within(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
