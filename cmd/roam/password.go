package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/roam-vpn/roam/config"
)

// ttyPath is the controlling terminal the EAP password is read from, so
// that it works with stdin redirected, as ssh and sudo do.
const ttyPath = "/dev/tty"

// askPassword asks for the profile's EAP password on the terminal at tty,
// with echo off. It fails without a terminal rather than reading a
// password from a pipe or file.
func askPassword(tty string, p *config.Profile) ([]byte, error) {
	f, err := os.OpenFile(tty, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("auth = %q without password_file needs a terminal to ask for the password (%v)", p.Auth, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("auth = %q without password_file needs a terminal to ask for the password: %s is not one", p.Auth, tty)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("turning off echo on %s: %w", tty, err)
	}
	restore := func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
	defer restore()
	// Ctrl-C at the prompt must not leave the terminal without echo.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case sig := <-sigs:
			restore()
			fmt.Fprintln(f)
			signal.Stop(sigs)
			if s, ok := sig.(syscall.Signal); ok {
				os.Exit(128 + int(s))
			}
			os.Exit(1)
		case <-stop:
		}
	}()
	fmt.Fprintf(f, "Password for %s (profile %s): ", p.EAPIdentity, p.Name)
	line, err := bufio.NewReaderSize(f, 1024).ReadSlice('\n')
	if err != nil {
		return nil, errors.New("no password entered")
	}
	pw := make([]byte, len(line))
	copy(pw, line)
	clear(line)
	pw = trimNewline(pw)
	if err := config.CheckPassword(pw); err != nil {
		return nil, err
	}
	return pw, nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
