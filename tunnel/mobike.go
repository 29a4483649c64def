package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/netmon"
)

// ikeMobility adapts *ike.SA to what package mobility asks of an SA. With
// a connection it sends over the connection's transport (UDP or a stream),
// lets the tested gateway addresses out under lockdown, and tells the
// supervisor when the SA answered.
type ikeMobility struct {
	sa *ike.SA
	c  *conn
}

// suspectAfter is how long a test of the current path may go unanswered
// before a replacement SA is negotiated alongside (reconnect.go; mobility's
// liveness watch). A healthy path answers within a few RTTs, and a Move
// gives up only after about ten seconds; a replacement that finds the
// gateway alive costs one handshake.
const suspectAfter = 3 * time.Second

func (a ikeMobility) PeerAddresses() []netip.Addr { return a.sa.PeerAddresses() }
func (a ikeMobility) Move(ctx context.Context, paths []netpath.Path) (mobility.Probe, error) {
	var r ike.MoveResult
	var err error
	if a.c != nil {
		// Under lockdown the tested paths' gateway addresses must be let
		// out first (a switch's target, an address MOBIKE announced).
		for _, p := range paths {
			a.c.allowGateways(p.Remote.Addr())
		}
		r, err = a.c.update(ctx, a.sa, paths) // over UDP or a stream (transport.go)
	} else {
		r, err = a.sa.UpdateAddresses(ctx, paths)
	}
	if err != nil {
		return mobility.Probe{}, err
	}
	if a.c != nil {
		a.c.saAnswered()
	}
	return mobility.Probe{Path: r.Path, NATLocal: r.NATLocal}, nil
}

// startMobility runs the interface monitor and the MOBIKE mover for an
// established connection whose gateway supports MOBIKE. Both stop with ctx.
func (c *conn) startMobility(ctx context.Context, sa *ike.SA) (*mobility.Mover, error) {
	mon, err := c.host.NewMonitor([]string{c.dev.Name()})
	if err != nil {
		return nil, fmt.Errorf("interface monitor: %w", err)
	}
	cfg := c.mobilityConfig()
	// A test of the path in use that goes unanswered says something
	// about the SA (reconnect.go).
	cfg.SuspectAfter = suspectAfter
	mc := c.moverConn(ikeMobility{sa: sa, c: c}, mon.Addresses)
	// Dead paths are noticed in RTT time: the IKE exchanges measure it.
	mc.rtt = sa.RTT
	mover := c.newMover(cfg, mc, sa.Current(), mon)
	go func() {
		if err := mon.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("interface monitor stopped", "err", err)
		}
	}()
	go mover.Run(ctx, mon.Events())
	return mover, nil
}

// newMover makes the Mover of the installed SA, which sets cur (the SA's
// own path, ike.SA.Current): the dataplane's peer sends where it says, and
// watch (the interface monitor; may be nil) watches its address and
// uplink.
func (c *conn) newMover(cfg mobility.Config, mc *moverConn, cur *netpath.Current, watch netpath.Follower) *mobility.Mover {
	c.mu.Lock()
	c.cur = cur // status follows it (the installed SA's: set already)
	c.mu.Unlock()
	cur.Follow(c.dp.Follower(mc.peer))
	if watch != nil {
		cur.Follow(watch)
	}
	return mobility.New(cfg, mc, cur)
}

// mobilityConfig is the profile's part of a Mover's configuration.
func (c *conn) mobilityConfig() mobility.Config {
	return mobility.Config{
		Interfaces:  c.profile.Interfaces,
		DeadAfter:   c.profile.DeadAfter,
		OutageLimit: c.profile.OutageLimit,
		Log:         c.log,
	}
}

// moverConn is the connection as one Mover sees it: the SA it moves, the
// usable addresses, the dataplane's peer of that SA, and the reports that
// become events and status. The Mover belongs to the SA installed now; a
// reconnect makes a new one.
type moverConn struct {
	mobility.SA
	c     *conn
	peer  *esp.Peer
	addrs func() []netmon.Address
	// rtt is the SA's RTT estimate (ike.SA.RTT); nil: not measured.
	rtt func(netpath.Path) (ike.PathRTT, bool)
}

func (c *conn) moverConn(sa mobility.SA, addrs func() []netmon.Address) *moverConn {
	return &moverConn{SA: sa, c: c, peer: c.curPeer(), addrs: addrs}
}

func (m *moverConn) Addresses() []netmon.Address { return m.addrs() }

func (m *moverConn) Traffic() mobility.Traffic {
	if m.peer == nil {
		return nil
	}
	return m.peer
}

func (m *moverConn) RTT(p netpath.Path) (time.Duration, time.Duration, bool) {
	if m.rtt == nil {
		return 0, 0, false
	}
	r, ok := m.rtt(p)
	return r.SRTT, r.RTTVar, ok
}

