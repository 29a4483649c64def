package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// switchClient is an initiator advertising the switch extension.
func switchClient(t *testing.T, local netip.Addr, mod func(*InitiatorConfig)) InitiatorConfig {
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Path.Local = netip.AddrPortFrom(local, 40000)
	cfg.Switch = true
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

var fastSwitch = SwitchOptions{Retransmit: fastRR}

// followSwitch moves the client's SA to the gateway's new address to, as
// its owner does on SwitchRequested, and checks that the gateway's SA
// follows from gwAddr2.
func (e *testEnv) followSwitch(t *testing.T, c *client, to netip.AddrPort) {
	t.Helper()
	res, err := e.move(c, netpath.Path{Local: c.sa.Path().Local, Remote: to})
	if err != nil {
		t.Fatalf("client update: %v", err)
	}
	if res.Path.Remote != gw2NATT {
		t.Fatalf("client on %v", res.Path)
	}
	pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	if pu.Path.Local.Addr() != gwAddr2 {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
}

func (e *testEnv) requestSwitch(gw *SA, to netip.Addr, opt SwitchOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	return gw.RequestSwitch(ctx, to, opt)
}

// requestFrom makes sa send an INFORMATIONAL request with ps over path,
// retransmitted on fastRR, and reports its answer (nil) or timeout. An
// unanswered request gives its Message ID back: the peer never saw it.
func requestFrom(t *testing.T, sa *SA, path netpath.Path, ps []wire.Payload) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	if !call(sa, func() {
		if sa.out != nil {
			res <- errors.New("a request is outstanding")
			return
		}
		msgID := sa.nextMsgID
		pkt, err := sa.seal(sa.header(wire.ExchangeInformational, msgID, false), ps)
		if err != nil {
			res <- err
			return
		}
		sa.nextMsgID++
		r := &request{exchange: wire.ExchangeInformational, msgID: msgID, pkt: pkt, keepSA: true, sched: &fastRR,
			paths: func(int) (netpath.Path, bool) { return path, true }}
		r.onResponse = func(wire.Header, []wire.Payload, []byte) { res <- nil }
		r.onTimeout = func(err error) {
			if sa.nextMsgID == msgID+1 {
				sa.nextMsgID = msgID
			}
			res <- err
		}
		sa.sendRequest(r)
	}) {
		t.Fatal("SA gone")
	}
	return res
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(mobikeWait):
		t.Fatal("no outcome")
		return nil
	}
}

