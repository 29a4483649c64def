package esp

import (
	"sync"
	"time"
)

// Early ESP. A responder installs a new Child SA before its IKE response
// leaves and may send on it at once (strongSwan does, for the Child SA of
// a reauthentication's IKE_AUTH): the first ESP packets can arrive before
// the initiator has processed the response and installed the SA. Rather
// than drop them as of an unknown SPI, the dataplane holds a few of them
// briefly and opens them if an SA with their SPI is installed in time. The
// hold is small and short, and its buffers are reused, so a flood of bogus
// SPIs costs a copy per packet and no memory; a held packet still has to pass the SA's ICV and replay
// checks. Each held packet counts as UnknownSPI on arrival, and is taken
// off that count if it is delivered after all.
const (
	earlyMax = 32
	earlyAge = 500 * time.Millisecond
)

type earlyPacket struct {
	spi  uint32
	at   time.Time // zero: the slot is free
	data []byte
}

// earlyHold is a ring of earlyMax slots whose buffers are reused, so
// holding a packet costs a copy and no allocation: the newest packets
// overwrite the oldest.
type earlyHold struct {
	mu   sync.Mutex
	ring [earlyMax]earlyPacket
	next int // the slot the next packet goes into, the oldest one
}

// add keeps a copy of pkt in place of the oldest held packet.
func (e *earlyHold) add(spi uint32, pkt []byte, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := &e.ring[e.next]
	e.next = (e.next + 1) % earlyMax
	p.spi, p.at, p.data = spi, now, append(p.data[:0], pkt...)
}

// take removes and returns copies of the packets held for spi that are not
// older than earlyAge, oldest first.
func (e *earlyHold) take(spi uint32, now time.Time) [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out [][]byte
	for i := range earlyMax {
		p := &e.ring[(e.next+i)%earlyMax]
		if p.at.IsZero() || p.spi != spi {
			continue
		}
		if now.Sub(p.at) <= earlyAge {
			out = append(out, append([]byte(nil), p.data...))
		}
		p.at = time.Time{}
	}
	return out
}

// deliverEarly opens the packets held for a child just installed and
// writes them to the TUN device.
func (d *Dataplane) deliverEarly(c *child) {
	spi := c.in.SPI()
	if d.child(spi) != c {
		return // the install failed
	}
	pkts := d.early.take(spi, time.Now())
	if len(pkts) == 0 {
		return
	}
	var bufs [][]byte
	for _, pkt := range pkts {
		inner, err := c.in.Open(make([]byte, tunOffset, tunOffset+len(pkt)), pkt)
		if err != nil {
			continue // still counted as of an unknown SPI
		}
		d.drops.unknownSPI.Add(^uint64(0))
		if c.pending.Load() {
			d.promote(c)
		}
		if len(inner) == tunOffset {
			continue
		}
		if !d.admit(c, inner[tunOffset:]) {
			continue
		}
		c.packetsIn.Add(1)
		c.bytesIn.Add(uint64(len(inner) - tunOffset))
		c.peer.lastRecv.Store(time.Now().UnixNano())
		bufs = append(bufs, inner)
	}
	if len(bufs) > 0 && d.dev != nil {
		if _, err := d.dev.Write(bufs, tunOffset); err != nil {
			d.log.Debug("TUN write", "err", err)
		}
	}
}
