package memrig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/internal/memconn"
	"github.com/roam-vpn/roam/internal/memtun"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"
	"github.com/roam-vpn/roam/tun"
	"github.com/roam-vpn/roam/tunnel"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// The client machine's uplinks in a tunnel rig: one interface per address.
var uplinks = []netmon.Address{
	{Addr: clientAddr, Bits: 24, IfIndex: 2, IfName: "wan0"},
	{Addr: clientAddr2, Bits: 24, IfIndex: 3, IfName: "wan1"},
}

// machine is the client's host as the real tunnel sees it (tunnel.Host):
// one netsim host owning every uplink's address, the rig's memory TUN
// device, sockets on the host, the route lookup over the uplinks still up,
// and interface monitors whose events the test makes (down).
type machine struct {
	t    *testing.T
	host *netsim.Host
	end  *end

	mu     sync.Mutex
	up     []netmon.Address // the usable uplinks, first preferred
	mons   map[*monitor]bool
	dev    *device
	nextPt uint16
}

func newMachine(t *testing.T, e *end) *machine {
	return &machine{t: t, host: e.hosts[clientAddr], end: e, up: slices.Clone(uplinks), mons: map[*monitor]bool{}, nextPt: clientPort}
}

func (m *machine) tunnelHost() tunnel.Host {
	return tunnel.Host{CreateTUN: m.createTUN, ListenUDP: m.listenUDP, RouteTo: m.routeTo, NewMonitor: m.newMonitor}
}

func (m *machine) createTUN(name string, mtu int, journal func(tun.State) error) (tunnel.Device, error) {
	if mtu <= 0 {
		return nil, fmt.Errorf("TUN device %s: MTU %d", name, mtu)
	}
	d := &device{name: name, mtu: mtu, mem: m.end.tun, stack: m.end.stack}
	m.mu.Lock()
	m.dev = d
	m.mu.Unlock()
	go m.end.stack.run()
	return d, nil
}

// listenUDP binds on the host; port 0 takes the next free one from
// clientPort on.
func (m *machine) listenUDP(local netip.AddrPort, mark uint32) (esp.Conn, error) {
	if mark != tun.DefaultMark {
		return nil, fmt.Errorf("socket mark %#x, want the tunnel's %#x", mark, tun.DefaultMark)
	}
	if local.Port() == 0 {
		m.mu.Lock()
		local = netip.AddrPortFrom(local.Addr(), m.nextPt)
		m.nextPt++
		m.mu.Unlock()
	}
	c, err := memconn.Listen(m.host, local, 0)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// routeTo leaves by the first uplink still up, as the kernel's default
// route would.
func (m *machine) routeTo(dst netip.Addr, mark uint32) (netmon.Route, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.up {
		if a.Addr.Is4() == dst.Is4() {
			return netmon.Route{Src: a.Addr, IfIndex: a.IfIndex, IfName: a.IfName, MTU: 1500}, nil
		}
	}
	return netmon.Route{}, fmt.Errorf("no route to %s", dst)
}

// newMonitor refuses a monitor that would count the tunnel's own device
// as an uplink.
func (m *machine) newMonitor(ignore []string) (tunnel.Monitor, error) {
	m.mu.Lock()
	dev := m.dev
	m.mu.Unlock()
	if dev == nil || !slices.Contains(ignore, dev.name) {
		return nil, fmt.Errorf("interface monitor ignoring %q, not the tunnel's device", ignore)
	}
	return &monitor{m: m, events: make(chan netmon.Event, 16)}, nil
}

// down takes an uplink away: its address leaves the host, and every
// running monitor reports it (Current when it was the path's).
func (m *machine) down(addr netip.Addr) {
	m.mu.Lock()
	i := slices.IndexFunc(m.up, func(a netmon.Address) bool { return a.Addr == addr })
	if i < 0 {
		m.mu.Unlock()
		m.t.Fatalf("uplink %s is not up", addr)
	}
	gone := m.up[i]
	m.up = slices.Delete(m.up, i, i+1)
	m.host.RemoveAddr(addr)
	for mon := range m.mons {
		mon.send(netmon.AddressRemoved{Address: gone, Current: mon.current() == addr, At: time.Now()})
	}
	m.mu.Unlock()
}

func (m *machine) usable() []netmon.Address {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.up)
}

