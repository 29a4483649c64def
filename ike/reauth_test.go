package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

func TestParseAuthLifetime(t *testing.T) {
	secs := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	tests := []struct {
		name            string
		ps              []wire.Payload
		want            time.Duration
		present, wantOK bool
	}{
		{name: "none", ps: []wire.Payload{&wire.Notify{Type: wire.NotifyMOBIKESupported}}},
		{name: "20 s", ps: []wire.Payload{&wire.Notify{Type: wire.NotifyAuthLifetime, Data: secs(20)}}, want: 20 * time.Second, present: true, wantOK: true},
		{name: "zero: within a second", ps: []wire.Payload{&wire.Notify{Type: wire.NotifyAuthLifetime, Data: secs(0)}}, want: time.Second, present: true, wantOK: true},
		{name: "capped", ps: []wire.Payload{&wire.Notify{Type: wire.NotifyAuthLifetime, Data: secs(1<<32 - 1)}}, want: maxAuthLifetime, present: true, wantOK: true},
		{name: "three octets", ps: []wire.Payload{&wire.Notify{Type: wire.NotifyAuthLifetime, Data: []byte{0, 0, 20}}}, present: true},
		{name: "eight octets", ps: []wire.Payload{&wire.Notify{Type: wire.NotifyAuthLifetime, Data: make([]byte, 8)}}, present: true},
	}
	for _, tt := range tests {
		d, present, ok := parseAuthLifetime(tt.ps)
		if d != tt.want || present != tt.present || ok != tt.wantOK {
			t.Errorf("%s: got %v %v %v, want %v %v %v", tt.name, d, present, ok, tt.want, tt.present, tt.wantOK)
		}
	}
	// What we send reads back, rounded up to whole seconds.
	for _, d := range []time.Duration{time.Second, 1500 * time.Millisecond, 8 * time.Hour} {
		got, _, ok := parseAuthLifetime([]wire.Payload{authLifetimeNotify(d)})
		if want := d.Round(time.Second); d%time.Second != 0 {
			want = d.Truncate(time.Second) + time.Second
			if got != want || !ok {
				t.Errorf("%v sent, %v read", d, got)
			}
		} else if got != want || !ok {
			t.Errorf("%v sent, %v read", d, got)
		}
	}
}

func TestCPRequest(t *testing.T) {
	v4 := netip.MustParseAddr("10.99.200.7")
	v6 := netip.MustParseAddr("fd00:99::7")
	tests := []struct {
		name           string
		want           []netip.Addr
		wantV4, wantV6 []byte
	}{
		{name: "first connect"},
		{name: "IPv4 again", want: []netip.Addr{v4}, wantV4: v4.AsSlice()},
		{name: "both again", want: []netip.Addr{v6, v4}, wantV4: v4.AsSlice(), wantV6: append(v6.AsSlice(), 128)},
	}
	for _, tt := range tests {
		c := cpRequest(tt.want)
		if c.CfgType != wire.CfgRequest {
			t.Fatalf("%s: type %d", tt.name, c.CfgType)
		}
		var got4, got6 []byte
		var types []uint16
		for _, a := range c.Attributes {
			types = append(types, a.Type)
			switch a.Type {
			case cfgIP4Address:
				got4 = a.Value
			case cfgIP6Address:
				got6 = a.Value
			}
		}
		if !slices.Equal(types, []uint16{cfgIP4Address, cfgIP4DNS, cfgIP6Address, cfgIP6DNS, cfgDNSDomain}) ||
			!slices.Equal(got4, tt.wantV4) || !slices.Equal(got6, tt.wantV6) {
			t.Errorf("%s: attributes %+v", tt.name, c.Attributes)
		}
	}
}

// recordingHost is a client host whose IKE SAs share one address and
// port, as a reauthentication's old and new SA do: messages go to the SA
// named by their SPIi, and what the SAs send is kept.
type recordingHost struct {
	h    *netsim.Host
	mu   sync.Mutex
	sas  []*SA
	sent [][]byte
}

func newRecordingHost(n *netsim.Network, addr netip.Addr) *recordingHost {
	r := &recordingHost{h: n.AddHost("client-"+addr.String(), addr)}
	r.h.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		if len(pkt) < 8 {
			return
		}
		spii := binary.BigEndian.Uint64(pkt)
		r.mu.Lock()
		sas := slices.Clone(r.sas)
		r.mu.Unlock()
		for _, sa := range sas {
			if s, _ := sa.SPIs(); s == spii {
				sa.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
			}
		}
	})
	return r
}

