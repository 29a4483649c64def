package ike

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

var (
	gwAddr2     = netip.MustParseAddr("198.51.100.2")
	clientAddr2 = netip.MustParseAddr("192.0.2.20")
	natInside   = netip.MustParseAddr("10.1.1.10")
	natPublic   = netip.MustParseAddr("203.0.113.77")
	linkLocal   = netip.MustParseAddr("169.254.7.7")
	gwNATT      = netip.AddrPortFrom(gwAddr, 4500)
	gw2NATT     = netip.AddrPortFrom(gwAddr2, 4500)
	fastRR      = Retransmit{Initial: 40 * time.Millisecond, Factor: 1.5, Max: 200 * time.Millisecond, Retries: 4}
	mobikeWait  = 10 * time.Second
)

// hostsTransport sends each IKE message from the host owning the path's
// local address, so one SA can use uplinks with different NAT situations.
type hostsTransport map[netip.Addr]*netsim.Host

func (m hostsTransport) SendIKE(pkt []byte, path netpath.Path) error {
	h := m[path.Local.Addr()]
	if h == nil {
		return fmt.Errorf("no host for %s", path.Local.Addr())
	}
	return h.SendIKE(pkt, path)
}

// mobikeEnv is a gateway with two addresses announcing both.
func newMobikeEnv(t *testing.T, mod func(*ResponderConfig)) *testEnv {
	t.Helper()
	e := newEnv(t, 1, func(c *ResponderConfig) {
		c.Addresses = []netip.Addr{gwAddr, gwAddr2}
		c.RoutabilityRetransmit = fastRR
		if mod != nil {
			mod(c)
		}
	})
	e.gwHost.AddAddr(gwAddr2)
	return e
}

// dialHosts starts an initiator whose path may leave through any of hosts
// (keyed by local address); cfg.Path.Local must be one of them.
func (e *testEnv) dialHosts(cfg InitiatorConfig, hosts ...*netsim.Host) *client {
	e.t.Helper()
	tr := hostsTransport{}
	for _, h := range hosts {
		for _, a := range h.Addrs() {
			tr[a] = h
		}
	}
	return e.dialOn(cfg, tr, hosts...)
}

// established dials and returns the client and the gateway's SA.
func (e *testEnv) established(cfg InitiatorConfig, hosts ...*netsim.Host) (*client, *SA) {
	e.t.Helper()
	c := e.dialHosts(cfg, hosts...)
	if _, err := c.wait(e.t, mobikeWait); err != nil {
		e.t.Fatalf("establishing: %v", err)
	}
	est := nextEvent[*Established](e.t, e.respEvents, mobikeWait)
	return c, est.SA
}

func pathFrom(local netip.Addr, remote netip.AddrPort) netpath.Path {
	return netpath.Path{Local: netip.AddrPortFrom(local, 40000), Remote: remote}
}

func (e *testEnv) move(c *client, paths ...netpath.Path) (MoveResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	return c.sa.UpdateAddresses(ctx, paths)
}

// ikeResponseFrom matches IKE responses (after the non-ESP marker) sent
// from addr: they reveal themselves in the unencrypted header.
func ikeResponseFrom(addr netip.Addr) func(int, netsim.Datagram) bool {
	return func(_ int, d netsim.Datagram) bool {
		p := d.Payload
		if d.Src.Addr() != addr || len(p) < 4+wire.HeaderLen || binary.BigEndian.Uint32(p) != 0 {
			return false
		}
		return p[4+19]&wire.FlagResponse != 0
	}
}

// holdResponsesFrom drops the IKE responses addr sends toward the gateway
// (its answers to the gateway's path checks) while the returned switch is
// on; it starts on.
func holdResponsesFrom(e *testEnv, addr netip.Addr) *atomic.Bool {
	hold := new(atomic.Bool)
	hold.Store(true)
	drop := ikeResponseFrom(addr)
	e.net.SetLink(addr, gwAddr, netsim.Impairment{Drop: func(i int, d netsim.Datagram) bool {
		return hold.Load() && drop(i, d)
	}})
	return hold
}

// noPathUpdated fails if the gateway reported a move (events so far).
func noPathUpdated(t *testing.T, ch <-chan Event) {
	t.Helper()
	for {
		select {
		case ev := <-ch:
			if pu, ok := ev.(*PathUpdated); ok {
				t.Fatalf("gateway moved to %v", pu.Path)
			}
		default:
			return
		}
	}
}

func waitCounter(t *testing.T, sa *SA, what string, get func(Counters) uint64, want uint64) {
	t.Helper()
	waitAtLeast(t, what, func() uint64 { return get(sa.Counters()) }, want)
}

