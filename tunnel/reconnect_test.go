package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/tun"
)

func TestReconnectDelay(t *testing.T) {
	tests := []struct {
		n      int
		max    time.Duration
		jitter float64
		want   time.Duration
	}{
		{n: 1, max: time.Minute, jitter: 0, want: 0},
		{n: 1, max: time.Minute, jitter: 0.5, want: 250 * time.Millisecond},
		{n: 2, max: time.Minute, jitter: 0, want: 500 * time.Millisecond},
		{n: 2, max: time.Minute, jitter: 0.999, want: 500*time.Millisecond + time.Duration(0.999*float64(500*time.Millisecond))},
		{n: 3, max: time.Minute, jitter: 0.5, want: 1500 * time.Millisecond},
		{n: 4, max: time.Minute, jitter: 0, want: 2 * time.Second},
		{n: 7, max: time.Minute, jitter: 0, want: 16 * time.Second},
		{n: 8, max: time.Minute, jitter: 0, want: 30 * time.Second}, // 64 s capped at 60 s
		{n: 8, max: time.Minute, jitter: 0.5, want: 45 * time.Second},
		{n: 1000, max: time.Minute, jitter: 0, want: 30 * time.Second}, // no overflow
		{n: 5, max: 3 * time.Second, jitter: 0, want: 1500 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := reconnectDelay(tt.n, tt.max, tt.jitter); got != tt.want {
			t.Errorf("reconnectDelay(%d, %v, %v) = %v, want %v", tt.n, tt.max, tt.jitter, got, tt.want)
		}
	}
}

// fakeDevice records what a connection does to its TUN device.
type fakeDevice struct {
	mu     sync.Mutex
	addrs  []netip.Prefix
	routes []netip.Prefix
	closed bool
}

func (d *fakeDevice) Name() string { return "roam-corp" }

func (d *fakeDevice) AddAddress(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = append(d.addrs, p)
	return nil
}

func (d *fakeDevice) RemoveAddress(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = slices.DeleteFunc(d.addrs, func(a netip.Prefix) bool { return a == p })
	return nil
}

func (d *fakeDevice) AddRoutes(ps []netip.Prefix, mark uint32, table int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.routes = append(d.routes, ps...)
	return nil
}

func (d *fakeDevice) SetDNS(tun.DNSOptions) error { return nil }
func (d *fakeDevice) DNSMethod() string           { return "" }

func (d *fakeDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *fakeDevice) state() (addrs, routes []netip.Prefix, closed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs), slices.Clone(d.routes), d.closed
}

// outcome is what one IKE negotiation of fakeIKEGateway ends in: established
// with vip after took, or failed with err after took.
type outcome struct {
	took time.Duration
	vip  string
	err  error
	// silent never answers: the attempt ends only with its context.
	silent bool
}

// fakeIKEGateway stands in for ike.Dial: each call takes the next outcome (the
// last one repeats) and records when it was made.
type fakeIKEGateway struct {
	mu       sync.Mutex
	outcomes []outcome
	dials    []time.Time
	sessions []chan ike.Event
	spi      uint32
}

func (g *fakeIKEGateway) dial(ctx context.Context) (*ike.SA, <-chan ike.Event, string, error) {
	g.mu.Lock()
	o := g.outcomes[min(len(g.dials), len(g.outcomes)-1)]
	g.dials = append(g.dials, time.Now())
	events := make(chan ike.Event, 16)
	g.sessions = append(g.sessions, events)
	g.spi += 2
	spi := g.spi
	g.mu.Unlock()
	go func() {
		if o.silent {
			<-ctx.Done()
			events <- &ike.Deleted{Reason: ctx.Err()}
			return
		}
		select {
		case <-time.After(o.took):
		case <-ctx.Done():
			events <- &ike.Deleted{Reason: ctx.Err()}
			return
		}
		if o.err != nil {
			events <- &ike.Deleted{Reason: o.err}
			return
		}
		events <- establishedSA(spi, o.vip)
	}()
	return nil, events, "wlan0", nil
}

func (g *fakeIKEGateway) dialTimes() []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.dials)
}

