package ike

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/internal/poll"
	"github.com/roam-vpn/roam/netpath"
)

var (
	clientAddr = netip.MustParseAddr("192.0.2.10")
	gwAddr     = netip.MustParseAddr("198.51.100.1")
	gwIKE      = netip.AddrPortFrom(gwAddr, 500)
	testPSK    = []byte("correct horse battery staple")
)

func tr(t wire.TransformType, id, kl uint16) wire.Transform {
	return wire.Transform{Type: t, ID: id, KeyLength: kl}
}

var (
	ikeECP384 = Proposal{Text: "aes256gcm16-prfsha384-ecp384", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 20, 0)}}
	ikeX25519 = Proposal{Text: "aes128gcm16-prfsha256-x25519", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 128), tr(wire.TransformPRF, 5, 0), tr(wire.TransformDH, 31, 0)}}
	ikeCBC = Proposal{Text: "aes256-sha256-modp2048", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 12, 256), tr(wire.TransformPRF, 5, 0), tr(wire.TransformInteg, 12, 0), tr(wire.TransformDH, 14, 0)}}
	esp256    = Proposal{Text: "aes256gcm16", Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 256), tr(wire.TransformESN, 0, 0)}}
	esp128    = Proposal{Text: "aes128gcm16", Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 128), tr(wire.TransformESN, 0, 0)}}
	esp256ESN = Proposal{Text: "aes256gcm16-esn", Transforms: []wire.Transform{tr(wire.TransformEncr, 20, 256), tr(wire.TransformESN, 1, 0)}}
)

// fastRetransmit keeps lossy-link tests quick.
var fastRetransmit = Retransmit{Initial: 40 * time.Millisecond, Factor: 1.5, Max: 200 * time.Millisecond, Retries: 10}

type testEnv struct {
	t          *testing.T
	ctx        context.Context
	net        *netsim.Network
	gwHost     *netsim.Host
	resp       *Responder
	respEvents chan Event
	rcfg       ResponderConfig
}

func mustPSKAuth(t testing.TB, id string, psk []byte) LocalAuth {
	t.Helper()
	a, err := NewPSKAuth(id, psk)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustPSKPeer(t testing.TB, id string, psk []byte) PeerAuth {
	t.Helper()
	a, err := NewPSKPeer(id, psk)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func defaultResponderConfig(t testing.TB) ResponderConfig {
	pool, err := NewPool([]netip.Prefix{netip.MustParsePrefix("10.99.200.0/24"), netip.MustParsePrefix("fd00:99::/64")})
	if err != nil {
		t.Fatal(err)
	}
	return ResponderConfig{
		LocalAuth: mustPSKAuth(t, "vpn.example.com", testPSK),
		PeerAuth: func(id *wire.Identification) (PeerAuth, error) {
			s := identityString(id)
			if !strings.HasSuffix(s, "@example.com") {
				return nil, errors.New("unknown client")
			}
			return NewPSKPeer(s, testPSK)
		},
		IKE:        []Proposal{ikeECP384, ikeX25519, ikeCBC},
		ESP:        []Proposal{esp256, esp128, esp256ESN},
		LocalTS:    []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("fd00:1::/64")},
		Pool:       pool,
		DNS:        []netip.Addr{netip.MustParseAddr("10.99.0.53"), netip.MustParseAddr("fd00:1::53")},
		MOBIKE:     true,
		Retransmit: fastRetransmit,
	}
}

func newEnv(t *testing.T, seed int64, mod func(*ResponderConfig)) *testEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := netsim.New(seed)
	e := &testEnv{t: t, ctx: ctx, net: n, respEvents: make(chan Event, 64)}
	e.rcfg = defaultResponderConfig(t)
	if mod != nil {
		mod(&e.rcfg)
	}
	e.gwHost = n.AddHost("gw", gwAddr)
	resp, err := NewResponder(ctx, e.rcfg, e.gwHost, e.respEvents)
	if err != nil {
		t.Fatal(err)
	}
	e.resp = resp
	e.gwHost.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		resp.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
	})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer ccancel()
		_ = resp.Close(cctx)
		cancel()
		n.Close()
	})
	return e
}