func TestAddressAnnouncement(t *testing.T) {
	e := newMobikeEnv(t, nil)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.LocalAddresses = func() []netip.Addr { return []netip.Addr{clientAddr, clientAddr2, netip.IPv4Unspecified()} }
	c, gw := e.established(cfg, e.net.AddHost("client", clientAddr, clientAddr2))

	if got, want := c.sa.PeerAddresses(), []netip.Addr{gwAddr, gwAddr2}; !slices.Equal(got, want) {
		t.Errorf("client: PeerAddresses = %v, want %v", got, want)
	}
	if got, want := gw.PeerAddresses(), []netip.Addr{clientAddr, clientAddr2}; !slices.Equal(got, want) {
		t.Errorf("gateway: PeerAddresses = %v, want %v", got, want)
	}
	// Moving to the gateway's other address changes which one is
	// "additional", not the set.
	res, err := e.move(c, pathFrom(clientAddr, gw2NATT))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Remote != gw2NATT {
		t.Fatalf("moved to %v", res.Path)
	}
	if got, want := c.sa.PeerAddresses(), []netip.Addr{gwAddr2, gwAddr}; !slices.Equal(got, want) {
		t.Errorf("client after the move: PeerAddresses = %v, want %v", got, want)
	}
}

func TestAddressAnnouncementSingle(t *testing.T) {
	e := newEnv(t, 1, func(c *ResponderConfig) { c.Addresses = []netip.Addr{gwAddr} })
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr))
	if got, want := c.sa.PeerAddresses(), []netip.Addr{gwAddr}; !slices.Equal(got, want) {
		t.Errorf("client: PeerAddresses = %v, want %v", got, want)
	}
	// Without LocalAddresses the initiator announces nothing.
	if got, want := gw.PeerAddresses(), []netip.Addr{clientAddr}; !slices.Equal(got, want) {
		t.Errorf("gateway: PeerAddresses = %v, want %v", got, want)
	}
	// A peer whose addresses change says so in an INFORMATIONAL request
	// (RFC 4555 3.6; strongSwan does, as responder too).
	for _, step := range []struct {
		ps   []wire.Payload
		want []netip.Addr
	}{
		{[]wire.Payload{&wire.Notify{Type: wire.NotifyAdditionalIP4Address, Data: gwAddr2.AsSlice()}}, []netip.Addr{gwAddr, gwAddr2}},
		{[]wire.Payload{&wire.Notify{Type: wire.NotifyNoAdditionalAddresses}}, []netip.Addr{gwAddr}},
	} {
		answered := make(chan struct{})
		if !call(gw, func() {
			gw.startRequest(wire.ExchangeInformational, func() []wire.Payload { return step.ps },
				func(wire.Header, []wire.Payload, []byte) { close(answered) }, func(error) {})
		}) {
			t.Fatal("gateway SA gone")
		}
		select {
		case <-answered:
		case <-time.After(mobikeWait):
			t.Fatal("no answer to the address update")
		}
		if got := c.sa.PeerAddresses(); !slices.Equal(got, step.want) {
			t.Errorf("client after %v: PeerAddresses = %v, want %v", step.ps[0], got, step.want)
		}
	}
}