// TestSwitchThroughRestrictedNAT is the draft's case: a restricted-cone NAT
// in front of the client, the gateway moving from R1 to R2. Sending from R2
// the RFC 4555 way is filtered by the NAT; SWITCH_TO_IP_ADDRESS, asked over
// R1 and answered to R2, opens the NAT, and the SA works through R2.
func TestSwitchThroughRestrictedNAT(t *testing.T) {
	e := newMobikeEnv(t, nil)
	_, natted := natHosts(e)
	c, gw := e.established(switchClient(t, natInside, nil), natted)
	if !gw.SwitchCapable() {
		t.Fatal("gateway: client not switch capable")
	}
	// ESP in UDP from the gateway's R2 end, as its dataplane would send
	// after moving: counted where the client receives it.
	var espIn atomic.Uint64
	natted.HandleESP(func(d netsim.Datagram) {
		if d.Src == gw2NATT {
			espIn.Add(1)
		}
	})
	espFromR2 := func() {
		t.Helper()
		if err := e.gwHost.Send(gw2NATT, gw.Path().Remote, []byte{0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 1, 0xee}); err != nil {
			t.Fatal(err)
		}
	}
	old := gw.Path()
	if old.Local.Addr() != gwAddr || old.Remote.Addr() != natPublic {
		t.Fatalf("gateway SA on %v", old)
	}

	// (a) RFC 4555 alone: the gateway just talks from R2. The NAT has no
	// permission for R2 and drops every transmission.
	filtered := e.net.Stats().NATFiltered
	fromR2 := netpath.Path{Local: gw2NATT, Remote: old.Remote}
	err := waitErr(t, requestFrom(t, gw, fromR2, nil))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("liveness from R2: %v, want no answer", err)
	}
	if got := e.net.Stats().NATFiltered - filtered; got < uint64(fastRR.Retries)+1 {
		t.Fatalf("NAT filtered %d packets from R2, want every one of %d", got, fastRR.Retries+1)
	}
	filtered = e.net.Stats().NATFiltered
	espFromR2()
	waitAtLeast(t, "ESP from R2 filtered", func() uint64 { return e.net.Stats().NATFiltered - filtered }, 1)

	// (b) SWITCH_TO_IP_ADDRESS over R1; the answer to R2 opens the NAT.
	if err := e.requestSwitch(gw, gwAddr2, fastSwitch); err != nil {
		t.Fatalf("switch: %v", err)
	}
	if s := nextEvent[*SwitchSent](t, e.respEvents, mobikeWait); s.From != gwAddr || s.To != gwAddr2 {
		t.Fatalf("SwitchSent %+v", s)
	}
	req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
	if !req.Accepted || req.From != gwAddr || req.To != gwAddr2 {
		t.Fatalf("client: %+v", req)
	}
	if gw.Path().Local.Addr() != gwAddr {
		t.Fatal("gateway moved before the client's UPDATE_SA_ADDRESSES")
	}
	e.followSwitch(t, c, netip.AddrPortFrom(req.To, 4500))
	done := nextEvent[*SwitchDone](t, e.respEvents, mobikeWait)
	if done.From != gwAddr || done.To != gwAddr2 || done.Took <= 0 {
		t.Fatalf("SwitchDone %+v", done)
	}
	if p := gw.Path(); p.Local.Addr() != gwAddr2 {
		t.Fatalf("gateway SA on %v", p)
	}
	// Now the gateway's own requests from R2 pass the NAT.
	filtered = e.net.Stats().NATFiltered
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	if err := gw.CheckLiveness(ctx); err != nil {
		t.Fatalf("liveness from R2 after the switch: %v", err)
	}
	espFromR2()
	waitAtLeast(t, "ESP from R2 delivered", espIn.Load, 1)
	if got := e.net.Stats().NATFiltered - filtered; got != 0 {
		t.Fatalf("NAT filtered %d packets after the switch", got)
	}
	if got := gw.Counters().RoutabilityChecks; got != 0 {
		t.Fatalf("%d return routability checks", got)
	}
}

// noEvent fails if an event of type T is among those queued on ch.
func noEvent[T Event](t *testing.T, ch <-chan Event) {
	t.Helper()
	for {
		select {
		case ev := <-ch:
			if x, ok := ev.(T); ok {
				t.Fatalf("unexpected %T: %+v", x, x)
			}
		default:
			return
		}
	}
}

func TestSwitchCapability(t *testing.T) {
	tests := []struct {
		name     string
		sw       bool
		data     []byte
		wantData []byte
		capable  bool
	}{
		{"switch advertises R", true, nil, []byte{'R'}, true},
		{"no switch, empty data", false, nil, nil, false},
		{"explicit data wins", true, []byte{'X'}, []byte{'X'}, false},
		{"R among other octets", true, []byte{'Q', 'R'}, []byte{'Q', 'R'}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMobikeEnv(t, nil)
			cfg := switchClient(t, clientAddr, func(c *InitiatorConfig) { c.Switch, c.MOBIKEData = tt.sw, tt.data })
			c := e.dialHosts(cfg, e.net.AddHost("client", clientAddr, clientAddr2))
			if _, err := c.wait(t, mobikeWait); err != nil {
				t.Fatal(err)
			}
			est := nextEvent[*Established](t, e.respEvents, mobikeWait)
			if string(est.PeerMOBIKEData) != string(tt.wantData) {
				t.Errorf("gateway saw MOBIKE_SUPPORTED data %q, want %q", est.PeerMOBIKEData, tt.wantData)
			}
			if got := est.SA.SwitchCapable(); got != tt.capable {
				t.Errorf("SwitchCapable = %v, want %v", got, tt.capable)
			}
			if c.sa.SwitchCapable() {
				t.Error("the initiator's SA claims to be switch capable")
			}
			err := e.requestSwitch(est.SA, gwAddr2, fastSwitch)
			if tt.capable && err != nil {
				t.Errorf("switch: %v", err)
			}
			if !tt.capable {
				if !errors.Is(err, ErrNotSwitchCapable) {
					t.Errorf("switch to a client without 'R': %v, want ErrNotSwitchCapable", err)
				}
				noEvent[*SwitchSent](t, e.respEvents)
				noEvent[*SwitchRequested](t, c.events)
			}
		})
	}
}