type client struct {
	sa     *SA
	host   *netsim.Host
	events chan Event
}

func defaultInitiatorConfig(t testing.TB, id string) InitiatorConfig {
	return InitiatorConfig{
		Path:       netpath.Path{Local: netip.AddrPortFrom(clientAddr, 40000), Remote: gwIKE},
		LocalAuth:  mustPSKAuth(t, id, testPSK),
		PeerAuth:   mustPSKPeer(t, "vpn.example.com", testPSK),
		RemoteID:   "vpn.example.com",
		IKE:        []Proposal{ikeECP384},
		ESP:        []Proposal{esp256},
		RemoteTS:   []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")},
		VirtualIP:  true,
		MOBIKE:     true,
		Retransmit: fastRetransmit,
	}
}

// dial starts a client on its own host (address addr) through the env.
func (e *testEnv) dial(cfg InitiatorConfig) *client {
	e.t.Helper()
	addr := cfg.Path.Local.Addr()
	return e.dialHost(e.net.AddHost("client-"+addr.String(), addr), cfg)
}

// dialPair dials and returns the client, its SA and the gateway's, once
// both are established.
func (e *testEnv) dialPair(t *testing.T, cfg InitiatorConfig) (*client, *SA, *SA) {
	t.Helper()
	c, est := e.dialEstablished(t, cfg)
	return c, est.SA, nextEvent[*Established](t, e.respEvents, 2*time.Second).SA
}

// dialEstablished dials and returns the client once its SA is
// established, failing the test otherwise.
func (e *testEnv) dialEstablished(t *testing.T, cfg InitiatorConfig) (*client, *Established) {
	t.Helper()
	c := e.dial(cfg)
	est, err := c.wait(t, 5*time.Second)
	if err != nil {
		t.Fatalf("establish: %v", err)
	}
	return c, est
}

func (e *testEnv) dialHost(h *netsim.Host, cfg InitiatorConfig) *client {
	e.t.Helper()
	return e.dialOn(cfg, h, h)
}

// dialOn starts an initiator that sends through tr and hears on hosts.
func (e *testEnv) dialOn(cfg InitiatorConfig, tr Transport, hosts ...*netsim.Host) *client {
	e.t.Helper()
	c := &client{host: hosts[0], events: make(chan Event, 16)}
	var mu sync.Mutex
	var sa *SA
	for _, h := range hosts {
		h.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
			mu.Lock()
			s := sa
			mu.Unlock()
			if s != nil {
				s.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
			}
		})
	}
	mu.Lock()
	s, err := Dial(e.ctx, cfg, tr, c.events)
	sa = s
	mu.Unlock()
	if err != nil {
		e.t.Fatal(err)
	}
	c.sa = s
	return c
}

func (c *client) wait(t *testing.T, d time.Duration) (*Established, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	est, err := c.sa.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no outcome within %v", d)
	}
	return est, err
}

func nextEvent[T Event](t *testing.T, ch <-chan Event, d time.Duration) T {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev := <-ch:
			if x, ok := ev.(T); ok {
				return x
			}
		case <-timeout:
			var zero T
			t.Fatalf("no %T event within %v", zero, d)
			return zero
		}
	}
}

