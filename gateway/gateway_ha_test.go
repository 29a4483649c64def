package gateway

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/nstest"
	"github.com/roam-vpn/roam/tcpencap"
)

func TestHAAnnouncedAndListen(t *testing.T) {
	own := netip.MustParseAddr("203.0.113.42")
	other := netip.MustParseAddr("203.0.113.10")
	for _, tc := range []struct {
		name     string
		ha       *config.HA
		announce []netip.Addr
		listen   []netip.Addr
	}{
		{"single node", nil, []netip.Addr{own}, []netip.Addr{own}},
		{"active", &config.HA{Role: "active", TakeoverAddress: other}, []netip.Addr{own, other}, []netip.Addr{own}},
		// A standby answers no one until it takes over.
		{"standby", &config.HA{Role: "standby", TakeoverAddress: other}, []netip.Addr{own, other}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &config.Gateway{Listen: []netip.Addr{own}, HA: tc.ha}
			if got := announced(g); !slices.Equal(got, tc.announce) {
				t.Errorf("announced %v, want %v", got, tc.announce)
			}
			if len(g.Listen) != 1 {
				t.Errorf("announced changed the listen list: %v", g.Listen)
			}
			gw := &gateway{cfg: g}
			if got := gw.startListen(); !slices.Equal(got, tc.listen) {
				t.Errorf("startListen %v, want %v", got, tc.listen)
			}
		})
	}
}

// TestHAStandbyStreams: a standby that takes TCP streams listens for none
// until it takes over (it must not answer clients meanwhile), and then on
// every listen address, as it does for UDP. It runs in a network namespace
// of its own: the takeover opens UDP 500 and 4500 too.
func TestHAStandbyStreams(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	nstest.Exec(t, "ip", "link", "set", "lo", "up")
	lo := netip.MustParseAddr("127.0.0.1")
	got := make(chan netpath.Path, 1)
	gw := &gateway{
		cfg: &config.Gateway{Listen: []netip.Addr{lo}, HA: &config.HA{Role: "standby"},
			GatewayTransport: config.GatewayTransport{TCP: true, TCPPort: 4500, StreamsPerSource: 2}},
		log: discardLog(), clients: map[*ike.SA]*gatewayClient{}, emit: func(report.Event) {},
	}
	gw.dp = esp.NewDataplane(nil, func(pkt []byte, p netpath.Path) {
		if string(pkt) == "hello IKE" {
			select {
			case got <- p:
			default:
			}
		}
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	if gw.streams, err = gw.listenStreams(ctx, gw.startListen()); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); gw.streams.wait() }()
	addr := netip.AddrPortFrom(lo, 4500).String()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the standby accepted a stream before taking over")
	}
	if err := gw.openListen(); err != nil {
		t.Fatalf("takeover's listen: %v", err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("no stream listener after the takeover: %v", err)
	}
	defer c.Close()
	rec, _ := tcpencap.AppendRecord([]byte(tcpencap.Prefix), append([]byte{0, 0, 0, 0}, "hello IKE"...))
	if _, err := c.Write(rec); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if !p.Stream || p.Local.Port() != 4500 {
			t.Fatalf("IKE arrived with path %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("IKE record over the new listener did not reach the handler")
	}
}
