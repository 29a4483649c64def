package tun

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

var testServer = []netip.Addr{netip.MustParseAddr("10.99.0.53")}

func TestResolvConfSaveRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	orig := "nameserver 192.0.2.53\nsearch example.net\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		full       bool
		wantLines  []string
		wantAbsent []string
	}{
		{"full tunnel", true, []string{"nameserver 10.99.0.53", "search corp.example"}, []string{"192.0.2.53"}},
		{"split tunnel", false, []string{"nameserver 10.99.0.53", "nameserver 192.0.2.53"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			st, err := setResolvConfFile(DNSOptions{Servers: testServer, Domains: []string{"corp.example"}, FullTunnel: tt.full, ResolvConf: path, StateDir: state, Name: "corp"})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			for _, l := range tt.wantLines {
				if !strings.Contains(string(got), l) {
					t.Errorf("resolv.conf lacks %q:\n%s", l, got)
				}
			}
			for _, l := range tt.wantAbsent {
				if strings.Contains(string(got), l) {
					t.Errorf("resolv.conf still has %q:\n%s", l, got)
				}
			}
			if _, err := os.Stat(dnsStatePath(state, "corp")); err != nil {
				t.Errorf("original not saved on disk: %v", err)
			}
			if err := st.restore(); err != nil {
				t.Fatal(err)
			}
			back, _ := os.ReadFile(path)
			if string(back) != orig {
				t.Errorf("restored %q, want %q", back, orig)
			}
			if _, err := os.Stat(dnsStatePath(state, "corp")); !os.IsNotExist(err) {
				t.Errorf("undo state left after restore: %v", err)
			}
		})
	}
	missing := filepath.Join(dir, "absent.conf")
	st, err := setResolvConfFile(DNSOptions{Servers: testServer, FullTunnel: true, ResolvConf: missing, StateDir: t.TempDir(), Name: "corp"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.restore(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("file that did not exist before is left behind: %v", err)
	}
}

// TestRestoreDNSAfterCrash leaves the undo state as a killed process
// would (applied, never restored) and checks what the next start does.
func TestRestoreDNSAfterCrash(t *testing.T) {
	orig := "nameserver 192.0.2.53\n"
	tests := []struct {
		name     string
		meddle   string // what another program writes after roam; "" none
		want     string
		restored int
	}{
		{"restored", "", orig, 1},
		{"changed by someone else since", "nameserver 203.0.113.1\n", "nameserver 203.0.113.1\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "run")
			path := filepath.Join(dir, "resolv.conf")
			os.WriteFile(path, []byte(orig), 0o644)
			if _, err := setResolvConfFile(DNSOptions{Servers: testServer, FullTunnel: true, ResolvConf: path, StateDir: state, Name: "corp"}); err != nil {
				t.Fatal(err)
			}
			if tt.meddle != "" {
				os.WriteFile(path, []byte(tt.meddle), 0o644)
			}
			done, err := RestoreDNS(state)
			if err != nil {
				t.Fatal(err)
			}
			if len(done) != tt.restored {
				t.Errorf("restored %v", done)
			}
			if b, _ := os.ReadFile(path); string(b) != tt.want {
				t.Errorf("resolv.conf %q, want %q", b, tt.want)
			}
			if again, err := RestoreDNS(state); err != nil || len(again) != 0 {
				t.Errorf("second restore: %v %v", again, err)
			}
		})
	}
}

func TestRestoreDNSBadState(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dnsStatePath(dir, "corp"), []byte("{not json"), 0o600)
	if _, err := RestoreDNS(dir); err == nil {
		t.Error("unreadable state not reported")
	}
	if _, err := os.Stat(dnsStatePath(dir, "corp")); !os.IsNotExist(err) {
		t.Error("unreadable state kept")
	}
}

func TestResolvConfSymlinkLeftAlone(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "stub-resolv.conf")
	os.WriteFile(target, []byte("nameserver 127.0.0.53\n"), 0o644)
	link := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_, err := setResolvConfFile(DNSOptions{Servers: testServer, ResolvConf: link, StateDir: dir, Name: "corp"})
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("err %v, want a refusal naming the symlink", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "nameserver 127.0.0.53\n" {
		t.Errorf("managed file changed: %q", b)
	}
}

