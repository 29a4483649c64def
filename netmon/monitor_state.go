package netmon

import (
	"cmp"
	"net"
	"net/netip"
	"path"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkRec is what the monitor remembers of one interface, usable or not:
// ignored and down links are kept so that their addresses and routes can be
// attributed (and dropped) by name.
type linkRec struct {
	name  string
	flags uint32 // IFF_* as reported by the kernel
	oper  netlink.LinkOperState
}

type addrKey struct {
	ifindex int
	addr    netip.Addr
}

type addrRec struct {
	bits  int
	flags int // IFA_F_*
	scope int // RT_SCOPE_*
}

// netState mirrors the kernel's links and addresses as reported by netlink,
// unfiltered; usability is decided when a view is taken, because a link
// going down changes the usability of addresses that did not change.
type netState struct {
	links map[int]linkRec
	addrs map[addrKey]addrRec
}

func newNetState() *netState {
	return &netState{links: make(map[int]linkRec), addrs: make(map[addrKey]addrRec)}
}

// reset replaces the state with a full dump.
func (s *netState) reset(links []netlink.Link, addrs []netlink.Addr) {
	clear(s.links)
	clear(s.addrs)
	for _, l := range links {
		if a := l.Attrs(); a != nil && a.Index > 0 {
			s.links[a.Index] = linkRec{name: a.Name, flags: a.RawFlags, oper: a.OperState}
		}
	}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		s.setAddr(true, *a.IPNet, a.LinkIndex, a.Flags, a.Scope)
	}
}

// applyLink folds one link update into the state. It reports false for an
// update it could not use.
func (s *netState) applyLink(u netlink.LinkUpdate) bool {
	if u.Link == nil || u.Attrs() == nil || u.Attrs().Index <= 0 {
		return false
	}
	a := u.Attrs()
	switch u.Header.Type {
	case unix.RTM_DELLINK:
		delete(s.links, a.Index)
		// The kernel removes the addresses too, but on another socket whose
		// messages may arrive later; dropping them here keeps a vanished
		// link from leaving usable addresses behind.
		for k := range s.addrs {
			if k.ifindex == a.Index {
				delete(s.addrs, k)
			}
		}
	case unix.RTM_NEWLINK:
		s.links[a.Index] = linkRec{name: a.Name, flags: a.RawFlags, oper: a.OperState}
	default:
		return false
	}
	return true
}

// applyAddr folds one address update into the state.
func (s *netState) applyAddr(u netlink.AddrUpdate) bool {
	return s.setAddr(u.NewAddr, u.LinkAddress, u.LinkIndex, u.Flags, u.Scope)
}

func (s *netState) setAddr(present bool, n net.IPNet, ifindex, flags, scope int) bool {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok || ifindex <= 0 {
		return false
	}
	ip = ip.Unmap()
	bits, total := n.Mask.Size()
	if total == 0 { // non-canonical mask: keep the address, assume a host prefix
		bits = ip.BitLen()
	}
	k := addrKey{ifindex: ifindex, addr: ip}
	if present {
		s.addrs[k] = addrRec{bits: bits, flags: flags, scope: scope}
	} else {
		delete(s.addrs, k)
	}
	return true
}

// usableLocalAddr reports whether an address may be the outer source
// address of the tunnel: a routable unicast address that the kernel will
// actually send from. Tentative IPv6 addresses are still in duplicate
// address detection (optimistic ones, RFC 4429, may already be used);
// deprecated ones must not start new flows (RFC 4862 5.5.4), and an IKE SA
// moved onto one would be moved again when it expires.
func usableLocalAddr(ip netip.Addr, flags, scope int) bool {
	switch {
	case !ip.IsValid(), ip.IsUnspecified(), ip.IsLoopback(), ip.IsMulticast(),
		ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return false
	}
	if ip.Is4() && ip == netip.IPv4Unspecified() {
		return false
	}
	switch scope {
	case unix.RT_SCOPE_HOST, unix.RT_SCOPE_LINK, unix.RT_SCOPE_NOWHERE:
		return false
	}
	if flags&(unix.IFA_F_DADFAILED|unix.IFA_F_DEPRECATED) != 0 {
		return false
	}
	if flags&unix.IFA_F_TENTATIVE != 0 && flags&unix.IFA_F_OPTIMISTIC == 0 {
		return false
	}
	return true
}

// linkUsable reports whether a link can carry the tunnel: administratively
// up, with carrier, and not dormant (a Wi-Fi link still authenticating has
// carrier but cannot pass traffic yet). Drivers that do not report an
// operational state leave it unknown, as dummy and TUN devices do.
func linkUsable(l linkRec) bool {
	if l.flags&unix.IFF_LOOPBACK != 0 {
		return false
	}
	if l.flags&unix.IFF_UP == 0 || l.flags&unix.IFF_LOWER_UP == 0 {
		return false
	}
	return l.oper == netlink.OperUp || l.oper == netlink.OperUnknown
}

// ignoreList matches interface names against path.Match patterns.
type ignoreList []string

