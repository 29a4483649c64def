package interop

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roam-vpn/roam/scripts/lab"
)

// connectOnTerminal runs `roam connect PROFILE` with a pseudo-terminal as
// its controlling terminal, types password at the prompt and returns what
// the terminal showed.
func connectOnTerminal(t *testing.T, r *lab.Roam, profile, password string, timeout time.Duration) (string, error) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	defer m.Close()
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", r.Lab.NS(r.NS),
		r.Bin, "connect", "--socket", r.Socket, "--config", r.Config, profile)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	s.Close() // the child holds it now; its exit ends our reads with EIO
	var mu sync.Mutex
	var screen bytes.Buffer
	prompted := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		once := sync.Once{}
		for {
			k, err := m.Read(buf)
			mu.Lock()
			screen.Write(buf[:k])
			if strings.Contains(screen.String(), "Password for ") && strings.HasSuffix(strings.TrimRight(screen.String(), " "), "):") {
				once.Do(func() { close(prompted) })
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-prompted:
		m.WriteString(password + "\n")
	case <-readDone:
	case <-ctx.Done():
	}
	err = cmd.Wait()
	<-readDone
	mu.Lock()
	defer mu.Unlock()
	return screen.String(), err
}

// TestEAPPasswordPrompt: a profile without password_file makes `roam
// connect` ask on the terminal; the typed password reaches the daemon and
// logs in, and is neither echoed nor logged.
func TestEAPPasswordPrompt(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gw := startSwanEAPGateway(t, l, pki)
	r := roamClient(t, l, bin, eapProfile(pki, ""))
	out, err := connectOnTerminal(t, r, "corp", eapPassword, 30*time.Second)
	t.Logf("terminal:\n%s", out)
	if err != nil {
		t.Logf("strongSwan gateway log:\n%s", gw.Log())
		t.Fatalf("connect: %v", err)
	}
	if !strings.Contains(out, "Password for "+eapUser+" (profile corp):") || !strings.Contains(out, "corp: connected to") {
		t.Errorf("terminal shows no prompt or no connection")
	}
	noPassword(t, "the terminal", out)
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		t.Fatalf("ping through the tunnel: %v", err)
	}
	if _, err := r.Disconnect("corp"); err != nil {
		t.Errorf("disconnect: %v", err)
	}
	noPassword(t, "the daemon's log", daemonLog(t, r))

	// Without a terminal (a new session has none, even when the test runs
	// in one) the connect fails at once and says why.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", r.Lab.NS(r.NS),
		r.Bin, "connect", "--socket", r.Socket, "--config", r.Config, "corp")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "needs a terminal to ask for the password") {
		t.Errorf("connect without a terminal: %v\n%s", err, b)
	}
}
