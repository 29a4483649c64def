package gateway

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/ikesim"
	"github.com/roam-vpn/roam/internal/netsim"
)

var (
	simR1     = netip.MustParseAddr("198.51.100.1")
	simR2     = netip.MustParseAddr("198.51.100.2")
	simR3     = netip.MustParseAddr("198.51.100.3") // a listen address the client was never told about
	simClient = netip.MustParseAddr("192.0.2.10")
)

// simGateway is the gateway's switch code over a real responder on an
// in-memory network, with one client that follows accepted switches the
// way the client daemon does (UpdateAddresses to the new address).
type simGateway struct {
	gw     *gateway
	mu     sync.Mutex
	events []report.Event
	sa     *ike.SA // the gateway's SA of the client
	client *ike.SA
}

func (s *simGateway) eventNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, ev := range s.events {
		out = append(out, ev.Event)
	}
	return out
}

func startSimGateway(t *testing.T, clientSwitch bool) *simGateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := netsim.New(1)
	t.Cleanup(func() { cancel(); n.Close() })
	gwHost := n.AddHost("gw", simR1, simR2, simR3)
	events := make(chan ike.Event, 64)
	rcfg := ikesim.ResponderConfig(t)
	rcfg.MOBIKE, rcfg.Addresses, rcfg.NoReturnRoutability = true, []netip.Addr{simR1, simR2}, true
	ikesim.Listen(ctx, t, gwHost, rcfg, events)
	s := &simGateway{}
	s.gw = &gateway{cfg: &config.Gateway{Listen: []netip.Addr{simR1, simR2, simR3}}, log: discardLog(), clients: map[*ike.SA]*gatewayClient{},
		emit: func(ev report.Event) { s.mu.Lock(); s.events = append(s.events, ev); s.mu.Unlock() }}
	established := make(chan *ike.SA, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				if s.gw.switchEvent(ev) {
					continue
				}
				if est, ok := ev.(*ike.Established); ok {
					s.gw.mu.Lock()
					s.gw.clients[est.SA] = &gatewayClient{est: est}
					s.gw.mu.Unlock()
					established <- est.SA
				}
			}
		}
	}()

	clHost := n.AddHost("client", simClient)
	cevents := make(chan ike.Event, 64)
	icfg := ikesim.InitiatorConfig(t, netip.AddrPortFrom(simClient, 40000), netip.AddrPortFrom(simR1, 500))
	icfg.MOBIKE, icfg.Switch = true, clientSwitch
	s.client = ikesim.Dial(ctx, t, clHost, icfg, cevents)
	// The client daemon's part: an accepted switch moves the SA at once.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-cevents:
				if sw, ok := ev.(*ike.SwitchRequested); ok && sw.Accepted {
					cur := s.client.Path()
					go s.client.UpdateAddresses(ctx, []netpath.Path{{Local: cur.Local, Remote: netip.AddrPortFrom(sw.To, cur.Remote.Port())}})
				}
			}
		}
	}()
	select {
	case s.sa = <-established:
	case <-time.After(10 * time.Second):
		t.Fatal("client not established")
	}
	return s
}

// TestGatewaySwitchSim: `roam gateway switch` end to end through the
// engine: a move, the checks before sending, a refusal, a client without
// the extension, and the automatic move off a vanished address.
func TestGatewaySwitchSim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startSimGateway(t, true)
	if !s.sa.SwitchCapable() {
		t.Fatal("the client advertised 'R' but the SA is not switch-capable")
	}
	res, err := s.gw.Switch(ctx, "alice@example.com", simR2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Peer != "alice@example.com" || res.From != simR1.String() || res.To != simR2.String() || !strings.HasPrefix(res.Remote, simClient.String()+":") {
		t.Errorf("result %+v", res)
	}
	if got := s.sa.Path().Local.Addr(); got != simR2 {
		t.Errorf("gateway SA on %v after the switch, want %v", got, simR2)
	}
	// The client's update completes when the gateway's answer arrives,
	// just after the gateway moved.
	for deadline := time.Now().Add(5 * time.Second); s.client.Path().Remote.Addr() != simR2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("client SA to %v after the switch, want %v", s.client.Path().Remote.Addr(), simR2)
		}
	}
	if got := strings.Join(s.eventNames(), ","); got != "switch-sent,switch-done" {
		t.Errorf("events %s", got)
	}

	for _, tt := range []struct {
		peer    string
		to      netip.Addr
		want    error
		wantTxt string
	}{
		{peer: "alice@example.com", to: simR2, wantTxt: "already uses"},
		{peer: "bob@example.com", to: simR1, want: report.ErrUnknownPeer},
		{peer: "alice@example.com", to: netip.MustParseAddr("198.51.100.9"), want: report.ErrNotListenAddress},
		// R3 is ours but was never announced: the client refuses.
		{peer: simClient.String(), to: simR3, want: report.ErrSwitchRefused},
	} {
		_, err := s.gw.Switch(ctx, tt.peer, tt.to)
		if err == nil || tt.want != nil && !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantTxt) {
			t.Errorf("switch %s to %v: %v, want %v %q", tt.peer, tt.to, err, tt.want, tt.wantTxt)
		}
	}
	if got := s.sa.Path().Local.Addr(); got != simR2 {
		t.Errorf("gateway SA on %v after the refusals, want %v", got, simR2)
	}

	// R2 goes away: the client is moved back to R1 by itself.
	s.gw.addressGone(ctx, simR2, func(a netip.Addr) bool { return a != simR2 })
	for deadline := time.Now().Add(10 * time.Second); s.sa.Path().Local.Addr() != simR1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not moved off the vanished address; events %v", s.eventNames())
		}
	}
	s.gw.sw.wg.Wait()
	if n := strings.Count(strings.Join(s.eventNames(), ","), "switch-done"); n != 2 {
		t.Errorf("events %v: want a second switch-done", s.eventNames())
	}
	// Nowhere to go: reported, nothing sent.
	before := len(s.eventNames())
	s.gw.addressGone(ctx, simR1, func(netip.Addr) bool { return false })
	if evs := s.eventNames(); len(evs) != before+1 || evs[before] != report.EventSwitchFailed {
		t.Errorf("events %v after losing the last address", evs)
	}
}

func TestGatewaySwitchSimNotAdvertised(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startSimGateway(t, false)
	if _, err := s.gw.Switch(ctx, "alice@example.com", simR2); !errors.Is(err, report.ErrSwitchNotAdvertised) {
		t.Errorf("switch of a client without 'R': %v", err)
	}
	s.gw.addressGone(ctx, simR1, func(a netip.Addr) bool { return a != simR1 })
	s.gw.sw.wg.Wait()
	if evs := s.eventNames(); len(evs) != 0 {
		t.Errorf("a client without 'R' got %v", evs)
	}
}
