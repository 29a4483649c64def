package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
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
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/memtun"
)

func TestReauthDelay(t *testing.T) {
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		now       time.Time
		profile   time.Duration
		gwLife    time.Duration // deadline at + gwLife
		jitter    float64
		want      time.Duration
		wantCause string
		wantOK    bool
	}{
		{name: "neither", now: at},
		{name: "profile", now: at, profile: 8 * time.Hour, jitter: 0.5, want: 8*time.Hour - 24*time.Minute, wantCause: "reauth_time 8h0m0s", wantOK: true},
		{name: "gateway 20 s", now: at, gwLife: 20 * time.Second, jitter: 0.5, want: 17 * time.Second, wantCause: "gateway's AUTH_LIFETIME 20s", wantOK: true},
		// A tenth of 8 h is capped at five minutes.
		{name: "gateway 8 h", now: at, gwLife: 8 * time.Hour, jitter: 0, want: 8*time.Hour - 5*time.Minute, wantCause: "gateway's AUTH_LIFETIME 8h0m0s", wantOK: true},
		{name: "gateway 3 s: a second's margin", now: at, gwLife: 3 * time.Second, jitter: 0, want: 2 * time.Second, wantCause: "gateway's AUTH_LIFETIME 3s", wantOK: true},
		{name: "gateway 1 s: not at once", now: at, gwLife: time.Second, jitter: 0, want: reauthFloor, wantCause: "gateway's AUTH_LIFETIME 1s", wantOK: true},
		{name: "earlier wins", now: at, profile: time.Hour, gwLife: 8 * time.Hour, jitter: 0, want: time.Hour, wantCause: "reauth_time 1h0m0s", wantOK: true},
		{name: "overdue: now", now: at.Add(time.Hour), gwLife: 20 * time.Second, want: 0, wantCause: "gateway's AUTH_LIFETIME 20s", wantOK: true},
	}
	for _, tt := range tests {
		var deadline time.Time
		if tt.gwLife > 0 {
			deadline = at.Add(tt.gwLife)
		}
		d, cause, ok := reauthDelay(tt.now, at, tt.profile, deadline, tt.gwLife, tt.jitter)
		if d != tt.want || cause != tt.wantCause || ok != tt.wantOK {
			t.Errorf("%s: %v %q %v, want %v %q %v", tt.name, d, cause, ok, tt.want, tt.wantCause, tt.wantOK)
		}
	}
}

// reauthGateway wraps fakeIKEGateway: its SAs announce authLifetime in
// IKE_AUTH, and each dial's options are recorded.
type reauthGateway struct {
	*fakeIKEGateway
	authLifetime time.Duration
	mu           sync.Mutex
	opts         []dialOptions
	vips         [][]netip.Addr
	c            *conn
}

func (g *reauthGateway) dial(ctx context.Context) (*ike.SA, <-chan ike.Event, string, error) {
	g.mu.Lock()
	c := g.c
	g.opts = append(g.opts, dialOptionsOf(ctx))
	g.mu.Unlock()
	var vips []netip.Addr
	if c != nil {
		vips = c.requestVIPs()
	}
	g.mu.Lock()
	g.vips = append(g.vips, vips)
	g.mu.Unlock()
	sa, in, ifname, err := g.fakeIKEGateway.dial(ctx)
	return sa, editEstablished(ctx, in, func(est *ike.Established) { est.AuthLifetime = g.authLifetime }), ifname, err
}