func (il ignoreList) match(name string) bool {
	for _, p := range il {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// view is the usable part of the state: what the monitor reports.
type view struct {
	links map[int]string
	addrs map[addrKey]Address
}

func (s *netState) view(ignore ignoreList) view {
	v := view{links: make(map[int]string), addrs: make(map[addrKey]Address)}
	for idx, l := range s.links {
		if linkUsable(l) && !ignore.match(l.name) {
			v.links[idx] = l.name
		}
	}
	for k, a := range s.addrs {
		name, ok := v.links[k.ifindex]
		if !ok || !usableLocalAddr(k.addr, a.flags, a.scope) {
			continue
		}
		v.addrs[k] = Address{Addr: k.addr, Bits: a.bits, IfIndex: k.ifindex, IfName: name}
	}
	return v
}

// routeRelevant reports whether a route update may change how the tunnel's
// packets leave: routes through ignored links (our own TUN, whose routes we
// install ourselves) and the local table (which merely mirrors address
// changes) are not.
func (s *netState) routeRelevant(u netlink.RouteUpdate, ignore ignoreList) bool {
	if u.Table == unix.RT_TABLE_LOCAL {
		return false
	}
	if u.Flags&unix.RTM_F_CLONED != 0 {
		return false
	}
	idx := []int{u.LinkIndex}
	for _, nh := range u.MultiPath {
		if nh != nil {
			idx = append(idx, nh.LinkIndex)
		}
	}
	for _, i := range idx {
		if i == 0 {
			continue
		}
		l, ok := s.links[i]
		if !ok || !ignore.match(l.name) {
			return true
		}
	}
	// Blackhole and unreachable routes have no link at all and still matter.
	return u.LinkIndex == 0 && len(u.MultiPath) == 0
}

// current is the path the caller uses now; its loss is reported at once.
type current struct {
	addr    netip.Addr // invalid: no current address
	ifindex int        // 0: any interface (for the address) / no current link
}

func (c current) hasAddr(k addrKey) bool {
	return c.addr.IsValid() && k.addr == c.addr && (c.ifindex == 0 || c.ifindex == k.ifindex)
}

// lost reports whether moving from old to now takes away the current address
// or the current uplink: the unambiguous losses that skip the debounce.
func (c current) lost(old, now view) bool {
	if c.ifindex != 0 {
		if _, was := old.links[c.ifindex]; was {
			if _, is := now.links[c.ifindex]; !is {
				return true
			}
		}
	}
	if c.addr.IsValid() {
		for k := range old.addrs {
			if c.hasAddr(k) {
				if _, is := now.addrs[k]; !is {
					return true
				}
			}
		}
	}
	return false
}

// diff lists the events that take a consumer from old to now. Losses come
// first, the current path's ahead of the others, so that a consumer acting on
// the first event acts on the one that matters; the snapshot comes last.
func diff(old, now view, cur current, routes int, at time.Time) []Event {
	var lost, gained []Event
	var curLost []Event
	for _, idx := range sortedKeys(old.links) {
		if _, ok := now.links[idx]; ok {
			continue
		}
		ev := LinkDown{IfIndex: idx, IfName: old.links[idx], Current: cur.ifindex != 0 && cur.ifindex == idx, At: at}
		if ev.Current {
			curLost = append(curLost, ev)
		} else {
			lost = append(lost, ev)
		}
	}
	for _, k := range sortedAddrKeys(old.addrs) {
		if _, ok := now.addrs[k]; ok {
			continue
		}
		ev := AddressRemoved{Address: old.addrs[k], Current: cur.hasAddr(k), At: at}
		if ev.Current {
			curLost = append(curLost, ev)
		} else {
			lost = append(lost, ev)
		}
	}
	// A renamed link or a changed prefix length keeps its identity (index,
	// address): the consumer's path does not change, only the snapshot does,
	// so a Snapshot alone reports it.
	for _, idx := range sortedKeys(now.links) {
		if _, ok := old.links[idx]; !ok {
			gained = append(gained, LinkUp{IfIndex: idx, IfName: now.links[idx], At: at})
		}
	}
	for _, k := range sortedAddrKeys(now.addrs) {
		if _, ok := old.addrs[k]; !ok {
			gained = append(gained, AddressAdded{Address: now.addrs[k], At: at})
		}
	}
	evs := append(curLost, lost...)
	evs = append(evs, gained...)
	if routes > 0 {
		evs = append(evs, RouteChanged{Updates: routes, At: at})
	}
	list := now.list()
	if len(evs) == 0 && slices.Equal(old.list(), list) {
		return nil
	}
	return append(evs, Snapshot{Addrs: list, At: at})
}

func (v view) list() []Address {
	out := make([]Address, 0, len(v.addrs))
	for _, k := range sortedAddrKeys(v.addrs) {
		out = append(out, v.addrs[k])
	}
	return out
}

func sortedKeys[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sortedAddrKeys(m map[addrKey]Address) []addrKey {
	ks := make([]addrKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b addrKey) int {
		if c := cmp.Compare(a.ifindex, b.ifindex); c != 0 {
			return c
		}
		return a.addr.Compare(b.addr)
	})
	return ks
}