func TestEstablishPSK(t *testing.T) {
	tests := []struct {
		name     string
		ike      []Proposal
		esp      []Proposal
		wantESP  string
		wantESN  bool
		vip      bool
		remoteTS []netip.Prefix
	}{
		{"aes256gcm16", []Proposal{ikeECP384}, []Proposal{esp256}, "aes256gcm16", false, true, nil},
		{"aes128gcm16", []Proposal{ikeX25519}, []Proposal{esp128}, "aes128gcm16", false, true, nil},
		{"esn", []Proposal{ikeECP384}, []Proposal{esp256ESN}, "aes256gcm16", true, true, nil},
		{"cbc-ike-no-vip", []Proposal{ikeCBC}, []Proposal{esp128, esp256}, "aes128gcm16", false, false, nil},
		{"dual-stack", []Proposal{ikeX25519}, []Proposal{esp256}, "aes256gcm16", false, true,
			[]netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("::/0")}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(i), func(r *ResponderConfig) {
				if !tc.vip {
					// Without an inner address alice needs a prefix of
					// her own (a site behind her).
					r.PeerTS = func(*wire.Identification) []netip.Prefix {
						return []netip.Prefix{netip.MustParsePrefix("10.99.202.0/24")}
					}
				}
			})
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.IKE, cfg.ESP, cfg.VirtualIP = tc.ike, tc.esp, tc.vip
			if tc.remoteTS != nil {
				cfg.RemoteTS = tc.remoteTS
			}
			_, est := e.dialEstablished(t, cfg)
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			if est.SPIi != gw.SPIi || est.SPIr != gw.SPIr || est.SPIr == 0 {
				t.Fatalf("SPIs differ: client %x/%x gateway %x/%x", est.SPIi, est.SPIr, gw.SPIi, gw.SPIr)
			}
			if len(est.Children) != 1 || len(gw.Children) != 1 {
				t.Fatalf("children: client %d gateway %d", len(est.Children), len(gw.Children))
			}
			cc, gc := est.Children[0], gw.Children[0]
			if cc.SPIIn != gc.SPIOut || cc.SPIOut != gc.SPIIn {
				t.Fatalf("child SPIs not crossed: %+v / %+v", cc, gc)
			}
			if !bytes.Equal(cc.KeyOut, gc.KeyIn) || !bytes.Equal(cc.KeyIn, gc.KeyOut) || bytes.Equal(cc.KeyIn, cc.KeyOut) {
				t.Fatal("child keys do not match across the sides")
			}
			wantKeyLen := map[string]int{"aes256gcm16": 36, "aes128gcm16": 20}[tc.wantESP]
			if len(cc.KeyIn) != wantKeyLen {
				t.Fatalf("key length %d, want %d", len(cc.KeyIn), wantKeyLen)
			}
			if cc.Proposal != tc.wantESP || gc.Proposal != tc.wantESP {
				t.Fatalf("proposal %q/%q, want %q", cc.Proposal, gc.Proposal, tc.wantESP)
			}
			if cc.ESN != tc.wantESN || gc.ESN != tc.wantESN {
				t.Fatalf("ESN %v/%v, want %v", cc.ESN, gc.ESN, tc.wantESN)
			}
			if est.Path.Remote != netip.AddrPortFrom(gwAddr, 4500) {
				t.Fatalf("no port float: %v", est.Path.Remote)
			}
			if !gw.NATRemote || !est.UDPEncap || !gw.UDPEncap {
				t.Fatalf("encapsulation not forced: gateway NATRemote=%v encap %v/%v", gw.NATRemote, est.UDPEncap, gw.UDPEncap)
			}
			if est.NATLocal {
				t.Fatal("client thinks it is behind a NAT")
			}
			if gw.Path.Local.Port() != 4500 || gw.Path.Remote != cfg.Path.Local {
				t.Fatalf("gateway path %+v", gw.Path)
			}
			if !est.PeerMOBIKE || !gw.PeerMOBIKE {
				t.Fatal("MOBIKE not negotiated")
			}
			if est.PeerID != "vpn.example.com" || gw.PeerID != "alice@example.com" {
				t.Fatalf("peer IDs %q %q", est.PeerID, gw.PeerID)
			}
			if tc.vip {
				if len(est.VirtualIPs) != 2 || !slices.Equal(est.VirtualIPs, gw.VirtualIPs) {
					t.Fatalf("virtual IPs %v (gateway %v)", est.VirtualIPs, gw.VirtualIPs)
				}
				if len(est.DNS) != 2 {
					t.Fatalf("DNS %v", est.DNS)
				}
				for _, ts := range cc.LocalTS {
					if ts.Start != ts.End || !slices.Contains(est.VirtualIPs, ts.Start) {
						t.Fatalf("TSi not narrowed to the virtual IP: %+v", cc.LocalTS)
					}
				}
			} else if len(est.VirtualIPs) != 0 {
				t.Fatalf("unexpected virtual IPs %v", est.VirtualIPs)
			}
			for _, ts := range cc.RemoteTS {
				if !slices.ContainsFunc(e.rcfg.LocalTS, func(p netip.Prefix) bool { return p.Contains(ts.Start) && p.Contains(ts.End) }) {
					t.Fatalf("TSr not narrowed to the gateway's local_ts: %+v", cc.RemoteTS)
				}
			}
			if !slices.Equal(cc.LocalTS, gc.RemoteTS) || !slices.Equal(cc.RemoteTS, gc.LocalTS) {
				t.Fatal("traffic selectors differ across the sides")
			}
		})
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*ResponderConfig)
		cli     func(*InitiatorConfig)
		want    error
		wantMsg string
	}{
		{"wrong-psk", nil, func(c *InitiatorConfig) {
			c.LocalAuth = mustPSKAuth(t, "alice@example.com", []byte("wrong"))
		}, ErrAuthenticationFailed, "AUTHENTICATION_FAILED"},
		{"gateway-wrong-psk", func(r *ResponderConfig) {
			r.LocalAuth = mustPSKAuth(t, "vpn.example.com", []byte("other"))
		}, nil, ErrAuthenticationFailed, "authentication failed"},
		{"unknown-identity", nil, func(c *InitiatorConfig) {
			c.LocalAuth = mustPSKAuth(t, "mallory@evil.example", testPSK)
		}, ErrAuthenticationFailed, "AUTHENTICATION_FAILED"},
		{"no-ike-proposal", func(r *ResponderConfig) { r.IKE = []Proposal{ikeX25519} }, nil, ErrNoProposalChosen, "NO_PROPOSAL_CHOSEN"},
		{"no-esp-proposal", func(r *ResponderConfig) { r.ESP = []Proposal{esp128} }, nil, ErrNoProposalChosen, "NO_PROPOSAL_CHOSEN"},
		{"ts-unacceptable", nil, func(c *InitiatorConfig) {
			c.RemoteTS = []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}
		}, ErrTSUnacceptable, "TS_UNACCEPTABLE"},
		{"cp-required", func(r *ResponderConfig) { r.RequireCP = true }, func(c *InitiatorConfig) { c.VirtualIP = false },
			ErrFailedCPRequired, "FAILED_CP_REQUIRED"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(100+i), tc.mod)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			if tc.cli != nil {
				tc.cli(&cfg)
			}
			start := time.Now()
			c := e.dial(cfg)
			_, err := c.wait(t, 5*time.Second)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, tc.wantMsg)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("failure took %v", time.Since(start))
			}
			del := nextEvent[*Deleted](t, c.events, 2*time.Second)
			if !errors.Is(del.Reason, tc.want) {
				t.Fatalf("Deleted reason %v", del.Reason)
			}
			// The gateway must not keep the SA.
			poll.Until(t, 2*time.Second, "the gateway to drop the SA", func() bool { return len(e.resp.SAs()) == 0 })
		})
	}
}

