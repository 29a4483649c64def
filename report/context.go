package report

import (
	"context"
	"log/slog"
	"os"

	"github.com/roam-vpn/roam/internal/undo"
)

type stateDirKey struct{}

// WithStateDir hands the process's state directory to a DialFunc, which
// is called by the manager with no other way to receive it.
func WithStateDir(ctx context.Context, dir undo.Dir) context.Context {
	return context.WithValue(ctx, stateDirKey{}, dir)
}

// StateDirFrom is the state directory a tunnel records its changes in
// (the zero Dir, recording nothing, outside a daemon).
func StateDirFrom(ctx context.Context) undo.Dir {
	dir, _ := ctx.Value(stateDirKey{}).(undo.Dir)
	return dir
}

type handoffKey struct{}

// Handoff is the start of a connection another process made and passed
// to the daemon with its connect request: State in the form of the
// DialFunc that reads it (tunnel.Handoff), Files the descriptors it
// names (its sockets). The daemon closes Files after the dial.
type Handoff struct {
	State []byte
	Files []*os.File
}

// WithHandoff hands h to a DialFunc.
func WithHandoff(ctx context.Context, h Handoff) context.Context {
	return context.WithValue(ctx, handoffKey{}, h)
}

// HandoffFrom is the handoff WithHandoff attached; ok false without one.
func HandoffFrom(ctx context.Context) (h Handoff, ok bool) {
	h, ok = ctx.Value(handoffKey{}).(Handoff)
	return h, ok && len(h.State) > 0
}

type loggerKey struct{}

// WithLogger hands the daemon's logger to a DialFunc or GatewayFunc, which
// have no other way to receive it: under systemd it is the journal's
// handler at the configured level, and slog.Default would bypass both.
func WithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

// LoggerFrom is the logger WithLogger attached, slog.Default outside a
// daemon (tests calling DialTunnel directly).
func LoggerFrom(ctx context.Context) *slog.Logger {
	if log, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && log != nil {
		return log
	}
	return slog.Default()
}

// Kinds of undo state a client connection records in the state directory
// (internal/undo): the TUN device with its rules and routes, and the
// lockdown table. The process undoes them after a crash (daemon.UndoHandlers).
const (
	UndoTUN      = "tun"
	UndoLockdown = "lockdown"
)

// LockdownState is the lockdown record: the table is the one table inet
// roam, so the record only says that it was ours.
type LockdownState struct {
	Table string `json:"table"`
}
