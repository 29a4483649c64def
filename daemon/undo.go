package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/roam-vpn/roam/internal/lockdown"
	"github.com/roam-vpn/roam/internal/undo"
	"github.com/roam-vpn/roam/tun"
)

// Kinds of undo state a client connection records (internal/undo): the
// TUN device with its rules and routes, and the lockdown table. Other
// parts add their own kinds to UndoHandlers.
const (
	undoTUN      = "tun"
	undoLockdown = "lockdown"
)

// StateDir is where the daemon listening on socket keeps what it takes to
// undo its changes to the machine after a crash: "state" beside the
// socket, /run/roam/state for the default socket.
func StateDir(socket string) undo.Dir {
	return undo.NewDir(filepath.Join(filepath.Dir(socket), "state"))
}

// lockdownState is the lockdown record: the table is the one table inet
// roam, so the record only says that it was ours.
type lockdownState struct {
	Table string `json:"table"`
}

// UndoHandlers undo each kind of state a killed client daemon may have
// left: policy rules, routes and TUN devices, and the lockdown table.
func UndoHandlers() map[string]undo.Handler {
	return map[string]undo.Handler{
		undoTUN: func(_ string, data json.RawMessage) error {
			var s tun.State
			if err := json.Unmarshal(data, &s); err != nil {
				return fmt.Errorf("tun state: %w", err)
			}
			return tun.Undo(s)
		},
		undoLockdown: func(string, json.RawMessage) error {
			_, err := lockdown.RemoveLeftovers()
			return err
		},
	}
}

// RecoverLeftovers undoes what killed daemons recorded in dir, then lifts
// a lockdown table left without a record (fail closed until then). Only a
// process that holds no connection in dir may call it. It returns what it
// undid, for the user; permission errors (not root: nothing of ours could
// be there) are no error.
func RecoverLeftovers(dir undo.Dir) ([]string, error) {
	var undone []string
	var errs []error
	left, err := dir.Recover(UndoHandlers())
	for _, l := range left {
		undone = append(undone, describeLeftover(l))
	}
	if err != nil && !errors.Is(err, os.ErrPermission) {
		errs = append(errs, err)
	}
	had, err := lockdown.RemoveLeftovers()
	if err != nil && !errors.Is(err, os.ErrPermission) {
		errs = append(errs, fmt.Errorf("removing leftover lockdown rules: %w", err))
	}
	if had && !slices.Contains(undone, lockdownWords) {
		undone = append(undone, lockdownWords)
	}
	return undone, errors.Join(errs...)
}

const lockdownWords = "lockdown rules"

// describeLeftover names what was undone for the user.
func describeLeftover(l undo.Leftover) string {
	switch l.Kind {
	case undoTUN:
		return "routes and policy rules of " + l.Name
	case undoLockdown:
		return lockdownWords
	}
	return l.String()
}

// recoverLeftovers is RecoverLeftovers for a daemon that goes on either
// way, with the outcome in its log.
func recoverLeftovers(dir undo.Dir, log *slog.Logger) {
	undone, err := RecoverLeftovers(dir)
	for _, u := range undone {
		log.Info("undid what an earlier daemon left", "what", u)
	}
	if err != nil {
		log.Warn("leftovers of an earlier daemon", "err", err)
	}
}

type stateDirKey struct{}

// withStateDir hands the manager's state directory to the DialFunc, which
// is called by the manager with no other way to receive it.
func withStateDir(ctx context.Context, dir undo.Dir) context.Context {
	return context.WithValue(ctx, stateDirKey{}, dir)
}

// stateDirFrom is the state directory DialTunnel records its changes in
// (the zero Dir, recording nothing, outside a daemon).
func stateDirFrom(ctx context.Context) undo.Dir {
	dir, _ := ctx.Value(stateDirKey{}).(undo.Dir)
	return dir
}

// WithStateDir makes the manager's connections record what it takes to undo
// their changes in dir (StateDir).
func WithStateDir(dir undo.Dir) ManagerOption { return func(m *Manager) { m.state = dir } }

type loggerKey struct{}

// withLogger hands the daemon's logger to a DialFunc or GatewayFunc, which
// have no other way to receive it: under systemd it is the journal's
// handler at the configured level, and slog.Default would bypass both.
func withLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

// loggerFrom is the logger withLogger attached, slog.Default outside a
// daemon (tests calling DialTunnel directly).
func loggerFrom(ctx context.Context) *slog.Logger {
	if log, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && log != nil {
		return log
	}
	return slog.Default()
}