func TestSwitchRequestChecks(t *testing.T) {
	e := newMobikeEnv(t, nil)
	c, gw := e.established(switchClient(t, clientAddr, nil), e.net.AddHost("client", clientAddr, clientAddr2))
	for _, to := range []string{"0.0.0.0", "224.0.0.1", "127.0.0.1", "169.254.1.1", "2001:db8::1", gwAddr.String()} {
		if err := e.requestSwitch(gw, netip.MustParseAddr(to), fastSwitch); err == nil {
			t.Errorf("switch to %s accepted", to)
		}
	}
	if err := e.requestSwitch(c.sa, gwAddr2, fastSwitch); err == nil {
		t.Error("the initiator asked for a switch")
	}
	noEvent[*SwitchSent](t, e.respEvents)
	for _, bad := range []wire.NotifyType{1, 16400, 40959} {
		cfg := switchClient(t, clientAddr, func(c *InitiatorConfig) { c.SwitchNotify = bad })
		if _, err := Dial(context.Background(), cfg, hostsTransport{}, nil); err == nil {
			t.Errorf("Dial accepted SwitchNotify %d", bad)
		}
		rcfg := defaultResponderConfig(t)
		rcfg.SwitchNotify = bad
		if _, err := NewResponder(context.Background(), rcfg, hostsTransport{}, nil); err == nil {
			t.Errorf("NewResponder accepted SwitchNotify %d", bad)
		}
	}
}

