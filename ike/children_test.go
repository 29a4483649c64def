package ike

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
)

var (
	netA = netip.MustParsePrefix("10.99.0.0/25")
	netB = netip.MustParsePrefix("10.99.0.128/25")
)

// matchChildren asserts that both ends hold the same Child SAs (each seen
// from either side: SPIs and keys crossed, selectors mirrored) and returns
// the client's, in the client's order.
func matchChildren(t *testing.T, client, gw *SA, want int) []ChildSA {
	t.Helper()
	cc, gc := children(t, client), children(t, gw)
	if len(cc) != want || len(gc) != want {
		t.Fatalf("client has %d Child SAs, gateway %d; want %d each", len(cc), len(gc), want)
	}
	for _, c := range cc {
		i := slices.IndexFunc(gc, func(g ChildSA) bool { return g.SPIIn == c.SPIOut })
		if i < 0 {
			t.Fatalf("gateway lacks the client's Child SA %08x/%08x", c.SPIIn, c.SPIOut)
		}
		g := gc[i]
		if c.SPIIn != g.SPIOut || !bytes.Equal(c.KeyIn, g.KeyOut) || !bytes.Equal(c.KeyOut, g.KeyIn) {
			t.Fatalf("Child SA %08x: keys or SPIs differ between the ends", c.SPIIn)
		}
		if !slices.Equal(c.LocalTS, g.RemoteTS) || !slices.Equal(c.RemoteTS, g.LocalTS) {
			t.Fatalf("Child SA %08x: selectors differ: client %v/%v gateway %v/%v", c.SPIIn, c.LocalTS, c.RemoteTS, g.LocalTS, g.RemoteTS)
		}
	}
	return cc
}

// TestMoreChildren: the first Child SA comes with IKE_AUTH, the others with
// CREATE_CHILD_SA before Established, each with the selectors it asked for
// (the client's side narrowed to its inner address); a refused one is
// reported and leaves the IKE SA and the other Child SAs alone.
func TestMoreChildren(t *testing.T) {
	outside := netip.MustParsePrefix("192.0.2.0/24")
	tests := []struct {
		name       string
		esp        []Proposal
		maxChild   int
		more       []netip.Prefix
		wantRemote []netip.Prefix // the Child SAs' remote selectors, in order
		wantFailed wire.NotifyType
	}{
		{name: "two", esp: []Proposal{esp256}, more: []netip.Prefix{netB}, wantRemote: []netip.Prefix{netA, netB}},
		{name: "two with PFS", esp: []Proposal{espPFS}, more: []netip.Prefix{netB}, wantRemote: []netip.Prefix{netA, netB}},
		{name: "narrowed to the gateway's", esp: []Proposal{esp256}, more: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")},
			wantRemote: []netip.Prefix{netA, netip.MustParsePrefix("10.99.0.0/24")}},
		{name: "outside the gateway's", esp: []Proposal{esp256}, more: []netip.Prefix{outside, netB},
			wantRemote: []netip.Prefix{netA, netB}, wantFailed: wire.NotifyTSUnacceptable},
		{name: "over the cap", esp: []Proposal{esp256}, maxChild: 2, more: []netip.Prefix{netB},
			wantRemote: []netip.Prefix{netA}, wantFailed: wire.NotifyNoAdditionalSAs},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(1500+i), func(r *ResponderConfig) {
				r.ESP = tc.esp
				r.MaxChildSAs = tc.maxChild
			})
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.ESP = tc.esp
			cfg.RemoteTS = []netip.Prefix{netA}
			for _, p := range tc.more {
				cfg.MoreChildren = append(cfg.MoreChildren, Selectors{Remote: []netip.Prefix{p}})
			}
			_, est := e.dialEstablished(t, cfg)
			gwEst := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			if len(gwEst.Children) != 1 {
				t.Fatalf("gateway's Established has %d Child SAs, want the one of IKE_AUTH", len(gwEst.Children))
			}
			for range len(tc.wantRemote) - 1 {
				if ev := nextEvent[*ChildCreated](t, e.respEvents, 2*time.Second); ev.Initiated {
					t.Fatal("the gateway reports a Child SA it did not ask for as Initiated")
				}
			}
			if len(est.Children) != len(tc.wantRemote) {
				t.Fatalf("Established has %d Child SAs, want %d", len(est.Children), len(tc.wantRemote))
			}
			got := matchChildren(t, est.SA, gwEst.SA, len(tc.wantRemote))
			vip := AddrTS(est.VirtualIPs[0])
			for j, ch := range got {
				if want := PrefixesTS(tc.wantRemote[j : j+1]); !slices.Equal(ch.RemoteTS, want) {
					t.Errorf("Child SA %d: remote %v, want %v", j, ch.RemoteTS, want)
				}
				if !slices.Equal(ch.LocalTS, []wire.TrafficSelector{vip}) {
					t.Errorf("Child SA %d: local %v, want the inner address %v", j, ch.LocalTS, vip)
				}
			}
			if tc.wantFailed == 0 {
				if len(est.FailedChildren) != 0 {
					t.Fatalf("failed Child SAs: %+v", est.FailedChildren)
				}
				return
			}
			if len(est.FailedChildren) != 1 {
				t.Fatalf("failed Child SAs: %+v, want one", est.FailedChildren)
			}
			var ne *NotifyError
			if f := est.FailedChildren[0]; !errors.As(f.Err, &ne) || ne.Type != tc.wantFailed {
				t.Fatalf("failed Child SA %v: %v, want %v", f.Remote, f.Err, tc.wantFailed)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := est.SA.CheckLiveness(ctx); err != nil {
				t.Fatalf("the IKE SA suffered from the refusal: %v", err)
			}
		})
	}
}