func (r *recordingHost) SendIKE(pkt []byte, path netpath.Path) error {
	r.mu.Lock()
	r.sent = append(r.sent, slices.Clone(pkt))
	r.mu.Unlock()
	return r.h.SendIKE(pkt, path)
}

func (r *recordingHost) dial(t *testing.T, ctx context.Context, cfg InitiatorConfig) (*SA, chan Event) {
	t.Helper()
	events := make(chan Event, 16)
	r.mu.Lock()
	defer r.mu.Unlock()
	sa, err := Dial(ctx, cfg, r, events)
	if err != nil {
		t.Fatal(err)
	}
	r.sas = append(r.sas, sa)
	return sa, events
}

// authRequest decrypts, with the responder SA's keys, the first IKE_AUTH
// request the client sent for that SA.
func (r *recordingHost) authRequest(t *testing.T, gw *SA) []wire.Payload {
	t.Helper()
	spii, _ := gw.SPIs()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pkt := range r.sent {
		msg, err := wire.Decode(pkt)
		if err != nil || msg.Header.SPIi != spii || msg.Header.Exchange != wire.ExchangeIKEAuth {
			continue
		}
		ps, err := gw.open(pkt, msg)
		if err != nil {
			t.Fatalf("decrypting IKE_AUTH: %v", err)
		}
		return ps
	}
	t.Fatal("no IKE_AUTH request sent")
	return nil
}

func requestedIP4(ps []wire.Payload) []byte {
	for _, p := range ps {
		if c, ok := p.(*wire.Config); ok && c.CfgType == wire.CfgRequest {
			for _, a := range c.Attributes {
				if a.Type == cfgIP4Address {
					return a.Value
				}
			}
		}
	}
	return nil
}

