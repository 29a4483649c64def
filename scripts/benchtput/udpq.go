package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
	"golang.org/x/sys/unix"
)

// How full the tunnels' UDP receive buffers got: the kernel drops a
// datagram when a socket's queued memory reaches its buffer, so the peak
// of the queue over a run says how close a stalled receive loop came to
// an overflow, which a drop count (0 or not) does not.
//
// "benchtput udpq" runs inside a namespace (ip netns exec) and asks the
// kernel every millisecond, until SIGINT, how much each of the
// namespace's UDP sockets has queued (sock_diag over netlink: the
// rx_queue of /proc/net/udp, bytes of queued datagrams, truesize); it
// prints the largest seen. Each tick looks its known sockets up one by
// one, by address, which costs a hash lookup each; a dump of all UDP
// sockets, which walks the machine's whole UDP hash table (16 384 slots
// here) per family, finds the sockets every udpqRescan. Reading
// /proc/net/udp and udp6 every millisecond instead took a seventh of a
// CPU per sampler (two walks per file and a text parse), stolen from the
// tunnels under test on a 2-CPU machine.

const (
	udpqInterval = time.Millisecond
	udpqRescan   = 100 * time.Millisecond
)

func udpqMain(w io.Writer) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	d, err := newUDPDiag()
	if err != nil {
		return err
	}
	defer d.close()
	tick := time.NewTicker(udpqInterval)
	defer tick.Stop()
	var peak int64
	var lastScan time.Time
	for {
		if time.Since(lastScan) >= udpqRescan {
			q, err := d.scan()
			if err != nil {
				return err
			}
			peak, lastScan = max(peak, q), time.Now()
		} else {
			q, err := d.poll()
			if err != nil {
				return err
			}
			peak = max(peak, q)
		}
		select {
		case <-stop:
			fmt.Fprintln(w, peak)
			return nil
		case <-tick.C:
		}
	}
}

// udpDiag asks NETLINK_SOCK_DIAG about a namespace's UDP sockets, with
// its buffers made once.
type udpDiag struct {
	fd  int
	req [unix.SizeofNlMsghdr + inetDiagReqLen]byte
	buf []byte
	seq uint32
	// socks are the sockets the last scan found, as lookup keys.
	socks []diagSocket
}

// diagSocket is one socket to look up: its family and the socket id of
// the lookup, which the kernel matches like a datagram arriving at the
// socket (from its peer, if connected, to its bound address and port).
type diagSocket struct {
	family uint8
	id     [diagIDLen]byte
}

const (
	// diagIDLen is struct inet_diag_sockid: source and destination port,
	// source and destination address (16 bytes each), interface, cookie.
	diagIDLen = 48
	// inetDiagReqLen is struct inet_diag_req_v2: family, protocol, ext,
	// pad, the states mask and the socket id.
	inetDiagReqLen = 4 + 4 + diagIDLen
	// diagRqueueOff is where struct inet_diag_msg holds idiag_rqueue:
	// behind family, state, timer, retrans, the socket id and expires.
	diagRqueueOff = 4 + diagIDLen + 4
)

func newUDPDiag() (*udpDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag bind: %w", err)
	}
	return &udpDiag{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (d *udpDiag) close() { unix.Close(d.fd) }

// scan dumps every UDP socket of both families, keeps them for poll and
// returns the largest receive queue among them.
func (d *udpDiag) scan() (int64, error) {
	d.socks = d.socks[:0]
	var peak int64
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		q, err := d.query(family, nil, true)
		if err != nil {
			return 0, err
		}
		peak = max(peak, q)
	}
	return peak, nil
}

// poll looks up each socket the last scan found and returns the largest
// receive queue; a socket gone since is forgotten until the next scan.
func (d *udpDiag) poll() (int64, error) {
	var peak int64
	kept := d.socks[:0]
	for i := range d.socks {
		s := d.socks[i]
		q, err := d.query(s.family, &s.id, false)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return 0, err
		}
		peak = max(peak, q)
		kept = append(kept, s)
	}
	d.socks = kept
	return peak, nil
}