func TestCookie(t *testing.T) {
	e := newEnv(t, 7, func(r *ResponderConfig) { r.CookieThreshold = -1 })
	c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
	if _, err := c.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if e.resp.Stats().CookiesSent != 1 {
		t.Fatalf("cookies sent: %d", e.resp.Stats().CookiesSent)
	}
}

func TestCookieThreshold(t *testing.T) {
	e := newEnv(t, 8, func(r *ResponderConfig) { r.CookieThreshold = 1 })
	// A half-open SA from an initiator that never continues.
	stuck := defaultInitiatorConfig(t, "bob@example.com")
	stuck.Path.Local = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.20"), 500)
	e.net.SetLink(gwAddr, netip.MustParseAddr("192.0.2.20"), netsim.Impairment{Loss: 1})
	sc := e.dial(stuck)
	poll.Until(t, 2*time.Second, "a half-open SA", func() bool { return e.resp.HalfOpen() == 1 })
	_ = sc
	c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
	if _, err := c.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if e.resp.Stats().CookiesSent == 0 {
		t.Fatal("no cookie demanded at the threshold")
	}
}

func TestInvalidKERetry(t *testing.T) {
	e := newEnv(t, 9, func(r *ResponderConfig) { r.IKE = []Proposal{ikeECP384} })
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.IKE = []Proposal{{Text: "aes256gcm16-prfsha384-x25519-ecp384", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 31, 0), tr(wire.TransformDH, 20, 0)}}}
	_, est := e.dialEstablished(t, cfg)
	if est.Proposal != "aes256gcm16-prfsha384-ecp384" {
		t.Fatalf("proposal %q", est.Proposal)
	}
	if e.resp.Stats().InvalidKE != 1 {
		t.Fatalf("INVALID_KE_PAYLOAD sent %d times", e.resp.Stats().InvalidKE)
	}
}

