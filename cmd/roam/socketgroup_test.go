package main

import (
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// With socket_group, a member of the group reads status through the
// daemon's socket but may not disconnect; a non-member is told which group
// to join. The other users are real: the test binary runs as nobody.
func TestSocketGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	group, err := user.LookupGroupId(nobody.Gid)
	if err != nil {
		t.Skipf("no group %s: %v", nobody.Gid, err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)

	t.Setenv(fakeDaemonEnv, "1")
	cfg, socket := setup(t)
	body := "socket_group = " + strconv.Quote(group.Name) + "\n\n" + readFile(cfg)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if r := roam(ctx, "connect", "corp", "--socket", socket, "--config", cfg); r.code != 0 {
		t.Fatalf("connect: %+v", r)
	}
	defer func() {
		roam(ctx, "disconnect", "--all", "--socket", socket)
		waitGone(t, socket)
	}()
	for path, mode := range map[string]os.FileMode{socket: 0o660, filepath.Dir(socket): 0o750} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode || fi.Sys().(*syscall.Stat_t).Gid != uint32(gid) {
			t.Errorf("%s: mode %04o gid %d, want %04o gid %d", path, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, mode, gid)
		}
	}
	// The socket's directory sits in the test's private ones.
	for _, d := range []string{filepath.Dir(filepath.Dir(socket)), filepath.Dir(filepath.Dir(filepath.Dir(socket)))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := copyExecutable(t)

	as := func(g int, args ...string) result {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), fakeDaemonEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(g), Groups: []uint32{}}}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{code, out.String(), errb.String()}
	}
	if r := as(gid, "status", "--socket", socket, "--json"); r.code != 0 || !strings.Contains(r.stdout, `"name": "corp"`) {
		t.Errorf("status as a group member: %+v", r)
	}
	if r := as(gid, "disconnect", "corp", "--socket", socket); r.code != exitPermission || !strings.Contains(r.stderr, "permission denied: only root may disconnect") {
		t.Errorf("disconnect as a group member: %+v", r)
	}
	want := "permission denied on " + socket + `: run it with sudo, or join group "` + group.Name + `"`
	if r := as(gid+1000, "status", "--socket", socket); r.code != exitPermission || !strings.Contains(r.stderr, want) {
		t.Errorf("status as a non-member: %+v, want %q", r, want)
	}
	if r := roam(ctx, "status", "corp", "--socket", socket); r.code != 0 {
		t.Errorf("corp is gone after the refused disconnect: %+v", r)
	}
}

// copyExecutable copies the test binary where any user may run it.
func copyExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(dir, "roam")
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
