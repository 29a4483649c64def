package daemon

import "github.com/roam-vpn/roam/report"

// The control socket's contract lives in package report, shared with the
// connections; these types keep their daemon names. The event kinds,
// states, health states and switch errors are used as report's own
// (report.EventError), so that a new one is written in one place.
type (
	Tunnel          = report.Tunnel
	DialFunc        = report.DialFunc
	GatewayHandle   = report.GatewayHandle
	GatewayFunc     = report.GatewayFunc
	GatewaySwitcher = report.GatewaySwitcher
	Status          = report.Status
	State           = report.State
	ChildStatus     = report.ChildStatus
	Drops           = report.Drops
	DropCount       = report.DropCount
	Event           = report.Event
	SwitchResult    = report.SwitchResult
	ConnectBudget   = report.ConnectBudget
)
