package tunnel

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/netmon"
)

// TestConnFollowsSwitch: an accepted switch request becomes switch-requested,
// a move to the gateway's new address from the current local address
// (path-changed naming both gateway addresses) and ESP on the new path; a
// refused one only switch-refused.
func TestConnFollowsSwitch(t *testing.T) {
	// moverRig's gateway and uplink.
	r1 := netip.MustParseAddrPort("198.51.100.1:4500")
	r2 := netip.MustParseAddr("198.51.100.2")
	wlan := netmon.Address{Addr: netip.MustParseAddr("192.168.10.2"), Bits: 24, IfIndex: 2, IfName: "wlan"}
	start := netpath.Path{Local: netip.AddrPortFrom(wlan.Addr, 4500), Remote: r1, IfIndex: wlan.IfIndex}
	moved := start
	moved.Remote = netip.AddrPortFrom(r2, r1.Port())
	tests := []struct {
		name     string
		ev       ike.SwitchRequested
		wantPath netpath.Path
		want     []report.Event
	}{
		{name: "accepted", ev: ike.SwitchRequested{From: r1.Addr(), To: r2, Accepted: true}, wantPath: moved, want: []report.Event{
			{Event: report.EventSwitchRequested, From: "198.51.100.1", To: "198.51.100.2"},
			{Event: report.EventPathTest, From: "192.168.10.2:4500", To: "198.51.100.2:4500", Interface: "wlan"},
			{Event: report.EventPathChanged, From: "192.168.10.2:4500", To: "192.168.10.2:4500", FromGateway: "198.51.100.1:4500",
				ToGateway: "198.51.100.2:4500", Interface: "wlan", Reason: "the gateway asked to switch"},
		}},
		{name: "refused", ev: ike.SwitchRequested{From: r1.Addr(), To: r2, Reason: "not announced by the gateway"}, wantPath: start, want: []report.Event{
			{Event: report.EventSwitchRefused, From: "198.51.100.1", To: "198.51.100.2", Reason: "not announced by the gateway"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				r := newMoverRig(ctx, cancel, func(r *moverRig) {
					r.c.profile = &config.Profile{Name: "corp", MOBIKE: true, Switch: true, OutageLimit: time.Minute}
					r.sa.working[r.wlan.Addr] = true
					r.addrs = []netmon.Address{r.wlan}
				})
				c := r.c
				ev := tt.ev
				c.handleChildEvent(&session{peer: c.peer, mover: r.mover}, &ev)
				synctest.Wait()
				got := r.emitted()
				for i := range got {
					got[i].TookMS = 0
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("events\n  %+v\nwant\n  %+v", got, tt.want)
				}
				if p := c.peer.Path(); p != tt.wantPath {
					t.Fatalf("ESP on %v, want %v", p, tt.wantPath)
				}
				cancel()
				synctest.Wait()
			})
		})
	}
}

func TestSwitchSettings(t *testing.T) {
	if config.DefaultSwitchNotify != uint16(ike.DefaultSwitchNotify) {
		t.Fatalf("config %d, ike %d", config.DefaultSwitchNotify, ike.DefaultSwitchNotify)
	}
	for _, tt := range []struct {
		accept string
		want   ike.SwitchPolicy
	}{{config.AcceptSwitchAnnounced, ike.SwitchAnnounced}, {config.AcceptSwitchAny, ike.SwitchAny}, {"", ike.SwitchAnnounced}} {
		if got := acceptSwitch(&config.Profile{AcceptSwitch: tt.accept}); got != tt.want {
			t.Errorf("accept_switch %q: %v, want %v", tt.accept, got, tt.want)
		}
	}
}

// TestSwitchRevisionMapping: switch_revision reaches the engine as its rules.
func TestSwitchRevisionMapping(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want ike.SwitchRevision
	}{{"00", ike.SwitchRev00}, {"03", ike.SwitchRev03}, {"", ike.SwitchRev00}} {
		if got := ikeesp.SwitchRevision(tt.key); got != tt.want {
			t.Errorf("ikeesp.SwitchRevision(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}
