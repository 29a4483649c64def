package main

import (
	"encoding/binary"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// diagMsg builds one netlink message of a sock_diag dump: an inet_diag_msg
// with rqueue, a DONE or an ERROR.
func diagMsg(typ uint16, seq uint32, rqueue uint32, errno int32) []byte {
	var body []byte
	switch typ {
	case unix.SOCK_DIAG_BY_FAMILY:
		body = make([]byte, diagRqueueOff+4+12)
		binary.NativeEndian.PutUint32(body[diagRqueueOff:], rqueue)
	case unix.NLMSG_ERROR:
		body = make([]byte, 4+unix.SizeofNlMsghdr)
		binary.NativeEndian.PutUint32(body, uint32(errno))
	case unix.NLMSG_DONE:
		body = make([]byte, 4)
	}
	m := make([]byte, nlmAlign(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint32(m[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(m[4:6], typ)
	binary.NativeEndian.PutUint32(m[8:12], seq)
	copy(m[unix.SizeofNlMsghdr:], body)
	return m
}

func TestDiagRxQueues(t *testing.T) {
	cat := func(ms ...[]byte) (b []byte) {
		for _, m := range ms {
			b = append(b, m...)
		}
		return b
	}
	const seq = 7
	for _, tt := range []struct {
		name     string
		b        []byte
		peak     int64
		done, ok bool
		sockets  int
	}{
		{"empty", nil, 0, false, true, 0},
		{"largest of two, more to come", cat(diagMsg(unix.SOCK_DIAG_BY_FAMILY, seq, 0xa00, 0), diagMsg(unix.SOCK_DIAG_BY_FAMILY, seq, 0x6f0000, 0)), 0x6f0000, false, true, 2},
		{"then done", cat(diagMsg(unix.SOCK_DIAG_BY_FAMILY, seq, 5, 0), diagMsg(unix.NLMSG_DONE, seq, 0, 0)), 5, true, true, 1},
		{"an older dump's messages skipped", cat(diagMsg(unix.SOCK_DIAG_BY_FAMILY, seq-1, 99, 0), diagMsg(unix.NLMSG_DONE, seq-1, 0, 0), diagMsg(unix.SOCK_DIAG_BY_FAMILY, seq, 3, 0)), 3, false, true, 1},
		{"kernel error", diagMsg(unix.NLMSG_ERROR, seq, 0, -int32(unix.EINVAL)), 0, true, false, 0},
		{"error 0 is an ack", diagMsg(unix.NLMSG_ERROR, seq, 0, 0), 0, true, true, 0},
		{"bad length", []byte{200, 0, 0, 0, 20, 0, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0}, 0, false, false, 0},
		{"short socket message ignored", cat([]byte{24, 0, 0, 0, unix.SOCK_DIAG_BY_FAMILY, 0, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, diagMsg(unix.NLMSG_DONE, seq, 0, 0)), 0, true, true, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var seen int
			peak, done, err := diagRxQueues(tt.b, seq, func([]byte) { seen++ })
			if (err == nil) != tt.ok || peak != tt.peak || done != tt.done {
				t.Errorf("diagRxQueues = %d, %v, %v; want %d, %v, ok %v", peak, done, err, tt.peak, tt.done, tt.ok)
			}
			if seen != tt.sockets {
				t.Errorf("saw %d sockets, want %d", seen, tt.sockets)
			}
		})
	}
}

func FuzzDiagRxQueues(f *testing.F) {
	f.Add(diagMsg(unix.SOCK_DIAG_BY_FAMILY, 1, 10, 0), uint32(1))
	f.Add(diagMsg(unix.NLMSG_ERROR, 1, 0, -1), uint32(1))
	f.Fuzz(func(t *testing.T, b []byte, seq uint32) {
		peak, _, _ := diagRxQueues(b, seq, func(msg []byte) { lookupID(msg) })
		if peak < 0 {
			t.Fatalf("negative peak %d", peak)
		}
	})
}

// TestUDPDiagSeesQueue queues datagrams at a real socket nobody reads and
// asks the kernel how full it is, by a dump and by the lookups that
// follow it.
func TestUDPDiagSeesQueue(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	d, err := newUDPDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 20, 1000
	for range n {
		if _, err := tx.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	// Each queued datagram counts its whole buffer (truesize), more than
	// its payload; other sockets of the machine may hold more.
	scanned, err := d.scan()
	if err != nil {
		t.Fatal(err)
	}
	if scanned < n*size {
		t.Errorf("scan: largest UDP receive queue %d bytes after queueing %d bytes", scanned, n*size)
	}
	known := len(d.socks)
	if known < 2 {
		t.Fatalf("scan found %d UDP sockets, want at least the test's 2", known)
	}
	polled, err := d.poll()
	if err != nil {
		t.Fatal(err)
	}
	if polled < n*size {
		t.Errorf("poll: largest UDP receive queue %d bytes after queueing %d bytes", polled, n*size)
	}
	// A socket closed since the scan is forgotten, the rest still seen
	// (other sockets of the machine may close meanwhile too).
	known = len(d.socks)
	tx.Close()
	if polled, err = d.poll(); err != nil {
		t.Fatal(err)
	}
	if polled < n*size || len(d.socks) > known-1 {
		t.Errorf("poll after a close: largest queue %d bytes, %d sockets, want at most %d", polled, len(d.socks), known-1)
	}
}
