package esp

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// scriptConn is an in-memory PollConn: each ReadBatch returns the next of
// reads (blocking once they are used up), each PollBatch the next of polls
// or nothing. polled counts the PollBatch calls.
type scriptConn struct {
	reads, polls chan Message
	closed       chan struct{}
	closeOnce    sync.Once
	mu           sync.Mutex
	polled       int
}

func newScriptConn() *scriptConn {
	return &scriptConn{reads: make(chan Message, 8), polls: make(chan Message, 8), closed: make(chan struct{})}
}

func (c *scriptConn) LocalAddr() netip.AddrPort {
	return netip.MustParseAddrPort("192.0.2.1:4500")
}

func (c *scriptConn) ReadBatch(msgs []Message) (int, error) {
	select {
	case m := <-c.reads:
		msgs[0] = m
		return 1, nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *scriptConn) PollBatch(msgs []Message) (int, error) {
	c.mu.Lock()
	c.polled++
	c.mu.Unlock()
	select {
	case m := <-c.polls:
		msgs[0] = m
		return 1, nil
	default:
		return 0, nil
	}
}

func (c *scriptConn) pollCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.polled
}

func (c *scriptConn) WriteBatch(pkts []Packet) int      { return 0 }
func (c *scriptConn) WriteTo(b []byte, path Path) error { return nil }
func (c *scriptConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// plainConn is a scriptConn without PollBatch.
type plainConn struct{ c *scriptConn }

func (p plainConn) LocalAddr() netip.AddrPort             { return p.c.LocalAddr() }
func (p plainConn) ReadBatch(msgs []Message) (int, error) { return p.c.ReadBatch(msgs) }
func (p plainConn) WriteBatch(pkts []Packet) int          { return 0 }
func (p plainConn) WriteTo(b []byte, path Path) error     { return nil }
func (p plainConn) Close() error                          { return p.c.Close() }

// writeTUN is an in-memory wgtun.Device that reports each Write: the IP
// IDs of its packets, in order.
type writeTUN struct {
	tunBase
	writes chan []uint16
}

func (f *writeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-f.closed
	return 0, net.ErrClosed
}

func (f *writeTUN) Write(bufs [][]byte, offset int) (int, error) {
	ids := make([]uint16, len(bufs))
	for i, b := range bufs {
		ids[i] = binary.BigEndian.Uint16(b[offset+4:])
	}
	f.writes <- ids
	return len(bufs), nil
}

// gro is one GRO datagram of n ESP packets sealed by out, whose inner
// packets carry IP IDs from id on.
func gro(t *testing.T, out *OutboundSA, n int, id uint16) Message {
	t.Helper()
	var buf []byte
	seg := 0
	for i := range n {
		inner := downPacket(1200)
		binary.BigEndian.PutUint16(inner[4:], id+uint16(i))
		start := len(buf)
		var err error
		if buf, err = out.Seal(buf, inner); err != nil {
			t.Fatal(err)
		}
		seg = len(buf) - start
	}
	return Message{Buf: buf, From: netip.MustParseAddrPort("198.51.100.2:4500"), Segment: seg}
}

// TestTailRead checks that the rest of a burst that is queued by the time
// the receive loop has read and opened a full GRO datagram goes to the TUN
// device in the same write, in arrival order, and that only a full
// datagram makes the loop look for more.
func TestTailRead(t *testing.T) {
	full := fullDatagram/sealedLen(1220) + 1 // packets of a full datagram (1220-byte inner packets)
	cases := []struct {
		name       string
		poll       bool
		first      int   // packets of the datagram ReadBatch returns
		tail       int   // packets of the one queued behind it
		wantWrites []int // packets per TUN write, in order
		wantPolls  int   // at least; 0: none
	}{
		{name: "full datagram, tail queued", poll: true, first: full, tail: 3, wantWrites: []int{full + 3}, wantPolls: 1},
		{name: "full datagram, nothing queued", poll: true, first: full, tail: 0, wantWrites: []int{full}, wantPolls: 1},
		{name: "short datagram is not followed up", poll: true, first: 3, tail: 2, wantWrites: []int{3, 2}, wantPolls: 0},
		{name: "conn without poll", poll: false, first: full, tail: 3, wantWrites: []int{full, 3}, wantPolls: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tun := &writeTUN{tunBase: newTUNBase("write", 8), writes: make(chan []uint16, 8)}
			d := NewDataplane(tun, ignoreIKE, nil)
			sc := newScriptConn()
			var conn Conn = sc
			if !tc.poll {
				conn = plainConn{sc}
			}
			d.AddConn(conn)
			kIn := keyMat(36)
			in, _ := NewInboundSA(0x2002, kIn, false)
			out, _ := NewOutboundSA(0x1001, keyMat(20), false)
			peerOut, _ := NewOutboundSA(0x2002, kIn, false)
			peer := d.NewPeer(Path{Local: conn.LocalAddr(), Remote: netip.MustParseAddrPort("198.51.100.2:4500")})
			if err := d.InstallChild(peer, ChildConfig{In: in, Out: out, Remote: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Local: []netip.Prefix{netip.MustParsePrefix("10.99.200.0/24")}}); err != nil {
				t.Fatal(err)
			}
			first := gro(t, peerOut, tc.first, 1)
			if tc.tail > 0 {
				tail := gro(t, peerOut, tc.tail, uint16(1+tc.first))
				if tc.poll && len(first.Buf) >= fullDatagram {
					sc.polls <- tail
				} else {
					// Read by the next ReadBatch; for the poll cases also
					// offered to a poll that should not happen.
					sc.reads <- first
					sc.reads <- tail
					if tc.poll {
						sc.polls <- tail
					}
				}
			}
			if len(sc.reads) == 0 {
				sc.reads <- first
			}

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); d.Run(ctx) }()
			defer func() { cancel(); tun.Close(); <-done }()

			next := uint16(1)
			for w, want := range tc.wantWrites {
				var got []uint16
				select {
				case got = <-tun.writes:
				case <-time.After(5 * time.Second):
					t.Fatalf("write %d never came (drops %+v)", w, d.Drops())
				}
				if len(got) != want {
					t.Fatalf("write %d carried %d packets, want %d", w, len(got), want)
				}
				for i, id := range got {
					if id != next {
						t.Fatalf("write %d packet %d has IP ID %d, want %d (arrival order)", w, i, id, next)
					}
					next++
				}
			}
			if n := sc.pollCount(); (tc.wantPolls == 0 && n != 0) || n < tc.wantPolls {
				t.Errorf("%d polls, want %d", n, tc.wantPolls)
			}
		})
	}
}
