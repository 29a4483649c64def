package tcpencap

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// Redial bounds the waits between attempts to bring a broken stream back.
var (
	redialFirst = 250 * time.Millisecond
	redialMax   = 4 * time.Second
)

// Client is the initiator's stream to one gateway. Only the initiator
// opens streams (RFC 9329 section 6), so when the connection breaks the
// client dials again and the SAs carried over it live on: the dataplane
// keeps sending to the Client, which forwards to whichever connection is
// current.
type Client struct {
	dial       func(ctx context.Context) (net.Conn, error)
	cur        atomic.Pointer[Conn]
	reconnects atomic.Uint64
}

// NewClient returns a client that opens connections with dial.
func NewClient(dial func(ctx context.Context) (net.Conn, error)) *Client {
	return &Client{dial: dial}
}

// Connect opens the first stream; its error is the gateway's TCP answer
// (refused, unreachable, a TLS failure).
func (c *Client) Connect(ctx context.Context) error {
	nc, err := c.dial(ctx)
	if err != nil {
		return err
	}
	c.cur.Store(NewConn(nc, true))
	return nil
}

// QueueRecord queues rec on the current stream; false while there is none.
func (c *Client) QueueRecord(rec []byte) bool {
	if s := c.cur.Load(); s != nil {
		return s.QueueRecord(rec)
	}
	return false
}

// FlushRecords flushes the current stream.
func (c *Client) FlushRecords() {
	if s := c.cur.Load(); s != nil {
		s.FlushRecords()
	}
}

// Reconnects counts the streams opened after the first.
func (c *Client) Reconnects() uint64 { return c.reconnects.Load() }

// Local is the current connection's local address (nil: none).
func (c *Client) Local() net.Addr {
	if s := c.cur.Load(); s != nil {
		return s.LocalAddr()
	}
	return nil
}

// Run carries the stream until ctx ends, after Connect: it reads records
// into in and, when the connection breaks, dials again with growing waits,
// calling onReconnect once a new stream is up (the IKE SA then tells the
// gateway, which learns the stream from it).
func (c *Client) Run(ctx context.Context, in Input, onReconnect func()) error {
	wait := redialFirst
	for {
		s := c.cur.Load()
		if s == nil {
			return errors.New("tcpencap: Run before Connect")
		}
		start := time.Now()
		s.Run(ctx, in, false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > redialMax {
			wait = redialFirst
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, redialMax)
			nc, err := c.dial(ctx)
			if err != nil {
				continue
			}
			c.cur.Store(NewConn(nc, true))
			c.reconnects.Add(1)
			if onReconnect != nil {
				onReconnect()
			}
			break
		}
	}
}
