package esp

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// scriptedConn answers each ReadBatch with as many datagrams as its script
// says are queued (at most the batch asked for), and records the sizes
// asked; past the script it is closed.
type scriptedConn struct {
	queued []int
	asked  []int
}

func (c *scriptedConn) LocalAddr() netip.AddrPort { return netip.MustParseAddrPort("192.0.2.1:4500") }

func (c *scriptedConn) ReadBatch(msgs []Message) (int, error) {
	if len(c.queued) == 0 {
		return 0, net.ErrClosed
	}
	q := c.queued[0]
	c.queued = c.queued[1:]
	c.asked = append(c.asked, len(msgs))
	n := min(q, len(msgs))
	for i := range msgs[:n] {
		msgs[i] = Message{} // no sender: the loop passes over it
	}
	return n, nil
}

func (c *scriptedConn) WriteBatch(pkts []Packet) int      { return len(pkts) }
func (c *scriptedConn) WriteTo(b []byte, path Path) error { return nil }
func (c *scriptedConn) Close() error                      { return nil }

// TestReceiveLoopBatchGrows: a receive loop asks for firstReadBatch
// datagrams, and doubles its batch only when a read fills it, up to
// recvMessages.
func TestReceiveLoopBatchGrows(t *testing.T) {
	many := 10 * recvMessages
	tests := []struct {
		name   string
		queued []int
		asked  []int
	}{
		{name: "IKE only", queued: []int{1, 1, 2, 1}, asked: []int{4, 4, 4, 4}},
		{name: "a queue that outgrows every batch", queued: []int{many, many, many, many, many, many, many},
			asked: []int{4, 8, 16, 32, 64, 64, 64}},
		{name: "a read short of the batch keeps it", queued: []int{4, 3, 8, 7, 16}, asked: []int{4, 8, 8, 16, 16}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDataplane(nil, func([]byte, Path) {}, nil)
			c := &scriptedConn{queued: tt.queued}
			d.receiveLoop(context.Background(), c)
			if len(c.asked) != len(tt.asked) {
				t.Fatalf("asked %v, want %v", c.asked, tt.asked)
			}
			for i := range tt.asked {
				if c.asked[i] != tt.asked[i] {
					t.Fatalf("asked %v, want %v", c.asked, tt.asked)
				}
			}
		})
	}
}

// TestRecvBatchGrowKeepsBuffers: a socket's batch that grows keeps the
// buffers it had, and reads into them.
func TestRecvBatchGrowKeepsBuffers(t *testing.T) {
	small := newRecvBatch(4, nil)
	big := newRecvBatch(8, small)
	for i := range big.hdrs {
		if len(big.bufs[i]) != recvBufSize || big.iovs[i].Base != &big.bufs[i][0] || big.hdrs[i].Hdr.Iov != &big.iovs[i] {
			t.Fatalf("message %d of the grown batch is not wired to its buffer", i)
		}
		if i < len(small.bufs) && &big.bufs[i][0] != &small.bufs[i][0] {
			t.Fatalf("buffer %d was made again", i)
		}
	}
}

// TestReceiveLoopMemoryForIKE: a receive loop over a real socket that only
// ever reads IKE makes its batch's buffers, not the full batch and the
// TUN buffers (12 MiB): a connection's first loop starts between the
// gateway's IKE_SA_INIT answer and its first read, and on a daemon just
// started that much allocation set off a GC cycle on the only P.
func TestReceiveLoopMemoryForIKE(t *testing.T) {
	rx := listenLoopback(t)
	tx := listenLoopback(t)
	got := make(chan struct{}, 8)
	d := NewDataplane(nil, func([]byte, Path) { got <- struct{}{} }, nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.receiveLoop(context.Background(), rx)
	}()
	to := Path{Remote: rx.LocalAddr()}
	const messages = 3
	for range messages {
		// The non-ESP marker, then an IKE header's worth of bytes.
		if err := tx.WriteTo(make([]byte, 4+28), to); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("the IKE message never reached the handler")
		}
	}
	rx.Close()
	<-done
	runtime.ReadMemStats(&after)
	const limit = 1 << 20
	if n := after.TotalAlloc - before.TotalAlloc; n > limit {
		t.Fatalf("a receive loop that read %d IKE messages allocated %d bytes, want at most %d", messages, n, limit)
	}
}
