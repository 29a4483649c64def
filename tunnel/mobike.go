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

// ikeMobility adapts *ike.SA to what package mobility asks of an SA. It
// also watches its path tests for the connection: one that goes unanswered
// for suspectAfter, with no ESP from the gateway meanwhile, suggests the
// gateway has lost the SA (a restarted strongSwan ignores an unknown SPI);
// one that is answered proves the SA alive.
type ikeMobility struct {
	sa *ike.SA
	c  *conn
}

// suspectAfter is how long a path test may go unanswered before a
// replacement SA is negotiated alongside (reconnect.go). A healthy path
// answers within a few RTTs, and a Move gives up only after about ten
// seconds; a replacement that finds the gateway alive costs one handshake.
const suspectAfter = 3 * time.Second

func (a ikeMobility) PeerAddresses() []netip.Addr { return a.sa.PeerAddresses() }
func (a ikeMobility) Move(ctx context.Context, paths []netpath.Path) (mobility.Probe, error) {
	var watch *time.Timer
	if a.c != nil && testsCurrent(a.sa.Path(), paths) {
		// Only a test of the path in use says something about the SA: a
		// preferred uplink that does not answer (make-before-break) may
		// just have no upstream, while the current path still works.
		peer, start := a.c.curPeer(), time.Now()
		watch = time.AfterFunc(suspectAfter, func() {
			if peer != nil {
				if _, recv := peer.Activity(); recv.After(start) {
					return
				}
			}
			a.c.suspectLost(fmt.Sprintf("path test unanswered for %v", suspectAfter))
		})
	}
	if a.c != nil {
		// Under lockdown the tested paths' gateway addresses must be let
		// out first (a switch's target, an address MOBIKE announced).
		for _, p := range paths {
			a.c.allowGateways(p.Remote.Addr())
		}
	}
	var r ike.MoveResult
	var err error
	if a.c != nil {
		r, err = a.c.update(ctx, a.sa, paths) // over UDP or a stream (transport.go)
	} else {
		r, err = a.sa.UpdateAddresses(ctx, paths)
	}
	if watch != nil {
		watch.Stop()
	}
	if err != nil {
		return mobility.Probe{}, err
	}
	if a.c != nil {
		a.c.saAnswered()
	}
	return mobility.Probe{Path: r.Path, NATLocal: r.NATLocal}, nil
}

// testsCurrent reports whether paths include the SA's current path.
func testsCurrent(cur netpath.Path, paths []netpath.Path) bool {
	for _, p := range paths {
		if p.Local == cur.Local && p.Remote == cur.Remote {
			return true
		}
	}
	return false
}

// startMobility runs the interface monitor and the MOBIKE mover for an
// established connection whose gateway supports MOBIKE. Both stop with ctx.
func (c *conn) startMobility(ctx context.Context, sa *ike.SA) (*mobility.Mover, error) {
	mon, err := netmon.New(netmon.Options{Ignore: []string{c.dev.Name()}})
	if err != nil {
		return nil, fmt.Errorf("interface monitor: %w", err)
	}
	cfg := c.mobilityConfig(ikeMobility{sa: sa, c: c}, mon.Addresses, mon.SetCurrent)
	// Dead paths are noticed in RTT time: the IKE exchanges measure it.
	cfg.RTT = func(p netpath.Path) (time.Duration, time.Duration, bool) {
		r, ok := sa.RTT(p)
		return r.SRTT, r.RTTVar, ok
	}
	mover := mobility.New(cfg, sa.Path(), c.ifname)
	go func() {
		if err := mon.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("interface monitor stopped", "err", err)
		}
	}()
	go mover.Run(ctx, mon.Events())
	return mover, nil
}

// mobilityConfig wires a Mover to the connection: ESP follows its moves and
// stops while it finds no path, and its reports become events and status.
// The Mover belongs to the SA installed now; a reconnect makes a new one.
func (c *conn) mobilityConfig(sa mobility.SA, addrs func() []netmon.Address, setCurrent func(netip.Addr, int)) mobility.Config {
	peer := c.curPeer()
	return mobility.Config{
		SA:          sa,
		Addresses:   addrs,
		SetPath:     func(p netpath.Path) { c.dp.SetPath(peer, p) },
		SetCurrent:  setCurrent,
		Interfaces:  c.profile.Interfaces,
		Activity:    peer.Activity,
		StrayFrom:   peer.TakeStray,
		DeadAfter:   c.profile.DeadAfter,
		OutageLimit: c.profile.OutageLimit,
		OnNATRefresh: func(p netpath.Path, took time.Duration) {
			c.emit(report.Event{Event: report.EventNATChanged, To: p.Remote.String(), From: p.Local.String(), TookMS: took.Milliseconds()})
		},
		OnProbe: func(p netpath.Path, ifname string, err error) {
			ev := report.Event{Event: report.EventPathTest, To: p.Remote.String(), From: p.Local.String(), Interface: ifname}
			if err != nil {
				ev.Reason = err.Error()
			}
			c.emit(ev)
			// A test whose addresses have all gone since (every uplink
			// down while it was in flight) failed for that alone: it is
			// no news about the gateway or the SA.
			if err != nil && len(addrs()) > 0 {
				c.mu.Lock()
				down := c.peer == peer && (c.state == report.StateSuspended || c.state == report.StateReconnecting)
				if down && c.state == report.StateSuspended {
					// No longer just asleep: a path was tested and failed.
					c.suspendCause = err.Error()
				}
				c.mu.Unlock()
				if down {
					// Paths exist (one was tested) and none answers.
					c.suspectLost(err.Error())
				}
			}
		},
		OnMove: func(m mobility.Move) {
			c.mu.Lock()
			c.ifname = m.Interface
			c.pathChanges++
			c.nat = m.NAT
			c.mu.Unlock()
			ev := report.Event{Event: report.EventPathChanged, From: m.From.Local.String(), To: m.To.Local.String(),
				FromGateway: m.From.Remote.String(), ToGateway: m.To.Remote.String(),
				Interface: m.Interface, TookMS: m.Took.Milliseconds()}
			if m.Switched {
				ev.Reason = "the gateway asked to switch"
			}
			c.emit(ev)
		},
		OnSuspend:     func(reason string) { c.suspended(peer, reason) },
		OnResume:      func(r mobility.Resume) { c.resumed(peer, r) },
		OnOutageLimit: func(err error) { go c.end(err) },
		Log:           c.log,
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
	lost := c.ifname
	c.state, c.ifname, c.suspendCause = report.StateSuspended, "", reason
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

// resumed follows the Mover's SetPath: traffic flows again on r.Path.
func (c *conn) resumed(peer *esp.Peer, r mobility.Resume) {
	c.mu.Lock()
	if c.state == report.StateDisconnected || c.peer != peer {
		c.mu.Unlock()
		return
	}
	c.state, c.ifname, c.suspendCause = report.StateEstablished, r.Interface, ""
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
