package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/netmon"
)

// stateSuspended is the status state while no path works (every uplink
// down, or the system asleep): the IKE and Child SAs are kept, outbound
// packets are dropped, and the connection resumes when a path answers.
const stateSuspended = "suspended"

// ikeMobility adapts *ike.SA to what package mobility asks of an SA.
type ikeMobility struct{ sa *ike.SA }

func (a ikeMobility) PeerAddresses() []netip.Addr { return a.sa.PeerAddresses() }
func (a ikeMobility) Move(ctx context.Context, paths []esp.Path) (mobility.Probe, error) {
	r, err := a.sa.UpdateAddresses(ctx, paths)
	if err != nil {
		return mobility.Probe{}, err
	}
	return mobility.Probe{Path: r.Path, NATLocal: r.NATLocal}, nil
}

// startMobility runs the interface monitor and the MOBIKE mover for an
// established connection whose gateway supports MOBIKE. Both stop with ctx.
func (c *conn) startMobility(ctx context.Context, sa *ike.SA) error {
	mon, err := netmon.New(netmon.Options{Ignore: []string{c.dev.Name()}})
	if err != nil {
		return fmt.Errorf("interface monitor: %w", err)
	}
	mover := mobility.New(c.mobilityConfig(ikeMobility{sa}, mon.Addresses, mon.SetCurrent), sa.Path(), c.ifname)
	go func() {
		if err := mon.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("interface monitor stopped", "err", err)
		}
	}()
	go mover.Run(ctx, mon.Events())
	return nil
}

// mobilityConfig wires a Mover to the connection: ESP follows its moves and
// stops while it finds no path, and its reports become events and status.
func (c *conn) mobilityConfig(sa mobility.SA, addrs func() []netmon.Address, setCurrent func(netip.Addr, int)) mobility.Config {
	return mobility.Config{
		SA:          sa,
		Addresses:   addrs,
		SetPath:     func(p esp.Path) { c.dp.SetPath(c.peer, p) },
		SetCurrent:  setCurrent,
		Interfaces:  c.profile.Interfaces,
		Activity:    c.peer.Activity,
		DeadAfter:   c.profile.DeadAfter,
		OutageLimit: c.profile.OutageLimit,
		OnNATRefresh: func(p esp.Path, took time.Duration) {
			c.emit(Event{Event: EventNATChanged, To: p.Remote.String(), From: p.Local.String(), TookMS: took.Milliseconds()})
		},
		OnProbe: func(p esp.Path, ifname string, err error) {
			ev := Event{Event: EventPathTest, To: p.Remote.String(), From: p.Local.String(), Interface: ifname}
			if err != nil {
				ev.Reason = err.Error()
			}
			c.emit(ev)
		},
		OnMove: func(m mobility.Move) {
			c.mu.Lock()
			c.ifname = m.Interface
			c.pathChanges++
			c.nat = m.NAT
			c.mu.Unlock()
			c.emit(Event{Event: EventPathChanged, From: m.From.Local.String(), To: m.To.Local.String(),
				Interface: m.Interface, TookMS: m.Took.Milliseconds()})
		},
		OnSuspend:     c.suspended,
		OnResume:      c.resumed,
		OnOutageLimit: func(err error) { go c.end(err) },
		Log:           c.log,
	}
}

// suspended stops outbound ESP while no path works; the event names the
// path that was lost.
func (c *conn) suspended(reason string) {
	c.dp.Suspend(c.peer)
	c.mu.Lock()
	if c.state == "disconnected" {
		c.mu.Unlock()
		return
	}
	lost := c.ifname
	c.state, c.ifname = stateSuspended, ""
	c.mu.Unlock()
	c.emit(Event{Event: EventSuspended, From: c.peer.Path().Local.String(), Interface: lost, Reason: reason})
}

// resumed follows the Mover's SetPath: traffic flows again on r.Path.
func (c *conn) resumed(r mobility.Resume) {
	c.mu.Lock()
	if c.state == "disconnected" {
		c.mu.Unlock()
		return
	}
	c.state, c.ifname = "established", r.Interface
	c.mu.Unlock()
	c.emit(Event{Event: EventResumed, To: r.Path.Local.String(), Interface: r.Interface, TookMS: r.Took.Milliseconds(),
		Reason: fmt.Sprintf("after %v without a usable path", r.Outage.Round(time.Millisecond))})
}