// Report turns what the Mover did into events, status and the
// supervisor's suspicions: ESP follows its moves and stops while it finds
// no path.
func (m *moverConn) Report(r mobility.Report) {
	c, peer := m.c, m.peer
	switch r := r.(type) {
	case mobility.NATRefresh:
		c.emit(report.Event{Event: report.EventNATChanged, To: r.Path.Remote.String(), From: r.Path.Local.String(), TookMS: r.Took.Milliseconds()})
	case mobility.PathTest:
		ev := report.Event{Event: report.EventPathTest, To: r.Path.Remote.String(), From: r.Path.Local.String(), Interface: r.Interface}
		if r.Err != nil {
			ev.Reason = r.Err.Error()
		}
		c.emit(ev)
		// A test whose addresses have all gone since (every uplink
		// down while it was in flight) failed for that alone: it is
		// no news about the gateway or the SA.
		if r.Err != nil && len(m.addrs()) > 0 {
			c.mu.Lock()
			down := c.peer == peer && (c.state == report.StateSuspended || c.state == report.StateReconnecting)
			if down && c.state == report.StateSuspended {
				// No longer just asleep: a path was tested and failed.
				c.suspendCause = r.Err.Error()
			}
			c.mu.Unlock()
			if down {
				// Paths exist (one was tested) and none answers.
				c.suspectLost(r.Err.Error())
			}
		}
	case mobility.Move:
		c.mu.Lock()
		c.pathChanges++
		c.nat = r.NAT
		c.mu.Unlock()
		ev := report.Event{Event: report.EventPathChanged, From: r.From.Local.String(), To: r.To.Local.String(),
			FromGateway: r.From.Remote.String(), ToGateway: r.To.Remote.String(),
			Interface: r.Interface, TookMS: r.Took.Milliseconds()}
		if r.Switched {
			ev.Reason = "the gateway asked to switch"
		}
		c.emit(ev)
	case mobility.Suspend:
		c.suspended(peer, r.Reason)
	case mobility.Resume:
		c.resumed(peer, r)
	case mobility.Suspect:
		c.suspectLost(r.Reason)
	case mobility.OutageEnd:
		go c.end(r.Err)
	}
}

// suspended stops outbound ESP while no path works; the event names the
// path that was lost. Dead peer detection waits too: silence from the
// gateway proves nothing while we cannot reach it, and the SA is to
// survive the outage.
func (c *conn) suspended(peer *esp.Peer, reason string) {
	c.dp.Suspend(peer)
	c.mu.Lock()
	if c.state == report.StateDisconnected || c.peer != peer {
		c.mu.Unlock()
		return
	}
	lost := c.uplinkLocked()
	c.state, c.suspendCause = report.StateSuspended, reason
	c.mu.Unlock()
	c.holdDPD(true)
	c.emit(report.Event{Event: report.EventSuspended, From: peer.Path().Local.String(), Interface: lost, Reason: reason})
	// A wake-up's suspension often lasts one round trip: judged now, not
	// at the watcher's next look, or status and events would miss it.
	c.checkHealth(time.Now())
	if strings.HasPrefix(reason, mobility.ErrNoPath.Error()) {
		// Addresses exist, yet no path answers: the network may be
		// broken upstream, or the gateway may have lost our SA.
		c.suspectLost(reason)
	}
}

// uplinkLocked names the uplink the installed SA's path leaves by (see
// conn.cur); c.mu is held.
func (c *conn) uplinkLocked() string {
	if c.cur != nil {
		return c.cur.Load().IfName
	}
	return c.ifname
}

// resumed follows the Mover's Set of the path: traffic flows again on r.Path.
func (c *conn) resumed(peer *esp.Peer, r mobility.Resume) {
	c.mu.Lock()
	if c.state == report.StateDisconnected || c.peer != peer {
		c.mu.Unlock()
		return
	}
	c.state, c.suspendCause = report.StateEstablished, ""
	c.mu.Unlock()
	c.holdDPD(false)
	c.saAnswered()
	c.checkHealth(time.Now())
	c.emit(report.Event{Event: report.EventResumed, To: r.Path.Local.String(), Interface: r.Interface, TookMS: r.Took.Milliseconds(),
		Reason: fmt.Sprintf("after %v without a usable path", r.Outage.Round(time.Millisecond))})
}

// suspectLost tells the supervisor (reconnect.go) that the gateway may
// have lost the SA; it keeps the first reason until it has looked.
func (c *conn) suspectLost(reason string) {
	select {
	case c.suspect <- reason:
	default:
	}
}

// saAnswered tells the supervisor that the installed SA answered: a
// replacement negotiated alongside is not needed.
func (c *conn) saAnswered() {
	select {
	case c.resume <- struct{}{}:
	default:
	}
}

// holdDPD pauses or resumes the installed SA's dead peer detection.
func (c *conn) holdDPD(hold bool) {
	if c.dpdHold != nil {
		c.dpdHold(hold)
		return
	}
	if sa := c.sa.Load(); sa != nil {
		sa.HoldDPD(hold)
	}
}
