package config

import (
	"fmt"

	"github.com/roam-vpn/roam/ike/wire"
)

// The SWITCH_TO_IP_ADDRESS notify (draft-smyslov-ipsecme-ikev2-r-mobike)
// has no IANA number yet, so it lives in the private-use status range.
// DefaultSwitchNotify is ike.DefaultSwitchNotify (0xA052): above
// strongSwan's own private notifies (40961-40969, 40501).
const (
	DefaultSwitchNotify wire.NotifyType = 41042
	minSwitchNotify                     = 40960
	maxSwitchNotify                     = 65535
)

// GatewaySwitch are the gateway's keys for responder-initiated moves.
type GatewaySwitch struct {
	// SwitchNotify (switch_notify) is the notify type the gateway sends
	// SWITCH_TO_IP_ADDRESS as; both ends must agree on it.
	SwitchNotify wire.NotifyType
	// SwitchReturnRoutability (switch_return_routability) also runs the
	// RFC 4555 COOKIE2 check for the UPDATE_SA_ADDRESSES that follows our
	// own switch request. The draft says it is not needed (the client's
	// answer reached the new address already), so it is off by default.
	SwitchReturnRoutability bool
}

type rawGatewaySwitch struct {
	SwitchNotify *int64 `toml:"switch_notify"`
	SwitchRR     *bool  `toml:"switch_return_routability"`
}

func (r rawGatewaySwitch) validate() (GatewaySwitch, error) {
	s := GatewaySwitch{SwitchNotify: DefaultSwitchNotify, SwitchReturnRoutability: boolOr(r.SwitchRR, false)}
	if r.SwitchNotify != nil {
		n := *r.SwitchNotify
		if n < minSwitchNotify || n > maxSwitchNotify {
			return s, fmt.Errorf("switch_notify: %d is outside the private-use range %d-%d", n, minSwitchNotify, maxSwitchNotify)
		}
		s.SwitchNotify = wire.NotifyType(n)
	}
	return s, nil
}