// monitor is one interface monitor of the machine (tunnel.Monitor).
type monitor struct {
	m      *machine
	events chan netmon.Event

	mu     sync.Mutex
	cur    netip.Addr
	closed bool
}

func (o *monitor) Usable() ([]netmon.Address, error) { return o.m.usable(), nil }
func (o *monitor) Addresses() []netmon.Address       { return o.m.usable() }
func (o *monitor) Events() <-chan netmon.Event       { return o.events }

func (o *monitor) Run(ctx context.Context) error {
	o.m.mu.Lock()
	o.m.mons[o] = true
	o.m.mu.Unlock()
	<-ctx.Done()
	o.m.mu.Lock()
	delete(o.m.mons, o)
	o.m.mu.Unlock()
	o.mu.Lock()
	o.closed = true
	close(o.events)
	o.mu.Unlock()
	return nil
}

func (o *monitor) FollowPath(s netpath.State) {
	o.mu.Lock()
	o.cur = s.Path.Local.Addr()
	o.mu.Unlock()
}

func (o *monitor) current() netip.Addr {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cur
}

// send never blocks: a monitor whose reader stalls would hold the test.
func (o *monitor) send(ev netmon.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	select {
	case o.events <- ev:
	default:
		o.m.t.Errorf("monitor event %T dropped: reader stalled", ev)
	}
}

// device is the tunnel's TUN device on the rig's memory one: the inner
// addresses go to the stack behind it; routes and DNS are recorded.
type device struct {
	name  string
	mtu   int
	mem   *memtun.Device
	stack *stack

	mu     sync.Mutex
	addrs  []netip.Prefix
	routes []netip.Prefix
	dns    tun.DNSOptions
}

func (d *device) Dev() wgtun.Device { return d.mem }
func (d *device) Name() string      { return d.name }
func (d *device) DNSMethod() string { return "memory" }
func (d *device) Close() error      { return d.mem.Close() }

func (d *device) AddAddress(p netip.Prefix) error {
	d.mu.Lock()
	d.addrs = append(d.addrs, p)
	d.mu.Unlock()
	d.stack.setOwn(p.Addr())
	return nil
}

func (d *device) RemoveAddress(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.Index(d.addrs, p)
	if i < 0 {
		return fmt.Errorf("%s: no address %s", d.name, p)
	}
	d.addrs = slices.Delete(d.addrs, i, i+1)
	return nil
}

func (d *device) AddRoutes(ps []netip.Prefix, mark uint32, table int) error {
	d.mu.Lock()
	d.routes = append(d.routes, ps...)
	d.mu.Unlock()
	return nil
}

func (d *device) SetDNS(o tun.DNSOptions) error {
	d.mu.Lock()
	d.dns = o
	d.mu.Unlock()
	return nil
}

func (d *device) StepAside(on bool) error {
	return fmt.Errorf("%s: no captive portal in the rig (step aside %v)", d.name, on)
}

// tunnelRig is the rig's gateway with the real client tunnel
// (tunnel.Dial) connected to it.
type tunnelRig struct {
	*rig
	machine *machine
	tunnel  report.Tunnel
	events  chan report.Event
}

