package gateway

import (
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/mobility"
	"github.com/roam-vpn/roam/report"
)

// gatewayHealthEvery is how often the gateway looks at its clients'
// traffic times between status requests: a client's health can change
// with time alone (ESP to it unanswered), and the tracker needs successive
// looks to know when the unanswered run began. Each look reads a few
// atomics per client.
const gatewayHealthEvery = mobility.DefaultDeadAfter / 5

// gatewayHealthInput is what a gateway knows of one client's traffic. Any
// authenticated IKE message from the client counts as inbound: on this
// side a request of the client's proves that the client reaches us, which
// is what the gateway can judge (the client judges the other direction).
func gatewayHealthInput(sa *ike.SA, peer *esp.Peer) ikeesp.HealthInput {
	in := ikeesp.HealthInput{State: report.StateEstablished}
	in.ESPSent, in.ESPRecv = ikeesp.ESPActivity(peer)
	var answered time.Time
	in.IKESent, answered = sa.Activity()
	in.IKERecv = ikeesp.Later(answered, sa.LastHeard())
	return in
}

// checkClientHealth updates every client's health. The caller holds gw.mu.
func (gw *gateway) checkClientHealth(now time.Time) {
	for sa, c := range gw.clients {
		c.health.DeadAfter, c.health.LookEvery = mobility.DefaultDeadAfter, gatewayHealthEvery
		c.health.Update(gatewayHealthInput(sa, c.peer), now)
	}
}

// clientTraffic fills a client's health, traffic times and RTT. The caller
// holds gw.mu.
func (gw *gateway) clientTraffic(st *report.Status, sa *ike.SA, c *gatewayClient, now time.Time) {
	c.health.DeadAfter, c.health.LookEvery = mobility.DefaultDeadAfter, gatewayHealthEvery
	st.Health, st.HealthReason, _, _ = c.health.Update(gatewayHealthInput(sa, c.peer), now)
	ikeesp.FillTraffic(st, c.peer, sa)
}
