package gateway

import (
	"fmt"

	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/report"
)

// reauthEvent turns the established event of a client's new IKE SA into a
// reauthenticated one when the client already has an SA and did not send
// INITIAL_CONTACT (which would have ended the old one): that is a
// make-before-break reauthentication (RFC 4478), and the old SA's end,
// with the client's DELETE that follows, is no disconnect.
func (gw *gateway) reauthEvent(est *ike.Established, ev report.Event) report.Event {
	if est.InitialContact {
		return ev
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for sa, c := range gw.clients {
		if sa == est.SA || c.replaced || c.est.PeerID != est.PeerID {
			continue
		}
		c.replaced = true
		ev.Event = report.EventReauthenticated
		ev.Reason = fmt.Sprintf("IKE SA %016x_i replaces %016x_i", est.SPIi, c.est.SPIi)
		break
	}
	return ev
}