// TestSwitchPolicy: the client accepts announced addresses, others only
// with SwitchAny; a refusal is answered at the old address and followed by
// a liveness check there.
func TestSwitchPolicy(t *testing.T) {
	tests := []struct {
		name      string
		announced []netip.Addr
		policy    SwitchPolicy
		accept    bool
	}{
		{"announced", []netip.Addr{gwAddr, gwAddr2}, SwitchAnnounced, true},
		{"not announced", []netip.Addr{gwAddr}, SwitchAnnounced, false},
		{"not announced, any", []netip.Addr{gwAddr}, SwitchAny, true},
		{"nothing announced, any", nil, SwitchAny, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMobikeEnv(t, func(c *ResponderConfig) { c.Addresses = tt.announced })
			var requests atomic.Uint64 // from the client to the old address
			e.net.SetLink(clientAddr, gwAddr, netsim.Impairment{Drop: func(_ int, d netsim.Datagram) bool {
				if p := d.Payload; len(p) >= 4+wire.HeaderLen && binary.BigEndian.Uint32(p) == 0 && p[4+19]&wire.FlagResponse == 0 {
					requests.Add(1)
				}
				return false
			}})
			c, gw := e.established(switchClient(t, clientAddr, func(c *InitiatorConfig) { c.AcceptSwitch = tt.policy }),
				e.net.AddHost("client", clientAddr))
			before := requests.Load()
			err := e.requestSwitch(gw, gwAddr2, fastSwitch)
			req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
			if req.Accepted != tt.accept || req.To != gwAddr2 || req.From != gwAddr {
				t.Fatalf("client: %+v", req)
			}
			if tt.accept {
				if err != nil {
					t.Fatalf("switch: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrSwitchRefused) {
				t.Fatalf("switch: %v, want ErrSwitchRefused", err)
			}
			if req.Reason != "not announced by the gateway" {
				t.Errorf("reason %q", req.Reason)
			}
			if f := nextEvent[*SwitchFailed](t, e.respEvents, mobikeWait); f.TornDown || !errors.Is(f.Err, ErrSwitchRefused) {
				t.Errorf("SwitchFailed %+v", f)
			}
			// The refusal, then the liveness check, both to the old
			// address; the gateway stays where it was.
			waitAtLeast(t, "liveness checks to the old address", func() uint64 { return requests.Load() - before }, 1)
			ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
			defer cancel()
			if err := gw.CheckLiveness(ctx); err != nil {
				t.Fatalf("gateway's liveness check after the refusal: %v", err)
			}
			noPathUpdated(t, e.respEvents)
			if gw.Path().Local.Addr() != gwAddr || c.sa.Path().Remote.Addr() != gwAddr {
				t.Fatalf("moved: gateway %v, client %v", gw.Path(), c.sa.Path())
			}
		})
	}
}

// TestSwitchRefusals sends hand-built switch requests: addresses the client
// must refuse whatever its policy, and malformed notifies it must drop
// (counted, not acted upon). Every answer comes back to the old address.
func TestSwitchRefusals(t *testing.T) {
	e := newMobikeEnv(t, nil)
	cfg := switchClient(t, clientAddr, func(c *InitiatorConfig) {
		c.AcceptSwitch = SwitchAny
		c.LocalAddresses = func() []netip.Addr { return []netip.Addr{clientAddr, clientAddr2} }
	})
	c, gw := e.established(cfg, e.net.AddHost("client", clientAddr, clientAddr2))
	sw := func(a string) *wire.Notify { return switchNotify(DefaultSwitchNotify, netip.MustParseAddr(a)) }
	raw := func(data ...byte) *wire.Notify { return &wire.Notify{Type: DefaultSwitchNotify, Data: data} }
	tests := []struct {
		name   string
		n      *wire.Notify
		reason string // SwitchRequested's reason; "" for a dropped notify
	}{
		{"IPv6 on an IPv4 path", sw("2001:db8::2"), "another address family than the path's"},
		{"our own address", sw(clientAddr.String()), "our own address"},
		{"our other address", sw(clientAddr2.String()), "our own address"},
		{"unspecified", sw("0.0.0.0"), "not a routable unicast address"},
		{"multicast", sw("224.0.0.9"), "not a routable unicast address"},
		{"loopback", sw("127.0.0.1"), "not a routable unicast address"},
		{"link-local", sw("169.254.3.3"), "not a routable unicast address"},
		{"broadcast", sw("255.255.255.255"), "not a routable unicast address"},
		{"empty data", raw(), ""},
		{"3 octets", raw(198, 51, 100), ""},
		{"5 octets", raw(198, 51, 100, 2, 0), ""},
		{"15 octets", raw(make([]byte, 15)...), ""},
		{"17 octets", raw(make([]byte, 17)...), ""},
		{"with a protocol", &wire.Notify{Type: DefaultSwitchNotify, Protocol: wire.ProtoESP, Data: gwAddr2.AsSlice()}, ""},
		{"with an SPI", &wire.Notify{Type: DefaultSwitchNotify, SPI: []byte{1, 2, 3, 4}, Data: gwAddr2.AsSlice()}, ""},
	}
	var bad uint64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := waitErr(t, requestFrom(t, gw, gw.Path(), []wire.Payload{tt.n})); err != nil {
				t.Fatalf("no answer at the old address: %v", err)
			}
			if tt.reason == "" {
				bad++
				if got := c.sa.Counters().BadNotifies; got != bad {
					t.Errorf("BadNotifies = %d, want %d", got, bad)
				}
				noEvent[*SwitchRequested](t, c.events)
				return
			}
			req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
			if req.Accepted || req.Reason != tt.reason {
				t.Errorf("client: accepted=%v reason %q, want %q", req.Accepted, req.Reason, tt.reason)
			}
		})
	}
	if p := c.sa.Path(); p.Remote.Addr() != gwAddr {
		t.Fatalf("client moved to %v", p)
	}
}

