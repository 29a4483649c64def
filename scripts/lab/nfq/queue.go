package nfq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxQueued bounds what the kernel queues for us. At the lab's rates (a
// probe every few milliseconds, 10 ms of delay) a few dozen packets are
// held at a time; beyond this the kernel drops, as a full router queue does.
const MaxQueued = 4096

// CopyRange is how much of each packet the kernel copies to us: an IPv4
// header with options, a UDP header and the 4-byte ESP/IKE marker.
const CopyRange = 96

// Queue is one bound netfilter queue.
type Queue struct {
	fd  int
	num uint16
	seq atomic.Uint32
	// early holds packets that arrived while the queue was being configured.
	early []Packet
	stats Stats
}

// Stats counts what a queue saw. Read them after Run returns.
type Stats struct {
	Packets       uint64 // packets released
	Malformed     uint64 // datagrams that did not decode
	Overruns      uint64 // ENOBUFS / overrun: the kernel dropped announcements
	VerdictErrors uint64 // verdicts the kernel refused
}

// Released describes one packet at the moment of its verdict.
type Released struct {
	Enter   time.Time // when we read it from the kernel
	Release time.Time // just before its verdict was sent
	InDev   uint32
	OutDev  uint32
	Len     int  // IP total length (from the header), 0 if unknown
	Tunnel  bool // ESP, raw or in UDP 4500 (see Tunnel)
	ID      uint32
	Payload []byte // copied prefix, owned by the callee
}

// Open binds queue num in the calling process's network namespace, asking
// for the first CopyRange bytes of each packet.
func Open(num uint16) (*Queue, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nfq: netlink socket: %w", err)
	}
	q := &Queue{fd: fd, num: num}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		q.Close()
		return nil, fmt.Errorf("nfq: bind netlink: %w", err)
	}
	// A large buffer so bursts do not overflow it; failing to enlarge it is
	// not fatal (it only makes drops likelier).
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	// The read loop wakes up regularly to notice cancellation.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		q.Close()
		return nil, fmt.Errorf("nfq: receive timeout: %w", err)
	}
	for _, req := range []struct {
		what string
		msg  func(seq uint32) []byte
	}{
		{"bind", func(s uint32) []byte { return ConfigCmd(s, num, CmdBind) }},
		{"copy mode", func(s uint32) []byte { return ConfigParams(s, num, CopyRange, CopyPacket) }},
		{"queue length", func(s uint32) []byte { return ConfigMaxLen(s, num, MaxQueued) }},
		// GSO packets stay whole: the kernel need not segment them for us.
		{"flags", func(s uint32) []byte { return ConfigFlags(s, num, FlagGSO, FlagGSO) }},
	} {
		if err := q.request(req.msg(q.seq.Add(1))); err != nil {
			q.Close()
			return nil, fmt.Errorf("nfq: queue %d %s: %w", num, req.what, err)
		}
	}
	return q, nil
}

// request sends a config message and waits for its acknowledgement.
func (q *Queue) request(msg []byte) error {
	seq := le.Uint32(msg[8:])
	if _, err := unix.Write(q.fd, msg); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Read(q.fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		msgs, derr := Decode(buf[:n])
		for _, m := range msgs {
			switch {
			case m.Kind == KindPacket:
				p := m.Packet
				p.Payload = append([]byte(nil), p.Payload...)
				q.early = append(q.early, p)
			case m.Kind == KindError && m.Seq == seq:
				if m.Errno != 0 {
					return syscall.Errno(-m.Errno)
				}
				return nil
			}
		}
		if derr != nil {
			q.stats.Malformed++
		}
	}
	return errors.New("no acknowledgement from the kernel")
}

// Close unbinds the queue (the kernel drops whatever is still queued).
func (q *Queue) Close() error {
	if q.fd < 0 {
		return nil
	}
	err := unix.Close(q.fd)
	q.fd = -1
	return err
}

type held struct {
	p     Packet
	enter time.Time
}

// Run holds every packet for delay and then accepts it, in arrival order,
// until ctx ends; then it releases what it still holds and returns the
// counters. onRelease, when set, runs (on the releasing goroutine) for each
// packet just after its verdict.
func (q *Queue) Run(ctx context.Context, delay time.Duration, onRelease func(Released)) (Stats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pending := make(chan held, 2*MaxQueued)
	var wg sync.WaitGroup
	wg.Add(1)
	var werr error
	go func() {
		defer wg.Done()
		werr = q.release(ctx, delay, pending, func(b []byte) error {
			_, err := unix.Write(q.fd, b)
			return err
		}, onRelease)
		cancel()
	}()
	now := time.Now()
	for _, p := range q.early {
		pending <- held{p: p, enter: now}
	}
	q.early = nil
	buf := make([]byte, 1<<16)
	var rerr error
	for ctx.Err() == nil {
		n, err := unix.Read(q.fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENOBUFS) {
			q.stats.Overruns++
			continue
		}
		if err != nil {
			rerr = fmt.Errorf("nfq: read: %w", err)
			break
		}
		enter := time.Now()
		msgs, derr := Decode(buf[:n])
		if derr != nil {
			q.stats.Malformed++
		}
		for _, m := range msgs {
			switch m.Kind {
			case KindPacket:
				p := m.Packet
				p.Payload = append([]byte(nil), p.Payload...)
				pending <- held{p: p, enter: enter}
			case KindError:
				if m.Errno != 0 {
					q.stats.VerdictErrors++
				}
			case KindOverrun:
				q.stats.Overruns++
			}
		}
	}
	cancel()
	close(pending)
	wg.Wait()
	if rerr == nil {
		rerr = werr
	}
	return q.stats, rerr
}

// release issues verdicts: it waits until the oldest held packet is due,
// then releases it and everything else already due with one batch verdict.
// Once ctx ends it releases the rest at once.
func (q *Queue) release(ctx context.Context, delay time.Duration, pending <-chan held, send func([]byte) error, onRelease func(Released)) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopping := false
	waitFor := func(h held) {
		if stopping {
			return
		}
		wait := time.Until(h.enter.Add(delay))
		if wait <= 0 {
			return
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			stopping = true
		}
	}
	var batch []held
	var carry *held
	for {
		var h held
		if carry != nil {
			h, carry = *carry, nil
		} else {
			var ok bool
			if h, ok = <-pending; !ok {
				return nil
			}
		}
		waitFor(h)
		batch = append(batch[:0], h)
	drain:
		for {
			select {
			case h2, ok := <-pending:
				if !ok {
					break drain
				}
				if !stopping && time.Until(h2.enter.Add(delay)) > 0 {
					carry = &h2
					break drain
				}
				batch = append(batch, h2)
			default:
				break drain
			}
		}
		at := time.Now()
		last := batch[len(batch)-1].p.ID
		if err := send(VerdictBatch(q.seq.Add(1), q.num, last, Accept)); err != nil {
			return fmt.Errorf("nfq: verdict: %w", err)
		}
		q.stats.Packets += uint64(len(batch))
		if onRelease != nil {
			for _, b := range batch {
				onRelease(describe(b, at))
			}
		}
	}
}

func describe(h held, at time.Time) Released {
	r := Released{
		Enter: h.enter, Release: at,
		InDev: h.p.InDev, OutDev: h.p.OutDev,
		Tunnel: Tunnel(h.p.Payload), ID: h.p.ID, Payload: h.p.Payload,
	}
	if len(h.p.Payload) >= 4 && h.p.Payload[0]>>4 == 4 {
		r.Len = int(be.Uint16(h.p.Payload[2:]))
	}
	return r
}