func TestAddressNotifies(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::1")
	many := make([]netip.Addr, 12)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)})
	}
	tests := []struct {
		name    string
		addrs   []netip.Addr
		current netip.Addr
		want    []string
	}{
		{"only current", []netip.Addr{gwAddr}, gwAddr, []string{"NO_ADDITIONAL_ADDRESSES"}},
		{"none", nil, gwAddr, []string{"NO_ADDITIONAL_ADDRESSES"}},
		{"both families", []netip.Addr{gwAddr, gwAddr2, v6}, gwAddr, []string{"ADDITIONAL_IP4_ADDRESS 198.51.100.2", "ADDITIONAL_IP6_ADDRESS 2001:db8::1"}},
		{"mapped current", []netip.Addr{netip.AddrFrom16(gwAddr.As16()), gwAddr2}, gwAddr, []string{"ADDITIONAL_IP4_ADDRESS 198.51.100.2"}},
		{"junk skipped", []netip.Addr{{}, netip.IPv4Unspecified(), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("224.0.0.1"), gwAddr2, gwAddr2}, gwAddr,
			[]string{"ADDITIONAL_IP4_ADDRESS 198.51.100.2"}},
		{"capped", many, gwAddr, func() []string {
			var s []string
			for _, a := range many[:maxAnnounced] {
				s = append(s, "ADDITIONAL_IP4_ADDRESS "+a.String())
			}
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range addressNotifies(tt.addrs, tt.current) {
				n := p.(*wire.Notify)
				s := n.Type.String()
				if a, ok := netip.AddrFromSlice(n.Data); ok {
					s += " " + a.String()
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLearnAddresses(t *testing.T) {
	from := netip.MustParseAddr("198.51.100.9")
	n := func(typ wire.NotifyType, data ...byte) *wire.Notify { return &wire.Notify{Type: typ, Data: data} }
	ip4 := func(a string) *wire.Notify {
		return &wire.Notify{Type: wire.NotifyAdditionalIP4Address, Data: netip.MustParseAddr(a).AsSlice()}
	}
	ip6 := func(a string) *wire.Notify {
		return &wire.Notify{Type: wire.NotifyAdditionalIP6Address, Data: netip.MustParseAddr(a).AsSlice()}
	}
	prior := []netip.Addr{netip.MustParseAddr("192.0.2.99")}
	tests := []struct {
		name string
		ps   []wire.Payload
		want []netip.Addr
		bad  uint64
	}{
		{"no address notifies keeps the set", []wire.Payload{n(wire.NotifyCookie2, 1, 2)}, prior, 0},
		{"no additional", []wire.Payload{n(wire.NotifyNoAdditionalAddresses)}, []netip.Addr{from}, 0},
		{"list replaces", []wire.Payload{ip4("192.0.2.1"), ip6("2001:db8::2")},
			[]netip.Addr{from, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::2")}, 0},
		{"source listed too", []wire.Payload{ip4("198.51.100.9")}, []netip.Addr{from}, 0},
		{"wrong lengths dropped", []wire.Payload{n(wire.NotifyAdditionalIP4Address, 1, 2, 3), n(wire.NotifyAdditionalIP6Address, 192, 0, 2, 1),
			n(wire.NotifyAdditionalIP4Address)}, prior, 3},
		{"v6 notify with a v4-mapped v4", []wire.Payload{n(wire.NotifyAdditionalIP4Address, netip.MustParseAddr("2001:db8::3").AsSlice()...)}, prior, 1},
		{"junk addresses ignored", []wire.Payload{ip4("0.0.0.0"), ip4("224.0.0.5"), ip4("127.0.0.1"), ip4("192.0.2.7")},
			[]netip.Addr{from, netip.MustParseAddr("192.0.2.7")}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sa := &SA{mobike: mobikeState{peerAddrs: slices.Clone(prior)}}
			sa.learnAddresses(tt.ps, from)
			if !slices.Equal(sa.mobike.peerAddrs, tt.want) {
				t.Errorf("peer addresses %v, want %v", sa.mobike.peerAddrs, tt.want)
			}
			if got := sa.Counters().BadNotifies; got != tt.bad {
				t.Errorf("BadNotifies = %d, want %d", got, tt.bad)
			}
		})
	}
	// An authenticated peer cannot grow the list without bound.
	var ps []wire.Payload
	for i := range 40 {
		ps = append(ps, ip4(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).String()))
	}
	sa := &SA{}
	sa.learnAddresses(ps, from)
	if len(sa.mobike.peerAddrs) != maxPeerAddresses+1 {
		t.Errorf("%d addresses kept", len(sa.mobike.peerAddrs))
	}
}

func TestNoNATsData(t *testing.T) {
	p4 := netpath.Path{Local: netip.MustParseAddrPort("192.0.2.10:40000"), Remote: netip.MustParseAddrPort("198.51.100.1:4500")}
	d := noNATsData(p4)
	want := []byte{192, 0, 2, 10, 198, 51, 100, 1, 0x9c, 0x40, 0x11, 0x94}
	if !slices.Equal(d, want) {
		t.Fatalf("data %x, want %x", d, want)
	}
	p6 := netpath.Path{Local: netip.MustParseAddrPort("[2001:db8::10]:4500"), Remote: netip.MustParseAddrPort("[2001:db8:1::1]:4500")}
	if d6 := noNATsData(p6); len(d6) != 36 {
		t.Fatalf("IPv6 data is %d bytes", len(d6))
	}
	if noNATsData(netpath.Path{Local: p4.Local, Remote: p6.Remote}) != nil {
		t.Error("mixed families gave data")
	}
	// As the receiver sees the packet: Remote is its source.
	seen := netpath.Path{Local: p4.Remote, Remote: p4.Local}
	natted := netpath.Path{Local: p4.Remote, Remote: netip.MustParseAddrPort("203.0.113.5:40000")}
	portChanged := netpath.Path{Local: p4.Remote, Remote: netip.MustParseAddrPort("192.0.2.10:40001")}
	tests := []struct {
		name string
		data []byte
		from netpath.Path
		want wire.NotifyType
	}{
		{"match", d, seen, 0},
		{"mapped receiver view", d, netpath.Path{Local: netip.AddrPortFrom(netip.AddrFrom16(p4.Remote.Addr().As16()), 4500), Remote: p4.Local}, 0},
		{"address translated", d, natted, wire.NotifyUnexpectedNATDetected},
		{"port translated", d, portChanged, wire.NotifyUnexpectedNATDetected},
		{"IPv6 data on IPv4 packet", noNATsData(p6), seen, wire.NotifyUnexpectedNATDetected},
		{"IPv6 match", noNATsData(p6), netpath.Path{Local: p6.Remote, Remote: p6.Local}, 0},
		{"empty", nil, seen, wire.NotifyInvalidSyntax},
		{"short", d[:11], seen, wire.NotifyInvalidSyntax},
		{"long", append(slices.Clone(d), 0), seen, wire.NotifyInvalidSyntax},
		{"35 bytes", make([]byte, 35), seen, wire.NotifyInvalidSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkNoNATs(tt.data, tt.from); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAcceptRoutable(t *testing.T) {
	v4only := AcceptRoutable([]netip.Addr{gwAddr})
	both := AcceptRoutable([]netip.Addr{gwAddr, netip.MustParseAddr("2001:db8::1")})
	tests := []struct {
		addr     string
		v4, dual bool
	}{
		{"192.0.2.10", true, true},
		{"::ffff:192.0.2.10", true, true},
		{"2001:db8::10", false, true},
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"127.0.0.1", false, false},
		{"::1", false, false},
		{"224.0.0.1", false, false},
		{"ff02::1", false, false},
		{"169.254.7.7", false, false},
		{"fe80::1", false, false},
		{"255.255.255.255", false, false},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := v4only(a); got != tt.v4 {
			t.Errorf("IPv4 gateway: %s accepted=%v", a, got)
		}
		if got := both(a); got != tt.dual {
			t.Errorf("dual-stack gateway: %s accepted=%v", a, got)
		}
	}
	if AcceptRoutable(nil)(gwAddr) {
		t.Error("a gateway without addresses accepted an address")
	}
}

func TestReturnRoutability(t *testing.T) {
	e := newMobikeEnv(t, nil)
	blockB := holdResponsesFrom(e, clientAddr2)
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
	old := gw.Path()

	// The update is answered; the gateway then checks the new address,
	// whose answers are dropped for now: ESP must stay where it was.
	res, err := e.move(c, pathFrom(clientAddr2, gwNATT))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Local.Addr() != clientAddr2 {
		t.Fatalf("client moved to %v", res.Path)
	}
	waitCounter(t, gw, "RoutabilityChecks", func(c Counters) uint64 { return c.RoutabilityChecks }, 1)
	waitCounter(t, gw, "Retransmits", func(c Counters) uint64 { return c.Retransmits }, 1)
	noPathUpdated(t, e.respEvents)
	if p := gw.Path(); !samePath(p, old) {
		t.Fatalf("gateway SA moved to %v before the check passed", p)
	}
	// The next retransmission of the check gets through.
	blockB.Store(false)
	pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	if pu.Path.Remote.Addr() != clientAddr2 || gw.Path().Remote.Addr() != clientAddr2 {
		t.Fatalf("gateway moved to %v (SA path %v)", pu.Path, gw.Path())
	}
	if got := gw.Counters(); got.RoutabilityChecks != 1 || got.RoutabilityFailures != 0 {
		t.Fatalf("counters %+v", got)
	}

	// Back to the first address: verified at IKE_AUTH, so no check (and
	// none could pass: the gateway's requests to it are dropped now).
	e.net.SetLink(gwAddr, clientAddr, netsim.Impairment{Drop: func(_ int, d netsim.Datagram) bool {
		p := d.Payload
		return len(p) >= 4+wire.HeaderLen && binary.BigEndian.Uint32(p) == 0 && p[4+19]&wire.FlagResponse == 0
	}})
	if _, err := e.move(c, pathFrom(clientAddr, gwNATT)); err != nil {
		t.Fatal(err)
	}
	pu = nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	if pu.Path.Remote.Addr() != clientAddr {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
	// And to the second again: verified by the check above.
	if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
		t.Fatal(err)
	}
	pu = nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	if pu.Path.Remote.Addr() != clientAddr2 {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
	if got := gw.Counters().RoutabilityChecks; got != 1 {
		t.Fatalf("%d checks, want 1", got)
	}
}

func TestReturnRoutabilityUnanswered(t *testing.T) {
	e := newMobikeEnv(t, nil)
	e.net.SetLink(clientAddr2, gwAddr, netsim.Impairment{Drop: ikeResponseFrom(clientAddr2)})
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
	old := gw.Path()
	if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, gw, "RoutabilityFailures", func(c Counters) uint64 { return c.RoutabilityFailures }, 1)
	noPathUpdated(t, e.respEvents)
	if p := gw.Path(); !samePath(p, old) {
		t.Fatalf("gateway SA moved to %v", p)
	}
	// The SA itself is fine: the client still reaches the gateway.
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	if err := c.sa.CheckLiveness(ctx); err != nil {
		t.Fatalf("liveness after the failed check: %v", err)
	}
}

func TestReturnRoutabilityOff(t *testing.T) {
	e := newMobikeEnv(t, func(c *ResponderConfig) { c.NoReturnRoutability = true })
	e.net.SetLink(clientAddr2, gwAddr, netsim.Impairment{Drop: ikeResponseFrom(clientAddr2)})
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
	if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
		t.Fatal(err)
	}
	pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	if pu.Path.Remote.Addr() != clientAddr2 {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
	if got := gw.Counters().RoutabilityChecks; got != 0 {
		t.Fatalf("%d checks with the check off", got)
	}
}

// natHosts returns a direct client host and one behind a NAT.
func natHosts(e *testEnv) (direct, natted *netsim.Host) {
	direct = e.net.AddHost("client", clientAddr, clientAddr2)
	natted = e.net.AddHost("client-nat", natInside)
	e.net.AddNAT(natPublic, netsim.RestrictedCone).Attach(natted)
	return direct, natted
}

func TestNoNATsAllowed(t *testing.T) {
	t.Run("init without NAT", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		cfg.ForbidNAT = true
		direct, _ := natHosts(e)
		c, gw := e.established(cfg, direct)
		if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
			t.Fatalf("update without NAT: %v", err)
		}
		nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
		if got := gw.Counters().RefusedUpdates; got != 0 {
			t.Fatalf("%d updates refused", got)
		}
	})
	t.Run("init through NAT", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		cfg.ForbidNAT = true
		cfg.Path.Local = netip.AddrPortFrom(natInside, 40000)
		_, natted := natHosts(e)
		c := e.dialHosts(cfg, natted)
		_, err := c.wait(t, mobikeWait)
		if !errors.Is(err, ErrUnexpectedNAT) {
			t.Fatalf("err = %v, want UNEXPECTED_NAT_DETECTED", err)
		}
		var ne *NotifyError
		if !errors.As(err, &ne) || !ne.Remote {
			t.Fatalf("err = %#v, want the gateway's notify", err)
		}
		// The client keeps retransmitting a while after the (unauthenticated)
		// error, and each retransmission is answered.
		if got := e.resp.Stats().UnexpectedNAT; got < 1 {
			t.Fatalf("UnexpectedNAT = %d", got)
		}
	})
	t.Run("NAT allowed", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		direct, natted := natHosts(e)
		c, _ := e.established(cfg, direct, natted)
		res, err := e.move(c, pathFrom(natInside, gwNATT))
		if err != nil {
			t.Fatal(err)
		}
		if !res.NATLocal {
			t.Error("NAT not detected")
		}
	})
	t.Run("update through NAT", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		cfg.ForbidNAT = true
		direct, natted := natHosts(e)
		c, gw := e.established(cfg, direct, natted)
		old := c.sa.Path()
		_, err := e.move(c, pathFrom(natInside, gwNATT))
		if !errors.Is(err, ErrUnexpectedNAT) {
			t.Fatalf("err = %v, want UNEXPECTED_NAT_DETECTED", err)
		}
		if c.sa.Path() != old {
			t.Errorf("client moved to %v", c.sa.Path())
		}
		if got := gw.Counters().RefusedUpdates; got != 1 {
			t.Errorf("RefusedUpdates = %d", got)
		}
		noPathUpdated(t, e.respEvents)
	})
	t.Run("falls through to the next path", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		cfg.ForbidNAT = true
		direct, natted := natHosts(e)
		c, _ := e.established(cfg, direct, natted)
		res, err := e.move(c, pathFrom(natInside, gwNATT), pathFrom(clientAddr2, gw2NATT))
		if err != nil {
			t.Fatal(err)
		}
		if res.Path.Local.Addr() != clientAddr2 || res.Path.Remote != gw2NATT {
			t.Fatalf("moved to %v", res.Path)
		}
		if pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() != clientAddr2 {
			t.Fatalf("gateway moved to %v", pu.Path)
		}
	})
	t.Run("dial needs the local address", func(t *testing.T) {
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		cfg.ForbidNAT = true
		cfg.Path.Local = netip.AddrPortFrom(netip.IPv4Unspecified(), 40000)
		if _, err := Dial(context.Background(), cfg, hostsTransport{}, nil); err == nil {
			t.Fatal("Dial accepted ForbidNAT without a local address")
		}
	})
}

func TestUnacceptableAddresses(t *testing.T) {
	e := newMobikeEnv(t, func(c *ResponderConfig) { c.AcceptPeerAddress = AcceptRoutable(c.Addresses) })
	host := e.net.AddHost("client", clientAddr, clientAddr2, linkLocal)
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), host)
	old := c.sa.Path()

	_, err := e.move(c, pathFrom(linkLocal, gwNATT))
	if !errors.Is(err, ErrUnacceptableAddresses) {
		t.Fatalf("err = %v, want UNACCEPTABLE_ADDRESSES", err)
	}
	var ne *NotifyError
	if !errors.As(err, &ne) || ne.Type != wire.NotifyUnacceptableAddresses || !ne.Remote {
		t.Fatalf("err = %#v", err)
	}
	if c.sa.Path() != old || !samePath(gw.Path(), netpath.Path{Local: old.Remote, Remote: old.Local}) {
		t.Fatalf("moved: client %v, gateway %v", c.sa.Path(), gw.Path())
	}
	noPathUpdated(t, e.respEvents)

	res, err := e.move(c, pathFrom(linkLocal, gwNATT), pathFrom(linkLocal, gw2NATT), pathFrom(clientAddr2, gwNATT))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Local.Addr() != clientAddr2 {
		t.Fatalf("moved to %v", res.Path)
	}
	if pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() != clientAddr2 {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
	if got := gw.Counters().RefusedUpdates; got != 3 {
		t.Errorf("RefusedUpdates = %d, want 3", got)
	}
}

