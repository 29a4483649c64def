package netmon

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Route is the kernel's answer to "how would a packet to dst leave".
type Route struct {
	Src     netip.Addr
	IfIndex int
	IfName  string
	MTU     int // the route's MTU when set, else the link's
}

// RouteTo asks the kernel how a packet to dst carrying mark would leave. The
// mark matters under full-tunnel policy routing: the tunnel's own packets
// carry it and must be routed around the TUN device.
func RouteTo(dst netip.Addr, mark uint32) (Route, error) {
	rs, err := netlink.RouteGetWithOptions(net.IP(dst.Unmap().AsSlice()), &netlink.RouteGetOptions{Mark: mark})
	if err != nil {
		return Route{}, fmt.Errorf("no route to %s: %w", dst, err)
	}
	if len(rs) == 0 {
		return Route{}, fmt.Errorf("no route to %s", dst)
	}
	r := rs[0]
	link, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return Route{}, fmt.Errorf("route to %s: interface %d: %w", dst, r.LinkIndex, err)
	}
	out := Route{IfIndex: r.LinkIndex, IfName: link.Attrs().Name, MTU: link.Attrs().MTU}
	if r.MTU > 0 {
		out.MTU = r.MTU
	}
	if src, ok := netip.AddrFromSlice(r.Src); ok {
		out.Src = src.Unmap()
	}
	if !out.Src.IsValid() {
		return Route{}, fmt.Errorf("route to %s via %s has no source address", dst, out.IfName)
	}
	return out, nil
}