// lose ends the n-th negotiated SA (from 0) for reason, as the engine does.
func (g *fakeIKEGateway) lose(n int, reason error) {
	g.mu.Lock()
	ch := g.sessions[n]
	g.mu.Unlock()
	ch <- &ike.Deleted{Reason: reason, WasEstablished: true}
}

var fakeGW = netip.MustParseAddrPort("198.51.100.1:4500")

func establishedSA(spi uint32, vip string) *ike.Established {
	key := make([]byte, 20) // AES-128-GCM and its salt
	child := ike.ChildSA{
		SPIIn: spi, SPIOut: spi + 1, KeyIn: key, KeyOut: key,
		RemoteTS:   []wire.TrafficSelector{{Start: netip.MustParseAddr("10.99.0.0"), End: netip.MustParseAddr("10.99.0.255")}},
		LocalTS:    []wire.TrafficSelector{{Start: netip.MustParseAddr(vip), End: netip.MustParseAddr(vip)}},
		Proposal:   "aes128gcm16",
		Transforms: []wire.Transform{{Type: wire.TransformEncr, ID: ikecrypto.EncrAESGCM16, KeyLength: 128}},
	}
	return &ike.Established{
		Initiator: true, UDPEncap: true,
		Path:       netpath.Path{Local: netip.MustParseAddrPort("192.168.10.2:4500"), Remote: fakeGW, IfIndex: 2},
		Children:   []ike.ChildSA{child},
		VirtualIPs: []netip.Addr{netip.MustParseAddr(vip)},
	}
}

// fakeDial returns a DialFunc whose connections are real conns (this file's
// subject) over a fake gateway, TUN device and dataplane.
func fakeDial(gw *fakeIKEGateway, dev *fakeDevice, conns chan<- *conn) report.DialFunc {
	return func(ctx context.Context, p *config.Profile, emit func(report.Event)) (report.Tunnel, error) {
		c := newConn(p, discardLog(), emit)
		c.gw, c.dev, c.dialIKE = fakeGW, dev, gw.dial
		c.dp = esp.NewDataplane(nil, nil, discardLog())
		c.jitter = func() float64 { return 0.5 }
		emit(report.Event{Event: report.EventConnecting, To: fakeGW.String()})
		if err := c.connect(ctx, newConnectBudget(time.Now())); err != nil {
			c.teardown(err)
			return nil, err
		}
		conns <- c
		return c, nil
	}
}

// connectFake runs profile p through a manager whose tunnels dial through
// dial (fakeDial or reauthDial over a fake gateway) and returns once the
// first conn is up; rec has followed the manager's events from the start.
func connectFake(t *testing.T, ctx context.Context, dial func(*fakeDevice, chan<- *conn) report.DialFunc, p *config.Profile) (m *daemon.Manager, c *conn, dev *fakeDevice, rec *recorder) {
	t.Helper()
	dev = &fakeDevice{}
	conns := make(chan *conn, 1)
	m = daemon.NewManager(dial(dev, conns), daemon.WithLogger(discardLog()))
	rec = &recorder{}
	rec.follow(ctx, m)
	synctest.Wait()
	if _, err := m.Connect(ctx, p, nil); err != nil {
		t.Fatal(err)
	}
	return m, <-conns, dev, rec
}

// inBubble runs test in a synctest bubble with a context that ends when
// test returns, before the bubble waits for its goroutines.
func inBubble(t *testing.T, test func(t *testing.T, ctx context.Context)) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		test(t, ctx)
	})
}

// dialVia binds fakeDial to gw for connectFake.
func dialVia(gw *fakeIKEGateway) func(*fakeDevice, chan<- *conn) report.DialFunc {
	return func(dev *fakeDevice, conns chan<- *conn) report.DialFunc { return fakeDial(gw, dev, conns) }
}

func reconnectProfile() *config.Profile {
	return &config.Profile{Name: "corp", Gateway: "198.51.100.1", Reconnect: true, ReconnectMaxDelay: time.Minute,
		OutageLimit: 30 * time.Minute, DPDDelay: 30 * time.Second}
}

// recorder collects the manager's events.
type recorder struct {
	mu     sync.Mutex
	events []report.Event
}

func (r *recorder) follow(ctx context.Context, m *daemon.Manager) {
	ch := m.Subscribe(ctx)
	go func() {
		for ev := range ch {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
}

func (r *recorder) take() []report.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func kinds(evs []report.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Event)
	}
	return out
}

