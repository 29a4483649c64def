package config

import (
	"fmt"
	"net/url"
)

// Captive portal handling (captive_portal = ...; docs/roaming.md,
// "Captive portals").
const (
	// CaptiveReport (the default) reports a portal in events and status.
	CaptiveReport = "report"
	// CaptiveStepAside also takes the full-tunnel routes out of the way
	// and lets the portal's HTTP and HTTPS through lockdown, so that the
	// user can log in in a browser.
	CaptiveStepAside = "step-aside"
)

// DefaultCaptiveProbe is the URL probed when IKE gets no answer: the
// check Android and ChromeOS make, answered with 204 No Content by the
// open Internet and with a redirect or a page of their own by portals.
const DefaultCaptiveProbe = "http://connectivitycheck.gstatic.com/generate_204"

// Captive is what a profile does about captive portals.
type Captive struct {
	// Probe (captive_probe) is the plain-HTTP URL fetched over the uplink
	// when IKE gets no answer; it must answer 204 No Content when the
	// network is open. "" turns detection off.
	Probe string
	// Mode (captive_portal) is CaptiveReport or CaptiveStepAside.
	Mode string
}

type rawCaptive struct {
	CaptiveProbe  *string `toml:"captive_probe"`
	CaptivePortal string  `toml:"captive_portal"`
}

func (r rawCaptive) validate() (Captive, error) {
	c := Captive{Probe: DefaultCaptiveProbe, Mode: r.CaptivePortal}
	switch c.Mode {
	case "":
		c.Mode = CaptiveReport
	case CaptiveReport, CaptiveStepAside:
	default:
		return Captive{}, fmt.Errorf("captive_portal: %q is not %q or %q", r.CaptivePortal, CaptiveReport, CaptiveStepAside)
	}
	if r.CaptiveProbe == nil {
		return c, nil
	}
	c.Probe = *r.CaptiveProbe
	if c.Probe == "" {
		if c.Mode == CaptiveStepAside {
			return Captive{}, fmt.Errorf("captive_portal: %q needs a captive_probe", CaptiveStepAside)
		}
		return c, nil
	}
	u, err := url.Parse(c.Probe)
	switch {
	case err != nil:
		return Captive{}, fmt.Errorf("captive_probe: %q is not a URL", c.Probe)
	case u.Scheme != "http":
		// A portal can only intercept what it can read.
		return Captive{}, fmt.Errorf("captive_probe: %q is not a plain http:// URL", c.Probe)
	case u.Hostname() == "":
		return Captive{}, fmt.Errorf("captive_probe: %q names no host", c.Probe)
	case u.User != nil:
		return Captive{}, fmt.Errorf("captive_probe: %q carries a user name", c.Probe)
	}
	return c, nil
}
