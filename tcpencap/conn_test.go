package tcpencap

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// collect is an Input that keeps copies of the records it is given.
type collect struct {
	mu      sync.Mutex
	records [][]byte
	flushes int
	got     chan struct{}
	want    int
}

func (c *collect) Record(rec []byte, _ int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, append([]byte(nil), rec...))
	if len(c.records) == c.want {
		close(c.got)
	}
}

func (c *collect) Flush() {
	c.mu.Lock()
	c.flushes++
	c.mu.Unlock()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestConnCarriesRecordsBothWays(t *testing.T) {
	l := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 500
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = bytes.Repeat([]byte{byte(i) | 1}, 1+i*7)
	}
	srvIn := &collect{got: make(chan struct{}), want: n}
	srvErr := make(chan error, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		s := NewConn(nc, false)
		go func() { srvErr <- s.Run(ctx, srvIn, true) }()
		<-srvIn.got
		s.QueueRecord([]byte{0, 0, 0, 0, 9})
		s.FlushRecords()
	}()
	cl := NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", l.Addr().String())
	})
	if err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	clIn := &collect{got: make(chan struct{}), want: 1}
	go cl.Run(ctx, clIn, nil)
	for _, r := range recs {
		if !cl.QueueRecord(r) {
			t.Fatal("record refused")
		}
	}
	cl.FlushRecords()
	select {
	case <-srvIn.got:
	case err := <-srvErr:
		t.Fatalf("server stream ended: %v", err)
	}
	srvIn.mu.Lock()
	defer srvIn.mu.Unlock()
	for i, r := range srvIn.records {
		if !bytes.Equal(r, recs[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
	<-clIn.got
	clIn.mu.Lock()
	defer clIn.mu.Unlock()
	if !bytes.Equal(clIn.records[0], []byte{0, 0, 0, 0, 9}) {
		t.Fatalf("client got % x", clIn.records[0])
	}
	// The records went out queued and flushed once: the reader saw them
	// in far fewer reads than records.
	if srvIn.flushes >= n/2 {
		t.Fatalf("%d records took %d reads", n, srvIn.flushes)
	}
}

func TestConnGarbageEndsStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"no prefix", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"bad length", append([]byte(Prefix), 0, 1, 0xff)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			s := NewConn(a, false)
			done := make(chan error, 1)
			go func() { done <- s.Run(context.Background(), &collect{got: make(chan struct{})}, true) }()
			b.Write(tc.send)
			if err := <-done; !errors.Is(err, ErrGarbage) {
				t.Fatalf("err = %v, want ErrGarbage", err)
			}
			b.Close()
		})
	}
}

// TestQueueWaitsForRoom: records beyond QueueLimit wait for the writer
// to hand the queue to TCP instead of being dropped, as a sender waits on
// a full socket buffer. The reader starts only once a record waits, so
// every record past the limit must have waited, none dropped.
func TestQueueWaitsForRoom(t *testing.T) {
	a, b := net.Pipe() // unbuffered: the writer's Write waits for the reader
	defer b.Close()
	s := NewConn(a, false)
	s.queueWait = time.Hour // the test is about waiting, not the bound
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx, &collect{got: make(chan struct{})}, false) }()
	per := MaxRecord + lengthSize
	n := 3 * QueueLimit / per
	read := make(chan int, 1)
	go func() {
		for s.Waited() == 0 {
			time.Sleep(time.Millisecond)
		}
		total, buf := 0, make([]byte, 64<<10)
		for total < n*per {
			k, err := b.Read(buf)
			total += k
			if err != nil {
				break
			}
		}
		read <- total
	}()
	rec := make([]byte, MaxRecord)
	for i := 0; i < n; i++ {
		if !s.QueueRecord(rec) {
			t.Fatalf("record %d of %d dropped (waited %d)", i, n, s.Waited())
		}
		if i%16 == 15 {
			s.FlushRecords()
		}
	}
	s.FlushRecords()
	if got := <-read; got != n*per {
		t.Fatalf("reader got %d bytes, want %d", got, n*per)
	}
	if s.Dropped() != 0 || s.Waited() == 0 {
		t.Fatalf("dropped %d, waited %d: want no drop, and waits", s.Dropped(), s.Waited())
	}
	cancel()
	<-ran
}

// TestQueueStallDrops: a stream whose writer takes nothing (a dead
// connection) refuses the record that waited its bound in vain, and the
// next ones without waiting, so it holds its sender up once; once the
// writer takes the queue again, records are accepted again.
func TestQueueStallDrops(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	s := NewConn(a, false) // no writer runs yet: everything stays queued
	s.queueWait = 10 * time.Millisecond
	rec := make([]byte, MaxRecord)
	queued := 0
	for s.QueueRecord(rec) {
		queued++
	}
	if want := QueueLimit / (MaxRecord + lengthSize); queued != want || s.Dropped() != 1 || s.Waited() != 1 {
		t.Fatalf("queued %d (want %d), dropped %d, waited %d; want 1 and 1", queued, want, s.Dropped(), s.Waited())
	}
	for i := 0; i < 10; i++ {
		if s.QueueRecord(rec) {
			t.Fatal("a stalled stream took a record")
		}
	}
	if s.Dropped() != 11 || s.Waited() != 1 {
		t.Fatalf("stalled: dropped %d, waited %d; want 11 and still 1", s.Dropped(), s.Waited())
	}
	// The connection comes back to life: a reader drains it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx, &collect{got: make(chan struct{})}, false) }()
	go io.Copy(io.Discard, b)
	s.FlushRecords()
	for !s.QueueRecord(rec) {
		s.FlushRecords()
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-ran
}

func TestClientRedialsAfterBreak(t *testing.T) {
	l := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- nc
		}
	}()
	cl := NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", l.Addr().String())
	})
	if err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{}, 1)
	go cl.Run(ctx, &collect{got: make(chan struct{})}, func() { up <- struct{}{} })
	first := <-accepted
	first.Close()
	<-up
	second := <-accepted
	cl.QueueRecord([]byte{1, 2, 3, 4, 5, 6, 7, 8})
	cl.FlushRecords()
	in := &collect{got: make(chan struct{}), want: 1}
	srv := NewConn(second, false)
	go srv.Run(ctx, in, true)
	<-in.got
	if cl.Reconnects() != 1 {
		t.Fatalf("reconnects = %d", cl.Reconnects())
	}
}
