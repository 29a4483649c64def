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
	"github.com/roam-vpn/roam/report"
)

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
		{name: "refused", peer: "alice@example.com", to: "203.0.113.26", engineErr: report.ErrSwitchRefused, wantErr: report.ErrSwitchRefused.Error(), wantTo: "203.0.113.26"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			socket := filepath.Join(t.TempDir(), "gw.sock")
			g := &switchGateway{fakeGateway: &fakeGateway{newEnding()}, err: tt.engineErr, got: make(chan netip.Addr, 1), peer: make(chan string, 1)}
			ready := make(chan struct{})
			run := func(ctx context.Context, _ *config.Gateway, emit func(Event)) (GatewayHandle, error) {
				context.AfterFunc(ctx, func() { g.end(nil) })
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
