package config

// GatewaySwitch are the gateway's keys for responder-initiated moves
// (SWITCH_TO_IP_ADDRESS; the client's side is in switch.go).
type GatewaySwitch struct {
	// SwitchNotify (switch_notify) is the notify type the gateway sends
	// SWITCH_TO_IP_ADDRESS as; both ends must agree on it. Default
	// DefaultSwitchNotify (41042, 0xA052).
	SwitchNotify uint16
	// SwitchRevision (switch_revision, "00" default, or "03") is the
	// draft revision whose rules our switch requests follow: under "03"
	// an answer at the old address is no refusal, and only the client's
	// UPDATE_SA_ADDRESSES at the new one completes the switch.
	SwitchRevision string
	// SwitchReturnRoutability (switch_return_routability) also runs the
	// RFC 4555 COOKIE2 check for the UPDATE_SA_ADDRESSES that follows our
	// own switch request. The draft says it is not needed (the client's
	// answer reached the new address already), so it is off by default.
	SwitchReturnRoutability bool
	// AutoSwitch (auto_switch, default true) moves switch-capable clients
	// off a listen address that goes away; off, only `roam gateway
	// switch` does (say, where addresses move under an orchestrator that
	// runs the command itself).
	AutoSwitch bool
}

type rawGatewaySwitch struct {
	SwitchNotify *int64 `toml:"switch_notify"`
	SwitchRev    string `toml:"switch_revision"`
	SwitchRR     *bool  `toml:"switch_return_routability"`
	AutoSwitch   *bool  `toml:"auto_switch"`
}

func (r rawGatewaySwitch) validate() (GatewaySwitch, error) {
	n, err := switchNotifyKey(r.SwitchNotify)
	if err != nil {
		return GatewaySwitch{}, err
	}
	rev, err := switchRevisionKey(r.SwitchRev)
	if err != nil {
		return GatewaySwitch{}, err
	}
	return GatewaySwitch{SwitchNotify: n, SwitchRevision: rev, SwitchReturnRoutability: boolOr(r.SwitchRR, false), AutoSwitch: boolOr(r.AutoSwitch, true)}, nil
}