// TestSwitchIgnored: a client that did not advertise 'R' treats the notify
// as an unknown status notify; a switch request from the initiator gets an
// empty answer and changes nothing (draft section 4.2).
func TestSwitchIgnored(t *testing.T) {
	t.Run("client without R", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		c, gw := e.established(switchClient(t, clientAddr, func(c *InitiatorConfig) { c.Switch = false }),
			e.net.AddHost("client", clientAddr))
		if err := waitErr(t, requestFrom(t, gw, gw.Path(), []wire.Payload{switchNotify(DefaultSwitchNotify, gwAddr2)})); err != nil {
			t.Fatalf("no answer at the old address: %v", err)
		}
		noEvent[*SwitchRequested](t, c.events)
		// (Unexpected is no sign here: under load a retransmitted IKE_AUTH
		// answer counts there.)
		if got := c.sa.Counters().BadNotifies; got != 0 {
			t.Errorf("client BadNotifies = %d", got)
		}
	})
	t.Run("from the wrong side", func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		c, gw := e.established(switchClient(t, clientAddr, nil), e.net.AddHost("client", clientAddr))
		old := gw.Path()
		unexpected := gw.Counters().Unexpected
		answered := make(chan []wire.Payload, 1)
		if !call(c.sa, func() {
			c.sa.startRequest(wire.ExchangeInformational,
				func() []wire.Payload { return []wire.Payload{switchNotify(DefaultSwitchNotify, clientAddr2)} },
				func(_ wire.Header, ps []wire.Payload, _ []byte) { answered <- ps }, nil)
		}) {
			t.Fatal("client SA gone")
		}
		select {
		case ps := <-answered:
			if len(ps) != 0 {
				t.Errorf("answer %v, want an empty one", ps)
			}
		case <-time.After(mobikeWait):
			t.Fatal("no answer")
		}
		if got := gw.Counters().Unexpected - unexpected; got < 1 {
			t.Errorf("the wrong-side request was not counted (Unexpected +%d)", got)
		}
		noPathUpdated(t, e.respEvents)
		noEvent[*SwitchRequested](t, e.respEvents)
		if !samePath(gw.Path(), old) || c.sa.Path().Remote.Addr() != gwAddr {
			t.Fatalf("moved: gateway %v, client %v", gw.Path(), c.sa.Path())
		}
	})
}

// TestSwitchRetransmitted: the first answer to R2 is lost; the gateway's
// retransmission gets the cached answer, again sent to R2.
func TestSwitchRetransmitted(t *testing.T) {
	e := newMobikeEnv(t, nil)
	var toR1, toR2 atomic.Uint64
	e.net.SetLink(clientAddr, gwAddr2, netsim.Impairment{Drop: func(i int, _ netsim.Datagram) bool {
		toR2.Add(1)
		return i == 0
	}})
	e.net.SetLink(clientAddr, gwAddr, netsim.Impairment{Drop: func(_ int, d netsim.Datagram) bool {
		if ikeResponseFrom(clientAddr)(0, d) {
			toR1.Add(1)
		}
		return false
	}})
	c, gw := e.established(switchClient(t, clientAddr, nil), e.net.AddHost("client", clientAddr))
	r1Before := toR1.Load()
	if err := e.requestSwitch(gw, gwAddr2, fastSwitch); err != nil {
		t.Fatalf("switch: %v", err)
	}
	dups := c.sa.Counters().DuplicateRequests
	if dups < 1 || gw.Counters().Retransmits < 1 {
		t.Fatalf("client DuplicateRequests = %d, gateway %+v: the first answer was not lost", dups, gw.Counters())
	}
	// Every copy of the answer went to R2, none to R1.
	if got := toR2.Load(); got < dups+1 {
		t.Errorf("%d answers to R2, want at least %d", got, dups+1)
	}
	if got := toR1.Load() - r1Before; got != 0 {
		t.Errorf("%d answers to R1", got)
	}
}

