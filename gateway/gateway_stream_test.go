package gateway

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/poll"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/tcpencap"
)

// freeTCPPort returns a port on 127.0.0.1 nobody listens on now.
func freeTCPPort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// TestGatewayStreams: the gateway's stream listener hands IKE records to
// the responder's handler with the stream path, closes and counts a stream
// that sends garbage, and refuses a source's streams beyond the limit.
func TestGatewayStreams(t *testing.T) {
	port := freeTCPPort(t)
	got := make(chan netpath.Path, 4)
	gw := &gateway{
		cfg: &config.Gateway{GatewayTransport: config.GatewayTransport{TCP: true, TCPPort: port, StreamsPerSource: 2}},
		log: discardLog(), clients: map[*ike.SA]*gatewayClient{}, emit: func(report.Event) {},
	}
	gw.dp = esp.NewDataplane(nil, func(pkt []byte, p netpath.Path) {
		if string(pkt) == "hello IKE" {
			got <- p
		}
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	gs, err := gw.listenStreams(ctx, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); gs.wait() }()
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	good := dial()
	rec, _ := tcpencap.AppendRecord([]byte(tcpencap.Prefix), append([]byte{0, 0, 0, 0}, "hello IKE"...))
	good.Write(rec)
	select {
	case p := <-got:
		if !p.Stream || p.Remote.String() != good.LocalAddr().String() || p.Local.Port() != port {
			t.Fatalf("IKE arrived with path %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("IKE record did not reach the handler")
	}

	bad := dial()
	bad.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(bad); err != nil {
		t.Fatalf("garbage stream not closed: %v", err)
	}
	waitFor(t, func() bool { return gs.garbage.Load() == 1 }, "garbage counted")

	// good is open; the garbage stream has gone: one more fits, the next not.
	waitFor(t, func() bool {
		gs.mu.Lock()
		defer gs.mu.Unlock()
		return gs.perSource[netip.MustParseAddr("127.0.0.1")] == 1
	}, "garbage stream released")
	dial()
	extra := dial()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(extra); err != nil {
		t.Fatalf("stream over the limit not closed: %v", err)
	}
	waitFor(t, func() bool { return gs.refused.Load() == 1 }, "refused counted")
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	poll.Until(t, 5*time.Second, what, ok)
}
