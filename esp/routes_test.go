package esp

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

// routeRig installs children on one dataplane without running it.
type routeRig struct {
	t    testing.TB
	d    *Dataplane
	peer *Peer
	spi  uint32
}

func newRouteRig(t testing.TB) *routeRig {
	d := NewDataplane(nil, nil, nil)
	return &routeRig{t: t, d: d, peer: d.NewPeer(Path{Remote: netip.MustParseAddrPort("127.0.0.1:4500")})}
}

// install adds a child routed to prefixes and returns its inbound SPI.
func (r *routeRig) install(pending bool, prefixes ...string) uint32 {
	r.t.Helper()
	r.spi++
	key := make([]byte, 20)
	in, _ := NewInboundSA(r.spi, key, false)
	out, _ := NewOutboundSA(0x10000+r.spi, key, false)
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	if err := r.d.InstallChild(r.peer, ChildConfig{In: in, Out: out, Remote: ps, Local: anyLocal, OutboundPending: pending}); err != nil {
		r.t.Fatal(err)
	}
	return r.spi
}

// via returns the inbound SPI of the child dst goes out on, 0 for none.
func (r *routeRig) via(dst string) uint32 {
	if c := r.d.routes.lookup(netip.MustParseAddr(dst), nil); c != nil {
		return c.in.SPI()
	}
	return 0
}

func TestRouteLookup(t *testing.T) {
	type step struct {
		do   func(r *routeRig) // changes the tables
		dst  string
		want uint32 // inbound SPI of the child chosen; 0: no route
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"longest prefix wins whatever the order", []step{
			{do: func(r *routeRig) {
				r.install(false, "10.1.2.0/24")
				r.install(false, "10.0.0.0/8")
				r.install(false, "0.0.0.0/0")
			}},
			{dst: "10.1.2.3", want: 1}, {dst: "10.9.9.9", want: 2}, {dst: "192.0.2.1", want: 3},
		}},
		{"no route", []step{
			{do: func(r *routeRig) { r.install(false, "10.0.0.0/8", "fd00::/8") }},
			{dst: "11.0.0.1", want: 0}, {dst: "fe80::1", want: 0}, {dst: "fd12::1", want: 1},
		}},
		{"families do not mix", []step{
			{do: func(r *routeRig) { r.install(false, "0.0.0.0/0") }},
			{dst: "::ffff:10.0.0.1", want: 0}, {dst: "2001:db8::1", want: 0}, {dst: "10.0.0.1", want: 1},
		}},
		{"ipv6 lengths across the 64-bit halves", []step{
			{do: func(r *routeRig) {
				r.install(false, "2001:db8::/32")
				r.install(false, "2001:db8:0:1::/64")
				r.install(false, "2001:db8:0:1::5/128")
				r.install(false, "2001:db8:0:1:8000::/65")
			}},
			{dst: "2001:db8:0:1::5", want: 3}, {dst: "2001:db8:0:1::6", want: 2},
			{dst: "2001:db8:0:1:8000::1", want: 4}, {dst: "2001:db8:ffff::1", want: 1},
		}},
		{"unmasked prefix routes its network", []step{
			{do: func(r *routeRig) { r.install(false, "10.1.2.3/16") }},
			{dst: "10.1.200.1", want: 1},
		}},
		{"newest child wins an equal prefix", []step{
			{do: func(r *routeRig) { r.install(false, "10.0.0.0/8"); r.install(false, "10.0.0.0/8") }},
			{dst: "10.0.0.1", want: 2},
		}},
		{"pending child waits behind, then promote", []step{
			{do: func(r *routeRig) { r.install(false, "10.0.0.0/8"); r.install(true, "10.0.0.0/8") }},
			{dst: "10.0.0.1", want: 1},
			{do: func(r *routeRig) { r.d.promote(r.d.child(2)) }},
			{dst: "10.0.0.1", want: 2},
		}},
		{"pending children queue in install order", []step{
			{do: func(r *routeRig) {
				r.install(false, "10.0.0.0/8")
				r.install(true, "10.0.0.0/8")
				r.install(true, "10.0.0.0/8")
			}},
			{dst: "10.0.0.1", want: 1},
			{do: func(r *routeRig) { r.d.RemoveChild(1) }},
			{dst: "10.0.0.1", want: 2},
			{do: func(r *routeRig) { r.d.promote(r.d.child(3)) }},
			{dst: "10.0.0.1", want: 3},
		}},
		{"a pending child alone sends", []step{
			{do: func(r *routeRig) { r.install(true, "10.0.0.0/8") }},
			{dst: "10.0.0.1", want: 1},
		}},
		{"retire stops sending but keeps the SPI", []step{
			{do: func(r *routeRig) {
				r.install(false, "10.0.0.0/8")
				r.install(false, "10.0.0.0/8")
				r.d.RetireChild(2, 1<<40)
			}},
			{dst: "10.0.0.1", want: 1},
			{do: func(r *routeRig) {
				if r.d.child(2) == nil {
					r.t.Error("retired child gone at once")
				}
				r.d.promote(r.d.child(2)) // an inbound straggler must not bring its routes back
			}},
			{dst: "10.0.0.1", want: 1},
			{do: func(r *routeRig) { r.d.RemoveChild(2); r.d.RemoveChild(2) }},
			{dst: "10.0.0.1", want: 1},
		}},
		{"removing the only child of a length", []step{
			{do: func(r *routeRig) { r.install(false, "10.0.0.0/8"); r.install(false, "10.1.0.0/16"); r.d.RemoveChild(2) }},
			{dst: "10.1.0.1", want: 1},
			{do: func(r *routeRig) { r.install(false, "10.1.0.0/16") }},
			{dst: "10.1.0.1", want: 3},
		}},
		{"remove peer", []step{
			{do: func(r *routeRig) {
				r.install(false, "0.0.0.0/0")
				r.peer = r.d.NewPeer(Path{Remote: netip.MustParseAddrPort("127.0.0.2:4500")})
				r.install(false, "10.0.0.0/8", "10.0.0.0/8")
				r.d.RemovePeer(r.peer)
			}},
			{dst: "10.0.0.1", want: 1},
			{do: func(r *routeRig) {
				if r.d.child(2) != nil || len(r.d.ChildStats(nil)) != 1 {
					r.t.Error("the removed peer's child is still installed")
				}
			}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRouteRig(t)
			for i, s := range tt.steps {
				if s.do != nil {
					s.do(r)
					continue
				}
				if got := r.via(s.dst); got != s.want {
					t.Errorf("step %d: %s goes via child %d, want %d", i, s.dst, got, s.want)
				}
			}
		})
	}
}