// newTunnelRig starts the gateway of a rig and dials it with the real
// tunnel from the client machine's first uplink, MOBIKE on.
// extra is more of the profile's TOML.
func newTunnelRig(t *testing.T, seed int64, extra string) *tunnelRig {
	t.Helper()
	r := newBareRig(t, seed)
	ctx := r.ctx
	gAddrs := []netip.Addr{gwAddr, gwAddr2}
	r.gw = newEnd(t, r.net, "gw", []netip.Addr{gwInner}, false, gAddrs...)
	r.client = newEnd(t, r.net, "client", nil, false, clientAddr, clientAddr2)
	r.startGateway(t, gAddrs)

	tr := &tunnelRig{rig: r, machine: newMachine(t, r.client), events: make(chan report.Event, 256)}
	p := loadProfile(t, extra)
	dctx, dcancel := context.WithTimeout(report.WithLogger(ctx, testLogger(t)), wait)
	defer dcancel()
	tu, err := tunnel.Dial(dctx, p, tr.emit, tunnel.Options{Host: tr.machine.tunnelHost()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	tr.tunnel = tu
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), wait)
		defer ccancel()
		tu.Close(cctx)
		<-tu.Done()
	})
	st := tu.Status()
	if st.State != report.StateEstablished || st.VirtualIP == "" {
		t.Fatalf("after dial: state %s, virtual IP %q", st.State, st.VirtualIP)
	}
	r.vip = netip.MustParseAddr(st.VirtualIP)
	r.expectInstalled(t, r.gw)
	return tr
}

// emit keeps the tunnel's events for the test; it never blocks the tunnel.
func (tr *tunnelRig) emit(ev report.Event) {
	select {
	case tr.events <- ev:
	default:
	}
}

// expectEvent waits for the next event of that kind, skipping others.
func (tr *tunnelRig) expectEvent(t *testing.T, kind string) report.Event {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case ev := <-tr.events:
			if ev.Event == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event", kind)
			return report.Event{}
		}
	}
}

// loadProfile is the client's profile as a user writes it, through the
// real loader (its defaults included). No captive probe: the rig has no
// HTTP to reach. extra is appended to the profile's keys.
func loadProfile(t *testing.T, extra string) *config.Profile {
	t.Helper()
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	if err := os.WriteFile(pskFile, psk, 0o600); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`[profiles.corp]
gateway = %q
local_id = "alice@example.com"
remote_id = "vpn.example.com"
auth = "psk"
psk_file = %q
ike = ["aes128gcm16-prfsha256-x25519"]
esp = ["aes128gcm16"]
remote_ts = ["10.99.0.0/24"]
virtual_ip = true
mobike = true
captive_probe = ""
`, gwAddr, pskFile) + extra
	path := filepath.Join(dir, "roam.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := config.LoadProfiles(path)
	if err != nil {
		t.Fatal(err)
	}
	return ps["corp"]
}

// testLogger logs to the test until it ends (the tunnel's goroutines may
// outlive a failed test's last line).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

// pingBoth sends n pings each way between the client's inner address and
// the host behind the gateway, numbered from the flows' count on, and
// requires every one answered.
func (tr *tunnelRig) pingBoth(t *testing.T, out, in *flow, n uint16) {
	t.Helper()
	for _, f := range []*flow{out, in} {
		from := uint16(f.sent.Load()) + 1
		for range n {
			if err := f.send(tr.ctx); err != nil {
				t.Fatal(err)
			}
		}
		if got := f.answered(t, from, from+n-1); got != int(from+n-1) {
			t.Fatalf("%s: %d of %d pings answered", f, got, from+n-1)
		}
	}
}

