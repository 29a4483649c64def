package main

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/internal/poll"
)

// spawnConnect's request goes through the socket pair to the daemon it
// starts; when another daemon already holds the socket (a concurrent
// connect won the race), the spawned one exits and the request goes to the
// one listening, each progress event reported once either way.
func TestSpawnConnect(t *testing.T) {
	tests := []struct {
		name     string
		profile  string
		running  bool // a daemon already listens on the socket
		wantErr  string
		wantDone bool
	}{
		{name: "through the pair", profile: "corp", wantDone: true},
		{name: "early failure through the pair", profile: "bad", wantErr: authFailure},
		{name: "another daemon won the socket", profile: "corp", running: true, wantDone: true},
		{name: "failure from the other daemon", profile: "bad", running: true, wantErr: authFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(fakeDaemonEnv, "1")
			cfg, socket := setup(t)
			ctx := testCtx(t)
			if tt.running {
				dctx, stop := context.WithCancel(ctx)
				ran := make(chan int, 1)
				go func() {
					ran <- run(dctx, []string{"roam", "daemon", "--socket", socket, "--config", cfg}, os.Stdout, os.Stderr, fakeEngines())
				}()
				t.Cleanup(func() { stop(); <-ran })
				poll.Until(t, 10*time.Second, "the running daemon to answer", func() bool {
					return daemon.Client{Socket: socket}.Ping(ctx) == nil
				})
			}
			var mu sync.Mutex
			var events []string
			st, took, err := spawnConnect(ctx, socket, cfg, "", tt.profile, nil, func(ev daemon.Event) {
				mu.Lock()
				events = append(events, ev.Event)
				mu.Unlock()
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("spawnConnect %s: %v, want %q", tt.profile, err, tt.wantErr)
				}
			} else if err != nil || st.Name != tt.profile || st.State != "established" {
				t.Fatalf("spawnConnect %s: %+v, %v\nlog: %s", tt.profile, st, err, readFile(daemon.LogFile(socket)))
			}
			if took <= 0 {
				t.Errorf("daemon start %v, want the time it took", took)
			}
			mu.Lock()
			defer mu.Unlock()
			want := "connecting"
			if tt.wantDone {
				want += " established"
			}
			if got := strings.Join(events, " "); got != want {
				t.Errorf("progress events %q, want %q", got, want)
			}
			if !tt.running {
				if tt.wantDone {
					if err := (daemon.Client{Socket: socket}).Disconnect(ctx, tt.profile); err != nil {
						t.Error(err)
					}
				}
				waitGone(t, socket)
			}
		})
	}
}