var errGatewayDown = &ike.UnreachableError{Exchange: wire.ExchangeIKESAInit, Retransmissions: 4}

// TestReconnectAfterDeadPeer: the gateway stops answering (dead peer
// detection ends the SA) and comes back with another inner address after
// two failed attempts. The connection is reconnecting meanwhile, with the
// attempt and the last error in status and each attempt as a connecting
// event; the attempts follow the backoff; the TUN device stays, its
// routes are not duplicated, and the new inner address replaces the old.
func TestReconnectAfterDeadPeer(t *testing.T) {
	inBubble(t, func(t *testing.T, ctx context.Context) {
		const attemptTime = 9500 * time.Millisecond // ike.ConnectRetransmit's give-up time
		gw := &fakeIKEGateway{outcomes: []outcome{
			{took: 50 * time.Millisecond, vip: "10.99.200.1"},
			{took: attemptTime, err: errGatewayDown},
			{took: attemptTime, err: errGatewayDown},
			{took: 50 * time.Millisecond, vip: "10.99.200.2"},
		}}
		m, c, dev, rec := connectFake(t, ctx, dialVia(gw), reconnectProfile())
		synctest.Wait()
		rec.take()

		lost := time.Now()
		gw.lose(0, fmt.Errorf("%w: %w", ike.ErrDeadPeer, &ike.UnreachableError{Exchange: wire.ExchangeInformational, Retransmissions: 4}))
		synctest.Wait()
		st, err := m.Status("corp")
		if err != nil {
			t.Fatal(err)
		}
		if s := st[0]; s.State != report.StateReconnecting || s.ReconnectAttempt != 1 || !strings.Contains(s.LastError, "dead peer detection") ||
			len(s.Children) != 0 || s.VirtualIP != "10.99.200.1" {
			t.Fatalf("status after the loss: %+v", s)
		}

		time.Sleep(time.Hour)
		synctest.Wait()
		dials := gw.dialTimes()
		if len(dials) != 4 {
			t.Fatalf("%d negotiations, want the first and three attempts", len(dials))
		}
		// Attempt 1 after 0.25 s, attempt 2 0.75 s after attempt 1 failed,
		// attempt 3 1.5 s after attempt 2 failed (jitter 0.5).
		wantGaps := []time.Duration{250 * time.Millisecond, attemptTime + 750*time.Millisecond, attemptTime + 1500*time.Millisecond}
		for i, want := range wantGaps {
			from := lost
			if i > 0 {
				from = dials[i]
			}
			if got := dials[i+1].Sub(from); got != want {
				t.Errorf("attempt %d started %v after the previous one, want %v", i+1, got, want)
			}
		}

		evs := rec.take()
		if !slices.Equal(kinds(evs), []string{report.EventConnecting, report.EventConnecting, report.EventConnecting, report.EventEstablished}) {
			t.Fatalf("events %+v", evs)
		}
		if r := evs[0].Reason; !strings.HasPrefix(r, "reconnect attempt 1: gateway not answering (dead peer detection)") {
			t.Errorf("first attempt's reason %q", r)
		}
		if r := evs[1].Reason; !strings.HasPrefix(r, "reconnect attempt 2: gateway unreachable: no response to IKE_SA_INIT") {
			t.Errorf("second attempt's reason %q", r)
		}
		if r := evs[3].Reason; r != "reconnected after 3 attempts; virtual IP changed from 10.99.200.1 to 10.99.200.2" || evs[3].VirtualIP != "10.99.200.2" {
			t.Errorf("established event %+v", evs[3])
		}
		addrs, routes, closed := dev.state()
		if closed || !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("10.99.200.2/32")}) ||
			!slices.Equal(routes, []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}) {
			t.Fatalf("TUN device: addresses %v routes %v closed %v", addrs, routes, closed)
		}
		st, _ = m.Status("corp")
		if s := st[0]; s.State != "established" || s.ReconnectAttempt != 0 || s.LastError != "" || s.VirtualIP != "10.99.200.2" ||
			len(s.Children) != 1 || s.Children[0].SPIIn != fmt.Sprintf("%08x", gw.spi) {
			t.Fatalf("status after reconnecting: %+v", s)
		}
		if n := len(c.dp.ChildStats(nil)); n != 1 {
			t.Fatalf("%d child SAs in the dataplane, want only the new one", n)
		}

		if err := m.Disconnect(ctx, "corp"); err != nil {
			t.Fatal(err)
		}
		if err := c.Err(); err != nil {
			t.Fatalf("ended with %v after disconnect", err)
		}
	})
}

