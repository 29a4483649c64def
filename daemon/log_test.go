package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/report"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The engines log through the daemon's logger, not slog.Default: under
// systemd that logger is the journal's, at the configured level.
func TestEnginesLogThroughDaemonLogger(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, log *slog.Logger, engine func(ctx context.Context))
	}{
		{"client", func(t *testing.T, log *slog.Logger, engine func(ctx context.Context)) {
			m := NewManager(func(ctx context.Context, _ *config.Profile, _ func(Event)) (Tunnel, error) {
				engine(ctx)
				return nil, errors.New("refused")
			}, WithLogger(log))
			if _, err := m.Connect(testCtx(t), &config.Profile{Name: "corp"}, nil); err == nil {
				t.Fatal("connect succeeded")
			}
		}},
		{"gateway", func(t *testing.T, log *slog.Logger, engine func(ctx context.Context)) {
			run := func(ctx context.Context, _ *config.Gateway, _ func(Event)) (GatewayHandle, error) {
				engine(ctx)
				return nil, errors.New("refused")
			}
			socket := filepath.Join(t.TempDir(), "gw.sock")
			if err := ServeGateway(testCtx(t), &config.Gateway{}, GatewayOptions{Socket: socket, Run: run, Log: log}); err == nil {
				t.Fatal("gateway started")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			tt.run(t, log, func(ctx context.Context) {
				report.LoggerFrom(ctx).Debug("engine record", "profile", "corp")
			})
			if !strings.Contains(buf.String(), "engine record") {
				t.Errorf("the engine's debug record missed the daemon's logger; it logged %q", buf.String())
			}
		})
	}
}

// Events are logged at info, a failed connection at error.
func TestLogEventLevel(t *testing.T) {
	tests := []struct {
		ev   Event
		want string
	}{
		{Event{Event: report.EventEstablished, Profile: "corp", To: "203.0.113.10:4500"}, "level=INFO msg=established profile=corp to=203.0.113.10:4500"},
		{Event{Event: report.EventError, Profile: "corp", Reason: "authentication failed"}, `level=ERROR msg=error profile=corp reason="authentication failed"`},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		logEvent(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})), tt.ev)
		if got := strings.TrimSpace(buf.String()); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
