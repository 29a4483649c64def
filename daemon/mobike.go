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
	mover := mobility.New(mobility.Config{
		SA:         ikeMobility{sa},
		Addresses:  mon.Addresses,
		SetPath:    func(p esp.Path) { c.dp.SetPath(c.peer, p) },
		SetCurrent: mon.SetCurrent,
		Interfaces: c.profile.Interfaces,
		Activity:   c.peer.Activity,
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
		Log: c.log,
	}, sa.Path(), c.ifname)
	go func() {
		if err := mon.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("interface monitor stopped", "err", err)
		}
	}()
	go mover.Run(ctx, mon.Events())
	return nil
}
