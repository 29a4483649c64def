package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/report"
)

// switchingGateway is a gateway with alice on 203.0.113.10 that moves her
// to 203.0.113.26 and refuses anything else the way the real one does.
type switchingGateway struct{ stop chan struct{} }

func (g *switchingGateway) Status() []daemon.Status { return nil }
func (g *switchingGateway) Wait() error             { <-g.stop; return nil }
func (g *switchingGateway) Switch(_ context.Context, peer string, to netip.Addr) (daemon.SwitchResult, error) {
	switch {
	case peer != "alice@example.com":
		return daemon.SwitchResult{}, fmt.Errorf("%w connected as %q", report.ErrUnknownPeer, peer)
	case to != netip.MustParseAddr("203.0.113.26"):
		return daemon.SwitchResult{}, fmt.Errorf("%s is %w", to, report.ErrNotListenAddress)
	}
	return daemon.SwitchResult{Peer: peer, From: "203.0.113.10", To: to.String(), TookMS: 23}, nil
}

func TestGatewaySwitchCommand(t *testing.T) {
	ctx := testCtx(t)
	socket := filepath.Join(t.TempDir(), "gw.sock")
	g := &switchingGateway{stop: make(chan struct{})}
	up := make(chan struct{})
	gctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- daemon.ServeGateway(gctx, &config.Gateway{}, daemon.GatewayOptions{
			Socket: socket, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Run: func(ctx context.Context, _ *config.Gateway, _ func(daemon.Event)) (daemon.GatewayHandle, error) {
				context.AfterFunc(ctx, func() { close(g.stop) })
				close(up)
				return g, nil
			},
		})
	}()
	defer func() { stop(); <-served }()
	<-up
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := (daemon.Client{Socket: socket}).Status(ctx, ""); err == nil || time.Now().After(deadline) {
			break
		}
	}
	tests := []struct {
		args           []string
		stdout, stderr string
		code           int
	}{
		{[]string{"--peer", "alice@example.com", "--to", "203.0.113.26"}, "switched alice@example.com to 203.0.113.26 in 23 ms\n", "", 0},
		{[]string{"--peer", "bob@example.com", "--to", "203.0.113.26"}, "", `roam: switch: no such client connected as "bob@example.com"`, 1},
		{[]string{"--peer", "alice@example.com", "--to", "192.0.2.2"}, "", "roam: switch: 192.0.2.2 is not one of the gateway's listen addresses", 1},
		{[]string{"--peer", "alice@example.com", "--to", "gw2"}, "", `roam: switch: --to "gw2" is not an IP address`, 1},
		{[]string{"--peer", "alice@example.com", "--to", "203.0.113.26", "extra"}, "", "takes no arguments", 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := roam(ctx, append([]string{"gateway", "switch", "--socket", socket}, tt.args...)...)
			if r.code != tt.code || r.stdout != tt.stdout && tt.code == 0 || !strings.Contains(r.stderr, tt.stderr) || tt.stderr == "" && r.stderr != "" {
				t.Errorf("got %+v", r)
			}
			if strings.Count(r.stderr, "\n") > 1 {
				t.Errorf("error is more than one line: %q", r.stderr)
			}
		})
	}
	if r := roam(ctx, "gateway", "switch", "--socket", socket+".none", "--peer", "a", "--to", "203.0.113.26"); r.code != 1 || !strings.Contains(r.stderr, "no gateway listens on") {
		t.Errorf("no gateway: %+v", r)
	}
	if r := roam(ctx, "gateway", "--socket", socket, "switch", "--peer", "alice@example.com", "--to", "203.0.113.26"); r.code != 0 || !strings.Contains(r.stdout, "switched") {
		t.Errorf("socket on the parent command: %+v", r)
	}
	if r := roam(ctx, "gateway", "--socket", socket+".x"); r.code != 2 || !strings.Contains(r.stderr, "--config FILE is required") {
		t.Errorf("gateway without --config: %+v", r)
	}
}