func TestNoCommonGroup(t *testing.T) {
	e := newEnv(t, 10, func(r *ResponderConfig) {
		r.IKE = []Proposal{{Transforms: []wire.Transform{
			tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 31, 0), tr(wire.TransformDH, 20, 0)}}}
	})
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.IKE = []Proposal{{Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 21, 0)}}}
	c := e.dial(cfg)
	if _, err := c.wait(t, 5*time.Second); !errors.Is(err, ErrNoProposalChosen) {
		t.Fatalf("error %v", err)
	}
}

func TestImpairedLink(t *testing.T) {
	tests := []struct {
		name string
		imp  netsim.Impairment
	}{
		{"loss", netsim.Impairment{Loss: 0.3}},
		{"duplicate", netsim.Impairment{Duplicate: 1}},
		{"reorder", netsim.Impairment{Delay: 2 * time.Millisecond, Jitter: 20 * time.Millisecond, Duplicate: 0.5}},
		{"drop-first-of-each", netsim.Impairment{Drop: func(i int, _ netsim.Datagram) bool { return i%2 == 0 }}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(200+i), nil)
			e.net.SetDefault(tc.imp)
			c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
			est, err := c.wait(t, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 5*time.Second)
			if !bytes.Equal(est.Children[0].KeyOut, gw.Children[0].KeyIn) {
				t.Fatal("keys differ")
			}
			// Liveness checks both ways survive the impairment too.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.sa.CheckLiveness(ctx); err != nil {
				t.Fatalf("client liveness: %v", err)
			}
			if err := gw.SA.CheckLiveness(ctx); err != nil {
				t.Fatalf("gateway liveness: %v", err)
			}
		})
	}
}

func TestDuplicateRequestAnsweredFromCache(t *testing.T) {
	e := newEnv(t, 11, nil)
	e.net.SetLink(clientAddr, gwAddr, netsim.Impairment{Duplicate: 1})
	c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
	if _, err := c.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	poll.Until(t, time.Second, "the duplicate IKE_AUTH answered from the cache", func() bool { return gw.SA.Counters().DuplicateRequests > 0 })
	if got := len(e.resp.SAs()); got != 1 {
		t.Fatalf("duplicate IKE_SA_INIT created %d SAs", got)
	}
}

func TestDelete(t *testing.T) {
	for _, fromClient := range []bool{true, false} {
		name := map[bool]string{true: "client", false: "gateway"}[fromClient]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, 12, nil)
			c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
			if _, err := c.wait(t, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			closer, closerEv, other, otherEv := c.sa, c.events, gw.SA, (<-chan Event)(e.respEvents)
			if !fromClient {
				closer, closerEv, other, otherEv = gw.SA, e.respEvents, c.sa, c.events
			}
			if err := closer.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if d := nextEvent[*Deleted](t, closerEv, time.Second); !errors.Is(d.Reason, ErrClosed) || !d.WasEstablished {
				t.Fatalf("closer: %+v", d)
			}
			if d := nextEvent[*Deleted](t, otherEv, time.Second); !errors.Is(d.Reason, ErrPeerDeleted) {
				t.Fatalf("peer: %v", d.Reason)
			}
			<-other.Done()
			if len(e.resp.SAs()) != 0 {
				t.Fatal("gateway kept the SA")
			}
		})
	}
}