// TestTunnelPingAndMove runs the real client tunnel (tunnel.Dial: its
// connect, the install through ikeesp.Binder, and the MOBIKE mover) against
// the rig's gateway: inner pings both ways, then the first uplink goes
// down, the monitor reports it, the mover moves the SA to the second
// uplink with UPDATE_SA_ADDRESSES, and pings both ways again all come
// back.
func TestTunnelPingAndMove(t *testing.T) {
	tr := newTunnelRig(t, 7, "")
	if ev := tr.expectEvent(t, report.EventEstablished); ev.Interface != "wan0" {
		t.Errorf("established on %q, want wan0", ev.Interface)
	}
	out := &flow{from: tr.client, src: tr.vip, dst: gwInner, id: 1}
	in := &flow{from: tr.gw, src: gwInner, dst: tr.vip, id: 2}
	const pings = 20
	tr.pingBoth(t, out, in, pings)
	if st := tr.tunnel.Status(); st.Local != netip.AddrPortFrom(clientAddr, clientPort).String() || st.Interface != "wan0" {
		t.Fatalf("before the move: local %s on %q", st.Local, st.Interface)
	}

	tr.machine.down(clientAddr)
	ev := tr.expectEvent(t, report.EventPathChanged)
	want := netip.AddrPortFrom(clientAddr2, clientPort).String()
	if ev.To != want || ev.Interface != "wan1" {
		t.Fatalf("path changed to %s on %q, want %s on wan1", ev.To, ev.Interface, want)
	}
	if got := expect(t, "gateway path update", tr.gw.moved); got.Remote.Addr() != clientAddr2 {
		t.Fatalf("the gateway sends ESP to %v", got.Remote)
	}
	tr.pingBoth(t, out, in, pings)

	st := tr.tunnel.Status()
	if st.State != report.StateEstablished || st.Local != want || st.Interface != "wan1" || st.PathChanges != 1 {
		t.Fatalf("after the move: state %s, local %s on %q, %d path changes", st.State, st.Local, st.Interface, st.PathChanges)
	}
	if d := tr.client.stack.duplicates() + tr.gw.stack.duplicates(); d != 0 {
		t.Fatalf("%d duplicate replies", d)
	}
	checkDrops(t, tr.gw)
	if d := st.Drops; d.BadICV != 0 || d.Replayed != 0 || d.TooOld != 0 || d.Malformed != 0 {
		t.Fatalf("client drops %+v", d)
	}
	if len(st.Children) != 1 || st.Children[0].PacketsIn != 4*pings || st.Children[0].PacketsOut != 4*pings {
		t.Fatalf("client child SAs %+v, want one with %d packets each way", st.Children, 4*pings)
	}
	tr.machine.dev.mu.Lock()
	addrs, routes := slices.Clone(tr.machine.dev.addrs), slices.Clone(tr.machine.dev.routes)
	tr.machine.dev.mu.Unlock()
	if len(addrs) != 1 || addrs[0].Addr() != tr.vip || !slices.Equal(routes, []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}) {
		t.Fatalf("device addresses %v, routes %v", addrs, routes)
	}
}

// TestTunnelRekeyUnderTraffic rekeys the tunnel's Child SA while pings flow
// both ways: once the tunnel's own (child_rekey_packets rings the outbound
// SA, the tunnel asks its IKE SA to rekey), once at the gateway's request
// (the tunnel answers and sends on the new SA once the gateway uses it).
// Both ends install the new pair before the old one goes, so on the
// lossless network every ping is answered, and the new pair carries
// traffic both ways.
func TestTunnelRekeyUnderTraffic(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		// rekey starts the rekey (nothing: the packet count does).
		rekey func(t *testing.T, tr *tunnelRig)
	}{
		{"tunnel rekeys after child_rekey_packets", "child_rekey_packets = 1000\n", nil},
		{"gateway rekeys", "", func(t *testing.T, tr *tunnelRig) {
			sa := tr.gw.currentSA()
			ctx, cancel := context.WithTimeout(tr.ctx, wait)
			defer cancel()
			if err := sa.RekeyChild(ctx, tr.gw.dp.ChildStats(nil)[0].SPIIn); err != nil {
				t.Fatalf("gateway rekey: %v", err)
			}
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTunnelRig(t, int64(20+i), tc.extra)
			old := tr.tunnel.Status().Children[0].SPIIn
			up := &flow{from: tr.client, src: tr.vip, dst: gwInner, id: 4}
			down := &flow{from: tr.gw, src: gwInner, dst: tr.vip, id: 5}
			st := startFlows(tr.ctx, up, down)
			st.settle(t)
			if tc.rekey != nil {
				tc.rekey(t, tr)
			}
			tr.expectEvent(t, report.EventRekeyed)
			gwNew := tr.expectInstalled(t, tr.gw).SPIIn
			expect(t, "the gateway's old child retired", tr.gw.retired)
			_, lasts := st.finish(50)
			for i, f := range []*flow{up, down} {
				if got := f.answered(t, 1, lasts[i]); got != int(lasts[i]) {
					t.Fatalf("%v: %d of %d pings answered", f, got, lasts[i])
				}
			}
			checkDrops(t, tr.gw)
			for _, cs := range tr.gw.dp.ChildStats(nil) {
				if cs.SPIIn == gwNew && (cs.PacketsIn == 0 || cs.PacketsOut == 0) {
					t.Fatalf("gateway: the new Child SA carried %d packets in, %d out", cs.PacketsIn, cs.PacketsOut)
				}
			}
			s := tr.tunnel.Status()
			if d := s.Drops; d.BadICV != 0 || d.Replayed != 0 || d.Malformed != 0 {
				t.Fatalf("client drops %+v", d)
			}
			var carried bool
			for _, cs := range s.Children {
				carried = carried || (cs.SPIIn != old && cs.PacketsIn > 0 && cs.PacketsOut > 0)
			}
			if !carried {
				t.Fatalf("the tunnel's children %+v: none but the old %s carried traffic both ways", s.Children, old)
			}
		})
	}
}

