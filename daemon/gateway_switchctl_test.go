package daemon

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
)

func TestMatchPeer(t *testing.T) {
	cands := []switchCandidate{
		{ID: "alice@example.com", Remote: netip.MustParseAddrPort("198.51.100.2:4500")},
		{ID: "bob@example.com", Remote: netip.MustParseAddrPort("198.51.100.6:4500")},
		{ID: "carol@example.com", Remote: netip.MustParseAddrPort("198.51.100.6:1025")},
	}
	tests := []struct {
		peer    string
		want    int
		wantErr error
	}{
		{peer: "alice@example.com", want: 0},
		{peer: "198.51.100.2", want: 0},
		{peer: "198.51.100.2:4500", want: 0},
		{peer: "198.51.100.6:1025", want: 2},
		{peer: "198.51.100.6", wantErr: ErrAmbiguousPeer},
		{peer: "dave@example.com", wantErr: ErrUnknownPeer},
		{peer: "198.51.100.2:500", wantErr: ErrUnknownPeer},
		{peer: "::ffff:198.51.100.2", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.peer, func(t *testing.T) {
			got, err := matchPeer(cands, tt.peer)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.peer) {
					t.Errorf("error %q does not name %q", err, tt.peer)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestCheckSwitchTarget(t *testing.T) {
	listen := []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.26"), netip.MustParseAddr("2001:db8:113::10")}
	r1 := netip.MustParseAddr("203.0.113.10")
	tests := []struct {
		name     string
		from, to string
		wantErr  string
	}{
		{name: "ok", from: "203.0.113.10", to: "203.0.113.26"},
		{name: "mapped", from: "203.0.113.10", to: "::ffff:203.0.113.26"},
		{name: "not ours", from: "203.0.113.10", to: "192.0.2.2", wantErr: "192.0.2.2 is not one of the gateway's listen addresses (listen = [203.0.113.10, 203.0.113.26, 2001:db8:113::10])"},
		{name: "already there", from: "203.0.113.26", to: "203.0.113.26", wantErr: "already uses 203.0.113.26"},
		{name: "other family", from: "203.0.113.10", to: "2001:db8:113::10", wantErr: "different IP families"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSwitchTarget(listen, netip.MustParseAddr(tt.from), netip.MustParseAddr(tt.to))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
	if err := checkSwitchTarget(listen, r1, netip.MustParseAddr("192.0.2.2")); !errors.Is(err, ErrNotListenAddress) {
		t.Errorf("not ours: %v is not ErrNotListenAddress", err)
	}
}

func TestSwitchTarget(t *testing.T) {
	r1, r2, r3 := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.26"), netip.MustParseAddr("203.0.113.42")
	v6 := netip.MustParseAddr("2001:db8:113::10")
	listen := []netip.Addr{r1, r2, v6, r3}
	set := func(as ...netip.Addr) func(netip.Addr) bool {
		return func(a netip.Addr) bool {
			for _, x := range as {
				if x == a {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		name   string
		usable func(netip.Addr) bool
		gone   netip.Addr
		want   netip.Addr
	}{
		{name: "next in order", usable: set(r2, v6, r3), gone: r1, want: r2},
		{name: "skips unusable", usable: set(v6, r3), gone: r1, want: r3},
		{name: "back to the first", usable: set(r1, v6), gone: r2, want: r1},
		{name: "same family only", usable: set(v6), gone: r1},
		{name: "none left", usable: set(), gone: r1},
		{name: "v6 has no other", usable: set(r1, r2, r3), gone: v6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := switchTarget(listen, tt.usable, tt.gone)
			if ok != tt.want.IsValid() || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, ok, tt.want)
			}
		})
	}
}

// switchGateway is a fakeGateway that can switch its one client.
type switchGateway struct {
	*fakeGateway
	err  error
	got  chan netip.Addr
	peer chan string
}

func (g *switchGateway) Switch(ctx context.Context, peer string, to netip.Addr) (SwitchResult, error) {
	g.peer <- peer
	g.got <- to
	if g.err != nil {
		return SwitchResult{}, g.err
	}
	return SwitchResult{Peer: "alice@example.com", From: "203.0.113.10", To: to.String(), TookMS: 23}, nil
}

// TestSwitchThroughControlSocket: the switch request reaches the gateway's
// handle with a parsed address, its errors come back as the one line, and
// a client daemon's socket refuses it.
func TestSwitchThroughControlSocket(t *testing.T) {
	tests := []struct {
		name, peer, to string
		engineErr      error
		wantErr        string
		wantTo         string
	}{
		{name: "ok", peer: "alice@example.com", to: "203.0.113.26", wantTo: "203.0.113.26"},
		{name: "mapped address", peer: "198.51.100.2", to: "::ffff:203.0.113.26", wantTo: "203.0.113.26"},
		{name: "bad address", peer: "alice@example.com", to: "gw2", wantErr: `switch: --to "gw2" is not an IP address`},
		{name: "no peer", peer: " ", to: "203.0.113.26", wantErr: "no client named"},
		{name: "refused", peer: "alice@example.com", to: "203.0.113.26", engineErr: ErrSwitchRefused, wantErr: ErrSwitchRefused.Error(), wantTo: "203.0.113.26"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			socket := filepath.Join(t.TempDir(), "gw.sock")
			g := &switchGateway{fakeGateway: &fakeGateway{stopped: make(chan struct{})}, err: tt.engineErr, got: make(chan netip.Addr, 1), peer: make(chan string, 1)}
			ready := make(chan struct{})
			run := func(ctx context.Context, _ *config.Gateway, emit func(Event)) (GatewayHandle, error) {
				context.AfterFunc(ctx, func() { g.stop(nil) })
				close(ready)
				return g, nil
			}
			sctx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() {
				served <- ServeGateway(sctx, &config.Gateway{}, GatewayOptions{Socket: socket, Run: run, Log: discardLog()})
			}()
			defer func() {
				stop()
				<-served
			}()
			<-ready
			client := Client{Socket: socket}
			var res SwitchResult
			var err error
			for deadline := time.Now().Add(5 * time.Second); ; {
				res, err = client.Switch(ctx, tt.peer, tt.to)
				if !errors.Is(err, ErrNoDaemon) || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if res.Peer != "alice@example.com" || res.To != tt.wantTo || res.TookMS != 23 {
				t.Errorf("result %+v", res)
			}
			if tt.wantTo != "" {
				if got := <-g.got; got.String() != tt.wantTo {
					t.Errorf("gateway asked to switch to %v, want %s", got, tt.wantTo)
				}
				if got := <-g.peer; got != strings.TrimSpace(tt.peer) {
					t.Errorf("peer %q", got)
				}
			}
		})
	}

	td := startTestDaemon(t, false)
	if _, err := td.client.Switch(testCtx(t), "alice@example.com", "203.0.113.26"); err == nil || !strings.Contains(err.Error(), "client daemon") {
		t.Errorf("switch on a client daemon's socket: %v", err)
	}
}