// TestSwitchUnanswered: no answer after the retransmissions. The SA is
// torn down only when the old address is gone and no other was announced
// (draft section 4.2); otherwise it keeps working.
func TestSwitchUnanswered(t *testing.T) {
	dropAll := netsim.Impairment{Drop: func(int, netsim.Datagram) bool { return true }}
	tests := []struct {
		name      string
		announced []netip.Addr
		oldGone   bool
		block     [2]netip.Addr // link that loses everything
		torn      bool
		selfMove  bool // the client then moves to R2 by itself
	}{
		{"answers lost, old kept", []netip.Addr{gwAddr, gwAddr2}, false, [2]netip.Addr{clientAddr, gwAddr2}, false, false},
		{"answers lost, old gone, nothing announced", []netip.Addr{gwAddr}, true, [2]netip.Addr{clientAddr, gwAddr2}, true, false},
		{"old gone, R2 announced", []netip.Addr{gwAddr, gwAddr2}, true, [2]netip.Addr{gwAddr, clientAddr}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMobikeEnv(t, func(c *ResponderConfig) { c.Addresses = tt.announced })
			c, gw := e.established(switchClient(t, clientAddr, func(c *InitiatorConfig) { c.AcceptSwitch = SwitchAny }),
				e.net.AddHost("client", clientAddr))
			e.net.SetLink(tt.block[0], tt.block[1], dropAll)
			opt := fastSwitch
			opt.OldGone = tt.oldGone
			err := e.requestSwitch(gw, gwAddr2, opt)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("switch: %v, want no answer", err)
			}
			f := nextEvent[*SwitchFailed](t, e.respEvents, mobikeWait)
			if f.TornDown != tt.torn || f.To != gwAddr2 || !errors.Is(f.Err, ErrUnreachable) {
				t.Fatalf("SwitchFailed %+v", f)
			}
			if tt.torn {
				d := nextEvent[*Deleted](t, e.respEvents, mobikeWait)
				if d.SA != gw || !errors.Is(d.Reason, ErrUnreachable) {
					t.Fatalf("Deleted %+v", d)
				}
				return
			}
			if tt.selfMove {
				e.net.SetLink(tt.block[0], tt.block[1], netsim.Impairment{})
				if _, err := e.move(c, pathFrom(clientAddr, gw2NATT)); err != nil {
					t.Fatalf("client's own move to R2: %v", err)
				}
				nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
			}
			// The kept SA works both ways.
			ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
			defer cancel()
			if err := gw.CheckLiveness(ctx); err != nil {
				t.Fatalf("gateway's liveness check: %v", err)
			}
			if err := c.sa.CheckLiveness(ctx); err != nil {
				t.Fatalf("client's liveness check: %v", err)
			}
		})
	}
}

// TestSwitchReturnRoutability: the client answers the switch and moves
// from another address of its own; the update lands on R2, where the
// gateway asked it to go, so no return routability check runs unless the
// policy wants one.
func TestSwitchReturnRoutability(t *testing.T) {
	for _, rr := range []bool{false, true} {
		t.Run(map[bool]string{false: "skipped", true: "by policy"}[rr], func(t *testing.T) {
			e := newMobikeEnv(t, func(c *ResponderConfig) { c.SwitchReturnRoutability = rr })
			c, gw := e.established(switchClient(t, clientAddr, nil), e.net.AddHost("client", clientAddr, clientAddr2))
			if err := e.requestSwitch(gw, gwAddr2, fastSwitch); err != nil {
				t.Fatalf("switch: %v", err)
			}
			if _, err := e.move(c, pathFrom(clientAddr2, gw2NATT)); err != nil {
				t.Fatalf("client update: %v", err)
			}
			pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
			if pu.Path.Local.Addr() != gwAddr2 || pu.Path.Remote.Addr() != clientAddr2 {
				t.Fatalf("gateway moved to %v", pu.Path)
			}
			done := nextEvent[*SwitchDone](t, e.respEvents, mobikeWait)
			if done.To != gwAddr2 {
				t.Fatalf("SwitchDone %+v", done)
			}
			want := uint64(0)
			if rr {
				want = 1
			}
			if got := gw.Counters().RoutabilityChecks; got != want {
				t.Fatalf("%d return routability checks, want %d", got, want)
			}
		})
	}
}

// TestSwitchCustomNotify: both ends configured with another private-use
// type switch; the default type then means nothing to the client.
func TestSwitchCustomNotify(t *testing.T) {
	const custom wire.NotifyType = 40999
	e := newMobikeEnv(t, func(c *ResponderConfig) { c.SwitchNotify = custom })
	c, gw := e.established(switchClient(t, clientAddr, func(c *InitiatorConfig) { c.SwitchNotify = custom }),
		e.net.AddHost("client", clientAddr))
	if err := waitErr(t, requestFrom(t, gw, gw.Path(), []wire.Payload{switchNotify(DefaultSwitchNotify, gwAddr2)})); err != nil {
		t.Fatalf("no answer at the old address: %v", err)
	}
	noEvent[*SwitchRequested](t, c.events)
	if err := e.requestSwitch(gw, gwAddr2, fastSwitch); err != nil {
		t.Fatalf("switch with type %d: %v", custom, err)
	}
	if req := nextEvent[*SwitchRequested](t, c.events, mobikeWait); !req.Accepted {
		t.Fatalf("client: %+v", req)
	}
}

