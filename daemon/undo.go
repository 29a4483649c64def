package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/roam-vpn/roam/internal/lockdown"
	"github.com/roam-vpn/roam/internal/undo"
	"github.com/roam-vpn/roam/report"
	"github.com/roam-vpn/roam/tun"
)

// StateDir is where the daemon listening on socket keeps what it takes to
// undo its changes to the machine after a crash: "state" beside the
// socket, /run/roam/state for the default socket. It holds kernel state
// only (DNS keeps its records elsewhere), so its records are not synced.
func StateDir(socket string) undo.Dir {
	return undo.NewVolatileDir(filepath.Join(filepath.Dir(socket), "state"))
}

// UndoHandlers undo each kind of state a killed client daemon may have
// left: policy rules, routes and TUN devices, and the lockdown table.
func UndoHandlers() map[string]undo.Handler {
	return map[string]undo.Handler{
		report.UndoTUN: func(_ string, data json.RawMessage) error {
			var s tun.State
			if err := json.Unmarshal(data, &s); err != nil {
				return fmt.Errorf("tun state: %w", err)
			}
			return tun.Undo(s)
		},
		report.UndoLockdown: func(string, json.RawMessage) error {
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
	case report.UndoTUN:
		return "routes and policy rules of " + l.Name
	case report.UndoLockdown:
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

// WithStateDir makes the manager's connections record what it takes to undo
// their changes in dir (StateDir).
func WithStateDir(dir undo.Dir) ManagerOption { return func(m *Manager) { m.state = dir } }