// editEstablished passes a fake SA's events on until ctx ends, with edit
// applied to each Established first: what the gateway's IKE_AUTH would
// have said.
func editEstablished(ctx context.Context, in <-chan ike.Event, edit func(*ike.Established)) <-chan ike.Event {
	out := make(chan ike.Event, 16)
	go func() {
		for {
			select {
			case ev := <-in:
				if est, ok := ev.(*ike.Established); ok {
					edit(est)
				}
				out <- ev
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (g *reauthGateway) dialed() ([]dialOptions, [][]netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.opts), slices.Clone(g.vips)
}

// reauthDial returns a DialFunc like fakeDial whose connections dial
// through gw.
func reauthDial(gw *reauthGateway, dev *fakeDevice, conns chan<- *conn) report.DialFunc {
	return func(ctx context.Context, p *config.Profile, emit func(report.Event)) (report.Tunnel, error) {
		c := newConn(p, discardLog(), emit)
		gw.mu.Lock()
		gw.c = c
		gw.mu.Unlock()
		c.gw, c.dev, c.dialIKE = fakeGW, dev, gw.dial
		c.dp = esp.NewDataplane(nil, nil, discardLog())
		c.jitter = func() float64 { return 0.5 }
		if err := c.connect(ctx, newConnectBudget(time.Now())); err != nil {
			c.teardown(err)
			return nil, err
		}
		conns <- c
		return c, nil
	}
}

// TestReauthAlongside: the gateway's AUTH_LIFETIME makes the client
// authenticate again before it runs out: a new SA alongside (no
// INITIAL_CONTACT, the inner address asked for again) replaces the old one
// without a reconnecting state, with a reauthenticated event, the TUN
// device, its address and routes untouched. A failed attempt is retried
// with the old SA kept; a refusal is reported, not retried, and leaves
// the old SA in place.
func TestReauthAlongside(t *testing.T) {
	inBubble(t, func(t *testing.T, ctx context.Context) {
		authFailed := &ike.NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: wire.ExchangeIKEAuth, Remote: true}
		gw := &reauthGateway{authLifetime: 20 * time.Second, fakeIKEGateway: &fakeIKEGateway{outcomes: []outcome{
			{took: 10 * time.Millisecond, vip: "10.99.200.1"},
			{took: 100 * time.Millisecond, vip: "10.99.200.1"},   // reauthentication 1
			{took: 9500 * time.Millisecond, err: errGatewayDown}, // reauthentication 2, first try
			{took: 100 * time.Millisecond, vip: "10.99.200.1"},   // and its retry
			{took: 100 * time.Millisecond, err: authFailed},      // reauthentication 3
		}}}
		m, c, dev, rec := connectFake(t, ctx, func(dev *fakeDevice, conns chan<- *conn) report.DialFunc { return reauthDial(gw, dev, conns) }, reconnectProfile())
		synctest.Wait()
		start := time.Now()
		rec.take()
		st := c.Status()
		if st.NextReauth == nil || st.NextReauth.Sub(start) != 17*time.Second || st.Reauthentications != 0 {
			t.Fatalf("status after connect: next %v reauths %d; want in 17 s (20 s less 2 s margin and half of 2 s jitter)", st.NextReauth, st.Reauthentications)
		}
		firstSPI := st.Children[0].SPIIn

		// Reauthentication 1 at 17 s, 100 ms to negotiate.
		time.Sleep(17*time.Second + 50*time.Millisecond)
		synctest.Wait()
		if st := c.Status(); st.State != "established" || len(st.Children) != 1 || st.Children[0].SPIIn != firstSPI {
			t.Fatalf("status while reauthenticating: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		st = c.Status()
		if st.State != "established" || st.Reauthentications != 1 || st.Children[0].SPIIn == firstSPI || st.VirtualIP != "10.99.200.1" {
			t.Fatalf("status after reauthenticating: %+v", st)
		}
		if n := len(c.dp.ChildStats(nil)); n != 2 {
			t.Fatalf("%d child SAs right after the switch, want the new one and the old one for stragglers", n)
		}
		evs := rec.take()
		if k := kinds(evs); !slices.Equal(k, []string{report.EventReauthenticated}) {
			t.Fatalf("events %v, want only reauthenticated", k)
		}
		if r := evs[0].Reason; !strings.HasPrefix(r, "reauthentication 1 (gateway's AUTH_LIFETIME 20s)") || strings.Contains(r, "virtual IP changed") {
			t.Fatalf("reason %q", r)
		}
		opts, vips := gw.dialed()
		if len(opts) != 2 || opts[0].reauth || !opts[1].reauth {
			t.Fatalf("dial options %+v: want INITIAL_CONTACT only on the first", opts)
		}
		if want := []netip.Addr{netip.MustParseAddr("10.99.200.1")}; len(vips[0]) != 0 || !slices.Equal(vips[1], want) {
			t.Fatalf("asked for inner addresses %v", vips)
		}
		time.Sleep(esp.RetireGrace)
		synctest.Wait()
		if n := len(c.dp.ChildStats(nil)); n != 1 {
			t.Fatalf("%d child SAs after the grace, want the new one", n)
		}

		// Reauthentication 2: the first try finds no gateway; the old SA
		// stays and the retry works.
		time.Sleep(17*time.Second - esp.RetireGrace + 5*time.Second)
		synctest.Wait()
		if st := c.Status(); st.State != "established" || st.Reauthentications != 1 || len(st.Children) != 1 {
			t.Fatalf("status during a failing reauthentication: %+v", st)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if st := c.Status(); st.Reauthentications != 2 {
			t.Fatalf("not reauthenticated after a retry: %+v", st)
		}
		if k := kinds(rec.take()); !slices.Equal(k, []string{report.EventReauthenticated}) {
			t.Fatalf("events %v", k)
		}

		// Reauthentication 3 is refused: reported once, not retried, the
		// current SA kept.
		dials := len(gw.dialTimes())
		spi := c.Status().Children[0].SPIIn
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(gw.dialTimes()); n != dials+1 {
			t.Fatalf("%d negotiations after the refusal, want one", n-dials)
		}
		evs = rec.take()
		if len(evs) != 1 || evs[0].Event != report.EventError || !strings.Contains(evs[0].Reason, "reauthentication refused: authentication failed") {
			t.Fatalf("events after the refusal %+v", evs)
		}
		if st := c.Status(); st.State != "established" || st.Children[0].SPIIn != spi || st.NextReauth != nil {
			t.Fatalf("status after the refusal: %+v", st)
		}
		addrs, routes, closed := dev.state()
		if closed || !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("10.99.200.1/32")}) ||
			!slices.Equal(routes, []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}) {
			t.Fatalf("TUN device: addresses %v routes %v closed %v", addrs, routes, closed)
		}
		if err := m.Disconnect(ctx, "corp"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReauthAddressChange: a gateway that hands out another inner address
// on reauthentication: the device's address is replaced and the event
// says so.
func TestReauthAddressChange(t *testing.T) {
	inBubble(t, func(t *testing.T, ctx context.Context) {
		gw := &reauthGateway{fakeIKEGateway: &fakeIKEGateway{outcomes: []outcome{
			{took: 10 * time.Millisecond, vip: "10.99.200.1"}, {took: 10 * time.Millisecond, vip: "10.99.200.9"}}}}
		p := reconnectProfile()
		p.ReauthTime = time.Hour
		m, c, dev, rec := connectFake(t, ctx, dialVia(gw.fakeIKEGateway), p)
		synctest.Wait()
		rec.take()
		time.Sleep(time.Hour)
		synctest.Wait()
		evs := rec.take()
		if len(evs) != 1 || evs[0].Event != report.EventReauthenticated || evs[0].VirtualIP != "10.99.200.9" ||
			!strings.HasPrefix(evs[0].Reason, "reauthentication 1 (reauth_time 1h0m0s)") ||
			!strings.HasSuffix(evs[0].Reason, "virtual IP changed from 10.99.200.1 to 10.99.200.9") {
			t.Fatalf("events %+v", evs)
		}
		if addrs, _, _ := dev.state(); !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("10.99.200.9/32")}) {
			t.Fatalf("addresses %v", addrs)
		}
		if st := c.Status(); st.VirtualIP != "10.99.200.9" || st.Reauthentications != 1 {
			t.Fatalf("status %+v", st)
		}
		if err := m.Disconnect(ctx, "corp"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReauthLostMeanwhile: the old SA is lost while a reauthentication is
// under way: from then on it is a reconnect, with its state, and with
// INITIAL_CONTACT, asking for the old inner address.
func TestReauthLostMeanwhile(t *testing.T) {
	inBubble(t, func(t *testing.T, ctx context.Context) {
		gw := &reauthGateway{fakeIKEGateway: &fakeIKEGateway{outcomes: []outcome{
			{took: 10 * time.Millisecond, vip: "10.99.200.1"}, {silent: true}, {took: 100 * time.Millisecond, vip: "10.99.200.1"}}}}
		dev := &fakeDevice{}
		conns := make(chan *conn, 1)
		m := daemon.NewManager(reauthDial(gw, dev, conns), daemon.WithLogger(discardLog()))
		synctest.Wait()
		p := reconnectProfile()
		p.ReauthTime = time.Minute
		if _, err := m.Connect(ctx, p, nil); err != nil {
			t.Fatal(err)
		}
		c := <-conns
		synctest.Wait()
		time.Sleep(time.Minute) // the reauthentication has begun, unanswered
		synctest.Wait()
		if n := len(gw.dialTimes()); n != 2 {
			t.Fatalf("%d negotiations, want the first and the reauthentication", n)
		}
		gw.lose(0, ike.ErrPeerDeleted)
		synctest.Wait()
		if st := c.Status(); st.State != report.StateReconnecting {
			t.Fatalf("state %q after losing the old SA", st.State)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		st := c.Status()
		if st.State != "established" || st.Reauthentications != 0 || len(gw.dialTimes()) != 3 {
			t.Fatalf("after the reconnect: %+v, %d negotiations", st, len(gw.dialTimes()))
		}
		opts, vips := gw.dialed()
		want := []netip.Addr{netip.MustParseAddr("10.99.200.1")}
		if len(opts) != 3 || !opts[1].reauth || opts[2].reauth || !slices.Equal(vips[2], want) {
			t.Fatalf("dials %+v asking for %v: want the reconnect with INITIAL_CONTACT, asking for %v", opts, vips, want)
		}
		if err := m.Disconnect(ctx, "corp"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReauthMovesTraffic runs a real dataplane over loopback: packets from
// the TUN device leave on the old Child SA until the reauthenticated SA is
// installed, and on its Child SA only from then on; the device is never
// replaced.
func TestReauthMovesTraffic(t *testing.T) {
	sock, err := esp.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	gwConn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer gwConn.Close()
	gwAddr := gwConn.LocalAddr().(*net.UDPAddr).AddrPort()
	path := netpath.Path{Local: sock.LocalAddr(), Remote: gwAddr}

	// The gateway's side: which SPI each ESP packet came on, in order.
	var mu sync.Mutex
	var spis []uint32
	go func() {
		b := make([]byte, 2048)
		for {
			n, err := gwConn.Read(b)
			if err != nil {
				return
			}
			if n >= 8 && binary.BigEndian.Uint32(b) != 0 {
				mu.Lock()
				spis = append(spis, binary.BigEndian.Uint32(b))
				mu.Unlock()
			}
		}
	}()
	seen := func() []uint32 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(spis)
	}

	gw := &fakeIKEGateway{outcomes: []outcome{{took: time.Millisecond, vip: "10.99.200.1"}}}
	sessions := 0
	dialIKE := func(ctx context.Context) (*ike.SA, <-chan ike.Event, string, error) {
		sessions++
		first := sessions == 1
		_, in, ifname, err := gw.dial(ctx)
		return nil, editEstablished(ctx, in, func(est *ike.Established) {
			est.Path = path
			if first {
				// 4 s less a second's margin and half a second of
				// jitter: the reauthentication starts 2.5 s after the
				// connection.
				est.AuthLifetime = 4 * time.Second
			}
		}), ifname, err
	}
	dev := &fakeDevice{}
	tunDev := memtun.New(memtun.Config{Name: "fake"})
	events := make(chan report.Event, 64)
	p := reconnectProfile()
	c := newConn(p, discardLog(), func(ev report.Event) { events <- ev })
	c.gw, c.dev, c.dialIKE = gwAddr, dev, dialIKE
	c.jitter = func() float64 { return 0.5 }
	c.dp = esp.NewDataplane(tunDev, c.handleIKE, discardLog())
	c.dp.AddSocket(sock)
	// The dataplane ends once its TUN device is closed too, which
	// teardown does not do to a fake.
	dpDone := make(chan struct{})
	go func() { defer close(dpDone); c.dp.Run(c.life) }()
	defer func() { c.Close(context.Background()); tunDev.Close(); <-dpDone }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.connect(ctx, newConnectBudget(time.Now())); err != nil {
		t.Fatal(err)
	}
	oldSPI := c.Status().Children[0].SPIOut

	// A packet every 5 ms from 10.99.200.1 to 10.99.0.1 until the new SA
	// has carried some.
	pkt := make([]byte, 28)
	pkt[0], pkt[9] = 0x45, 17
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	copy(pkt[12:], []byte{10, 99, 200, 1})
	copy(pkt[16:], []byte{10, 99, 0, 1})
	var reauth report.Event
	var newSPI string
	sending, stopSending := context.WithTimeout(context.Background(), 8*time.Second)
	defer stopSending()
	for newSPI == "" || countSPI(seen(), newSPI) < 20 {
		if err := tunDev.Inject(sending, pkt); err != nil {
			t.Fatalf("no traffic on a new SA; SPIs seen %x, events %+v", slices.Compact(seen()), reauth)
		}
		select {
		case ev := <-events:
			if ev.Event == report.EventReauthenticated {
				reauth = ev
				newSPI = c.Status().Children[0].SPIOut
			}
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := slices.Compact(seen())
	if len(got) != 2 || fmt.Sprintf("%08x", got[0]) != oldSPI || fmt.Sprintf("%08x", got[1]) != newSPI {
		t.Fatalf("outbound SPIs in order %x; want %s until the reauthentication, then %s only", got, oldSPI, newSPI)
	}
	if countSPI(seen(), oldSPI) == 0 {
		t.Fatal("nothing went out on the old SA")
	}
	addrs, _, closed := dev.state()
	if closed || !slices.Equal(addrs, []netip.Prefix{netip.MustParsePrefix("10.99.200.1/32")}) {
		t.Fatalf("TUN device: addresses %v closed %v", addrs, closed)
	}
	if st := c.Status(); st.Reauthentications != 1 || st.State != "established" {
		t.Fatalf("status %+v", st)
	}
	if err := c.Err(); err != nil && !errors.Is(err, ike.ErrClosed) {
		t.Fatal(err)
	}
}

func countSPI(spis []uint32, hex string) (n int) {
	for _, s := range spis {
		if fmt.Sprintf("%08x", s) == hex {
			n++
		}
	}
	return n
}