// query sends one sock_diag request, a dump of the family's UDP sockets
// (which also records them in d.socks) or the lookup of id, and returns
// the largest receive queue in the answer.
func (d *udpDiag) query(family uint8, id *[diagIDLen]byte, dump bool) (int64, error) {
	d.seq++
	r := d.req[:]
	clear(r)
	flags := uint16(unix.NLM_F_REQUEST)
	if dump {
		flags |= unix.NLM_F_DUMP
	}
	binary.NativeEndian.PutUint32(r[0:4], uint32(len(r)))
	binary.NativeEndian.PutUint16(r[4:6], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(r[6:8], flags)
	binary.NativeEndian.PutUint32(r[8:12], d.seq)
	q := r[unix.SizeofNlMsghdr:]
	q[0], q[1] = family, unix.IPPROTO_UDP
	binary.NativeEndian.PutUint32(q[4:8], ^uint32(0)) // every state
	if id != nil {
		copy(q[8:], id[:])
	}
	if err := unix.Sendto(d.fd, r, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	var peak int64
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			return 0, fmt.Errorf("sock_diag read: %w", err)
		}
		var seen func(msg []byte)
		if dump {
			seen = func(msg []byte) { d.socks = append(d.socks, diagSocket{family: family, id: lookupID(msg)}) }
		}
		q, done, err := diagRxQueues(d.buf[:n], d.seq, seen)
		if err != nil {
			return 0, err
		}
		peak = max(peak, q)
		// A lookup answers with one message and no DONE.
		if done || (!dump && n > 0) {
			return peak, nil
		}
	}
}

// lookupID turns the socket id of an inet_diag_msg (which must hold a
// whole one) into the id that looks the socket up again: the kernel
// matches it like a datagram arriving, so source and destination swap,
// and the cookie is left unchecked.
func lookupID(msg []byte) (id [diagIDLen]byte) {
	s := msg[4 : 4+diagIDLen]
	copy(id[0:2], s[2:4])    // from the socket's peer port
	copy(id[2:4], s[0:2])    // to its local port
	copy(id[4:20], s[20:36]) // from its peer
	copy(id[20:36], s[4:20]) // to its bound address
	copy(id[36:40], s[36:40])
	for i := 40; i < diagIDLen; i++ {
		id[i] = 0xff // INET_DIAG_NOCOOKIE
	}
	return id
}

// diagRxQueues reads one netlink read of a sock_diag answer: the largest
// idiag_rqueue among its sockets, and whether a dump is done. seen, when
// set, gets each socket's message. Messages of another sequence number
// (an answer abandoned before) are skipped.
func diagRxQueues(b []byte, seq uint32, seen func(msg []byte)) (peak int64, done bool, err error) {
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return peak, false, fmt.Errorf("sock_diag: bad message length %d", l)
		}
		body := b[unix.SizeofNlMsghdr:l]
		if binary.NativeEndian.Uint32(b[8:12]) == seq {
			switch typ {
			case unix.NLMSG_DONE:
				return peak, true, nil
			case unix.NLMSG_ERROR:
				if len(body) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(body)); e < 0 {
						return peak, true, fmt.Errorf("sock_diag: %w", syscall.Errno(-e))
					}
				}
				return peak, true, nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(body) >= diagRqueueOff+4 {
					peak = max(peak, int64(binary.NativeEndian.Uint32(body[diagRqueueOff:])))
					if seen != nil {
						seen(body)
					}
				}
			}
		}
		b = b[min(nlmAlign(l), len(b)):]
	}
	return peak, false, nil
}

// nlmAlign rounds a netlink message length up to its 4-byte alignment.
func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// queueSampler runs udpq in the client's and the gateway's namespace.
type queueSampler struct {
	procs []*lab.Proc
}

func startQueueSampler(l *lab.Lab) (*queueSampler, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	s := &queueSampler{}
	for _, ns := range []string{lab.Client, lab.Gateway} {
		p, err := l.StartCmd(exec.Command("ip", "netns", "exec", l.NS(ns), self, "udpq"))
		if err != nil {
			s.stop()
			return nil, err
		}
		s.procs = append(s.procs, p)
	}
	return s, nil
}

// stop ends the samplers and returns the peaks, client then gateway.
func (s *queueSampler) stop() ([2]int64, error) {
	var peaks [2]int64
	var firstErr error
	for i, p := range s.procs {
		p.Signal(syscall.SIGINT)
		if err := p.Wait(5 * time.Second); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("udpq: %w: %s", err, p.Output())
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(p.Output()), 10, 64)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("udpq output %q", p.Output())
		}
		peaks[i] = n
	}
	return peaks, firstErr
}
