package tunnel

import "github.com/roam-vpn/roam/ike"

// advanceSeq skips outbound ESP sequence numbers when an HA gateway's new
// node asks (RFC 6311 IPSEC_REPLAY_COUNTER_SYNC): the failed node may have
// received packets the standby never heard of, and its replay window must
// not refuse what we send next. It runs on the SA's goroutine.
func (c *conn) advanceSeq(spiOut uint32, delta uint64) {
	if c.dp != nil {
		c.dp.AdvanceSeq(spiOut, delta)
	}
}

// followSync acts on an HA takeover (RFC 6311 Message ID sync): when it
// carried SWITCH_TO_IP_ADDRESS and the engine answered at the new node's
// address, the SA moves there at once, as for a plain switch request.
func (c *conn) followSync(s *session, ev *ike.MessageIDSynced) {
	if !ev.SwitchTo.IsValid() {
		c.log.Info("Message IDs synchronised by the gateway", "next_request", ev.NextRequest, "replay_delta", ev.ReplayDelta)
		return
	}
	c.followSwitch(s, &ike.SwitchRequested{SA: ev.SA, From: ev.SA.Path().Remote.Addr(), To: ev.SwitchTo, Accepted: ev.Switched,
		Reason: "not an address the gateway announced"})
}