func TestDeleteChild(t *testing.T) {
	e := newEnv(t, 13, nil)
	c, est := e.dialEstablished(t, defaultInitiatorConfig(t, "alice@example.com"))
	nextEvent[*Established](t, e.respEvents, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ch := est.Children[0]
	if err := c.sa.DeleteChild(ctx, ch.SPIIn); err != nil {
		t.Fatal(err)
	}
	gd := nextEvent[*ChildDeleted](t, e.respEvents, time.Second)
	if gd.SPIIn != ch.SPIOut || gd.SPIOut != ch.SPIIn {
		t.Fatalf("gateway deleted %+v", gd)
	}
	cd := nextEvent[*ChildDeleted](t, c.events, time.Second)
	if cd.SPIIn != ch.SPIIn {
		t.Fatalf("client deleted %+v", cd)
	}
	if err := c.sa.CheckLiveness(ctx); err != nil {
		t.Fatalf("IKE SA unusable after child delete: %v", err)
	}
}

func TestPool(t *testing.T) {
	e := newEnv(t, 14, func(r *ResponderConfig) {
		p, err := NewPool([]netip.Prefix{netip.MustParsePrefix("10.99.200.0/30")})
		if err != nil {
			t.Fatal(err)
		}
		r.Pool = p
	})
	ids := []string{"a@example.com", "b@example.com", "c@example.com"}
	var got []netip.Addr
	for i, id := range ids {
		cfg := defaultInitiatorConfig(t, id)
		cfg.Path.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(50 + i)}), 40000)
		c := e.dial(cfg)
		est, err := c.wait(t, 5*time.Second)
		if i == 2 {
			if !errors.Is(err, ErrInternalAddressFailure) {
				t.Fatalf("third client: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(est.VirtualIPs) != 1 {
			t.Fatalf("VIPs %v", est.VirtualIPs)
		}
		got = append(got, est.VirtualIPs[0])
		if i == 0 {
			// Reconnect of the same identity: same address, also while the
			// old SA is still there.
			cfg.Path.Local = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.99"), 40001)
			c2 := e.dial(cfg)
			est2, err := c2.wait(t, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if est2.VirtualIPs[0] != est.VirtualIPs[0] {
				t.Fatalf("reconnect got %v, had %v", est2.VirtualIPs[0], est.VirtualIPs[0])
			}
		}
	}
	if got[0] == got[1] {
		t.Fatalf("two identities share %v", got[0])
	}
}

func TestUnreachable(t *testing.T) {
	n := netsim.New(1)
	defer n.Close()
	h := n.AddHost("client", clientAddr)
	gw := n.AddHost("gw", gwAddr)
	var mu sync.Mutex
	sends := 0
	gw.HandleRaw(func(netsim.Datagram) { mu.Lock(); sends++; mu.Unlock() })
	cfg, fc := clockedInitiatorConfig(t)
	cfg.Retransmit = Retransmit{Initial: 500 * time.Millisecond, Factor: 2, Max: 3 * time.Second, Retries: 4}
	events := make(chan Event, 4)
	sa, err := Dial(context.Background(), cfg, h, events)
	if err != nil {
		t.Fatal(err)
	}
	start := fc.Now()
	for {
		if !fc.fireNext(sa.Done()) {
			break
		}
	}
	_, err = sa.Wait(context.Background())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("error %v", err)
	}
	if want := "gateway unreachable: no response to IKE_SA_INIT after 4 retransmissions"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if took, want := fc.Now().Sub(start), cfg.Retransmit.Total(); took != want {
		t.Fatalf("gave up after %v, want %v", took, want)
	}
	if want := 9500 * time.Millisecond; cfg.Retransmit.Total() != want {
		t.Fatalf("total %v, want %v", cfg.Retransmit.Total(), want)
	}
	deadline := time.Now().Add(time.Second)
	for {
		mu.Lock()
		s := sends
		mu.Unlock()
		if s == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transmissions, want 5", s)
		}
		time.Sleep(time.Millisecond)
	}
	if d := nextEvent[*Deleted](t, events, time.Second); !errors.Is(d.Reason, ErrUnreachable) {
		t.Fatalf("Deleted %v", d.Reason)
	}
}