// TestRouteBySource: a gateway's Child SAs of one client share the
// client's address as destination; the packet's source, within one
// child's own selectors, picks which one sends.
func TestRouteBySource(t *testing.T) {
	install := func(r *routeRig, pending bool, local string) uint32 {
		r.t.Helper()
		r.spi++
		key := make([]byte, 20)
		in, _ := NewInboundSA(r.spi, key, false)
		out, _ := NewOutboundSA(0x10000+r.spi, key, false)
		cfg := ChildConfig{In: in, Out: out, Remote: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/32")},
			Local: []netip.Prefix{netip.MustParsePrefix(local)}, OutboundPending: pending}
		if err := r.d.InstallChild(r.peer, cfg); err != nil {
			r.t.Fatal(err)
		}
		return r.spi
	}
	from := func(r *routeRig, src string) uint32 {
		pkt := make([]byte, 20)
		pkt[0] = 0x45
		s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr("10.9.0.2").As4()
		copy(pkt[12:16], s[:])
		copy(pkt[16:20], d[:])
		if c := r.d.routes.lookup(netip.AddrFrom4(d), pkt); c != nil {
			return c.in.SPI()
		}
		return 0
	}
	type probe struct {
		src  string
		want uint32
	}
	tests := []struct {
		name   string
		setup  func(r *routeRig)
		probes []probe
	}{
		{"each source its own child", func(r *routeRig) {
			install(r, false, "10.1.0.0/24")
			install(r, false, "10.2.0.0/24")
		}, []probe{{"10.1.0.1", 1}, {"10.2.0.1", 2}, {"10.3.0.1", 2}}},
		{"a rekeyed child takes over its source only", func(r *routeRig) {
			install(r, false, "10.1.0.0/24")
			install(r, false, "10.2.0.0/24")
			install(r, false, "10.1.0.0/24") // rekey of 1, initiated
		}, []probe{{"10.1.0.1", 3}, {"10.2.0.1", 2}}},
		{"a pending rekey waits behind the old child of its source", func(r *routeRig) {
			install(r, false, "10.1.0.0/24")
			install(r, false, "10.2.0.0/24")
			install(r, true, "10.2.0.0/24")
		}, []probe{{"10.1.0.1", 1}, {"10.2.0.1", 2}}},
		{"the old child removed, its successor sends", func(r *routeRig) {
			install(r, false, "10.1.0.0/24")
			install(r, false, "10.2.0.0/24")
			install(r, true, "10.2.0.0/24")
			r.d.RemoveChild(2)
		}, []probe{{"10.1.0.1", 1}, {"10.2.0.1", 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRouteRig(t)
			tt.setup(r)
			for _, p := range tt.probes {
				if got := from(r, p.src); got != p.want {
					t.Errorf("from %s: child %d, want %d", p.src, got, p.want)
				}
			}
		})
	}
}

// TestLFMapAgainstMap drives the map through growth and shrinkage and
// compares it with a Go map after every step.
func TestLFMapAgainstMap(t *testing.T) {
	m := newLFMap[uint32, int](hashSPI)
	ref := map[uint32]int{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		k := rng.Uint32N(3000)
		switch {
		case i > 12000 && rng.IntN(4) != 0: // mostly deletes late on: shrink
			m.delete(k)
			delete(ref, k)
		case rng.IntN(3) == 0:
			m.delete(k)
			delete(ref, k)
		default:
			m.set(k, i)
			ref[k] = i
		}
		want, wantOK := ref[k]
		if got, ok := m.get(k); ok != wantOK || got != want {
			t.Fatalf("step %d: get(%d) = %d, %v; want %d, %v", i, k, got, ok, want, wantOK)
		}
	}
	if m.len() != len(ref) {
		t.Fatalf("len %d, want %d", m.len(), len(ref))
	}
	seen := 0
	for k, v := range m.all() {
		if ref[k] != v {
			t.Fatalf("all yields %d=%d, want %d", k, v, ref[k])
		}
		seen++
	}
	if seen != len(ref) {
		t.Fatalf("all yields %d entries, want %d", seen, len(ref))
	}
}

// TestRouteLookupAllocs: finding the SA for a packet allocates nothing.
func TestRouteLookupAllocs(t *testing.T) {
	r := newRouteRig(t)
	addrs := installClients(t, r, 1000)
	r.install(false, "0.0.0.0/0", "::/0")
	v6 := netip.MustParseAddr("2001:db8::1")
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		if r.d.routes.lookup(addrs[i%len(addrs)], nil) == nil || r.d.routes.lookup(v6, nil) == nil || r.d.child(uint32(i%1000+1)) == nil {
			t.Fatal("lookup failed")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
}

// installClients installs n peers with one child each routed to a /32,
// as a gateway does for clients with virtual IPs, and returns the
// addresses.
func installClients(tb testing.TB, r *routeRig, n int) []netip.Addr {
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		r.peer = r.d.NewPeer(Path{Remote: netip.MustParseAddrPort("127.0.0.1:4500")})
		r.install(false, netip.PrefixFrom(addrs[i], 32).String())
	}
	return addrs
}

var peerCounts = []int{1, 100, 10000}

// BenchmarkOutbound is the per-packet outbound work short of the socket:
// route lookup, path, sequence number and seal, counters, with n peers
// installed. active=1 sends to one of them: what a lookup costs must not
// depend on how many others there are. active=all spreads the packets
// over every peer, which adds the cache misses of touching n SAs' key
// state: that grows with n whatever the lookup.
func BenchmarkOutbound(b *testing.B) {
	for _, n := range peerCounts {
		b.Run(fmt.Sprintf("peers=%d/active=1", n), func(b *testing.B) { benchOutbound(b, n, 1) })
		if n > 1 {
			b.Run(fmt.Sprintf("peers=%d/active=all", n), func(b *testing.B) { benchOutbound(b, n, n) })
		}
	}
}

func benchOutbound(b *testing.B, n, active int) {
	r := newRouteRig(b)
	addrs := installClients(b, r, n)
	pkts := make([][]byte, active)
	for i := range pkts {
		// The active peers are spread over the table, not the first ones.
		a := addrs[i*n/active]
		pkts[i] = make([]byte, 1400)
		pkts[i][0] = 0x45
		copy(pkts[i][16:20], a.AsSlice())
	}
	out := make([]byte, 0, maxPacket+64)
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pkt := pkts[i%active]
		dst, _ := innerDst(pkt)
		c := r.d.routes.lookup(dst, nil)
		if c == nil || c.peer.path.Load() == nil {
			b.Fatal("no route")
		}
		sealed, err := c.out.Seal(out[:0], pkt)
		if err != nil {
			b.Fatal(err)
		}
		c.packetsOut.Add(1)
		c.bytesOut.Add(uint64(len(sealed)))
	}
}

