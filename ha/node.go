package ha

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultHeartbeat = 200 * time.Millisecond
	DefaultDeadAfter = time.Second
	handshakeTimeout = 3 * time.Second
	redialEvery      = 500 * time.Millisecond
)

// Config is one node's side of the pair.
type Config struct {
	Key    []byte         // KeySize bytes, the same on both nodes
	Listen netip.AddrPort // our replication address; outgoing connections leave from its address
	Peer   netip.AddrPort // the other node's
	Role   Role           // at start
	// Heartbeat is how often a node that has nothing else to say sends a
	// heartbeat (0: DefaultHeartbeat).
	Heartbeat time.Duration
	// DeadAfter: a standby that heard the active node and then nothing
	// for this long takes over (0: DefaultDeadAfter).
	DeadAfter time.Duration
	Log       *slog.Logger
}

// Handler is what a node's owner does with the channel. A node calls it
// from one goroutine at a time, in the order messages arrived.
type Handler interface {
	// Snapshot (active) returns every SA's state; it is pushed to a
	// standby as soon as it connects, followed by the list of its keys.
	Snapshot() []State
	// Import (standby) parks a replicated SA, replacing an older copy.
	Import(State)
	// Drop (standby) forgets a parked SA the active deleted.
	Drop(SAKey)
	// Keep (standby) forgets every parked SA not listed: the active's
	// inventory after a full push.
	Keep([]SAKey)
	// PeerDead (standby) reports that the active was heard and then
	// silent for DeadAfter. The node is active from then on.
	PeerDead()
}

// Stats counts what the channel saw. Bad input is counted, never fatal.
type Stats struct {
	Connections       uint64 // authenticated connections
	HandshakeFailures uint64 // bad hello, wrong key, refused role
	RefusedAddress    uint64 // connection from an address other than Peer
	RefusedBusy       uint64 // connection refused while maxAccepted were being served
	BadRecords        uint64 // records that failed to open or parse after the handshake
	Received, Sent    uint64 // records
	Failovers         uint64
}

// Node is one end of the replication channel.
type Node struct {
	cfg Config
	h   Handler
	log *slog.Logger

	role atomic.Uint32

	mu        sync.Mutex
	pending   map[SAKey]*State // nil value: delete
	order     []SAKey
	heard     bool
	lastHeard time.Time
	conn      net.Conn // the current authenticated connection
	wake      chan struct{}
	// lastFailure is the last handshake failure logged (cleared by a
	// connection), so a retry loop does not repeat it.
	lastFailure string

	connections, handshakeFailures, refusedAddress, badRecords, received, sent, failovers atomic.Uint64
	refusedBusy                                                                           atomic.Uint64
}

// New checks cfg and returns a node that Run starts.
func New(cfg Config, h Handler) (*Node, error) {
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("ha: key is %d bytes, want %d", len(cfg.Key), KeySize)
	}
	if !cfg.Listen.IsValid() || !cfg.Peer.IsValid() {
		return nil, errors.New("ha: listen and peer addresses are required")
	}
	if cfg.Role != Active && cfg.Role != Standby {
		return nil, fmt.Errorf("ha: role %v", cfg.Role)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	n := &Node{cfg: cfg, h: h, log: cfg.Log.With("ha_peer", cfg.Peer.String()), pending: map[SAKey]*State{}, wake: make(chan struct{}, 1)}
	n.role.Store(uint32(cfg.Role))
	return n, nil
}

// Role is the node's current role.
func (n *Node) Role() Role { return Role(n.role.Load()) }

// Connected reports whether an authenticated connection to the peer is up.
func (n *Node) Connected() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.conn != nil
}

// Stats returns the counters.
func (n *Node) Stats() Stats {
	return Stats{
		Connections: n.connections.Load(), HandshakeFailures: n.handshakeFailures.Load(),
		RefusedAddress: n.refusedAddress.Load(), BadRecords: n.badRecords.Load(),
		Received: n.received.Load(), Sent: n.sent.Load(), Failovers: n.failovers.Load(),
		RefusedBusy: n.refusedBusy.Load(),
	}
}

// Push replicates an SA's state to the standby. Pushes of the same SA not
// yet sent are coalesced to the newest; with no standby connected they wait
// for the full push of the next connection.
func (n *Node) Push(s State) { n.queue(s.SA, &s) }

// Delete tells the standby an SA is gone.
func (n *Node) Delete(k SAKey) { n.queue(k, nil) }

