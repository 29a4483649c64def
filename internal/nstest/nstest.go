// Package nstest runs root-only tests inside throwaway network namespaces so
// they can add devices, addresses, routes and rules without touching the
// machine's own network.
package nstest

import (
	"fmt"
	"os"
	"os/exec"
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