// TestTunnelDialFails: when the machine refuses a step, Dial returns one
// line naming it, and what it had set up is undone (the device closed).
func TestTunnelDialFails(t *testing.T) {
	refused := errors.New("refused by the test")
	tests := []struct {
		name    string
		refuse  func(h *tunnel.Host)
		want    string
		devMade bool
	}{
		{"no route to the gateway", func(h *tunnel.Host) {
			h.RouteTo = func(netip.Addr, uint32) (netmon.Route, error) { return netmon.Route{}, refused }
		}, "gateway unreachable: refused by the test", false},
		{"no TUN device", func(h *tunnel.Host) {
			h.CreateTUN = func(string, int, func(tun.State) error) (tunnel.Device, error) { return nil, refused }
		}, "refused by the test", false},
		{"no UDP socket", func(h *tunnel.Host) {
			h.ListenUDP = func(netip.AddrPort, uint32) (esp.Conn, error) { return nil, refused }
		}, "UDP socket: refused by the test", false}, // the device comes after the first IKE message
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := netsim.New(int64(30 + i))
			t.Cleanup(n.Close)
			e := newEnd(t, n, "client", nil, false, clientAddr, clientAddr2)
			m := newMachine(t, e)
			h := m.tunnelHost()
			tc.refuse(&h)
			ctx, cancel := context.WithTimeout(report.WithLogger(context.Background(), testLogger(t)), wait)
			defer cancel()
			tu, err := tunnel.Dial(ctx, loadProfile(t, ""), func(report.Event) {}, tunnel.Options{Host: h})
			if err == nil {
				tu.Close(ctx)
				t.Fatal("dial succeeded")
			}
			if err.Error() != tc.want || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
			if (m.dev != nil) != tc.devMade {
				t.Fatalf("device made: %v, want %v", m.dev != nil, tc.devMade)
			}
			if m.dev != nil {
				if err := e.tun.Inject(ctx, echo(clientAddr, gwInner, 8, 1, 1)); !errors.Is(err, os.ErrClosed) {
					t.Fatalf("the device after a failed dial: inject gives %v, want it closed", err)
				}
			}
		})
	}
}

