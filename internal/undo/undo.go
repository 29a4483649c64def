// Package undo keeps, in files under the daemon's run directory
// (/run/roam/state), what it takes to undo each change the daemon makes to
// the machine: policy rules, routes, the TUN device, the lockdown table,
// DNS. A file is written (and, for changes that outlive the kernel, synced)
// before its change is made and removed once the change is undone, so whatever a daemon killed by SIGKILL or the
// OOM killer left behind is described on disk, and the next daemon, or
// `roam disconnect --all`, undoes it with Recover.
//
// Each kind of change has its own file per owner, named KIND.NAME.json:
// the tun package's state is kind "tun", the kill switch's "lockdown"; other
// parts (DNS) add their kinds with a Handler of their own.
package undo

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// version is the format of the state files; Recover leaves files of
// another version alone.
const version = 1

// Dir is a directory of state files. The zero Dir records nothing, for
// callers (tests, in-process tools) that undo their own changes.
type Dir struct {
	path string
	// volatile: the records describe kernel state only (see
	// NewVolatileDir), so they are not synced.
	volatile bool
}

// NewDir returns the state directory at path; it is created, mode 0700, on
// the first Record. Each record is synced to disk before Record returns:
// for changes that survive a reboot (a rewritten resolv.conf).
func NewDir(path string) Dir { return Dir{path: path} }

// NewVolatileDir is NewDir for records of kernel state only (TUN devices,
// routes, policy rules, nftables): a power loss or kernel crash takes that
// state away with any record of it, and after a process crash the record
// is in the page cache for the next daemon, so syncing would buy nothing.
// It cost about 0.5 ms per record on a disk, on the connect's path.
func NewVolatileDir(path string) Dir { return Dir{path: path, volatile: true} }

// Path is the directory's path ("" for the zero Dir).
func (d Dir) Path() string { return d.path }

// Owner identifies the process that made a change, and where.
type Owner struct {
	PID int `json:"pid"`
	// Start is the process's start time in clock ticks since boot
	// (/proc/PID/stat field 22): a PID reused since is another process.
	Start uint64 `json:"start"`
	// NetNS is the inode of the process's network namespace: rules and
	// routes of another namespace cannot be undone from this one.
	NetNS uint64 `json:"netns"`
}

// file is the content of one state file.
type file struct {
	Version int             `json:"version"`
	Kind    string          `json:"kind"`
	Name    string          `json:"name"`
	Owner   Owner           `json:"owner"`
	Data    json.RawMessage `json:"data"`
}

// Record writes what it takes to undo one change, replacing the previous
// record of the same kind and name. It returns once the file is in place
// (and on disk, unless the Dir is volatile): the caller makes the change
// only after that.
func (d Dir) Record(kind, name string, data any) error {
	if d.path == "" {
		return nil
	}
	if err := checkParts(kind, name); err != nil {
		return err
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("undo state %s %s: %w", kind, name, err)
	}
	me, err := self()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(file{Version: version, Kind: kind, Name: name, Owner: me, Data: raw}, "", "  ")
	if err != nil {
		return fmt.Errorf("undo state %s %s: %w", kind, name, err)
	}
	if err := os.MkdirAll(d.path, 0o700); err != nil {
		return fmt.Errorf("undo state directory: %w", err)
	}
	final := d.fileName(kind, name)
	tmp, err := os.CreateTemp(d.path, ".tmp-*")
	if err != nil {
		return fmt.Errorf("undo state %s: %w", final, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	_, err = tmp.Write(append(b, '\n'))
	if err == nil && !d.volatile {
		// Synced before the rename: after a power loss the file holds
		// either the old record or the new one, never a torn one. (A
		// volatile Dir's records go with the power, as their state does.)
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), final)
	}
	if err == nil && !d.volatile {
		err = syncDir(d.path)
	}
	if err != nil {
		return fmt.Errorf("undo state %s: %w", final, err)
	}
	return nil
}

