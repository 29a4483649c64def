package tunnel

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/roam-vpn/roam/internal/memtun"
)

// TestLateDevice: a read started before the device exists gets the first
// packet once it is bound; after a failed creation reads and writes fail
// instead of blocking, so the dataplane's TUN loop ends.
func TestLateDevice(t *testing.T) {
	tests := []struct {
		name    string
		bound   bool
		wantErr error
		wantN   int
	}{
		{"bound later", true, nil, 1},
		{"creation failed", false, os.ErrClosed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLateDevice()
			type result struct {
				n    int
				size int
				err  error
			}
			done := make(chan result, 1)
			go func() {
				bufs, sizes := [][]byte{make([]byte, 64)}, []int{0}
				n, err := l.Read(bufs, sizes, 0)
				done <- result{n, sizes[0], err}
			}()
			select {
			case r := <-done:
				t.Fatalf("read returned %+v before the device existed", r)
			default:
			}
			if tt.bound {
				dev := memtun.New(memtun.Config{BatchSize: 4})
				defer dev.Close()
				if err := dev.Inject(context.Background(), []byte{0x45, 1, 2}); err != nil {
					t.Fatal(err)
				}
				l.bind(dev)
				if got := l.BatchSize(); got != 4 {
					t.Errorf("BatchSize %d, want the device's 4", got)
				}
			} else {
				l.bind(nil)
				if _, err := l.Write([][]byte{{0x45}}, 0); !errors.Is(err, os.ErrClosed) {
					t.Errorf("write after failed creation: %v, want %v", err, os.ErrClosed)
				}
			}
			r := <-done
			if !errors.Is(r.err, tt.wantErr) || r.n != tt.wantN {
				t.Fatalf("read n=%d err=%v, want n=%d err=%v", r.n, r.err, tt.wantN, tt.wantErr)
			}
			if tt.bound && r.size != 3 {
				t.Errorf("read %d bytes, want 3", r.size)
			}
		})
	}
}

// TestLateTUN: the device is made once, by whichever of start and wait
// comes first; a teardown before any start never makes it (and runs the
// abandon step), one after a start waits for the device to be closed.
func TestLateTUN(t *testing.T) {
	tests := []struct {
		name          string
		steps         string // s: start, w: wait, a: abandon
		wantCreated   int
		wantAbandoned int
		wantErr       error
	}{
		{"start then wait", "sw", 1, 0, nil},
		{"wait alone starts it", "w", 1, 0, nil},
		{"started twice", "ssw", 1, 0, nil},
		{"abandoned before a start", "asw", 0, 1, errTUNNotCreated},
		{"abandoned after a start", "sa", 1, 0, nil},
		{"abandoned after the wait", "wa", 1, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var created, abandoned int
			lt := newLateTUN(func() error { created++; return nil })
			var err error
			for _, s := range tt.steps {
				switch s {
				case 's':
					lt.start()
				case 'w':
					err = lt.wait()
				case 'a':
					lt.abandon(func() { abandoned++ })
				}
			}
			lt.abandon(func() { abandoned++ }) // the teardown, at the latest
			if created != tt.wantCreated || abandoned != tt.wantAbandoned {
				t.Errorf("created %d, abandoned %d; want %d, %d", created, abandoned, tt.wantCreated, tt.wantAbandoned)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("wait: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestLateTUNFailed: a failed creation is the connect's reason once it is
// over, and not before.
func TestLateTUNFailed(t *testing.T) {
	boom := errors.New("no /dev/net/tun")
	release := make(chan struct{})
	lt := newLateTUN(func() error { <-release; return boom })
	lt.start()
	if err := lt.failed(); err != nil {
		t.Fatalf("failed() during creation: %v, want nil", err)
	}
	close(release)
	if err := lt.wait(); !errors.Is(err, boom) {
		t.Fatalf("wait: %v, want %v", err, boom)
	}
	if err := lt.failed(); !errors.Is(err, boom) {
		t.Fatalf("failed() after creation: %v, want %v", err, boom)
	}
	var none *lateTUN
	if none.failed() != nil || none.wait() != nil {
		t.Fatal("a nil lateTUN (device given from the start) must have nothing to wait for")
	}
}
