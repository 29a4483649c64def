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
// hold is small and short, so a flood of bogus SPIs costs only what
// dropping would; a held packet still has to pass the SA's ICV and replay
// checks. Each held packet counts as UnknownSPI on arrival, and is taken
// off that count if it is delivered after all.
const (
	earlyMax = 32
	earlyAge = 500 * time.Millisecond
)

type earlyPacket struct {
	spi  uint32
	at   time.Time
	data []byte
}

type earlyHold struct {
	mu   sync.Mutex
	pkts []earlyPacket
}

// add keeps a copy of pkt, dropping the oldest held packet when full.
func (e *earlyHold) add(spi uint32, pkt []byte, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(now)
	if len(e.pkts) >= earlyMax {
		e.pkts = e.pkts[1:]
	}
	e.pkts = append(e.pkts, earlyPacket{spi: spi, at: now, data: append([]byte(nil), pkt...)})
}

// take removes and returns the held packets for spi, oldest first.
func (e *earlyHold) take(spi uint32, now time.Time) [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(now)
	var out [][]byte
	kept := e.pkts[:0]
	for _, p := range e.pkts {
		if p.spi == spi {
			out = append(out, p.data)
		} else {
			kept = append(kept, p)
		}
	}
	e.pkts = kept
	return out
}

func (e *earlyHold) expire(now time.Time) {
	i := 0
	for i < len(e.pkts) && now.Sub(e.pkts[i].at) > earlyAge {
		i++
	}
	e.pkts = e.pkts[i:]
}

// deliverEarly opens the packets held for a child just installed and
// writes them to the TUN device.
func (d *Dataplane) deliverEarly(c *child) {
	spi := c.in.SPI()
	if d.tabs.Load().bySPI[spi] != c {
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
		if src, ok := innerSrc(inner[tunOffset:]); !ok || !c.acceptsSource(src) {
			d.drops.malformed.Add(1)
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
