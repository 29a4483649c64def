package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/report"
)

// fakeTunnel stands in for conn: it is established from the start and ends
// on Close or when the test kills it.
type fakeTunnel struct {
	*ending
	name   string
	mu     sync.Mutex
	closes int
}

func newFakeTunnel(name string) *fakeTunnel {
	return &fakeTunnel{ending: newEnding(), name: name}
}

// ending is what the fakes share to end: a done channel closed once, and
// the error they ended with.
type ending struct {
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

func newEnding() *ending { return &ending{done: make(chan struct{})} }

// end closes done with err, the first time only.
func (e *ending) end(err error) {
	e.once.Do(func() {
		e.mu.Lock()
		e.err = err
		e.mu.Unlock()
		close(e.done)
	})
}

func (e *ending) Done() <-chan struct{} { return e.done }

func (e *ending) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

var fakeEstablished = time.Date(2026, 11, 22, 14, 0, 0, 123456789, time.UTC)

func (t *fakeTunnel) Status() Status {
	return Status{
		Name: t.name, State: "established", Gateway: "198.51.100.1:500",
		Local: "192.0.2.10:4500", Remote: "198.51.100.1:4500", Interface: "wlan0",
		NAT: true, VirtualIP: "10.99.200.1", MOBIKE: true,
		IKESPIi: "0102030405060708", IKESPIr: "1112131415161718",
		Children:      []ChildStatus{{SPIIn: "c0000001", SPIOut: "d0000001", BytesIn: 1, BytesOut: 2, PacketsIn: 3, PacketsOut: 4, Proposal: "aes256gcm16"}},
		EstablishedAt: fakeEstablished,
		Drops:         &Drops{Malformed: 1, UnknownSPI: 2, Replayed: 3, BadICV: 4, NoPath: 5},
	}
}

func (t *fakeTunnel) Close(ctx context.Context) error {
	t.mu.Lock()
	t.closes++
	t.mu.Unlock()
	t.end(nil)
	return nil
}

func (t *fakeTunnel) closed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closes > 0
}

// fakeDialer connects every profile unless fail names it; block makes the
// dial wait for its context.
type fakeDialer struct {
	mu      sync.Mutex
	fail    map[string]string
	block   map[string]bool
	tunnels map[string]*fakeTunnel
	dialing chan string
}

func newFakeDialer() *fakeDialer {
	return &fakeDialer{fail: map[string]string{}, block: map[string]bool{}, tunnels: map[string]*fakeTunnel{}, dialing: make(chan string, 16)}
}

func (d *fakeDialer) dial(ctx context.Context, p *config.Profile, emit func(Event)) (Tunnel, error) {
	d.mu.Lock()
	reason, fail := d.fail[p.Name]
	block := d.block[p.Name]
	d.mu.Unlock()
	emit(Event{Event: report.EventConnecting, To: p.Gateway, Interface: "wlan0"})
	d.dialing <- p.Name
	if block {
		<-ctx.Done()
		return nil, fmt.Errorf("connect cancelled: %w", ctx.Err())
	}
	if fail {
		return nil, errors.New(reason)
	}
	t := newFakeTunnel(p.Name)
	d.mu.Lock()
	d.tunnels[p.Name] = t
	d.mu.Unlock()
	emit(Event{Event: report.EventEstablished, To: p.Gateway, VirtualIP: "10.99.200.1"})
	return t, nil
}

func (d *fakeDialer) tunnel(name string) *fakeTunnel {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tunnels[name]
}

// writeProfiles writes a profile file with the named PSK profiles.
func writeProfiles(t *testing.T, dir string, names ...string) string {
	t.Helper()
	psk := filepath.Join(dir, "test.psk")
	if err := os.WriteFile(psk, []byte("not-a-real-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, n := range names {
		b = fmt.Appendf(b, "[profiles.%s]\ngateway = \"198.51.100.1\"\nlocal_id = \"alice@example.com\"\nremote_id = \"vpn.example.com\"\nauth = \"psk\"\npsk_file = %q\n\n", n, psk)
	}
	path := filepath.Join(dir, "roam.toml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testDaemon runs a daemon with a fake dialer on a socket in a fresh
// directory; it is stopped at the end of the test.
type testDaemon struct {
	d      *Daemon
	dialer *fakeDialer
	socket string
	config string
	client Client
	ran    chan error
	cancel context.CancelFunc
}

func startTestDaemon(t *testing.T, autoExit bool) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	td := &testDaemon{dialer: newFakeDialer(), socket: filepath.Join(dir, "run", "roam.sock")}
	td.config = writeProfiles(t, dir, "corp", "home")
	d, err := Start(Options{Socket: td.socket, Dial: td.dialer.dial, AutoExit: autoExit, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	td.d = d
	td.client = Client{Socket: td.socket}
	ctx, cancel := context.WithCancel(context.Background())
	td.cancel = cancel
	td.ran = make(chan error, 1)
	go func() { td.ran <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-td.ran:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	return td
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// set changes the dialer's settings under its lock: the daemon's
// goroutines read them, and a unix socket's sendmsg and recvmsg (the
// control protocol, which passes descriptors) tell the race detector
// nothing about what happened before.
func (d *fakeDialer) set(change func(*fakeDialer)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	change(d)
}