// TestMalformedMOBIKENotifies sends hand-built requests over an established
// SA: bad notify data is refused or dropped, nothing moves, nothing panics.
func TestMalformedMOBIKENotifies(t *testing.T) {
	e := newMobikeEnv(t, nil)
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
	old := gw.Path()
	tests := []struct {
		name string
		ps   []wire.Payload
		want wire.NotifyType // error notify expected in the answer
		bad  uint64          // BadNotifies afterwards
	}{
		{"NO_NATS_ALLOWED too short", []wire.Payload{&wire.Notify{Type: wire.NotifyUpdateSAAddresses},
			&wire.Notify{Type: wire.NotifyNoNATsAllowed, Data: []byte{1, 2, 3, 4, 5}}}, wire.NotifyInvalidSyntax, 1},
		{"NO_NATS_ALLOWED empty", []wire.Payload{&wire.Notify{Type: wire.NotifyUpdateSAAddresses},
			&wire.Notify{Type: wire.NotifyNoNATsAllowed}}, wire.NotifyInvalidSyntax, 2},
		{"ADDITIONAL_IP4_ADDRESS of 16 bytes", []wire.Payload{
			&wire.Notify{Type: wire.NotifyAdditionalIP4Address, Data: make([]byte, 16)}}, 0, 3},
		{"ADDITIONAL_IP6_ADDRESS of 3 bytes", []wire.Payload{
			&wire.Notify{Type: wire.NotifyAdditionalIP6Address, Data: []byte{1, 2, 3}}}, 0, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan []wire.Payload, 1)
			if !call(c.sa, func() {
				c.sa.startRequest(wire.ExchangeInformational, func() []wire.Payload { return tt.ps },
					func(_ wire.Header, ps []wire.Payload, _ []byte) { got <- ps },
					func(err error) { t.Errorf("no answer: %v", err); got <- nil })
			}) {
				t.Fatal("client SA gone")
			}
			var ps []wire.Payload
			select {
			case ps = <-got:
			case <-time.After(mobikeWait):
				t.Fatal("no answer")
			}
			var errType wire.NotifyType
			if n := wire.FirstError(ps); n != nil {
				errType = n.Type
			}
			if errType != tt.want {
				t.Errorf("answer's error %v, want %v", errType, tt.want)
			}
			if got := gw.Counters().BadNotifies; got != tt.bad {
				t.Errorf("BadNotifies = %d, want %d", got, tt.bad)
			}
		})
	}
	noPathUpdated(t, e.respEvents)
	if !samePath(gw.Path(), old) {
		t.Fatalf("gateway moved to %v", gw.Path())
	}
	if got, want := gw.PeerAddresses(), []netip.Addr{clientAddr}; !slices.Equal(got, want) {
		t.Errorf("gateway learnt %v from bad notifies", got)
	}
}