// TestCreateChildLater adds a Child SA to a live IKE SA, then deletes it on
// its own: the first one stays.
func TestCreateChildLater(t *testing.T) {
	e := newEnv(t, 1550, nil)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.RemoteTS = []netip.Prefix{netA}
	c, est := e.dialEstablished(t, cfg)
	gw := nextEvent[*Established](t, e.respEvents, 2*time.Second).SA
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	added, err := est.SA.CreateChild(ctx, Selectors{Remote: []netip.Prefix{netB}})
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent[*ChildCreated](t, c.events, 2*time.Second); !ev.Initiated || ev.Child.SPIIn != added.SPIIn {
		t.Fatalf("client's ChildCreated %+v", ev)
	}
	nextEvent[*ChildCreated](t, e.respEvents, 2*time.Second)
	first := matchChildren(t, est.SA, gw, 2)[0]
	if err := est.SA.DeleteChild(ctx, added.SPIIn); err != nil {
		t.Fatal(err)
	}
	nextEvent[*ChildDeleted](t, e.respEvents, 2*time.Second)
	if now := matchChildren(t, est.SA, gw, 1); now[0].SPIIn != first.SPIIn {
		t.Fatal("deleting the added Child SA took the first one")
	}
	if _, err := est.SA.CreateChild(ctx, Selectors{Remote: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}); !errors.Is(err, ErrTSUnacceptable) {
		t.Fatalf("Child SA outside the gateway's selectors: %v, want TS_UNACCEPTABLE", err)
	}
	var ne *NotifyError
	if _, err := gw.CreateChild(ctx, Selectors{Remote: []netip.Prefix{netA}}); !errors.As(err, &ne) || ne.Type != wire.NotifyNoAdditionalSAs {
		t.Fatalf("gateway adding a Child SA to the client: %v, want NO_ADDITIONAL_SAS", err)
	}
	matchChildren(t, est.SA, gw, 1)
}

// TestChildrenKeepEachOther: with two Child SAs, a rekey of either (from
// either end) replaces that one only; an IKE SA rekey and MOBIKE moves
// keep both, unchanged, on the new path, and every step keeps MOBIKE, the
// peers' additional addresses and the switch support.
func TestChildrenKeepEachOther(t *testing.T) {
	e := newMobikeEnv(t, nil)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.RemoteTS = []netip.Prefix{netA}
	cfg.MoreChildren = []Selectors{{Remote: []netip.Prefix{netB}}}
	cfg.Switch = true
	cfg.LocalAddresses = func() []netip.Addr { return []netip.Addr{clientAddr, clientAddr2} }
	c, gw := e.established(cfg, e.net.AddHost("client", clientAddr, clientAddr2))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	byRemote := func(cs []ChildSA, p netip.Prefix) ChildSA {
		t.Helper()
		i := slices.IndexFunc(cs, func(c ChildSA) bool { return slices.Equal(c.RemoteTS, PrefixesTS([]netip.Prefix{p})) })
		if i < 0 {
			t.Fatalf("no Child SA for %v in %d", p, len(cs))
		}
		return cs[i]
	}
	steps := []struct {
		name    string
		do      func() error
		changed []netip.Prefix // the Child SAs this step replaces
	}{
		{"client rekeys A", func() error { return c.sa.RekeyChild(ctx, byRemote(children(t, c.sa), netA).SPIIn) }, []netip.Prefix{netA}},
		{"gateway rekeys B", func() error { return gw.RekeyChild(ctx, byRemote(children(t, c.sa), netB).SPIOut) }, []netip.Prefix{netB}},
		{"IKE SA rekey", func() error { return c.sa.RekeyIKE(ctx) }, nil},
		{"move to the second address", func() error {
			_, err := e.move(c, pathFrom(clientAddr2, gwNATT))
			if err == nil {
				if pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() != clientAddr2 {
					t.Fatalf("gateway moved to %v", pu.Path)
				}
			}
			return err
		}, nil},
		{"gateway rekeys the IKE SA", func() error { return gw.RekeyIKE(ctx) }, nil},
		{"move back", func() error {
			_, err := e.move(c, pathFrom(clientAddr, gwNATT))
			if err == nil {
				nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
			}
			return err
		}, nil},
	}
	for _, s := range steps {
		before := matchChildren(t, c.sa, gw, 2)
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for (len(children(t, c.sa)) != 2 || len(children(t, gw)) != 2) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the replaced SA's DELETE
		}
		after := matchChildren(t, c.sa, gw, 2)
		for _, p := range []netip.Prefix{netA, netB} {
			replaced := byRemote(before, p).SPIIn != byRemote(after, p).SPIIn
			if want := slices.Contains(s.changed, p); replaced != want {
				t.Fatalf("%s: Child SA for %v replaced %v, want %v", s.name, p, replaced, want)
			}
		}
		if !c.sa.peerMOBIKEOK(t) || !gw.peerMOBIKEOK(t) {
			t.Fatalf("%s: MOBIKE or the peer's addresses lost", s.name)
		}
		if !gw.SwitchCapable() {
			t.Fatalf("%s: the gateway forgot the client's switch support", s.name)
		}
	}
	if gw.Path().Remote.Addr() != clientAddr || c.sa.Path().Local.Addr() != clientAddr {
		t.Fatalf("paths after the moves: client %v gateway %v", c.sa.Path(), gw.Path())
	}
}

// peerMOBIKEOK reports whether the SA still holds MOBIKE and the peer's
// addresses (both ends announce two here).
func (sa *SA) peerMOBIKEOK(t *testing.T) bool {
	var ok bool
	if !call(sa, func() { ok = sa.mobike.peer && len(sa.mobike.peerAddrs) >= 2 }) {
		t.Fatal("SA gone")
	}
	return ok
}
