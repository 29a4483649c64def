package tun

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// DNSUndo is what it takes to undo one profile's DNS settings after the
// process that made them is gone. It is kept as JSON in its own file so
// that crash-undo state of other kinds can sit beside it.
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
	// PID is the process that made the settings: while it lives they are
	// its own to undo (another daemon, e.g. in another network namespace).
	PID int `json:"pid"`
	// NetNS is the inode of the maker's network namespace. A daemon in
	// another one (a lab, a container) sees another resolv.conf under the
	// same path (ip netns exec bind-mounts /etc/netns/NAME/resolv.conf),
	// so the state is not its to act on or remove.
	NetNS uint64 `json:"netns,omitempty"`
}

// currentNetNS is the inode of this process's network namespace, 0 when
// it cannot be read.
func currentNetNS() uint64 {
	fi, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// SaveDNSUndo writes u to path atomically (write, sync, rename), so a crash
// leaves either the old file or the new one.
func SaveDNSUndo(path string, u DNSUndo) error {
	if u.PID == 0 {
		u.PID = os.Getpid()
	}
	if u.NetNS == 0 {
		u.NetNS = currentNetNS()
	}
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("dns state: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("dns state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("dns state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("dns state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dns state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("dns state: %w", err)
	}
	return nil
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
			return removeState(u.Path)
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

// RestoreDNS undoes the DNS settings that a process which died without
// cleaning up left in dir (every *.dns.json), and reports what it restored.
// A daemon calls it at start, before any tunnel of its own exists.
func RestoreDNS(dir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.dns.json"))
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var u DNSUndo
		if err := json.Unmarshal(b, &u); err != nil {
			// Unreadable state cannot be acted on; keeping it would only
			// repeat this error at every start.
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			os.Remove(p)
			continue
		}
		if u.PID != os.Getpid() && processAlive(u.PID) {
			continue
		}
		if u.NetNS != 0 && u.NetNS != currentNetNS() {
			continue
		}
		if err := u.Undo(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		if err := removeState(p); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, p)
	}
	return done, errors.Join(errs...)
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A killed daemon whose parent does not reap it lingers as a zombie,
	// which holds nothing any more.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}