// TestUpdateRetransmittedOverAnotherPath: the answer on the first path is
// lost, the retransmission goes over the second, and the gateway follows
// the newest (RFC 4555 3.5), through its return routability check.
func TestUpdateRetransmittedOverAnotherPath(t *testing.T) {
	e := newMobikeEnv(t, nil)
	clientAddr3 := netip.MustParseAddr("192.0.2.30")
	gwResponse := func(_ int, d netsim.Datagram) bool {
		p := d.Payload
		return len(p) >= 4+wire.HeaderLen && binary.BigEndian.Uint32(p) == 0 && p[4+19]&wire.FlagResponse != 0
	}
	e.net.SetLink(gwAddr, clientAddr2, netsim.Impairment{Drop: gwResponse})
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2, clientAddr3))
	res, err := e.move(c, pathFrom(clientAddr2, gwNATT), pathFrom(clientAddr3, gwNATT))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Local.Addr() != clientAddr3 {
		t.Fatalf("client moved to %v", res.Path)
	}
	for {
		pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
		if pu.Path.Remote.Addr() == clientAddr3 {
			break
		}
	}
	if got := gw.Path().Remote.Addr(); got != clientAddr3 {
		t.Fatalf("gateway SA on %v", got)
	}
	if got := gw.Counters(); got.DuplicateRequests == 0 || got.RoutabilityFailures != 0 {
		t.Fatalf("counters %+v", got)
	}
}

