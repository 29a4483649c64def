// Package nstest runs root-only tests inside throwaway network namespaces so
// they can add devices, addresses, routes and rules without touching the
// machine's own network.
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const childEnv = "ROAM_NSTEST_CHILD"

var seq atomic.Uint64

// RequireRoot skips the test, with the reason, unless it runs as root on a
// machine with iproute2.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces); run the tests as root to include it")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip command")
	}
}

// InNamespace reports whether the caller is the copy of the test that runs
// inside the namespace. In the parent process it creates a namespace, runs
// the same top-level test again inside it, fails t if that run fails, deletes
// the namespace and returns false; the caller then returns at once:
//
//	if !nstest.InNamespace(t) { return }
func InNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	RequireRoot(t)
	name := fmt.Sprintf("rmt%d-%d", os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		// The child may still be tearing down; a busy namespace needs a retry.
		for i := 0; i < 20; i++ {
			if exec.Command("ip", "netns", "del", name).Run() == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("could not delete namespace %s", name)
	})
	args := []string{"netns", "exec", name, os.Args[0], "-test.run", "^" + t.Name() + "$", "-test.count=1", "-test.v"}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("test inside namespace %s failed: %v\n%s", name, err, out)
	}
	t.Logf("ran inside namespace %s", name)
	return false
}

// Exec runs a command (in the current namespace) and fails the test with its
// output when it fails.
func Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NeedResolved returns the path of systemd-resolved, installed or unpacked
// from its Debian package by scripts/install-deps.sh (installing the
// package would take over the machine's resolv.conf), and checks that
// dbus-daemon, which it talks over, is there; it skips the test, saying
// why, when either is missing. ROAM_RESOLVED names another binary.
func NeedResolved(t testing.TB) string {
	t.Helper()
	bin := ""
	for _, p := range []string{
		os.Getenv("ROAM_RESOLVED"),
		"/lib/systemd/systemd-resolved",
		"/usr/lib/systemd/systemd-resolved",
		"/var/cache/roam-lab/systemd-resolved/lib/systemd/systemd-resolved",
	} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("systemd-resolved not found; scripts/install-deps.sh unpacks it")
	}
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon not found; scripts/install-deps.sh installs it")
	}
	return bin
}

// ResolvedFiles writes into dir what a private systemd-resolved needs
// beside its binary, and returns their paths: conf, the config of a D-Bus
// system bus that listens on busAddr and lets everyone in, and passwd and
// group, the machine's with the systemd-resolve user added, for the test
// to bind-mount over /etc's inside a mount namespace of its own (resolved
// drops root to that user).
func ResolvedFiles(t testing.TB, dir, busAddr string) (conf, passwd, group string) {
	t.Helper()
	conf = filepath.Join(dir, "bus.conf")
	busConf := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>` + busAddr + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
`
	if err := os.WriteFile(conf, []byte(busConf), 0o644); err != nil {
		t.Fatal(err)
	}
	passwd, group = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	for _, f := range []struct{ from, to, line string }{
		{"/etc/passwd", passwd, "systemd-resolve:x:64990:64990::/:/usr/sbin/nologin\n"},
		{"/etc/group", group, "systemd-resolve:x:64990:\n"},
	} {
		b, err := os.ReadFile(f.from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.to, append(b, f.line...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return conf, passwd, group
}
