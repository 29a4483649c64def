package config

import "fmt"

// Responder-initiated switches (draft-smyslov-ipsecme-ikev2-r-mobike):
// with switch = true (the default, MOBIKE only) the client tells the
// gateway it may be asked to move to another gateway address; it accepts
// addresses the gateway announced, or with accept_switch = "any" every
// routable one. The draft has no IANA number yet, so the notify type is a
// private-use one both ends must agree on.

// Values of accept_switch.
const (
	AcceptSwitchAnnounced = "announced"
	AcceptSwitchAny       = "any"
)

// Values of switch_revision: the draft revision whose rules switches
// follow. "00" covers drafts -00 to -02 (an accepted switch is answered at
// the new address), "03" drafts -03 to -09 (answered at the old one; the
// update opens the new path). docs/r-mobike.md has the differences.
const (
	SwitchRevision00 = "00"
	SwitchRevision03 = "03"
)

// switchRevisionKey checks a switch_revision value ("": the default).
func switchRevisionKey(v string) (string, error) {
	switch v {
	case "":
		return SwitchRevision00, nil
	case SwitchRevision00, SwitchRevision03:
		return v, nil
	}
	return "", fmt.Errorf("switch_revision: %q is not %q (drafts -00 to -02) or %q (drafts -03 to -09)", v, SwitchRevision00, SwitchRevision03)
}

// DefaultSwitchNotify is the SWITCH_TO_IP_ADDRESS notify type; it equals
// ike.DefaultSwitchNotify (config does not import the engine).
const DefaultSwitchNotify uint16 = 41042

// The private-use range of status notify types (RFC 7296 3.10.1).
const (
	minSwitchNotify = 40960
	maxSwitchNotify = 65535
)

func (r rawProfile) switchKeys(p *Profile) error {
	p.Switch = boolOr(r.Switch, true)
	switch r.AcceptSwitch {
	case "":
		p.AcceptSwitch = AcceptSwitchAnnounced
	case AcceptSwitchAnnounced, AcceptSwitchAny:
		p.AcceptSwitch = r.AcceptSwitch
	default:
		return fmt.Errorf("accept_switch: %q is not %q or %q", r.AcceptSwitch, AcceptSwitchAnnounced, AcceptSwitchAny)
	}
	n, err := switchNotifyKey(r.SwitchNotify)
	if err != nil {
		return err
	}
	p.SwitchNotify = n
	if p.SwitchRevision, err = switchRevisionKey(r.SwitchRev); err != nil {
		return err
	}
	return nil
}

// switchNotifyKey checks a switch_notify value (nil: the default).
func switchNotifyKey(v *int64) (uint16, error) {
	if v == nil {
		return DefaultSwitchNotify, nil
	}
	if *v < minSwitchNotify || *v > maxSwitchNotify {
		return 0, fmt.Errorf("switch_notify: %d is outside the private-use range %d-%d", *v, minSwitchNotify, maxSwitchNotify)
	}
	return uint16(*v), nil
}