// TestCookie2MismatchClosesSA: an authenticated answer carrying the wrong
// COOKIE2 ends the IKE SA (RFC 4555 3.7), on either side.
func TestCookie2MismatchClosesSA(t *testing.T) {
	right, wrong := []byte("0123456789abcdef"), []byte("0123456789abcdeX")
	answer := []wire.Payload{&wire.Notify{Type: wire.NotifyCookie2, Data: wrong}}
	t.Run("initiator", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr))
		out := make(chan moveOutcome, 1)
		// The SA may be gone by the time call returns: post only.
		if !c.sa.post(func() {
			u := &pendingUpdate{paths: []netpath.Path{c.sa.Path()}, waiters: []chan moveOutcome{out}, start: time.Now()}
			c.sa.mobike.update = u
			c.sa.handleUpdateResponse(u, &request{}, answer, right)
		}) {
			t.Fatal("client SA gone")
		}
		if o := <-out; !errors.Is(o.err, ErrInvalidSyntax) {
			t.Fatalf("update error %v", o.err)
		}
		if d := nextEvent[*Deleted](t, c.events, mobikeWait); !errors.Is(d.Reason, ErrInvalidSyntax) {
			t.Fatalf("client SA deleted because %v", d.Reason)
		}
		if d := nextEvent[*Deleted](t, e.respEvents, mobikeWait); d.SA != gw || !errors.Is(d.Reason, ErrPeerDeleted) {
			t.Fatalf("gateway: %v deleted because %v", d.SA, d.Reason)
		}
	})
	t.Run("responder", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr))
		if !gw.post(func() {
			gw.mobike.rr.running = true
			gw.handleRoutabilityResponse(answer, right)
		}) {
			t.Fatal("gateway SA gone")
		}
		if d := nextEvent[*Deleted](t, e.respEvents, mobikeWait); !errors.Is(d.Reason, ErrInvalidSyntax) {
			t.Fatalf("gateway SA deleted because %v", d.Reason)
		}
		if got := gw.Counters().RoutabilityFailures; got != 1 {
			t.Errorf("RoutabilityFailures = %d", got)
		}
		if d := nextEvent[*Deleted](t, c.events, mobikeWait); !errors.Is(d.Reason, ErrPeerDeleted) {
			t.Fatalf("client SA deleted because %v", d.Reason)
		}
	})
}