// fakeClock runs timers only when the test fires them.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	added  chan struct{}
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

// waitNoExchange waits until sa has no exchange outstanding; false when
// the SA ended first.
func waitNoExchange(t *testing.T, sa *SA) bool {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		var busy bool
		if !call(sa, func() { busy = sa.out != nil }) {
			return false
		}
		if !busy {
			return true
		}
		if time.Now().After(deadline) {
			t.Fatal("exchange still outstanding")
		}
		time.Sleep(time.Millisecond)
	}
}

// clockedInitiatorConfig is defaultInitiatorConfig for alice driven by a
// fresh fake clock.
func clockedInitiatorConfig(t testing.TB) (InitiatorConfig, *fakeClock) {
	fc := newFakeClock()
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Clock = fc
	return cfg, fc
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), added: make(chan struct{}, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	select {
	case c.added <- struct{}{}:
	default:
	}
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// mustFireNext fires the next timer like fireNext, failing the test with
// "no <what>" when none comes, and returns how far the clock moved.
func (c *fakeClock) mustFireNext(t *testing.T, done <-chan struct{}, what string) time.Duration {
	t.Helper()
	start := c.Now()
	if !c.fireNext(done) {
		t.Fatal("no " + what)
	}
	return c.Now().Sub(start)
}

// fireNext waits until a timer is pending, advances to it and runs it. It
// returns false once done is closed with nothing pending.
func (c *fakeClock) fireNext(done <-chan struct{}) bool {
	for {
		c.mu.Lock()
		c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool { return t.stopped })
		if len(c.timers) > 0 {
			i := 0
			for j, t := range c.timers {
				if t.at.Before(c.timers[i].at) {
					i = j
				}
			}
			t := c.timers[i]
			c.timers = slices.Delete(c.timers, i, i+1)
			t.stopped = true
			c.now = t.at
			c.mu.Unlock()
			t.f()
			return true
		}
		c.mu.Unlock()
		select {
		case <-c.added:
		case <-done:
			return false
		case <-time.After(2 * time.Second):
			return false
		}
	}
}

func TestNATDetection(t *testing.T) {
	t.Run("behind-nat", func(t *testing.T) {
		e := newEnv(t, 15, nil)
		inside := netip.MustParseAddr("10.0.0.2")
		public := netip.MustParseAddr("203.0.113.7")
		nat := e.net.AddNAT(public, netsim.RestrictedCone)
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		cfg.Path.Local = netip.AddrPortFrom(inside, 40000)
		cfg.NoForceEncap = true
		h := e.net.AddHost("client", inside)
		nat.Attach(h)
		c := e.dialHost(h, cfg)
		est, err := c.wait(t, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
		if !est.NATLocal || est.NATRemote || !gw.NATRemote || gw.NATLocal || !est.UDPEncap || !gw.UDPEncap {
			t.Fatalf("NAT flags: client local=%v remote=%v, gateway local=%v remote=%v", est.NATLocal, est.NATRemote, gw.NATLocal, gw.NATRemote)
		}
		if gw.Path.Remote.Addr() != public || gw.Path.Local.Port() != 4500 {
			t.Fatalf("gateway path %+v", gw.Path)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := gw.SA.CheckLiveness(ctx); err != nil {
			t.Fatalf("liveness through the NAT: %v", err)
		}
	})
	t.Run("no-nat-no-force", func(t *testing.T) {
		e := newEnv(t, 16, nil)
		cfg := defaultInitiatorConfig(t, "alice@example.com")
		cfg.NoForceEncap = true
		_, est := e.dialEstablished(t, cfg)
		gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
		if est.NATLocal || est.NATRemote || gw.NATLocal || gw.NATRemote || est.UDPEncap || gw.UDPEncap {
			t.Fatalf("NAT reported without one: %+v %+v", est, gw)
		}
	})
}
