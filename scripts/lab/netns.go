package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNS runs fn on an OS thread that has joined the network namespace of
// role, and waits for it. Sockets fn creates belong to that namespace for
// their whole life, so a benchmark can measure traffic inside the lab with
// its own clock and without helper processes. The thread is never handed
// back to the Go scheduler: it stays locked and exits with its goroutine,
// so no other goroutine ever runs in the lab's namespace by accident.
func (l *Lab) InNS(role string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", l.NS(role)))
		if err != nil {
			errc <- fmt.Errorf("lab: namespace %s: %w", role, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("lab: join namespace %s: %w", role, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