// TestNoReconnect: the cases that end the connection instead.
func TestNoReconnect(t *testing.T) {
	authFailed := &ike.NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: wire.ExchangeIKEAuth, Remote: true}
	tests := []struct {
		name      string
		reconnect bool
		loss      error
		attempts  []outcome // after the first SA
		outage    time.Duration
		wantDials int
		wantErr   string
	}{
		{name: "reconnect off, dead gateway", loss: fmt.Errorf("%w: %w", ike.ErrDeadPeer, errGatewayDown),
			wantDials: 1, wantErr: "gateway not answering (dead peer detection)"},
		{name: "auth fails on reconnect", reconnect: true, loss: ike.ErrPeerDeleted,
			// The refusal repeats: believed at the third in a row.
			attempts:  []outcome{{took: time.Second, err: errGatewayDown}, {took: 100 * time.Millisecond, err: authFailed}},
			wantDials: 2 + maxRefusals, wantErr: "authentication failed"},
		{name: "no proposal on reconnect", reconnect: true, loss: ike.ErrPeerDeleted,
			attempts:  []outcome{{took: 100 * time.Millisecond, err: &ike.NotifyError{Type: wire.NotifyNoProposalChosen, Exchange: wire.ExchangeIKESAInit, Remote: true}}},
			wantDials: 1 + maxRefusals, wantErr: "no proposal chosen"},
		// Attempts start 0.25, 10.5, 21.5, 34, 49.5, 71 and 104.5 s after
		// the loss and fail 9.5 s later; the eighth would start after
		// 159 s, past the limit.
		{name: "outage limit", reconnect: true, loss: ike.ErrPeerDeleted, outage: 2 * time.Minute,
			attempts:  []outcome{{took: 9500 * time.Millisecond, err: errGatewayDown}},
			wantDials: 8, wantErr: "gateway lost for 2m39s: gateway unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				gw := &fakeIKEGateway{outcomes: append([]outcome{{took: time.Millisecond, vip: "10.99.200.1"}}, tt.attempts...)}
				p := reconnectProfile()
				p.Reconnect = tt.reconnect
				if tt.outage > 0 {
					p.OutageLimit = tt.outage
				}
				m, c, dev, rec := connectFake(t, ctx, dialVia(gw), p)
				gw.lose(0, tt.loss)
				time.Sleep(24 * time.Hour)
				synctest.Wait()
				if n := len(gw.dialTimes()); n != tt.wantDials {
					t.Fatalf("%d negotiations, want %d", n, tt.wantDials)
				}
				select {
				case <-c.Done():
				default:
					t.Fatal("connection still up")
				}
				if err := c.Err(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ended with %v, want %q", err, tt.wantErr)
				}
				if _, _, closed := dev.state(); !closed {
					t.Fatal("TUN device left behind")
				}
				evs := rec.take()
				last := evs[len(evs)-1]
				if last.Event != report.EventDisconnected || !strings.Contains(last.Reason, tt.wantErr) {
					t.Fatalf("last event %+v, want disconnected naming %q", last, tt.wantErr)
				}
				if _, err := m.Status("corp"); !errors.Is(err, daemon.ErrNotConnected) {
					t.Fatalf("status after the end: %v", err)
				}
			})
		})
	}
}

