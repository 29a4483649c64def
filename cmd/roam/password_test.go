package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/roam-vpn/roam/config"
)

// openPTY returns a pseudo-terminal's master and the path of its slave.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

func TestAskPasswordNoEcho(t *testing.T) {
	m, slave := openPTY(t)
	p := &config.Profile{Name: "corp", Auth: config.AuthEAPMSCHAPv2, EAPIdentity: "alice"}
	type result struct {
		pw  []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		pw, err := askPassword(slave, p)
		done <- result{pw, err}
	}()
	// Type only once the prompt is out, as a user would: echo is off by then.
	r := bufio.NewReader(m)
	var out strings.Builder
	for !strings.HasSuffix(out.String(), "): ") {
		b, err := r.ReadByte()
		if err != nil {
			t.Fatalf("reading the prompt: %v", err)
		}
		out.WriteByte(b)
	}
	if _, err := m.WriteString("pä ss s3cret \n"); err != nil {
		t.Fatal(err)
	}
	res := <-done
	pw, err := res.pw, res.err
	if err != nil {
		t.Fatal(err)
	}
	if string(pw) != "pä ss s3cret " {
		t.Fatalf("password %q", pw)
	}
	// Echo is back on afterwards, and nothing but the prompt and a
	// newline reached the screen: mark the end of the output and read up
	// to it.
	s, err := os.OpenFile(slave, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&unix.ECHO == 0 {
		t.Error("echo left off")
	}
	s.WriteString("END-OF-TEST\n")
	for !strings.Contains(out.String(), "END-OF-TEST") {
		line, err := r.ReadString('\n')
		out.WriteString(line)
		if err != nil {
			t.Fatalf("reading the terminal: %v (so far %q)", err, out.String())
		}
	}
	screen := out.String()
	if !strings.Contains(screen, "Password for alice (profile corp): ") {
		t.Errorf("no prompt in %q", screen)
	}
	if strings.Contains(screen, "s3cret") {
		t.Errorf("password echoed: %q", screen)
	}
}

func TestAskPasswordNeedsTerminal(t *testing.T) {
	p := &config.Profile{Name: "corp", Auth: config.AuthEAPMSCHAPv2, EAPIdentity: "alice"}
	f, err := os.CreateTemp(t.TempDir(), "notatty")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("s3cret\n")
	f.Close()
	for _, path := range []string{f.Name(), "/nonexistent/tty"} {
		_, err := askPassword(path, p)
		if err == nil || !strings.Contains(err.Error(), "needs a terminal") {
			t.Errorf("%s: err %v", path, err)
		}
	}
}

func TestAskPasswordEmpty(t *testing.T) {
	m, slave := openPTY(t)
	p := &config.Profile{Name: "corp", Auth: config.AuthEAPMSCHAPv2, EAPIdentity: "alice"}
	done := make(chan error, 1)
	go func() { _, err := askPassword(slave, p); done <- err }()
	r := bufio.NewReader(m)
	if _, err := r.ReadString(':'); err != nil {
		t.Fatal(err)
	}
	m.WriteString("\n")
	if err := <-done; err == nil || !strings.Contains(err.Error(), "empty password") {
		t.Fatalf("err %v", err)
	}
}