// BenchmarkRouteLookup is the lookup alone.
func BenchmarkRouteLookup(b *testing.B) {
	for _, n := range peerCounts {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			r := newRouteRig(b)
			addrs := installClients(b, r, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r.d.routes.lookup(addrs[i%n], nil) == nil {
					b.Fatal("no route")
				}
			}
		})
	}
}

// BenchmarkInstallClients installs n clients one by one into an empty
// dataplane and removes them again: the cost per client must not grow
// with n.
func BenchmarkInstallClients(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				r := newRouteRig(b)
				installClients(b, r, n)
				for spi := uint32(1); spi <= uint32(n); spi++ {
					r.d.RemoveChild(spi)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/client")
		})
	}
}

// TestRouteTableAgainstScan drives the table through random installs,
// pending installs, promotions, retirements and removals and compares
// every lookup with the obvious model: a list scanned for the longest
// prefix, the first child in sending order winning a tie.
func TestRouteTableAgainstScan(t *testing.T) {
	type entry struct {
		prefix netip.Prefix
		spi    uint32
	}
	pool := prefixes("0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.1.2.4/32",
		"192.0.2.0/24", "::/0", "fd00::/8", "fd00:1::/64", "fd00:1::1/128", "fd00:1:0:0:8000::/65")
	probes := []string{"10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.3.1", "10.2.0.1", "11.0.0.1", "192.0.2.9",
		"fd00:1::1", "fd00:1::2", "fd00:1::8000:0:0:1", "fd00:2::1", "2001:db8::1"}
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 20; round++ {
		r := newRouteRig(t)
		var model []entry // in sending order within each prefix
		live := map[uint32][]netip.Prefix{}
		add := func(spi uint32, ps []netip.Prefix, behind bool) {
			for _, p := range ps {
				if behind {
					model = append(model, entry{p, spi})
				} else {
					model = append([]entry{{p, spi}}, model...)
				}
			}
		}
		drop := func(spi uint32) {
			var keep []entry
			for _, e := range model {
				if e.spi != spi {
					keep = append(keep, e)
				}
			}
			model = keep
		}
		for step := 0; step < 200; step++ {
			switch op := rng.IntN(10); {
			case op < 5 || len(live) == 0:
				var ps []netip.Prefix
				var ss []string
				for i := rng.IntN(3) + 1; i > 0; i-- {
					p := pool[rng.IntN(len(pool))]
					if !slices.Contains(ps, p) {
						ps = append(ps, p)
						ss = append(ss, p.String())
					}
				}
				pending := rng.IntN(3) == 0
				spi := r.install(pending, ss...)
				live[spi] = ps
				add(spi, ps, pending)
			default:
				spi := randomKey(rng, live)
				switch op {
				case 5, 6:
					r.d.RemoveChild(spi)
					delete(live, spi)
					drop(spi)
				case 7:
					r.d.RetireChild(spi, 1<<40)
					delete(live, spi)
					drop(spi)
				default:
					c := r.d.child(spi)
					if c.pending.Load() {
						ps := live[spi]
						drop(spi)
						add(spi, ps, false)
					}
					r.d.promote(c)
				}
			}
			for _, probe := range probes {
				dst := netip.MustParseAddr(probe)
				var want uint32
				bits := -1
				for _, e := range model {
					if e.prefix.Contains(dst) && e.prefix.Bits() > bits {
						want, bits = e.spi, e.prefix.Bits()
					}
				}
				if got := r.via(probe); got != want {
					t.Fatalf("round %d step %d: %s via %d, want %d", round, step, probe, got, want)
				}
			}
		}
	}
}

func randomKey(rng *rand.Rand, m map[uint32][]netip.Prefix) uint32 {
	keys := slices.Sorted(maps.Keys(m))
	return keys[rng.IntN(len(keys))]
}

// TestLFMapConcurrentReaders: keys that are never deleted stay visible to
// readers while a writer grows, shrinks and rewrites the map around them.
func TestLFMapConcurrentReaders(t *testing.T) {
	m := newLFMap[uint32, uint32](hashSPI)
	const stable = 64
	for k := uint32(0); k < stable; k++ {
		m.set(k, k*10)
	}
	stop := make(chan struct{})
	errs := make(chan string, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for k := uint32(0); k < stable; k++ {
					if v, ok := m.get(k); !ok || v != k*10 {
						errs <- fmt.Sprintf("key %d: %d, %v", k, v, ok)
						return
					}
				}
			}
		}()
	}
	for round := 0; round < 20; round++ {
		for k := uint32(stable); k < stable+2000; k++ {
			m.set(k, 1)
		}
		for k := uint32(0); k < stable; k++ {
			m.set(k, k*10) // rewritten in place, same value
		}
		for k := uint32(stable); k < stable+2000; k++ {
			m.delete(k)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
}