// TestSwitchExtraPayloads: the hooks HA needs: extra notifies in the same
// request, Message ID 0, and a look at the answer's payloads.
func TestSwitchExtraPayloads(t *testing.T) {
	e := newMobikeEnv(t, nil)
	_, gw := e.established(switchClient(t, clientAddr, nil), e.net.AddHost("client", clientAddr))
	var nextBefore, nextAfter uint32
	call(gw, func() { nextBefore = gw.nextMsgID })
	hookErr := errors.New("sync refused")
	var seen bool
	opt := fastSwitch
	opt.Extra = []wire.Payload{&wire.Notify{Type: wire.NotifyIKEv2FragmentationSupported}}
	opt.OnResponse = func(ps []wire.Payload) error { seen = true; return hookErr }
	if err := e.requestSwitch(gw, gwAddr2, opt); !errors.Is(err, hookErr) || !seen {
		t.Fatalf("switch: %v (hook ran: %v), want the hook's error", err, seen)
	}
	call(gw, func() { nextAfter = gw.nextMsgID })
	if nextAfter != nextBefore+1 {
		t.Fatalf("Message ID %d -> %d", nextBefore, nextAfter)
	}
	// Message ID 0 (RFC 6311): our counter stays; the client, which does
	// not do RFC 6311 sync, drops it as a stale Message ID.
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	if err := gw.CheckLiveness(ctx); err != nil { // the client's cached answer is no longer for ID 0
		t.Fatal(err)
	}
	call(gw, func() { nextAfter = gw.nextMsgID })
	opt = fastSwitch
	opt.MessageID0 = true
	if err := e.requestSwitch(gw, gwAddr2, opt); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("switch with Message ID 0: %v", err)
	}
	call(gw, func() { nextBefore = gw.nextMsgID })
	if nextBefore != nextAfter {
		t.Fatalf("Message ID 0 request moved the counter %d -> %d", nextAfter, nextBefore)
	}
}

func FuzzSwitchNotify(f *testing.F) {
	f.Add(uint8(0), []byte{}, gwAddr2.AsSlice())
	f.Add(uint8(0), []byte{}, netip.MustParseAddr("2001:db8::1").AsSlice())
	f.Add(uint8(3), []byte{1, 2, 3, 4}, []byte{1, 2, 3})
	f.Add(uint8(0), []byte{}, netip.MustParseAddr("::ffff:192.0.2.1").AsSlice())
	f.Fuzz(func(t *testing.T, proto uint8, spi, data []byte) {
		// Through the wire decoder, as a peer's message would come.
		_, body, err := wire.EncodePayloads([]wire.Payload{&wire.Notify{Type: DefaultSwitchNotify, Protocol: wire.ProtocolID(proto), SPI: spi, Data: data}})
		if err != nil {
			return
		}
		ps, err := wire.DecodePayloads(wire.PayloadNotify, body)
		if err != nil {
			return
		}
		n := wire.FindNotify(ps, DefaultSwitchNotify)
		if n == nil {
			t.Fatal("notify lost in decoding")
		}
		a, err := parseSwitchNotify(n)
		if err != nil {
			if proto == 0 && len(spi) == 0 && (len(data) == 4 || len(data) == 16) {
				t.Fatalf("valid notify refused: %v", err)
			}
			return
		}
		if proto != 0 || len(spi) != 0 || (len(data) != 4 && len(data) != 16) {
			t.Fatalf("accepted protocol %d, SPI %x, data %x", proto, spi, data)
		}
		if a.Is4() != (len(data) == 4 || netip.AddrFrom16([16]byte(append(make([]byte, 0, 16), pad16(data)...))).Is4In6()) {
			t.Fatalf("%x decoded as %v", data, a)
		}
		if got := switchNotify(DefaultSwitchNotify, a); a.Is6() && string(got.Data) != string(data) {
			t.Fatalf("%v encodes as %x, decoded from %x", a, got.Data, data)
		}
	})
}

