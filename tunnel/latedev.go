package tunnel

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// lateDevice stands in for the TUN device while it is still being created,
// so the dataplane (and with it the IKE sockets) can run before the device
// exists: creating the device overlaps the IKE exchanges instead of
// preceding them. Every call waits until the device exists; once creation
// failed, Read and Write fail, which ends the dataplane's TUN loop.
type lateDevice struct {
	ready chan struct{}
	dev   wgtun.Device // set before ready closes; nil if creation failed
}

func newLateDevice() *lateDevice { return &lateDevice{ready: make(chan struct{})} }

// bind hands over the created device, or nil when creation failed. It is
// called once.
func (l *lateDevice) bind(dev wgtun.Device) {
	l.dev = dev
	close(l.ready)
}

func (l *lateDevice) wait() wgtun.Device {
	<-l.ready
	return l.dev
}

func (l *lateDevice) File() *os.File {
	if d := l.wait(); d != nil {
		return d.File()
	}
	return nil
}

func (l *lateDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d := l.wait(); d != nil {
		return d.Read(bufs, sizes, offset)
	}
	return 0, os.ErrClosed
}

func (l *lateDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d := l.wait(); d != nil {
		return d.Write(bufs, offset)
	}
	return 0, os.ErrClosed
}

func (l *lateDevice) MTU() (int, error) {
	if d := l.wait(); d != nil {
		return d.MTU()
	}
	return 0, os.ErrClosed
}

func (l *lateDevice) Name() (string, error) {
	if d := l.wait(); d != nil {
		return d.Name()
	}
	return "", os.ErrClosed
}

func (l *lateDevice) Events() <-chan wgtun.Event {
	if d := l.wait(); d != nil {
		return d.Events()
	}
	return nil
}

// Close is the owner's, as for the real device: the connection closes the
// *tun.Device it created, which ends a blocked Read here too.
func (l *lateDevice) Close() error {
	if d := l.wait(); d != nil {
		return d.Close()
	}
	return nil
}

func (l *lateDevice) BatchSize() int {
	if d := l.wait(); d != nil {
		return d.BatchSize()
	}
	return 1
}

// errTUNNotCreated is the device's error when the connection ended before
// its creation began.
var errTUNNotCreated = errors.New("the TUN device was not created: the connection ended first")

// lateTUN starts the dataplane and creates the connection's TUN device
// beside the first IKE exchange (create, Dial's). The device depends on
// nothing IKE negotiates, and creating it (open, ioctl, netlink, the crash
// record) takes a few milliseconds that would otherwise come before
// IKE_SA_INIT. It starts once the first IKE
// message is on the wire (start, from the IKE transport), so it never
// delays that message on a busy machine; whoever needs the device waits
// for it (wait), which starts it if nothing did.
type lateTUN struct {
	once   sync.Once
	ready  chan struct{} // closed once created, failed or abandoned
	create func() error  // makes the device and binds it to the stand-in
	err    error
	// began and took: when creation began and how long it took (zero
	// when abandoned); read after ready.
	began time.Time
	took  time.Duration
}

func newLateTUN(create func() error) *lateTUN {
	return &lateTUN{ready: make(chan struct{}), create: create}
}

// start begins creating the device, once; later calls do nothing. A nil
// lateTUN (a device given from the start) has nothing to start.
func (t *lateTUN) start() {
	if t == nil {
		return
	}
	t.once.Do(func() { go t.run() })
}

func (t *lateTUN) run() {
	defer close(t.ready)
	t.began = time.Now()
	t.err = t.create()
	t.took = time.Since(t.began)
}

// wait starts the creation if nothing did and returns once it is over,
// with its error.
func (t *lateTUN) wait() error {
	if t == nil {
		return nil
	}
	t.start()
	<-t.ready
	return t.err
}

// abandon is for the teardown: a creation not begun never begins (abandoned
// runs instead, in this goroutine); one under way is waited for, so its
// device can be closed.
func (t *lateTUN) abandon(abandoned func()) {
	if t == nil {
		return
	}
	t.once.Do(func() {
		t.err = errTUNNotCreated
		abandoned()
		close(t.ready)
	})
	<-t.ready
}

// failed returns the creation's error if it is over and failed, without
// waiting or starting it.
func (t *lateTUN) failed() error {
	if t == nil {
		return nil
	}
	select {
	case <-t.ready:
		return t.err
	default:
		return nil
	}
}

// cancelOnFailure calls cancel if the creation fails before ctx ends.
func (t *lateTUN) cancelOnFailure(ctx context.Context, cancel context.CancelFunc) {
	if t == nil {
		return
	}
	select {
	case <-t.ready:
		if t.err != nil {
			cancel()
		}
	case <-ctx.Done():
	}
}
