// Package memtun is a TUN device in memory (the wireguard tun.Device
// interface) for tests: a test injects inner packets, which the dataplane
// reads as if the kernel had routed them into the tunnel, and reads what
// the dataplane wrote, as the kernel would receive it from the tunnel.
//
// Reads hand out up to BatchSize packets at once, as a TUN device with
// offloads does; a write blocks while the test has not taken earlier
// packets (Queue deep), so nothing is lost inside the device and every
// loss a test counts happened elsewhere.
package memtun

import (
	"context"
	"os"
	"sync"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Config sizes a Device; zero fields take the defaults.
type Config struct {
	Name      string // "memtun"
	MTU       int    // 1400
	BatchSize int    // packets per Read at most; 1
	Queue     int    // packets waiting in each direction; 1024
}

// Device is the in-memory TUN device.
type Device struct {
	cfg    Config
	in     chan []byte // injected, for the dataplane's Read
	out    chan []byte // written by the dataplane, for the test
	events chan wgtun.Event
	closed chan struct{}
	once   sync.Once

	reads, writes atomic.Uint64 // Read and Write calls that moved packets
	tooBig        atomic.Uint64 // injected packets larger than the read buffer
}

var _ wgtun.Device = (*Device)(nil)

// New makes a Device that is up (EventUp is waiting on Events).
func New(cfg Config) *Device {
	if cfg.Name == "" {
		cfg.Name = "memtun"
	}
	if cfg.MTU <= 0 {
		cfg.MTU = 1400
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	d := &Device{cfg: cfg, in: make(chan []byte, cfg.Queue), out: make(chan []byte, cfg.Queue),
		events: make(chan wgtun.Event, 1), closed: make(chan struct{})}
	d.events <- wgtun.EventUp
	return d
}

// Inject queues a copy of pkt for the dataplane to read; it waits for room
// until ctx is done or the device closed.
func (d *Device) Inject(ctx context.Context, pkt []byte) error {
	select {
	case <-d.closed:
		return os.ErrClosed
	default:
	}
	select {
	case d.in <- append([]byte(nil), pkt...):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.closed:
		return os.ErrClosed
	}
}

// Written is where the packets the dataplane wrote come out, in order;
// each is the test's to keep.
func (d *Device) Written() <-chan []byte { return d.out }

// Stats: Read and Write calls that moved packets, and injected packets
// dropped for not fitting the reader's buffer.
func (d *Device) Stats() (reads, writes, tooBig uint64) {
	return d.reads.Load(), d.writes.Load(), d.tooBig.Load()
}

// File has no file behind it.
func (d *Device) File() *os.File { return nil }

// Read blocks for one injected packet and takes whatever else is queued,
// up to len(bufs) and the batch size.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var pkt []byte
	select {
	case pkt = <-d.in:
	case <-d.closed:
		return 0, os.ErrClosed
	}
	n, limit := 0, min(len(bufs), d.cfg.BatchSize)
	for {
		if len(pkt) > len(bufs[n])-offset {
			d.tooBig.Add(1)
		} else {
			sizes[n] = copy(bufs[n][offset:], pkt)
			n++
		}
		if n == limit {
			break
		}
		select {
		case pkt = <-d.in:
			continue
		default:
		}
		if n > 0 {
			break
		}
		select {
		case pkt = <-d.in:
		case <-d.closed:
			return 0, os.ErrClosed
		}
	}
	d.reads.Add(1)
	return n, nil
}

// Write copies each packet out for the test, waiting while the queue is
// full.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		select {
		case <-d.closed:
			return i, os.ErrClosed
		default:
		}
		select {
		case d.out <- append([]byte(nil), b[offset:]...):
		case <-d.closed:
			return i, os.ErrClosed
		}
	}
	d.writes.Add(1)
	return len(bufs), nil
}

// MTU is the configured MTU.
func (d *Device) MTU() (int, error) { return d.cfg.MTU, nil }

// Name is the configured name.
func (d *Device) Name() (string, error) { return d.cfg.Name, nil }

// Events carries EventUp once; it is closed with the device.
func (d *Device) Events() <-chan wgtun.Event { return d.events }

// BatchSize is the configured batch size.
func (d *Device) BatchSize() int { return d.cfg.BatchSize }

// Close ends blocked reads and writes. Idempotent.
func (d *Device) Close() error {
	d.once.Do(func() {
		close(d.closed)
		close(d.events)
	})
	return nil
}
