package tcpencap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// QueueLimit bounds the framed bytes a stream holds that TCP has not taken
// yet. A record that does not fit waits for the writer to hand the queue to
// TCP, as a sender waits on a full socket buffer: the dataplane slows to
// the pace of the outer connection instead of dropping what the tunnelled
// flows would only send again, and the flows see that pace as delay, not
// loss.
const QueueLimit = 1 << 20

// QueueWait bounds how long a record waits for room. A stream whose writer
// has taken nothing for that long (a dead or stalled connection) drops the
// record, and drops later ones at once until the writer takes the queue
// again, so one dead stream holds the dataplane up once, not per packet.
const QueueWait = 250 * time.Millisecond

// Input takes the records a stream reads: Record for each, then Flush once
// for all the records of one read. A record stays valid until Flush
// returns. *esp.StreamInput is one.
type Input interface {
	Record(rec []byte, now int64)
	Flush()
}

// Conn is one RFC 9329 stream over a TCP or TLS connection. Records are
// queued and written by the stream's own writer, which takes everything
// queued at once: a batch of ESP packets goes out in one write. A full
// queue makes the caller wait (QueueLimit, QueueWait).
type Conn struct {
	c net.Conn

	mu     sync.Mutex
	queue  []byte // framed records not yet handed to the writer
	closed bool
	// room is closed when the writer takes the queue while waiting is
	// set (a record waits for room), then replaced: no allocation unless
	// the queue fills.
	room    chan struct{}
	waiting bool
	// stalled: a record waited QueueWait in vain; records are dropped
	// without waiting until the writer takes the queue again.
	stalled   bool
	queueWait time.Duration // QueueWait; tests shorten or lengthen it
	wake      chan struct{}
	done      chan struct{}
	err       error // why the stream ended

	dropped  atomic.Uint64 // records refused: queue full or stream closed
	waited   atomic.Uint64 // records that waited for room
	received atomic.Uint64 // records read
}

// NewConn wraps c. An initiator's stream starts with Prefix (RFC 9329
// section 4); a responder's decoder expects it.
func NewConn(c net.Conn, initiator bool) *Conn {
	s := &Conn{c: c, room: make(chan struct{}), queueWait: QueueWait, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if initiator {
		s.queue = append(s.queue, Prefix...)
		s.wake <- struct{}{}
	}
	return s
}

// LocalAddr and RemoteAddr are the connection's ends.
func (s *Conn) LocalAddr() net.Addr  { return s.c.LocalAddr() }
func (s *Conn) RemoteAddr() net.Addr { return s.c.RemoteAddr() }

// QueueRecord frames rec behind the queued records, waiting up to
// QueueWait for room when the queue is full; false: dropped (the stream
// is closed or stalled, or rec is too long for a record).
func (s *Conn) QueueRecord(rec []byte) bool {
	var deadline *time.Timer
	timedOut := false
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.closed && !s.stalled && !timedOut && len(s.queue)+len(rec)+lengthSize > QueueLimit {
		if deadline == nil {
			deadline = time.NewTimer(s.queueWait)
			defer deadline.Stop()
			s.waited.Add(1)
		}
		s.waiting = true
		room := s.room
		s.mu.Unlock()
		// What is queued may be this batch's, not flushed yet: the writer
		// must be awake to make room.
		s.FlushRecords()
		select {
		case <-room:
			s.mu.Lock()
		case <-s.done:
			s.mu.Lock()
		case <-deadline.C:
			// Never past the bound; the stream is stalled unless the
			// writer took the queue just now.
			timedOut = true
			s.mu.Lock()
			if s.room == room {
				s.stalled = true
			}
		}
	}
	if s.closed || len(s.queue)+len(rec)+lengthSize > QueueLimit {
		s.dropped.Add(1)
		return false
	}
	q, err := AppendRecord(s.queue, rec)
	if err != nil {
		s.dropped.Add(1)
		return false
	}
	s.queue = q
	return true
}

// FlushRecords wakes the writer for what is queued.
func (s *Conn) FlushRecords() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Dropped counts the records the stream refused.
func (s *Conn) Dropped() uint64 { return s.dropped.Load() }

// Waited counts the records that found the queue full and waited for room.
func (s *Conn) Waited() uint64 { return s.waited.Load() }

// Done is closed when the stream has ended; Err then says why.
func (s *Conn) Done() <-chan struct{} { return s.done }

// Err is why the stream ended (nil while it runs).
func (s *Conn) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the stream.
func (s *Conn) Close() { s.fail(net.ErrClosed) }

func (s *Conn) fail(err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed, s.err = true, err
	s.mu.Unlock()
	s.c.Close()
	close(s.done)
}

// Run reads records into in and writes what is queued until the
// connection fails or ctx ends; it closes the connection and returns why.
// A responder's stream that does not start with Prefix, or that frames a
// record badly, ends with an error wrapping ErrGarbage.
func (s *Conn) Run(ctx context.Context, in Input, wantPrefix bool) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.writeLoop() }()
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			s.fail(ctx.Err())
		case <-s.done:
		}
	}()
	s.fail(s.readLoop(in, wantPrefix))
	wg.Wait()
	return s.Err()
}

// ErrGarbage: the peer sent bytes that are no RFC 9329 stream.
var ErrGarbage = errors.New("tcpencap: not an IKE/ESP stream")

func (s *Conn) readLoop(in Input, wantPrefix bool) error {
	d := NewDecoder(wantPrefix)
	for {
		n, err := s.c.Read(d.Space())
		if n > 0 {
			d.Filled(n)
			now := time.Now().UnixNano()
			got := false
			for {
				rec, derr := d.Next()
				if derr != nil {
					if got {
						in.Flush()
					}
					return fmt.Errorf("%w: %v", ErrGarbage, derr)
				}
				if rec == nil {
					break
				}
				got = true
				s.received.Add(1)
				in.Record(rec, now)
			}
			if got {
				in.Flush()
			}
		}
		if err != nil {
			return err
		}
	}
}

func (s *Conn) writeLoop() {
	var spare []byte
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		s.mu.Lock()
		out := s.queue
		s.queue = spare[:0]
		s.stalled = false
		if s.waiting {
			close(s.room)
			s.room, s.waiting = make(chan struct{}), false
		}
		s.mu.Unlock()
		if len(out) > 0 {
			if _, err := s.c.Write(out); err != nil {
				s.fail(err)
				return
			}
		}
		spare = out
	}
}
