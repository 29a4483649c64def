package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Exit codes. They are part of the CLI contract (docs/cli.md, roam(8)):
// scripts tell a wrong command line from a refused login from a gateway
// that does not answer.
const (
	exitOK          = 0
	exitFailure     = 1 // anything not listed below; `roam check` found problems
	exitUsage       = 2 // the command line makes no sense
	exitConfig      = 3 // the profile or gateway file is missing or broken
	exitPermission  = 4 // not allowed: needs root, or the socket's group
	exitAuth        = 5 // the gateway refused our credentials, or we its
	exitNegotiation = 6 // no common proposal, traffic selectors or address
	exitUnreachable = 7 // the gateway did not answer or could not be resolved
)

// exitError carries the exit code for an error the user sees.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// usageError is a command line that makes no sense.
func usageError(c *cli.Context, format string, args ...any) error {
	if c.Command == nil || c.Command.Name == c.App.Name {
		return withCode(exitUsage, fmt.Errorf("%s (see roam --help)", fmt.Sprintf(format, args...)))
	}
	return withCode(exitUsage, fmt.Errorf("%s: %s (see %s --help)", c.Command.Name, fmt.Sprintf(format, args...), c.Command.HelpName))
}

// noArgs is action for a command that takes no arguments: any is a usage
// error.
func noArgs(action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() != 0 {
			return usageError(c, "takes no arguments")
		}
		return action(c)
	}
}

// sharedGroup names the group of path when that group has the access in
// mask.
func sharedGroup(path string, mask os.FileMode) (string, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Gid == 0 || fi.Mode().Perm()&mask != mask {
		return "", false
	}
	group := strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return group, true
}

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	// The daemon's refusal crosses the control socket as text.
	if errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "permission denied: only root may") {
		return exitPermission
	}
	// urfave reports a missing Required flag with this text and no type we
	// can match.
	if strings.HasPrefix(err.Error(), "Required flag") {
		return exitUsage
	}
	return exitFailure
}

// failureClasses are the prefixes the daemon gives a failed connection's
// one-line reason (tunnel.userError); the text crosses the control socket,
// so the class is read back from it.
var failureClasses = []struct {
	prefix string
	code   int
}{
	{"authentication failed", exitAuth},
	{"no proposal chosen", exitNegotiation},
	{"traffic selectors unacceptable", exitNegotiation},
	{"internal address failure", exitNegotiation},
	{"gateway unreachable", exitUnreachable},
	{"gateway not answering", exitUnreachable},
}

// connectFailure gives a failed connection its exit code.
func connectFailure(err error) error {
	msg := err.Error()
	for _, fc := range failureClasses {
		if strings.HasPrefix(msg, fc.prefix) {
			return withCode(fc.code, err)
		}
	}
	// tunnel.resolveGateway: `gateway "vpn.example.com": cannot resolve`.
	if strings.HasPrefix(msg, "gateway ") && strings.Contains(msg, ": cannot resolve") {
		return withCode(exitUnreachable, err)
	}
	return err
}

// socketDenied explains a control socket the user may not open: who may,
// and how to become one of them.
func socketDenied(socket string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	how := "run it with sudo"
	// A non-member cannot see into the socket's directory: the
	// directory's group is the socket's (daemon.ShareControl).
	if group, ok := sharedGroup(socket, 0o060); ok {
		how += fmt.Sprintf(", or join group %q, which may read status and events", group)
	} else if group, ok := sharedGroup(filepath.Dir(socket), 0o050); ok {
		how += fmt.Sprintf(", or join group %q, which may read status and events", group)
	} else {
		how += `, or set socket_group in the profile file to let a group read status and events`
	}
	return withCode(exitPermission, fmt.Errorf("permission denied on %s: %s", socket, how))
}
