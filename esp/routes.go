package esp

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Outbound SA lookup. Every installed prefix is a key of one hash map
// (address masked to its length, the length, the family); a lookup probes
// that map once per prefix length present, longest first, so its cost
// depends on how many lengths are in use (one on a gateway whose clients
// each have a virtual IP, one on a client routing 0.0.0.0/0), not on how
// many peers there are. Children sharing a prefix are kept in the order
// that decides which one sends: newest first, a rekey responder's pending
// child behind the others until promote. Children of one prefix whose own
// selectors differ (a gateway's Child SAs of one client, each for another
// of its local networks) are told apart by the packet's source: the first
// in order whose Local holds it sends.

// routeKey is a masked prefix.
type routeKey struct {
	hi, lo uint64
	bits   uint8
	v6     bool
}

func hashRoute(k routeKey, seed uint64) uint64 {
	h := mix64(k.lo ^ seed)
	if k.v6 {
		h = mix64(h ^ k.hi ^ 1<<63)
	}
	return h ^ uint64(k.bits)
}

func v4Key(a uint32, bits uint8) routeKey {
	// A shift by 32 yields 0, which is the mask of /0.
	return routeKey{lo: uint64(a & (^uint32(0) << (32 - bits))), bits: bits}
}

func v6Key(hi, lo uint64, bits uint8) routeKey {
	if bits <= 64 {
		return routeKey{hi: hi & (^uint64(0) << (64 - bits)), bits: bits, v6: true}
	}
	return routeKey{hi: hi, lo: lo & (^uint64(0) << (128 - bits)), bits: bits, v6: true}
}

func prefixKey(p netip.Prefix) routeKey {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		return v4Key(binary.BigEndian.Uint32(b[:]), uint8(p.Bits()))
	}
	b := a.As16()
	return v6Key(binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]), uint8(p.Bits()))
}

// routeSet is the children routed into one prefix, the one that sends
// first; first repeats children[0] inside the map's node, which saves the
// lookup a dependent load (a cache miss on a gateway with many clients).
// It is replaced, never modified, so readers need no lock.
// bySource is set when the children's Local selectors differ, so the
// source address picks among them.
type routeSet struct {
	first    *child
	children []*child
	bySource bool
}

func newRouteSet(children []*child) routeSet {
	s := routeSet{first: children[0], children: children}
	for _, c := range children[1:] {
		if !slices.Equal(c.local, s.first.local) {
			s.bySource = true
			break
		}
	}
	return s
}

// from picks the child for an inner packet from src: the first whose
// selectors hold src, else the first.
func (s *routeSet) from(src netip.Addr) *child {
	for _, c := range s.children {
		if within(c.local, src) {
			return c
		}
	}
	return s.first
}

// routeTable maps inner destinations to children. lookup is safe at any
// time; the other methods are for one writer at a time (Dataplane.mu).
type routeTable struct {
	sets *lfMap[routeKey, routeSet]
	// lens4 and lens6 are the prefix lengths in use, longest first.
	lens4, lens6   atomic.Pointer[[]uint8]
	count4, count6 [129]int // prefixes in use per length; writer only
}

func newRouteTable() *routeTable {
	rt := &routeTable{sets: newLFMap[routeKey, routeSet](hashRoute)}
	rt.lens4.Store(&[]uint8{})
	rt.lens6.Store(&[]uint8{})
	return rt
}

// lookup returns the child an inner packet to dst goes out on, nil if
// none; pkt is the packet, whose source decides among children of one
// prefix with differing selectors.
func (rt *routeTable) lookup(dst netip.Addr, pkt []byte) *child {
	s, ok := rt.set(dst)
	if !ok {
		return nil
	}
	if s.bySource {
		if src, ok := innerSrc(pkt); ok {
			return s.from(src)
		}
	}
	return s.first
}

// set returns the children of the longest prefix holding dst.
func (rt *routeTable) set(dst netip.Addr) (routeSet, bool) {
	if dst.Is4() {
		b := dst.As4()
		a := binary.BigEndian.Uint32(b[:])
		for _, l := range *rt.lens4.Load() {
			if s, ok := rt.sets.get(v4Key(a, l)); ok {
				return s, true
			}
		}
		return routeSet{}, false
	}
	b := dst.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	for _, l := range *rt.lens6.Load() {
		if s, ok := rt.sets.get(v6Key(hi, lo, l)); ok {
			return s, true
		}
	}
	return routeSet{}, false
}

// add routes c's prefixes to it, in front of the children already there
// or, when behind is set, after them.
func (rt *routeTable) add(c *child, behind bool) {
	for _, p := range c.routes {
		k := prefixKey(p)
		old, ok := rt.sets.get(k)
		if !ok {
			rt.sets.set(k, newRouteSet([]*child{c}))
			rt.count(k, +1)
			continue
		}
		if slices.Contains(old.children, c) {
			continue // the same prefix listed twice
		}
		cs := make([]*child, 0, len(old.children)+1)
		if behind {
			cs = append(append(cs, old.children...), c)
		} else {
			cs = append(append(cs, c), old.children...)
		}
		rt.sets.set(k, newRouteSet(cs))
	}
}

// promote moves c in front of the other children on its prefixes.
func (rt *routeTable) promote(c *child) {
	for _, p := range c.routes {
		k := prefixKey(p)
		old, ok := rt.sets.get(k)
		if !ok || old.children[0] == c || !slices.Contains(old.children, c) {
			continue
		}
		cs := append(make([]*child, 0, len(old.children)), c)
		for _, o := range old.children {
			if o != c {
				cs = append(cs, o)
			}
		}
		rt.sets.set(k, newRouteSet(cs))
	}
}

// drop removes c from its prefixes; dropping twice is harmless.
func (rt *routeTable) drop(c *child) {
	for _, p := range c.routes {
		k := prefixKey(p)
		old, ok := rt.sets.get(k)
		if !ok || !slices.Contains(old.children, c) {
			continue
		}
		if len(old.children) == 1 {
			rt.sets.delete(k)
			rt.count(k, -1)
			continue
		}
		cs := make([]*child, 0, len(old.children)-1)
		for _, o := range old.children {
			if o != c {
				cs = append(cs, o)
			}
		}
		rt.sets.set(k, newRouteSet(cs))
	}
}

// count tracks how many prefixes of k's length are in use and republishes
// the lengths to probe when one appears or goes.
func (rt *routeTable) count(k routeKey, delta int) {
	counts, lens := &rt.count4, &rt.lens4
	if k.v6 {
		counts, lens = &rt.count6, &rt.lens6
	}
	before := counts[k.bits]
	counts[k.bits] += delta
	if (before == 0) == (counts[k.bits] == 0) {
		return
	}
	var ls []uint8
	for l := len(counts) - 1; l >= 0; l-- {
		if counts[l] > 0 {
			ls = append(ls, uint8(l))
		}
	}
	lens.Store(&ls)
}
