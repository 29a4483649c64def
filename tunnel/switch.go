package tunnel

import (
	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/report"
)

// acceptSwitch is the profile's accept_switch as the engine's policy.
func acceptSwitch(p *config.Profile) ike.SwitchPolicy {
	if p.AcceptSwitch == config.AcceptSwitchAny {
		return ike.SwitchAny
	}
	return ike.SwitchAnnounced
}

// followSwitch acts on a gateway's SWITCH_TO_IP_ADDRESS the engine has
// answered: accepted, the SA moves to the new gateway address at once
// (mobility owns path changes; path-changed follows); refused, the engine
// checks the old path itself and only the refusal is reported.
func (c *conn) followSwitch(s *session, ev *ike.SwitchRequested) {
	if !ev.Accepted {
		c.emit(report.Event{Event: report.EventSwitchRefused, From: ev.From.String(), To: ev.To.String(), Reason: ev.Reason})
		return
	}
	c.emit(report.Event{Event: report.EventSwitchRequested, From: ev.From.String(), To: ev.To.String()})
	if s == nil || s.mover == nil {
		// The engine accepts switches only with MOBIKE, which runs a
		// mover; without one the gateway waits for an update in vain.
		c.log.Warn("switch accepted without path mobility", "to", ev.To)
		return
	}
	s.mover.SwitchTo(ev.To)
}