// TestReauthSameAddress: the gateway announces AUTH_LIFETIME in IKE_AUTH
// and later in an INFORMATIONAL; a new IKE SA made alongside the old one,
// without INITIAL_CONTACT and asking for the old inner address, gets that
// address while the old SA still exists; deleting the old SA leaves the
// new one working.
func TestReauthSameAddress(t *testing.T) {
	const lifetime = 30 * time.Second
	e := newEnv(t, 41, func(r *ResponderConfig) { r.ReauthTime = lifetime })
	host := newRecordingHost(e.net, clientAddr)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	sa1, ev1 := host.dial(t, e.ctx, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	est1, err := sa1.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gw1 := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	if !gw1.InitialContact {
		t.Fatal("gateway saw no INITIAL_CONTACT in the first IKE_AUTH")
	}
	if est1.AuthLifetime != lifetime || gw1.AuthLifetime != lifetime {
		t.Fatalf("auth lifetime: client read %v, gateway sent %v; want %v", est1.AuthLifetime, gw1.AuthLifetime, lifetime)
	}
	first := host.authRequest(t, gw1.SA)
	if wire.FindNotify(first, wire.NotifyInitialContact) == nil || requestedIP4(first) != nil {
		t.Fatalf("first IKE_AUTH: INITIAL_CONTACT %v, requested address %v", wire.FindNotify(first, wire.NotifyInitialContact) != nil, requestedIP4(first))
	}

	// A new lifetime in an INFORMATIONAL request.
	if err := gw1.SA.SendAuthLifetime(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if al := nextEvent[*AuthLifetime](t, ev1, 2*time.Second); al.Lifetime != 20*time.Second || al.SA != sa1 {
		t.Fatalf("AUTH_LIFETIME event %+v", al)
	}
	if err := sa1.SendAuthLifetime(ctx, time.Second); err == nil {
		t.Fatal("the initiator sent AUTH_LIFETIME")
	}

	// The reauthentication.
	cfg2 := cfg
	cfg2.RequestVIPs, cfg2.NoInitialContact = est1.VirtualIPs, true
	sa2, _ := host.dial(t, e.ctx, cfg2)
	est2, err := sa2.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gw2 := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	if gw2.InitialContact {
		t.Fatal("gateway saw INITIAL_CONTACT in the reauthentication")
	}
	if !slices.Equal(est2.VirtualIPs, est1.VirtualIPs) || est2.AuthLifetime != lifetime {
		t.Fatalf("reauthenticated SA: addresses %v (had %v), auth lifetime %v", est2.VirtualIPs, est1.VirtualIPs, est2.AuthLifetime)
	}
	again := host.authRequest(t, gw2.SA)
	if wire.FindNotify(again, wire.NotifyInitialContact) != nil {
		t.Fatal("reauthentication sent INITIAL_CONTACT")
	}
	if got := requestedIP4(again); !slices.Equal(got, est1.VirtualIPs[0].AsSlice()) {
		t.Fatalf("reauthentication asked for %v, want %v", got, est1.VirtualIPs[0])
	}
	if n := len(e.resp.SAs()); n != 2 {
		t.Fatalf("gateway has %d SAs during the reauthentication, want old and new", n)
	}

	// The old SA goes; the new one stays, with its address.
	if err := sa1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := nextEvent[*Deleted](t, e.respEvents, 2*time.Second); d.SA != gw1.SA {
		t.Fatalf("gateway deleted the wrong SA")
	}
	if err := sa2.CheckLiveness(ctx); err != nil {
		t.Fatalf("new SA after the old one's delete: %v", err)
	}
	if a, err := e.rcfg.Pool.Acquire(poolKey(mustID(t, "bob@example.com")), false); err != nil || a == est1.VirtualIPs[0] {
		t.Fatalf("another client got %v (%v) while alice still holds it", a, err)
	}
}

func mustID(t *testing.T, s string) *wire.Identification {
	t.Helper()
	id, err := ParseIdentity(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestReauthDeadline: an initiator that ignores AUTH_LIFETIME loses its
// SA when the lifetime and the grace have passed; the gateway deletes it.
func TestReauthDeadline(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, 42, func(r *ResponderConfig) {
		r.ReauthTime = time.Minute
		r.Clock = clock
	})
	c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
	if _, err := c.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	start := clock.Now()
	for i := 0; i < 20; i++ {
		if !clock.fireNext(gw.SA.Done()) {
			break
		}
	}
	<-gw.SA.Done()
	if took := clock.Now().Sub(start); took < time.Minute+reauthGrace(time.Minute) {
		t.Fatalf("SA ended %v after establishment, before its deadline %v", took, time.Minute+reauthGrace(time.Minute))
	}
	if d := nextEvent[*Deleted](t, e.respEvents, 2*time.Second); !errors.Is(d.Reason, ErrReauthExpired) {
		t.Fatalf("gateway: %v", d.Reason)
	}
	if d := nextEvent[*Deleted](t, c.events, 2*time.Second); !errors.Is(d.Reason, ErrPeerDeleted) {
		t.Fatalf("client: %v", d.Reason)
	}
}

// FuzzAuthLifetime: any notify data is either a lifetime within the cap
// or refused, never a panic.
func FuzzAuthLifetime(f *testing.F) {
	f.Add([]byte{0, 0, 0, 20})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		d, present, ok := parseAuthLifetime([]wire.Payload{&wire.Notify{Type: wire.NotifyAuthLifetime, Data: data}})
		if !present || ok != (len(data) == 4) || d < 0 || d > maxAuthLifetime {
			t.Fatalf("%x: %v %v %v", data, d, present, ok)
		}
	})
}

// TestInitialContact: a new IKE SA with INITIAL_CONTACT (a client that
// lost its state) makes the gateway drop the identity's older one; other
// identities' SAs stay.
func TestInitialContact(t *testing.T) {
	e := newEnv(t, 43, nil)
	old := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
	if _, err := old.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	gwOld := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	bobCfg := defaultInitiatorConfig(t, "bob@example.com")
	bobCfg.Path.Local = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.20"), 40000)
	bob := e.dial(bobCfg)
	if _, err := bob.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	nextEvent[*Established](t, e.respEvents, 2*time.Second)

	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Path.Local = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.30"), 40001)
	fresh := e.dial(cfg)
	if _, err := fresh.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for {
		ev := <-e.respEvents
		if d, ok := ev.(*Deleted); ok {
			if d.SA != gwOld.SA || !errors.Is(d.Reason, ErrReplacedByInitialContact) {
				t.Fatalf("gateway deleted %p (%v), want alice's old SA replaced", d.SA, d.Reason)
			}
			break
		}
	}
	if n := len(e.resp.SAs()); n != 2 {
		t.Fatalf("gateway keeps %d SAs, want alice's new one and bob's", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := bob.sa.CheckLiveness(ctx); err != nil {
		t.Fatalf("bob's SA: %v", err)
	}
}