// TestReconnectThroughRefusal: a restarting gateway that refuses us until
// its configuration is loaded (strongSwan answers NO_PROPOSAL_CHOSEN) is
// tried again, and the connection comes back.
func TestReconnectThroughRefusal(t *testing.T) {
	inBubble(t, func(t *testing.T, ctx context.Context) {
		noProposal := &ike.NotifyError{Type: wire.NotifyNoProposalChosen, Exchange: wire.ExchangeIKESAInit, Remote: true}
		gw := &fakeIKEGateway{outcomes: []outcome{{took: time.Millisecond, vip: "10.99.200.1"},
			{took: 10 * time.Millisecond, err: noProposal}, {took: time.Millisecond, vip: "10.99.200.1"}}}
		dev := &fakeDevice{}
		conns := make(chan *conn, 1)
		m := daemon.NewManager(fakeDial(gw, dev, conns), daemon.WithLogger(discardLog()))
		p := reconnectProfile()
		p.Reconnect = true
		if _, err := m.Connect(ctx, p, nil); err != nil {
			t.Fatal(err)
		}
		c := <-conns
		gw.lose(0, ike.ErrPeerDeleted)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(gw.dialTimes()); n != 3 {
			t.Fatalf("%d negotiations, want the first, the refused one and the one that worked", n)
		}
		select {
		case <-c.Done():
			t.Fatalf("the connection ended: %v", c.Err())
		default:
		}
		if st := c.Status(); st.State != "established" {
			t.Fatalf("state %q after the gateway took us back", st.State)
		}
		if err := m.Disconnect(ctx, "corp"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDisconnectStopsReconnect: `roam disconnect` while the gateway is
// away ends the attempts for good.
func TestDisconnectStopsReconnect(t *testing.T) {
	inBubble(t, func(t *testing.T, ctx context.Context) {
		gw := &fakeIKEGateway{outcomes: []outcome{{took: time.Millisecond, vip: "10.99.200.1"}, {took: 9500 * time.Millisecond, err: errGatewayDown}}}
		m, c, _, rec := connectFake(t, ctx, dialVia(gw), reconnectProfile())
		gw.lose(0, ike.ErrPeerDeleted)
		time.Sleep(15 * time.Second) // two attempts, the second under way
		synctest.Wait()
		if n := len(gw.dialTimes()); n != 3 {
			t.Fatalf("%d negotiations before the disconnect, want 3", n)
		}
		if err := m.Disconnect(ctx, "corp"); err != nil {
			t.Fatal(err)
		}
		rec.take()
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if n := len(gw.dialTimes()); n != 3 {
			t.Fatalf("%d negotiations after the disconnect, want still 3", n)
		}
		if err := c.Err(); err != nil {
			t.Fatalf("ended with %v after disconnect", err)
		}
		for _, ev := range rec.take() {
			if ev.Event == report.EventConnecting {
				t.Fatalf("attempt after disconnect: %+v", ev)
			}
		}
	})
}

// TestReconnectAlongside: mobility finds no path answering although
// addresses exist; a replacement SA is negotiated while the old one stays
// installed, and replaces it once established. When the old SA's path
// answers again first, the attempts stop.
func TestReconnectAlongside(t *testing.T) {
	inBubble(t, func(t *testing.T, ctx context.Context) {
		gw := &fakeIKEGateway{outcomes: []outcome{{took: time.Millisecond, vip: "10.99.200.1"}, {silent: true}, {took: 100 * time.Millisecond, vip: "10.99.200.1"}}}
		m, c, dev, rec := connectFake(t, ctx, dialVia(gw), reconnectProfile())
		synctest.Wait()
		rec.take()
		oldPeer := c.curPeer()

		// No path answers: an attempt runs, the old SA stays installed.
		c.suspended(oldPeer, "mobility: no working path: gateway unreachable")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if st := c.Status(); st.State != report.StateReconnecting || st.ReconnectAttempt != 1 || len(st.Children) != 1 {
			t.Fatalf("status while negotiating alongside: %+v", st)
		}
		// The old path answers again: the attempt is called off.
		c.resumed(oldPeer, mobilityResume())
		synctest.Wait()
		if st := c.Status(); st.State != "established" || st.ReconnectAttempt != 0 || st.LastError != "" {
			t.Fatalf("status after resuming: %+v", st)
		}
		if c.curPeer() != oldPeer {
			t.Fatal("the old SA was replaced")
		}

		// Again, and this time the replacement is established first.
		c.suspended(oldPeer, "mobility: no working path: gateway unreachable")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if c.curPeer() == oldPeer || c.Status().State != "established" {
			t.Fatalf("not replaced: %+v", c.Status())
		}
		if n := len(c.dp.ChildStats(nil)); n != 1 {
			t.Fatalf("%d child SAs in the dataplane, want only the new one", n)
		}
		// Health changes are events of their own, timed by the health
		// watch: the connection's story is told by the others.
		evs := slices.DeleteFunc(rec.take(), func(ev report.Event) bool { return ev.Event == report.EventHealth })
		if k := kinds(evs); !slices.Contains(k, report.EventEstablished) {
			t.Fatalf("events %v", k)
		}
		if ev := evs[len(evs)-1]; ev.Event != report.EventEstablished || ev.Reason != "reconnected after 1 attempt" {
			t.Fatalf("last event %+v", ev)
		}
		if addrs, _, _ := dev.state(); !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("10.99.200.1/32")}) {
			t.Fatalf("addresses %v", addrs)
		}
		if err := m.Disconnect(ctx, "corp"); err != nil {
			t.Fatal(err)
		}
	})
}

func mobilityResume() mobility.Resume {
	return mobility.Resume{Path: netpath.Path{Local: netip.MustParseAddrPort("192.168.10.2:4500"), Remote: fakeGW, IfIndex: 2},
		Interface: "wlan0", Took: 100 * time.Millisecond, Outage: 5 * time.Second}
}

// TestPickRoute: a reconnect dials the configured gateway address when it
// has a route, else the first of the gateway's other addresses that has.
func TestPickRoute(t *testing.T) {
	v4 := netip.MustParseAddrPort("203.0.113.10:500")
	v6 := netip.MustParseAddrPort("[2001:db8:ff::10]:500")
	route := func(have ...netip.Addr) func(netip.Addr) (netmon.Route, error) {
		return func(a netip.Addr) (netmon.Route, error) {
			if slices.Contains(have, a) {
				return netmon.Route{IfName: "if-" + a.String()}, nil
			}
			return netmon.Route{}, fmt.Errorf("no route to %s", a)
		}
	}
	tests := []struct {
		name    string
		targets []netip.AddrPort
		have    []netip.Addr
		want    netip.AddrPort
		wantErr string
	}{
		{name: "configured address routed", targets: []netip.AddrPort{v4, v6}, have: []netip.Addr{v4.Addr(), v6.Addr()}, want: v4},
		{name: "IPv6-only uplink", targets: []netip.AddrPort{v4, v6}, have: []netip.Addr{v6.Addr()}, want: v6},
		{name: "nothing routed", targets: []netip.AddrPort{v4, v6}, wantErr: "no route to 203.0.113.10"},
		{name: "no alternatives", targets: []netip.AddrPort{v4}, wantErr: "no route to 203.0.113.10"},
	}
	for _, tt := range tests {
		got, r, err := pickRoute(tt.targets, route(tt.have...))
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s: err %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want || r.IfName != "if-"+tt.want.Addr().String() {
			t.Errorf("%s: %v %+v %v, want %v", tt.name, got, r, err, tt.want)
		}
	}
}

// TestPeerHintSignals: an unauthenticated hint that the gateway lost the
// SA asks the supervisor for a replacement alongside; the refuting answer
// to the SA's liveness check calls it off.
func TestPeerHintSignals(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		hint                 ike.PeerHint
		wantSuspect, wantRes bool
	}{
		{"hint", ike.PeerHint{Notify: "INVALID_IKE_SPI"}, true, false},
		{"refuted", ike.PeerHint{Notify: "INVALID_IKE_SPI", Refuted: true}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &conn{log: discardLog(), suspect: make(chan string, 1), resume: make(chan struct{}, 1)}
			c.handleChildEvent(nil, &tc.hint)
			var suspect, resumed bool
			var reason string
			select {
			case reason = <-c.suspect:
				suspect = true
			default:
			}
			select {
			case <-c.resume:
				resumed = true
			default:
			}
			if suspect != tc.wantSuspect || resumed != tc.wantRes {
				t.Fatalf("suspect %v (%q), resume %v; want %v, %v", suspect, reason, resumed, tc.wantSuspect, tc.wantRes)
			}
			if suspect && !strings.Contains(reason, "INVALID_IKE_SPI") {
				t.Fatalf("reason %q does not name the notification", reason)
			}
		})
	}
}