func TestResolvedLinkConfig(t *testing.T) {
	tests := []struct {
		name    string
		o       DNSOptions
		route   bool
		domains []resolvedDomain
		servers []resolvedAddr
	}{
		{"split", DNSOptions{Servers: []netip.Addr{netip.MustParseAddr("10.99.0.53"), netip.MustParseAddr("fd00::53")}, Domains: []string{"corp.example"}},
			false, []resolvedDomain{{"corp.example", true}},
			[]resolvedAddr{{2, []byte{10, 99, 0, 53}}, {10, netip.MustParseAddr("fd00::53").AsSlice()}}},
		{"full", DNSOptions{Servers: testServer, Domains: []string{"corp.example"}, FullTunnel: true},
			true, []resolvedDomain{{"corp.example", true}, {".", true}},
			[]resolvedAddr{{2, []byte{10, 99, 0, 53}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route, domains, servers := resolvedLinkConfig(tt.o)
			if route != tt.route || !reflect.DeepEqual(domains, tt.domains) || !reflect.DeepEqual(servers, tt.servers) {
				t.Errorf("got %v %v %v", route, domains, servers)
			}
		})
	}
}

// writeDNSRecord writes an undo-log record of settings made by another
// process, as package undo lays it out, so the restore sees an owner that
// is not this test.
func writeDNSRecord(t *testing.T, dir string, u DNSUndo, pid int, start, netns uint64) {
	t.Helper()
	data, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := json.Marshal(map[string]any{"version": 1, "kind": dnsKind, "name": "corp",
		"owner": map[string]any{"pid": pid, "start": start, "netns": netns}, "data": json.RawMessage(data)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dnsStatePath(dir, "corp"), rec, 0o600); err != nil {
		t.Fatal(err)
	}
}

// procStart is field 22 of /proc/PID/stat, the process's start time.
func procStart(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skipf("no process %d: %v", pid, err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func selfNetNS(t *testing.T) uint64 {
	t.Helper()
	fi, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestRestoreDNSOwners: undo state of a process that still runs (here PID
// 1) is that process's own, and state a dead daemon left in another
// network namespace names a resolv.conf this process does not see (ip
// netns exec bind-mounts its own): both are neither acted on nor removed.
// A dead owner's in this namespace is restored and its record removed.
func TestRestoreDNSOwners(t *testing.T) {
	for _, tc := range []struct {
		name        string
		pid         int
		live        bool // the owner record carries the live PID's start time
		otherNS     bool
		wantRestore bool
	}{
		{name: "dead owner", pid: 1<<22 + 1, wantRestore: true}, // above pid_max's ceiling: no such process
		{name: "live owner", pid: 1, live: true},
		{name: "other namespace", pid: 1<<22 + 1, otherNS: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "resolv.conf")
			if err := os.WriteFile(path, []byte("nameserver 10.99.0.53\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var start uint64
			if tc.live {
				start = procStart(t, tc.pid)
			}
			netns := selfNetNS(t)
			if tc.otherNS {
				netns++
			}
			u := DNSUndo{Method: "file", Path: path, Original: "nameserver 192.0.2.53\n", Existed: true, Written: "nameserver 10.99.0.53\n"}
			writeDNSRecord(t, dir, u, tc.pid, start, netns)
			done, err := RestoreDNS(dir)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			_, statErr := os.Stat(dnsStatePath(dir, "corp"))
			if tc.wantRestore {
				if len(done) != 1 || string(b) != "nameserver 192.0.2.53\n" || statErr == nil {
					t.Errorf("restored %v, file %q, state kept %v; want restored and state removed", done, b, statErr == nil)
				}
				return
			}
			if len(done) != 0 || string(b) != "nameserver 10.99.0.53\n" || statErr != nil {
				t.Errorf("restored %v, file %q, state err %v; want untouched", done, b, statErr)
			}
		})
	}
}

func TestResolvconfRecord(t *testing.T) {
	servers := []netip.Addr{netip.MustParseAddr("10.99.0.53"), netip.MustParseAddr("fd00::53")}
	tests := []struct {
		name       string
		openresolv bool
		o          DNSOptions
		args       []string
		input      string
	}{
		{"debian split", false, DNSOptions{Servers: servers, Domains: []string{"corp.example", "lab.example"}},
			[]string{"-a", "vpn.roam-corp"}, "nameserver 10.99.0.53\nnameserver fd00::53\nsearch corp.example lab.example\n"},
		{"debian full", false, DNSOptions{Servers: servers[:1], FullTunnel: true},
			[]string{"-a", "vpn.roam-corp"}, "nameserver 10.99.0.53\n"},
		// No -m: a metric would sort the record after the uplink's.
		{"openresolv split", true, DNSOptions{Servers: servers[:1], Domains: []string{"corp.example"}},
			[]string{"-a", "vpn.roam-corp"}, "nameserver 10.99.0.53\nsearch corp.example\n"},
		{"openresolv full", true, DNSOptions{Servers: servers[:1], FullTunnel: true},
			[]string{"-a", "vpn.roam-corp", "-x"}, "nameserver 10.99.0.53\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			record, args, input := resolvconfRecord("roam-corp", tt.openresolv, tt.o)
			if record != "vpn.roam-corp" || !slices.Equal(args, tt.args) || input != tt.input {
				t.Errorf("got %q %q %q, want vpn.roam-corp %q %q", record, args, input, tt.args, tt.input)
			}
		})
	}
}
