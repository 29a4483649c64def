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
// yet. Beyond it records are dropped, as a full UDP socket buffer drops
// datagrams: the tunnelled flows see loss and slow down, instead of
// queueing behind an ever longer backlog of the outer connection.
const QueueLimit = 1 << 20

// Input takes the records a stream reads: Record for each, then Flush once
// for all the records of one read. A record stays valid until Flush
// returns. *esp.StreamInput is one.
type Input interface {
	Record(rec []byte, now int64)
	Flush()
}

// Conn is one RFC 9329 stream over a TCP or TLS connection. Records are
// queued without blocking and written by the stream's own writer, which
// takes everything queued at once: a batch of ESP packets goes out in one
// write, and a slow connection never stalls the caller.
type Conn struct {
	c net.Conn

	mu     sync.Mutex
	queue  []byte // framed records not yet handed to the writer
	closed bool
	wake   chan struct{}
	done   chan struct{}
	err    error // why the stream ended

	dropped  atomic.Uint64 // records refused: queue full or stream closed
	received atomic.Uint64 // records read
}

// NewConn wraps c. An initiator's stream starts with Prefix (RFC 9329
// section 4); a responder's decoder expects it.
func NewConn(c net.Conn, initiator bool) *Conn {
	s := &Conn{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if initiator {
		s.queue = append(s.queue, Prefix...)
		s.wake <- struct{}{}
	}
	return s
}

// LocalAddr and RemoteAddr are the connection's ends.
func (s *Conn) LocalAddr() net.Addr  { return s.c.LocalAddr() }
func (s *Conn) RemoteAddr() net.Addr { return s.c.RemoteAddr() }

// QueueRecord frames rec behind the queued records; false: dropped.
func (s *Conn) QueueRecord(rec []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
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
