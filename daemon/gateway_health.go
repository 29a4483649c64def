package daemon

import (
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/mobility"
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
func gatewayHealthInput(sa *ike.SA, peer *esp.Peer) healthInput {
	in := healthInput{state: "established"}
	in.espSent, in.espRecv = espActivity(peer)
	var answered time.Time
	in.ikeSent, answered = sa.Activity()
	in.ikeRecv = later(answered, sa.LastHeard())
	return in
}

// checkClientHealth updates every client's health. The caller holds gw.mu.
func (gw *gateway) checkClientHealth(now time.Time) {
	for sa, c := range gw.clients {
		c.health.deadAfter, c.health.lookEvery = mobility.DefaultDeadAfter, gatewayHealthEvery
		c.health.update(gatewayHealthInput(sa, c.peer), now)
	}
}

// clientTraffic fills a client's health, traffic times and RTT. The caller
// holds gw.mu.
func (gw *gateway) clientTraffic(st *Status, sa *ike.SA, c *gatewayClient, now time.Time) {
	c.health.deadAfter, c.health.lookEvery = mobility.DefaultDeadAfter, gatewayHealthEvery
	st.Health, st.HealthReason, _, _ = c.health.update(gatewayHealthInput(sa, c.peer), now)
	fillTraffic(st, c.peer, sa)
}
