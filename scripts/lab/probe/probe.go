// Package probe measures a tunnel's handover with UDP probes: a sender
// timestamps every probe it sends (one every few milliseconds, each with a
// sequence number) and every echo it gets back from a responder on the far
// side of the tunnel. ping manages only about one echo per 15 ms on the lab
// machines; this gives millisecond resolution and exact loss counts.
package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// PacketLen is the size of a probe on the wire (inner UDP payload).
const PacketLen = 64

var magic = [8]byte{'r', 'o', 'a', 'm', 'p', 'r', 'b', '1'}

// Probe is the content of one probe packet.
type Probe struct {
	Run  uint32 // sender instance, so stray echoes of another run are ignored
	Seq  uint32
	Sent int64 // unix ns, informational: the sender keeps its own record
}

// Encode renders p as a PacketLen-byte packet.
func Encode(p Probe) []byte {
	b := make([]byte, PacketLen)
	copy(b, magic[:])
	binary.BigEndian.PutUint32(b[8:], p.Run)
	binary.BigEndian.PutUint32(b[12:], p.Seq)
	binary.BigEndian.PutUint64(b[16:], uint64(p.Sent))
	return b
}

// ErrNotProbe marks a packet that is not one of ours.
var ErrNotProbe = errors.New("probe: not a probe packet")

// Decode parses a probe packet; anything else is ErrNotProbe.
func Decode(b []byte) (Probe, error) {
	if len(b) != PacketLen || [8]byte(b[:8]) != magic {
		return Probe{}, ErrNotProbe
	}
	return Probe{
		Run:  binary.BigEndian.Uint32(b[8:]),
		Seq:  binary.BigEndian.Uint32(b[12:]),
		Sent: int64(binary.BigEndian.Uint64(b[16:])),
	}, nil
}

// Responder echoes probes back to where they came from.
type Responder struct {
	conn    *net.UDPConn
	Echoed  atomic.Uint64
	Dropped atomic.Uint64 // packets that were not probes
}

// NewResponder echoes on conn (already bound, e.g. inside a lab namespace).
func NewResponder(conn *net.UDPConn) *Responder { return &Responder{conn: conn} }

// Serve echoes until ctx ends, then closes the socket.
func (r *Responder) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.conn.Close() })
	defer stop()
	buf := make([]byte, 2048)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("probe responder: %w", err)
		}
		if _, err := Decode(buf[:n]); err != nil {
			r.Dropped.Add(1)
			continue
		}
		if _, err := r.conn.WriteToUDPAddrPort(buf[:n], from); err == nil {
			r.Echoed.Add(1)
		}
	}
}

// Record is what the sender knows about one probe.
type Record struct {
	Seq  uint32
	Sent time.Time
	Recv time.Time // zero: no echo (yet)
}

// Answered reports whether the echo came back.
func (r Record) Answered() bool { return !r.Recv.IsZero() }

// Sender sends probes on a connected socket every Interval and records
// the echoes.
type Sender struct {
	conn     *net.UDPConn
	dst      netip.AddrPort
	interval time.Duration
	run      uint32

	mu      sync.Mutex
	recs    []Record
	dups    int
	strays  int
	sendErr int
}

// NewSender probes the responder at dst through conn every interval. The
// socket should be unconnected, so each probe's source address is chosen by
// the routes of the moment (a tunnel may re-plumb them during a move). run
// tells this sender's echoes apart from any other's.
func NewSender(conn *net.UDPConn, dst netip.AddrPort, interval time.Duration, run uint32) *Sender {
	return &Sender{conn: conn, dst: dst, interval: interval, run: run}
}

// Run sends until ctx ends; echoes are recorded until then and for grace
// after it, so the last probes can still be answered. It closes the socket.
func (s *Sender) Run(ctx context.Context, grace time.Duration) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.receive()
	}()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for seq := uint32(0); ; seq++ {
		now := time.Now()
		s.mu.Lock()
		s.recs = append(s.recs, Record{Seq: seq, Sent: now})
		s.mu.Unlock()
		// A probe that cannot even be sent (no route during a move) is
		// still a probe: it is counted as lost.
		if _, err := s.conn.WriteToUDPAddrPort(Encode(Probe{Run: s.run, Seq: seq, Sent: now.UnixNano()}), s.dst); err != nil {
			s.mu.Lock()
			s.sendErr++
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			time.Sleep(grace)
			s.conn.Close()
			wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

func (s *Sender) receive() {
	buf := make([]byte, 2048)
	for {
		n, _, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP errors surface as ECONNREFUSED and the like while a
			// path is broken; keep listening.
			continue
		}
		now := time.Now()
		p, err := Decode(buf[:n])
		s.mu.Lock()
		switch {
		case err != nil || p.Run != s.run || int(p.Seq) >= len(s.recs):
			s.strays++
		case s.recs[p.Seq].Answered():
			s.dups++
		default:
			s.recs[p.Seq].Recv = now
		}
		s.mu.Unlock()
	}
}

// Records returns a copy of the records so far, in sequence order.
func (s *Sender) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.recs...)
}

// Counters returns duplicate echoes, stray packets and failed sends.
func (s *Sender) Counters() (dups, strays, sendErrors int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dups, s.strays, s.sendErr
}

// Answered reports whether a probe sent at or after t has been answered at
// or after notBefore; it returns the first such echo's arrival.
func (s *Sender) Answered(t, notBefore time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return firstAnswer(s.recs, t, notBefore)
}

// FirstEchoSince returns the arrival of the first echo of a probe sent at
// or after t (an echo arriving earlier belongs to an earlier probe). The
// records are in send order, so the search starts at t: a sender that runs
// for many minutes is asked this every few milliseconds.
func (s *Sender) FirstEchoSince(t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.recs), func(i int) bool { return !s.recs[i].Sent.Before(t) })
	var best time.Time
	for _, r := range s.recs[i:] {
		if r.Answered() && (best.IsZero() || r.Recv.Before(best)) {
			best = r.Recv
		}
	}
	return best, !best.IsZero()
}