func (n *Node) queue(k SAKey, s *State) {
	n.mu.Lock()
	if _, ok := n.pending[k]; !ok {
		n.order = append(n.order, k)
	}
	n.pending[k] = s
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// takePending returns the queued messages in the order their SAs were
// first queued.
func (n *Node) takePending() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out [][]byte
	for _, k := range n.order {
		s := n.pending[k]
		if s == nil {
			out = append(out, encodeDelete(k))
			continue
		}
		b, err := encodeState(*s)
		if err != nil {
			n.log.Error("ha: not replicated", "sa", k.String(), "err", err)
			continue
		}
		out = append(out, b)
	}
	clear(n.pending)
	n.order = n.order[:0]
	return out
}

// Run listens for the peer and, while active, dials it; it returns when
// ctx ends, or at once when the listen address cannot be bound.
func (n *Node) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", n.cfg.Listen.String())
	if err != nil {
		return fmt.Errorf("ha: listen %s: %w", n.cfg.Listen, err)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); <-ctx.Done(); ln.Close() }()
	go func() { defer wg.Done(); n.acceptLoop(ctx, ln) }()
	go func() { defer wg.Done(); n.dialLoop(ctx) }()
	n.watchdog(ctx)
	wg.Wait()
	return nil
}

// maxAccepted caps the connections the listener serves at once: the peer
// needs one, and one more while a new one replaces it; a flood of
// connections that never finish the handshake gets no more.
const maxAccepted = 4

func (n *Node) acceptLoop(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxAccepted)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("ha: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ra, _ := c.RemoteAddr().(*net.TCPAddr)
		if ra == nil || ra.AddrPort().Addr().Unmap() != n.cfg.Peer.Addr().Unmap() {
			n.refusedAddress.Add(1)
			n.log.Warn("ha: connection from an address other than the peer's refused", "from", c.RemoteAddr().String())
			c.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			n.refusedBusy.Add(1)
			n.log.Debug("ha: too many connections, refused", "from", c.RemoteAddr().String())
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			n.serve(ctx, c, false)
		}()
	}
}