func pad16(b []byte) []byte {
	out := make([]byte, 16)
	copy(out, b)
	return out
}

// TestSwitchQueued: a switch asked for while another request is
// outstanding goes out when the window frees.
func TestSwitchQueued(t *testing.T) {
	e := newMobikeEnv(t, nil)
	c, gw := e.established(switchClient(t, clientAddr, nil), e.net.AddHost("client", clientAddr))
	// The client's first two answers to R1 are lost: the request stays
	// outstanding for two retransmissions.
	var lost atomic.Uint64
	e.net.SetLink(clientAddr, gwAddr, netsim.Impairment{Drop: func(_ int, d netsim.Datagram) bool {
		return ikeResponseFrom(clientAddr)(0, d) && lost.Add(1) <= 2
	}})
	outstanding := requestFrom(t, gw, gw.Path(), nil)
	if err := e.requestSwitch(gw, gwAddr2, fastSwitch); err != nil {
		t.Fatalf("switch: %v", err)
	}
	if err := waitErr(t, outstanding); err != nil {
		t.Fatalf("outstanding request: %v", err)
	}
	if got := lost.Load(); got < 3 {
		t.Fatalf("%d answers to R1, want the outstanding request's three first", got)
	}
	if req := nextEvent[*SwitchRequested](t, c.events, mobikeWait); !req.Accepted {
		t.Fatalf("client: %+v", req)
	}
}

// TestSwitchIPv6: 16 octets of data; the answer and the move go to the
// gateway's other IPv6 address.
func TestSwitchIPv6(t *testing.T) {
	gw6a, gw6b := netip.MustParseAddr("2001:db8:100::1"), netip.MustParseAddr("2001:db8:100::2")
	client6 := netip.MustParseAddr("2001:db8:200::10")
	e := newMobikeEnv(t, func(c *ResponderConfig) { c.Addresses = []netip.Addr{gw6a, gw6b} })
	e.gwHost.AddAddr(gw6a)
	e.gwHost.AddAddr(gw6b)
	cfg := switchClient(t, client6, nil)
	cfg.Path.Remote = netip.AddrPortFrom(gw6a, 500)
	cfg.RemoteTS = []netip.Prefix{netip.MustParsePrefix("fd00:1::/64")}
	c, gw := e.established(cfg, e.net.AddHost("client6", client6))
	if err := e.requestSwitch(gw, gw6b, fastSwitch); err != nil {
		t.Fatalf("switch: %v", err)
	}
	req := nextEvent[*SwitchRequested](t, c.events, mobikeWait)
	if !req.Accepted || req.From != gw6a || req.To != gw6b {
		t.Fatalf("client: %+v", req)
	}
	if _, err := e.move(c, netpath.Path{Local: c.sa.Path().Local, Remote: netip.AddrPortFrom(gw6b, 4500)}); err != nil {
		t.Fatalf("client update: %v", err)
	}
	if done := nextEvent[*SwitchDone](t, e.respEvents, mobikeWait); done.From != gw6a || done.To != gw6b {
		t.Fatalf("SwitchDone %+v", done)
	}
	if p := gw.Path(); p.Local.Addr() != gw6b || p.Remote.Addr() != client6 {
		t.Fatalf("gateway SA on %v", p)
	}
}

// TestSwitchWithDelete: a request that deletes the IKE SA and asks for a
// switch is a delete: the client ends the SA and reports no switch.
func TestSwitchWithDelete(t *testing.T) {
	for _, to := range []netip.Addr{gwAddr2, netip.MustParseAddr("192.0.2.77")} { // announced, not announced
		t.Run(to.String(), func(t *testing.T) {
			e := newMobikeEnv(t, nil)
			c, gw := e.established(switchClient(t, clientAddr, nil), e.net.AddHost("client", clientAddr))
			requestFrom(t, gw, gw.Path(), []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}, switchNotify(DefaultSwitchNotify, to)})
			if d := nextEvent[*Deleted](t, c.events, mobikeWait); !errors.Is(d.Reason, ErrPeerDeleted) {
				t.Fatalf("client SA deleted because %v", d.Reason)
			}
			noEvent[*SwitchRequested](t, c.events)
		})
	}
}
