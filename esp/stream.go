package esp

import (
	"errors"
	"net/netip"
)

// StreamSender is the send side of a stream that carries a path's IKE and
// ESP as records (TCP encapsulation, RFC 9329). The dataplane queues every
// packet of an outbound batch and then flushes once, so a stream writes a
// whole batch with one system call instead of one per packet.
type StreamSender interface {
	// QueueRecord frames rec (an ESP packet, or an IKE message behind the
	// non-ESP marker) behind the records already queued, copying it.
	// With the queue full it waits for room, as a send on a full socket
	// buffer does, but only for a bounded time; false: the record was
	// dropped (the stream is down or stalled).
	QueueRecord(rec []byte) bool
	// FlushRecords starts writing what is queued without waiting for it.
	FlushRecords()
}

// streamTable maps the remote end of each stream path to its sender; it
// is copied on write and read without a lock.
type streamTable map[netip.AddrPort]StreamSender

// AddStream makes s carry the packets of stream paths (Path.Stream) whose
// Remote is remote. A sender added again for the same remote replaces the
// old one for paths resolved from then on.
func (d *Dataplane) AddStream(remote netip.AddrPort, s StreamSender) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.streams.Load()
	next := make(streamTable, len(*old)+1)
	for k, v := range *old {
		next[k] = v
	}
	next[unmapPort(remote)] = s
	d.streams.Store(&next)
}

// RemoveStream forgets the sender for remote if it is still s.
func (d *Dataplane) RemoveStream(remote netip.AddrPort, s StreamSender) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.streams.Load()
	remote = unmapPort(remote)
	if (*old)[remote] != s {
		return
	}
	next := make(streamTable, len(*old))
	for k, v := range *old {
		if k != remote {
			next[k] = v
		}
	}
	d.streams.Store(&next)
}

func (d *Dataplane) streamFor(remote netip.AddrPort) StreamSender {
	return (*d.streams.Load())[unmapPort(remote)]
}

func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// errStreamFull: a stream refused a record.
var errStreamFull = errors.New("esp: stream down or its queue full")

// sendStream writes one socket-less group of an outbound batch: every
// packet queued on the stream, then one flush.
func sendStream(st StreamSender, group []outPacket) (failed int) {
	for _, p := range group {
		if !st.QueueRecord(p.buf) {
			failed++
		}
	}
	st.FlushRecords()
	return failed
}

// StreamInput delivers the records read from one stream into the
// dataplane: IKE to the IKE handler, ESP opened and written to the TUN
// device in batches, as a socket's receive loop does. It belongs to the
// stream's reader goroutine.
type StreamInput struct {
	rx   *rxState
	path Path
}

// NewStreamInput returns the input for records arriving on path (a path
// with Stream set).
func (d *Dataplane) NewStreamInput(path Path) *StreamInput {
	const n = 64
	rx := newRxState(d, netip.AddrPort{}, n)
	path.Stream = true
	return &StreamInput{rx: rx, path: path}
}

// Record handles one record. rec must stay unchanged until the next Flush.
func (in *StreamInput) Record(rec []byte, now int64) {
	in.rx.now = now
	in.rx.packet(rec, in.path, false)
}

// Flush opens the records queued since the last Flush and writes them to
// the TUN device.
func (in *StreamInput) Flush() { in.rx.flush() }
