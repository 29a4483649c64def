package ike

import (
	"fmt"
	"math/big"
	"net/netip"
	"sync"
)

// Pool hands out inner addresses (CP INTERNAL_IP4/6_ADDRESS). An identity
// gets back the address it had before, also while its previous IKE SA still
// exists (a reconnect before the old SA's deletion); addresses released
// longest ago are reused first when the pool is otherwise full.
type Pool struct {
	mu   sync.Mutex
	fams []*famPool
}

type famPool struct {
	prefix  netip.Prefix
	size    uint64 // usable addresses
	next    uint64
	owner   map[netip.Addr]string
	byID    map[string]netip.Addr
	refs    map[string]int
	idle    []string // identities with refs == 0, oldest first
	reserve map[netip.Addr]bool
}

// NewPool creates a pool over at most one IPv4 and one IPv6 prefix. The
// network address (and for IPv4 the broadcast address) is never handed out,
// nor are the addresses in reserved (such as the gateway's own inner address).
func NewPool(prefixes []netip.Prefix, reserved ...netip.Addr) (*Pool, error) {
	p := &Pool{}
	for _, pfx := range prefixes {
		pfx = pfx.Masked()
		for _, f := range p.fams {
			if f.prefix.Addr().Is4() == pfx.Addr().Is4() {
				return nil, fmt.Errorf("ike: pool: two prefixes of the same family (%s, %s)", f.prefix, pfx)
			}
		}
		hostBits := pfx.Addr().BitLen() - pfx.Bits()
		var size uint64
		switch {
		case hostBits >= 20:
			size = 1 << 20 // enough for any gateway; keeps the scan bounded
		case pfx.Addr().Is4():
			size = max((uint64(1)<<hostBits)-2, 0)
		default:
			size = (uint64(1) << hostBits) - 1
		}
		if hostBits < 2 && pfx.Addr().Is4() {
			size = 0
		}
		if size == 0 {
			return nil, fmt.Errorf("ike: pool: prefix %s has no usable addresses", pfx)
		}
		f := &famPool{prefix: pfx, size: size, owner: map[netip.Addr]string{}, byID: map[string]netip.Addr{},
			refs: map[string]int{}, reserve: map[netip.Addr]bool{}}
		for _, a := range reserved {
			if pfx.Contains(a) {
				f.reserve[a] = true
			}
		}
		p.fams = append(p.fams, f)
	}
	return p, nil
}

// Has reports whether the pool serves the address family (v4 or v6).
func (p *Pool) Has(v6 bool) bool {
	if p == nil {
		return false
	}
	for _, f := range p.fams {
		if f.prefix.Addr().Is6() == v6 {
			return true
		}
	}
	return false
}

// Acquire leases an address of the family to identity.
func (p *Pool) Acquire(identity string, v6 bool) (netip.Addr, error) {
	if p == nil {
		return netip.Addr{}, ErrPoolExhausted
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.fams {
		if f.prefix.Addr().Is6() == v6 {
			return f.acquire(identity)
		}
	}
	return netip.Addr{}, fmt.Errorf("ike: pool has no IPv%d prefix: %w", map[bool]int{false: 4, true: 6}[v6], ErrPoolExhausted)
}

// Release ends one lease of identity on a; the address stays associated with
// the identity until another identity needs it.
func (p *Pool) Release(identity string, a netip.Addr) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.fams {
		if f.byID[identity] == a && f.refs[identity] > 0 {
			f.refs[identity]--
			if f.refs[identity] == 0 {
				f.idle = append(f.idle, identity)
			}
		}
	}
}

func (f *famPool) acquire(id string) (netip.Addr, error) {
	if a, ok := f.byID[id]; ok {
		if f.refs[id] == 0 {
			f.removeIdle(id)
		}
		f.refs[id]++
		return a, nil
	}
	for i := uint64(0); i < f.size; i++ {
		a := f.addr(1 + (f.next+i)%f.size)
		if _, used := f.owner[a]; used || f.reserve[a] {
			continue
		}
		f.next = (f.next + i + 1) % f.size
		f.bind(id, a)
		return a, nil
	}
	if len(f.idle) > 0 {
		old := f.idle[0]
		f.idle = f.idle[1:]
		a := f.byID[old]
		delete(f.byID, old)
		delete(f.refs, old)
		f.bind(id, a)
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("ike: pool %s: %w", f.prefix, ErrPoolExhausted)
}

func (f *famPool) bind(id string, a netip.Addr) {
	f.owner[a] = id
	f.byID[id] = a
	f.refs[id] = 1
}

func (f *famPool) removeIdle(id string) {
	for i, x := range f.idle {
		if x == id {
			f.idle = append(f.idle[:i], f.idle[i+1:]...)
			return
		}
	}
}

func (f *famPool) addr(off uint64) netip.Addr {
	base := new(big.Int).SetBytes(f.prefix.Addr().AsSlice())
	base.Add(base, new(big.Int).SetUint64(off))
	b := base.Bytes()
	out := make([]byte, f.prefix.Addr().BitLen()/8)
	copy(out[len(out)-len(b):], b)
	a, _ := netip.AddrFromSlice(out)
	return a
}
