package tun

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/roam-vpn/roam/internal/undo"
)

// dnsKind is the undo log's kind of DNS records, one per profile.
const dnsKind = "dns"

// DNSUndo is what it takes to undo one profile's DNS settings after the
// process that made them is gone. It is the data of an undo-log record
// (package undo), which also says whose the settings are: while that
// process lives, or in another network namespace (another resolv.conf
// under the same path), they are not ours to undo.
type DNSUndo struct {
	// Method: "file" (resolv.conf rewritten) or "resolvconf".
	Method string `json:"method"`
	// Path is the rewritten file; Original its contents before, Existed
	// whether it was there; Written what roam put there.
	Path     string `json:"path,omitempty"`
	Original string `json:"original,omitempty"`
	Existed  bool   `json:"existed,omitempty"`
	Written  string `json:"written,omitempty"`
	// Interface is the resolvconf record's name.
	Interface string `json:"interface,omitempty"`
}

// dnsStatePath is the undo record of one profile's DNS settings in dir.
func dnsStatePath(dir, name string) string {
	return filepath.Join(dir, dnsKind+"."+name+".json")
}

// recordDNS writes u to the undo log in dir before the change it undoes is
// made: it returns once the record is on disk.
func recordDNS(dir, name string, u DNSUndo) error {
	if err := undo.NewDir(dir).Record(dnsKind, name, u); err != nil {
		return fmt.Errorf("dns state: %w", err)
	}
	return nil
}

// forgetDNS removes the record once its change is undone.
func forgetDNS(dir, name string) error {
	return undo.NewDir(dir).Forget(dnsKind, name)
}

// Undo reverts the settings u describes. A resolv.conf that changed since
// roam wrote it belongs to someone else now and is left as it is.
func (u DNSUndo) Undo() error {
	switch u.Method {
	case "file":
		cur, err := os.ReadFile(u.Path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read %s: %w", u.Path, err)
		}
		if err != nil || string(cur) != u.Written {
			return nil
		}
		if !u.Existed {
			if err := os.Remove(u.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", u.Path, err)
			}
			return nil
		}
		return writeInPlace(u.Path, []byte(u.Original))
	case "resolvconf":
		out, err := exec.Command("resolvconf", "-d", u.Interface, "-f").CombinedOutput()
		if err != nil {
			return fmt.Errorf("resolvconf -d %s: %v: %s", u.Interface, err, bytes.TrimSpace(out))
		}
		return nil
	}
	return fmt.Errorf("dns state: unknown method %q", u.Method)
}

// undoDNS is the undo log's handler of DNS records.
func undoDNS(_ string, data json.RawMessage) error {
	var u DNSUndo
	if err := json.Unmarshal(data, &u); err != nil {
		return fmt.Errorf("dns state: %w", err)
	}
	return u.Undo()
}

// RestoreDNS undoes the DNS settings that a process which died without
// cleaning up left in the undo log in dir, and reports what it restored.
// A daemon calls it at start, before any tunnel of its own exists.
func RestoreDNS(dir string) ([]string, error) {
	left, err := undo.NewDir(dir).Recover(map[string]undo.Handler{dnsKind: undoDNS})
	var done []string
	for _, l := range left {
		done = append(done, l.String())
	}
	return done, err
}