// Forget removes the record of a change that has been undone.
func (d Dir) Forget(kind, name string) error {
	if d.path == "" {
		return nil
	}
	if err := os.Remove(d.fileName(kind, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("undo state: %w", err)
	}
	return nil
}

// Handler undoes the change one state file records. It must succeed when
// the change is already gone (the kernel removes a dead process's TUN
// device and its routes by itself).
type Handler func(name string, data json.RawMessage) error

// Leftover is a state file Recover found.
type Leftover struct {
	Kind, Name string
	Owner      Owner
}

func (l Leftover) String() string { return l.Kind + " " + l.Name }

// Recover undoes the changes of every owner that is gone: a process no
// longer running, or the caller itself, which must call Recover only when
// it holds none of the changes (a daemon with no connection). Files of
// another network namespace, of a kind without a handler, or of another
// format version are left for whoever can undo them. A file whose handler
// fails stays, so the next Recover tries again; one that is not JSON is
// reported and removed. It returns what it undid.
func (d Dir) Recover(handlers map[string]Handler) ([]Leftover, error) {
	if d.path == "" {
		return nil, nil
	}
	names, err := filepath.Glob(filepath.Join(d.path, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("undo state: %w", err)
	}
	sort.Strings(names)
	me, err := self()
	if err != nil {
		return nil, err
	}
	var undone []Leftover
	var errs []error
	for _, path := range names {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // undone by someone else meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("undo state: %w", err))
			continue
		}
		var f file
		if err := json.Unmarshal(b, &f); err != nil {
			// Not JSON: no version of roam can act on it, and keeping it
			// would only repeat this error at every start.
			errs = append(errs, fmt.Errorf("undo state %s: %w", path, err))
			os.Remove(path)
			continue
		}
		if f.Version != version || f.Owner.NetNS != me.NetNS || path != d.fileName(f.Kind, f.Name) {
			continue
		}
		if f.Owner.PID != me.PID && running(f.Owner) {
			continue
		}
		h := handlers[f.Kind]
		if h == nil {
			continue
		}
		if err := h(f.Name, f.Data); err != nil {
			errs = append(errs, fmt.Errorf("undoing %s %s of process %d: %w", f.Kind, f.Name, f.Owner.PID, err))
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("undo state: %w", err))
		}
		undone = append(undone, Leftover{Kind: f.Kind, Name: f.Name, Owner: f.Owner})
	}
	return undone, errors.Join(errs...)
}

func (d Dir) fileName(kind, name string) string {
	return filepath.Join(d.path, kind+"."+name+".json")
}

// checkParts keeps the file name KIND.NAME.json to one path element whose
// kind ends at the first dot; names may have dots (interface names do).
func checkParts(kind, name string) error {
	if kind == "" || strings.ContainsAny(kind, "./\x00") {
		return fmt.Errorf("undo state: bad kind %q", kind)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("undo state: bad name %q", name)
	}
	return nil
}

func self() (Owner, error) {
	pid := os.Getpid()
	start, err := startTime(pid)
	if err != nil {
		return Owner{}, err
	}
	ns, err := netNS("/proc/self/ns/net")
	if err != nil {
		return Owner{}, err
	}
	return Owner{PID: pid, Start: start, NetNS: ns}, nil
}

// running reports whether the owner's process still runs: its PID exists,
// started when the owner did, and is not a zombie (a killed daemon whose
// parent has not reaped it yet holds nothing).
func running(o Owner) bool {
	start, state, err := procStat(o.PID)
	return err == nil && start == o.Start && state != "Z" && state != "X"
}

func startTime(pid int) (uint64, error) {
	start, _, err := procStat(pid)
	return start, err
}

// procStat reads the state (field 3) and the start time (field 22) of
// /proc/PID/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted after its closing parenthesis.
func procStat(pid int) (start uint64, state string, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", fmt.Errorf("process %d: %w", pid, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, "", fmt.Errorf("process %d: malformed stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, "", fmt.Errorf("process %d: malformed stat", pid)
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("process %d: start time: %w", pid, err)
	}
	return v, fields[0], nil
}

func netNS(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("network namespace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("network namespace: no inode")
	}
	return st.Ino, nil
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
