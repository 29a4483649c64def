package esp

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Round trips measured from the tunnel's own traffic: an inner request
// whose answer is recognisable (an ICMP echo request and its reply, a TCP
// SYN and its SYN-ACK) gives one sample when the answer comes back. IKE
// exchanges are few and include the gateway's crypto; these come with the
// user's traffic and measure what a dead-path check waits for, the answer
// to what we send, including our own process's stalls. A sample spans the
// path to the gateway and the gateway's side of the tunnel, so it errs
// long as a measure of the path, which errs on the side of no false move.

// echoSlots is how many requests a peer waits on at once; a request whose
// slot is taken by a newer one gives no sample.
const echoSlots = 8

// EchoFunc receives a round trip measured on path (SetEchoRTT).
type EchoFunc func(path Path, rtt time.Duration)

// echoTracker is a peer's outstanding requests. Only requests and answers
// take its lock: a few packets of a flow, never its data.
type echoTracker struct {
	mu    sync.Mutex
	slots [echoSlots]echoSlot
	sink  atomic.Pointer[EchoFunc]
}

type echoSlot struct {
	key  uint64 // 0: free
	sent int64  // unix ns; 0: sent more than once, no sample (Karn)
	path Path   // where the request went: an answer after a move measures neither path
}

// SetEchoRTT gives the peer a receiver for the round trips measured from
// its inner traffic; nil stops the measuring.
func (p *Peer) SetEchoRTT(f EchoFunc) {
	if f == nil {
		p.echo.sink.Store(nil)
		return
	}
	p.echo.sink.Store(&f)
}

// sent notes pkt, on its way to the peer over path, if it is a request.
func (t *echoTracker) sent(pkt []byte, path Path) {
	if t.sink.Load() == nil {
		return
	}
	k, ok := echoKey(pkt, false)
	if !ok {
		return
	}
	now := time.Now().UnixNano()
	t.mu.Lock()
	s := &t.slots[k%echoSlots]
	if s.key == k {
		s.sent = 0 // a retransmission: which one is answered is unknown
	} else {
		*s = echoSlot{key: k, sent: now, path: path}
	}
	t.mu.Unlock()
}

// answered takes pkt, from the peer while it is on path, as an answer,
// and passes on the round trip when it answers a request of that path.
func (t *echoTracker) answered(pkt []byte, path Path, now int64) {
	sink := t.sink.Load()
	if sink == nil {
		return
	}
	k, ok := echoKey(pkt, true)
	if !ok {
		return
	}
	t.mu.Lock()
	s := &t.slots[k%echoSlots]
	if s.key != k {
		t.mu.Unlock()
		return
	}
	sent, from := s.sent, s.path
	*s = echoSlot{}
	t.mu.Unlock()
	if sent == 0 || now < sent || from != path {
		return
	}
	(*sink)(path, time.Duration(now-sent))
}

// echoKey names the exchange pkt belongs to, if it is a request (answer
// false) or an answer (answer true) that this file follows: an answer
// has the key of its request. The key covers the far end's address, the
// identifiers or ports and the sequence number; 0 is never a key. Every
// packet to and from the peer passes here, so anything else is turned
// away before the hashing.
func echoKey(pkt []byte, answer bool) (uint64, bool) {
	if len(pkt) < 1 {
		return 0, false
	}
	var far, l4 []byte
	var proto byte
	v6 := pkt[0]>>4 == 6
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4HeaderLen {
			return 0, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < ipv4HeaderLen || ihl > len(pkt) || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return 0, false // a fragment carries no whole header
		}
		proto, l4 = pkt[9], pkt[ihl:]
		far = pkt[16:20] // the request's destination
		if answer {
			far = pkt[12:16] // the answer's source
		}
	case 6:
		if len(pkt) < ipv6HeaderLen {
			return 0, false
		}
		proto, l4 = pkt[6], pkt[ipv6HeaderLen:]
		far = pkt[24:40]
		if answer {
			far = pkt[8:24]
		}
	default:
		return 0, false
	}
	var exchange [9]byte // kind, then ports or identifier, then sequence number
	switch {
	case (!v6 && proto == unix.IPPROTO_ICMP) || (v6 && proto == unix.IPPROTO_ICMPV6):
		if len(l4) < 8 || l4[1] != 0 {
			return 0, false
		}
		request, reply := byte(8), byte(0)
		if v6 {
			request, reply = 128, 129
		}
		if (!answer && l4[0] != request) || (answer && l4[0] != reply) {
			return 0, false
		}
		exchange[0] = 'i'
		copy(exchange[1:5], l4[4:8]) // identifier and sequence number
	case proto == unix.IPPROTO_TCP:
		if len(l4) < tcpHeaderLen {
			return 0, false
		}
		const syn, ack = 0x02, 0x10
		flags := l4[13] & (syn | ack)
		exchange[0] = 't'
		if answer {
			if flags != syn|ack {
				return 0, false
			}
			exchange[1], exchange[2], exchange[3], exchange[4] = l4[2], l4[3], l4[0], l4[1]
			// It acknowledges the SYN's sequence number plus one.
			binary.BigEndian.PutUint32(exchange[5:], binary.BigEndian.Uint32(l4[8:])-1)
		} else {
			if flags != syn {
				return 0, false
			}
			copy(exchange[1:9], l4[0:4])
			copy(exchange[5:9], l4[4:8])
		}
	default:
		return 0, false
	}
	h := fnv1a(fnv1a(14695981039346656037, far), exchange[:])
	if h == 0 {
		h = 1
	}
	return h, true
}

func fnv1a(h uint64, b []byte) uint64 {
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}