func (n *Node) dialLoop(ctx context.Context) {
	d := net.Dialer{Timeout: handshakeTimeout, LocalAddr: &net.TCPAddr{IP: n.cfg.Listen.Addr().AsSlice()}}
	t := time.NewTicker(redialEvery)
	defer t.Stop()
	for {
		if n.Role() == Active {
			if c, err := d.DialContext(ctx, "tcp", n.cfg.Peer.String()); err == nil {
				n.serve(ctx, c, true)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchdog promotes a standby whose active node went silent.
func (n *Node) watchdog(ctx context.Context) {
	every := max(n.cfg.DeadAfter/20, 5*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A tick far behind its schedule means this process was not
		// running (a starved or suspended machine): the active's records
		// may be waiting unread in the socket, so the silence proves
		// nothing yet. The reader gets a tick to catch up.
		now := time.Now()
		gap := now.Sub(last)
		last = now
		if gap > max(n.cfg.DeadAfter/4, 4*every) {
			n.log.Warn("ha: this node was not scheduled for a while; not judging the peer this time", "gap", gap.String())
			continue
		}
		if n.Role() != Standby {
			continue
		}
		n.mu.Lock()
		dead := n.heard && time.Since(n.lastHeard) > n.cfg.DeadAfter
		var c net.Conn
		if dead {
			n.heard = false
			c = n.conn
			n.role.Store(uint32(Active))
		}
		n.mu.Unlock()
		if !dead {
			continue
		}
		if c != nil {
			c.Close()
		}
		n.failovers.Add(1)
		n.log.Warn("ha: the active node is silent; taking over", "silent_for", n.cfg.DeadAfter.String())
		n.h.PeerDead()
	}
}

// serve runs one connection: handshake, auth, then the active's writer or
// the standby's reader (both sides send heartbeats).
func (n *Node) serve(ctx context.Context, c net.Conn, dialed bool) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	me := n.Role()
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	seal, open, err := handshake(c, n.cfg.Key, dialed)
	if err == nil {
		var b []byte
		if b, err = seal.seal(nil, encodeAuth(me)); err == nil {
			_, err = c.Write(b)
		}
	}
	var peer Role
	if err == nil {
		var p []byte
		if p, err = open.readFirst(c); err == nil {
			var m message
			if m, err = decodeMessage(p); err == nil && m.typ != msgAuth {
				err = fmt.Errorf("%w: first record is type %d, not auth", ErrBadRecord, m.typ)
			}
			peer = m.role
		}
	}
	if err == nil && peer == me {
		err = fmt.Errorf("both nodes are %v", me)
	}
	if err == nil && (me == Active) != dialed {
		// The active dials; a standby that finds itself dialing (or an
		// active accepting) is in a race with a role change: retry later.
		err = fmt.Errorf("%v node on a connection it did not expect (dialed=%t)", me, dialed)
	}
	if err != nil {
		if ctx.Err() == nil {
			n.handshakeFailures.Add(1)
			if errors.Is(err, ErrBadRecord) {
				err = fmt.Errorf("%w (wrong key?)", err)
			}
			// The dialer retries twice a second: the same failure (a
			// wrong key, both nodes active) is logged once.
			n.mu.Lock()
			repeat := n.lastFailure == err.Error()
			n.lastFailure = err.Error()
			n.mu.Unlock()
			if repeat {
				n.log.Debug("ha: handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			} else {
				n.log.Warn("ha: handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			}
		}
		return
	}
	c.SetDeadline(time.Time{})
	n.connections.Add(1)
	n.received.Add(1)
	n.sent.Add(1)
	n.log.Info("ha: connected", "remote", c.RemoteAddr().String(), "role", me.String())
	n.mu.Lock()
	old := n.conn
	n.conn = c
	n.lastFailure = ""
	if me == Standby {
		n.heard, n.lastHeard = true, time.Now()
	}
	n.mu.Unlock()
	if old != nil {
		old.Close()
	}
	defer func() {
		n.mu.Lock()
		if n.conn == c {
			n.conn = nil
		}
		n.mu.Unlock()
	}()

	// The reader delivers to the handler: it must be gone before serve
	// returns, so nothing reaches the owner after Run.
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		readErr <- n.readLoop(c, open, me)
	}()
	werr := n.writeLoop(ctx, c, seal, me, readErr)
	c.Close()
	<-readDone
	if werr != nil && ctx.Err() == nil {
		n.log.Info("ha: connection ended", "remote", c.RemoteAddr().String(), "err", werr)
	}
}

func (n *Node) readLoop(c net.Conn, open *opener, me Role) error {
	for {
		c.SetReadDeadline(time.Now().Add(n.cfg.DeadAfter))
		p, err := open.read(c)
		if err != nil {
			if errors.Is(err, ErrBadRecord) {
				n.badRecords.Add(1)
			}
			return err
		}
		m, err := decodeMessage(p)
		if err != nil {
			n.badRecords.Add(1)
			return err
		}
		n.received.Add(1)
		if me == Standby {
			n.mu.Lock()
			if n.conn == c {
				n.lastHeard = time.Now()
			}
			n.mu.Unlock()
			if n.Role() != Standby {
				return errors.New("promoted")
			}
		}
		switch m.typ {
		case msgHeartbeat:
		case msgState:
			if me == Standby {
				n.h.Import(m.state)
			}
		case msgDelete:
			if me == Standby {
				n.h.Drop(m.key)
			}
		case msgInventory:
			if me == Standby {
				n.h.Keep(m.keys)
			}
		default:
			n.badRecords.Add(1)
			return fmt.Errorf("%w: unexpected message type %d", ErrBadRecord, m.typ)
		}
	}
}

func (n *Node) writeLoop(ctx context.Context, c net.Conn, seal *sealer, me Role, readErr <-chan error) error {
	write := func(msgs [][]byte) error {
		var buf []byte
		for _, m := range msgs {
			var err error
			if buf, err = seal.seal(buf, m); err != nil {
				return err
			}
		}
		c.SetWriteDeadline(time.Now().Add(n.cfg.DeadAfter))
		if _, err := c.Write(buf); err != nil {
			return err
		}
		n.sent.Add(uint64(len(msgs)))
		return nil
	}
	if me == Active {
		// A full push: whatever was queued is covered by the snapshot.
		n.takePending()
		snap := n.h.Snapshot()
		msgs := make([][]byte, 0, len(snap)+1)
		keys := make([]SAKey, 0, len(snap))
		for _, s := range snap {
			b, err := encodeState(s)
			if err != nil {
				n.log.Error("ha: not replicated", "sa", s.SA.String(), "err", err)
				continue
			}
			msgs = append(msgs, b)
			keys = append(keys, s.SA)
		}
		msgs = append(msgs, encodeInventory(keys))
		if err := write(msgs); err != nil {
			return err
		}
	}
	hb := time.NewTicker(n.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return errors.New("closed by the peer")
			}
			return err
		case <-n.wake:
			if me != Active {
				continue
			}
			if msgs := n.takePending(); len(msgs) > 0 {
				if err := write(msgs); err != nil {
					return err
				}
			}
		case <-hb.C:
			if n.Role() != me {
				return fmt.Errorf("now %v", n.Role())
			}
			if err := write([][]byte{encodeHeartbeat()}); err != nil {
				return err
			}
		}
	}
}