// TestUpdatePathsReplacedSendAtOnce: new paths for an update in flight (a
// switch joining it) go out at once, not at the next retransmission. The
// client's clock never fires, so only the immediate send can answer.
func TestUpdatePathsReplacedSendAtOnce(t *testing.T) {
	e := newMobikeEnv(t, nil)
	clientAddr3 := netip.MustParseAddr("192.0.2.30")
	sent := make(chan struct{}, 16)
	e.net.SetLink(clientAddr2, gwAddr, netsim.Impairment{Drop: func(_ int, _ netsim.Datagram) bool {
		sent <- struct{}{}
		return true // clientAddr2 has no way out
	}})
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Clock = newFakeClock()
	c, _ := e.established(cfg, e.net.AddHost("client", clientAddr, clientAddr2, clientAddr3))
	first := make(chan error, 1)
	go func() {
		_, err := e.move(c, pathFrom(clientAddr2, gwNATT))
		first <- err
	}()
	select {
	case <-sent:
	case <-time.After(mobikeWait):
		t.Fatal("the first update never left")
	}
	res, err := e.move(c, pathFrom(clientAddr3, gwNATT))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Local.Addr() != clientAddr3 {
		t.Fatalf("moved to %v", res.Path)
	}
	if err := <-first; err != nil {
		t.Fatalf("the joined update: %v", err)
	}
	if got := c.sa.Counters().Retransmits; got != 0 {
		t.Fatalf("%d retransmissions", got)
	}
}

// TestReturnRoutabilityBehindOutstandingRequest: the gateway's liveness
// check went to the client's old path, which no longer delivers (a NAT
// that forgot the client while it slept), when the client's update
// arrives from a new one. The check must follow the client there, or the
// routability check queued behind it never runs and the SA dies of
// unanswered retransmissions with ESP still on the dead path.
func TestReturnRoutabilityBehindOutstandingRequest(t *testing.T) {
	e := newMobikeEnv(t, nil)
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
	e.net.SetLink(gwAddr, clientAddr, netsim.Impairment{Drop: func(int, netsim.Datagram) bool { return true }})
	live := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
		defer cancel()
		live <- gw.CheckLiveness(ctx)
	}()
	waitCounter(t, gw, "Retransmits", func(c Counters) uint64 { return c.Retransmits }, 1)
	if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
		t.Fatal(err)
	}
	pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	if pu.Path.Remote.Addr() != clientAddr2 {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
	if err := <-live; err != nil {
		t.Fatalf("liveness check: %v", err)
	}
	if got := gw.Counters().RoutabilityChecks; got != 1 {
		t.Fatalf("%d routability checks, want 1", got)
	}
}

// TestRekeyKeepsMOBIKE (issue 15 item 6): after an IKE SA rekey by either
// end, or a Child SA rekey, the SA still knows the gateway's additional
// addresses, the gateway still knows the client can switch, and a MOBIKE
// move still works and is followed by the gateway.
func TestRekeyKeepsMOBIKE(t *testing.T) {
	tests := []struct {
		name  string
		rekey func(ctx context.Context, cli, gw *SA) error
	}{
		{"IKE SA by the client", func(ctx context.Context, cli, _ *SA) error { return cli.RekeyIKE(ctx) }},
		{"IKE SA by the gateway", func(ctx context.Context, _, gw *SA) error { return gw.RekeyIKE(ctx) }},
		{"Child SA by the client", func(ctx context.Context, cli, _ *SA) error {
			return cli.RekeyChild(ctx, cli.Children()[0].SPIIn)
		}},
		{"Child SA by the gateway", func(ctx context.Context, _, gw *SA) error {
			return gw.RekeyChild(ctx, gw.Children()[0].SPIIn)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMobikeEnv(t, nil)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.Switch = true
			c, gw := e.established(cfg, e.net.AddHost("client", clientAddr, clientAddr2))
			ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
			defer cancel()
			if err := tt.rekey(ctx, c.sa, gw); err != nil {
				t.Fatalf("rekey: %v", err)
			}
			if peers := c.sa.PeerAddresses(); !slices.Contains(peers, gwAddr2) {
				t.Fatalf("client's peer addresses after the rekey: %v, want %v among them", peers, gwAddr2)
			}
			if !gw.SwitchCapable() {
				t.Fatal("gateway forgot the client's switch support in the rekey")
			}
			if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
				t.Fatalf("move after the rekey: %v", err)
			}
			if pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() != clientAddr2 {
				t.Fatalf("gateway moved to %v", pu.Path)
			}
		})
	}
}

