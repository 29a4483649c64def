package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/report"
)

// fakeGateway is a responder with one client that stops when its context
// ends, or with an error when the test says so.
type fakeGateway struct {
	*ending
}

func (g *fakeGateway) Status() []Status {
	return []Status{{Name: "alice@example.com", State: "established", VirtualIP: "10.99.200.1"}}
}

func (g *fakeGateway) Wait() error {
	<-g.Done()
	return g.Err()
}

func TestServeGateway(t *testing.T) {
	tests := []struct {
		name    string
		startUp error // GatewayFunc fails
		fail    error // the engine stops by itself
		want    string
	}{
		{name: "signalled"},
		{name: "engine failed", fail: errors.New("TUN device vanished"), want: "TUN device vanished"},
		{name: "cannot start", startUp: errors.New("listen 203.0.113.10:500: address in use"), want: "address in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			socket := filepath.Join(t.TempDir(), "gw.sock")
			g := &fakeGateway{newEnding()}
			emitted := make(chan func(Event), 1)
			run := func(ctx context.Context, _ *config.Gateway, emit func(Event)) (GatewayHandle, error) {
				if tt.startUp != nil {
					return nil, tt.startUp
				}
				context.AfterFunc(ctx, func() { g.end(nil) })
				emitted <- emit
				return g, nil
			}
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			served := make(chan error, 1)
			go func() {
				served <- ServeGateway(sctx, &config.Gateway{}, GatewayOptions{Socket: socket, Run: run, Log: discardLog()})
			}()

			if tt.startUp == nil {
				emit := <-emitted
				client := Client{Socket: socket}
				st, err := client.Status(ctx, "")
				if err != nil || len(st) != 1 || st[0].Name != "alice@example.com" {
					t.Errorf("gateway status %+v, %v", st, err)
				}
				if _, err := client.Connect(ctx, "corp", "/etc/roam/roam.toml", nil); err == nil || !strings.Contains(err.Error(), "gateway") {
					t.Errorf("connect on a gateway socket: %v", err)
				}
				evs := make(chan Event, 4)
				go client.Events(ctx, func(ev Event) { evs <- ev })
				// Emit until the stream has subscribed and passes one on.
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
			wait:
				for {
					emit(Event{Profile: "alice@example.com", Event: report.EventEstablished})
					select {
					case ev := <-evs:
						if ev.Event != report.EventEstablished || ev.Time.IsZero() {
							t.Errorf("event %+v", ev)
						}
						break wait
					case <-tick.C:
					case <-ctx.Done():
						t.Fatal("no event from the gateway socket")
					}
				}
				if tt.fail != nil {
					g.end(tt.fail)
				} else {
					stop()
				}
			}
			select {
			case err := <-served:
				if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
					t.Errorf("ServeGateway: %v, want %q", err, tt.want)
				}
			case <-ctx.Done():
				t.Fatal("ServeGateway did not return")
			}
			if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left behind: %v", err)
			}
		})
	}
}