// TestTunnelGatewaySwitch: the gateway asks the real tunnel to move to its
// second address (SWITCH_TO_IP_ADDRESS) while pings flow. The tunnel
// accepts it (the address was announced), its Mover moves the SA there
// with UPDATE_SA_ADDRESSES, ESP follows on both sides; the gateway's old
// address then goes away, and every ping sent after the switch was done is
// answered.
func TestTunnelGatewaySwitch(t *testing.T) {
	tr := newTunnelRig(t, 40, "")
	f := &flow{from: tr.client, src: tr.vip, dst: gwInner, id: 6}
	st := startFlows(tr.ctx, f)
	before := st.settle(t)[0]

	tr.requestSwitch(t, gwAddr2)
	if ev := tr.expectEvent(t, report.EventSwitchRequested); ev.To != gwAddr2.String() {
		t.Fatalf("switch requested to %s, want %s", ev.To, gwAddr2)
	}
	ev := tr.expectEvent(t, report.EventPathChanged)
	gm := expect(t, "gateway move", tr.gw.moved)
	sd := expect(t, "switch done", tr.gw.switched)
	tr.gw.hosts[gwAddr].RemoveAddr(gwAddr)
	marks, lasts := st.finish(50)
	during, last := marks[0], lasts[0]

	wantGW := netip.AddrPortFrom(gwAddr2, 4500).String()
	if ev.ToGateway != wantGW || ev.Reason == "" || gm.Local.Addr() != gwAddr2 || sd.To != gwAddr2 {
		t.Fatalf("tunnel moved to %s (%q), gateway to %v, switch to %v", ev.ToGateway, ev.Reason, gm, sd.To)
	}
	got := f.answered(t, during+1, last)
	t.Logf("pings %d, answered %d; %d sent between the last check and the switch done", last, got, during-before)
	if lost := int(last) - got; lost > int(during-before) {
		t.Fatalf("%d pings lost, more than the %d sent during the switch", lost, during-before)
	}
	s := tr.tunnel.Status()
	if s.Remote != wantGW || s.PathChanges != 1 || s.State != report.StateEstablished {
		t.Fatalf("after the switch: remote %s, %d path changes, state %s", s.Remote, s.PathChanges, s.State)
	}
	checkDrops(t, tr.gw)
	if d := s.Drops; d.BadICV != 0 || d.Replayed != 0 || d.Malformed != 0 {
		t.Fatalf("client drops %+v", d)
	}
}

// TestTunnelReconnect: the gateway deletes the IKE SA (as one going down
// for maintenance does); the real tunnel negotiates a new one on its own,
// installs it over the same device, and pings both ways all come back on
// the new Child SA.
func TestTunnelReconnect(t *testing.T) {
	tr := newTunnelRig(t, 50, "")
	out := &flow{from: tr.client, src: tr.vip, dst: gwInner, id: 7}
	in := &flow{from: tr.gw, src: gwInner, dst: tr.vip, id: 8}
	const pings = 10
	tr.pingBoth(t, out, in, pings)
	tr.expectEvent(t, report.EventEstablished)
	old := tr.tunnel.Status().Children[0].SPIIn

	gwSA := tr.gw.currentSA()
	cctx, cancel := context.WithTimeout(tr.ctx, wait)
	defer cancel()
	if err := gwSA.Close(cctx); err != nil {
		t.Fatalf("gateway delete: %v", err)
	}
	if ev := tr.expectEvent(t, report.EventEstablished); ev.Reason != "reconnected after 1 attempt" {
		t.Fatalf("re-established with reason %q", ev.Reason)
	}
	tr.expectInstalled(t, tr.gw)
	tr.pingBoth(t, out, in, pings)
	s := tr.tunnel.Status()
	if s.State != report.StateEstablished || s.VirtualIP != tr.vip.String() {
		t.Fatalf("after the reconnect: state %s, virtual IP %s (was %s)", s.State, s.VirtualIP, tr.vip)
	}
	if len(s.Children) != 1 || s.Children[0].SPIIn == old || s.Children[0].PacketsIn != 2*pings || s.Children[0].PacketsOut != 2*pings {
		t.Fatalf("children after the reconnect %+v (old inbound SPI %s), want one new with %d packets each way", s.Children, old, 2*pings)
	}
}