// TestUpdateRetransmissionCarriesEarlierCopies: a responder may take only
// a bitwise identical message as a retransmission (strongSwan does). When
// the answer to the copy over the first path is lost, the transmissions
// over the second path also carry that first copy unchanged, and a path
// retransmitted on keeps its own bytes.
func TestUpdateRetransmissionCarriesEarlierCopies(t *testing.T) {
	e := newMobikeEnv(t, nil)
	clientAddr3 := netip.MustParseAddr("192.0.2.30")
	gwResponse := func(_ int, d netsim.Datagram) bool {
		p := d.Payload
		return len(p) >= 4+wire.HeaderLen && binary.BigEndian.Uint32(p) == 0 && p[4+19]&wire.FlagResponse != 0
	}
	var mu sync.Mutex
	sent := map[netip.Addr][][]byte{}
	record := func(from netip.Addr) func(int, netsim.Datagram) bool {
		return func(_ int, d netsim.Datagram) bool {
			p := d.Payload
			if len(p) >= 4+wire.HeaderLen && binary.BigEndian.Uint32(p) == 0 && p[4+19]&wire.FlagResponse == 0 {
				mu.Lock()
				sent[from] = append(sent[from], slices.Clone(p))
				mu.Unlock()
			}
			return false
		}
	}
	e.net.SetLink(gwAddr, clientAddr2, netsim.Impairment{Drop: gwResponse})
	c, _ := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2, clientAddr3))
	e.net.SetLink(clientAddr2, gwAddr, netsim.Impairment{Drop: record(clientAddr2)})
	e.net.SetLink(clientAddr3, gwAddr, netsim.Impairment{Drop: record(clientAddr3)})
	res, err := e.move(c, pathFrom(clientAddr2, gwNATT), pathFrom(clientAddr3, gwNATT))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Local.Addr() != clientAddr3 {
		t.Fatalf("client moved to %v", res.Path)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent[clientAddr2]) == 0 || len(sent[clientAddr3]) == 0 {
		t.Fatalf("requests sent: %d over the first path, %d over the second", len(sent[clientAddr2]), len(sent[clientAddr3]))
	}
	first := sent[clientAddr2][0]
	var carried bool
	for _, p := range sent[clientAddr3] {
		carried = carried || bytes.Equal(p, first)
	}
	if !carried {
		t.Fatalf("none of the %d requests over the second path is the first path's copy", len(sent[clientAddr3]))
	}
	for _, p := range sent[clientAddr2][1:] {
		if !bytes.Equal(p, first) {
			t.Fatal("a retransmission over the first path differs from its first copy")
		}
	}
}

// TestRetransmittedUpdateRedirectsOutstandingRequest: the gateway's
// liveness check is out on the client's old path, which no longer
// delivers, when the client's update arrives first from an address
// proved before (the gateway follows it at once) and then, retransmitted,
// from a third (that address went away before the answer came back: an
// uplink replaced by another family). The check must follow the client
// to the third path although it was last sent on neither, or the
// routability check queued behind it waits for its retransmissions to
// the dead path to run out, with ESP on a dead path meanwhile (the
// torture bench's IPv6-only event: 30 s without traffic while the client
// got its IKE answers).
func TestRetransmittedUpdateRedirectsOutstandingRequest(t *testing.T) {
	// Slow retransmissions of the gateway's own requests: none falls
	// between the two copies of the update.
	e := newMobikeEnv(t, func(c *ResponderConfig) {
		c.Retransmit = Retransmit{Initial: 2 * time.Second, Factor: 1, Max: 2 * time.Second, Retries: 10}
	})
	clientAddr3 := netip.MustParseAddr("192.0.2.30")
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2, clientAddr3))
	movedTo := func(a netip.Addr) {
		t.Helper()
		for {
			if pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() == a {
				return
			}
		}
	}
	// clientAddr2 proves itself once: a move there and back.
	for _, a := range []netip.Addr{clientAddr2, clientAddr} {
		if _, err := e.move(c, pathFrom(a, gwNATT)); err != nil {
			t.Fatal(err)
		}
		movedTo(a)
	}
	e.net.SetLink(gwAddr, clientAddr, netsim.Impairment{Drop: func(int, netsim.Datagram) bool { return true }})
	live := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*mobikeWait)
		defer cancel()
		live <- gw.CheckLiveness(ctx)
	}()
	waitCounter(t, gw, "Retransmits", func(c Counters) uint64 { return c.Retransmits }, gw.Counters().Retransmits+1)
	e.net.SetLink(gwAddr, clientAddr2, netsim.Impairment{Drop: func(int, netsim.Datagram) bool { return true }})
	res, err := e.move(c, pathFrom(clientAddr2, gwNATT), pathFrom(clientAddr3, gwNATT))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Local.Addr() != clientAddr3 {
		t.Fatalf("client moved to %v", res.Path)
	}
	movedTo(clientAddr2) // the first copy, from a proved address
	movedTo(clientAddr3) // the retransmission, after the routability check
	if err := <-live; err != nil {
		t.Fatalf("liveness check: %v", err)
	}
}
