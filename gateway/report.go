package gateway

import "github.com/roam-vpn/roam/report"

// The control socket's contract lives in package report, shared with the
// connections; these names keep the daemon's API as it was.
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

// Event kinds, states and health states (report lists them all).
const (
	EventConnecting      = report.EventConnecting
	EventEstablished     = report.EventEstablished
	EventPathTest        = report.EventPathTest
	EventPathChanged     = report.EventPathChanged
	EventNATChanged      = report.EventNATChanged
	EventSwitchRequested = report.EventSwitchRequested
	EventSwitchRefused   = report.EventSwitchRefused
	EventSuspended       = report.EventSuspended
	EventResumed         = report.EventResumed
	EventRekeyed         = report.EventRekeyed
	EventDisconnected    = report.EventDisconnected
	EventError           = report.EventError
	EventHealth          = report.EventHealth
	EventCaptivePortal   = report.EventCaptivePortal
	EventFailover        = report.EventFailover
	EventReauthenticated = report.EventReauthenticated
	EventSwitchSent      = report.EventSwitchSent
	EventSwitchDone      = report.EventSwitchDone
	EventSwitchFailed    = report.EventSwitchFailed

	StateConnecting   = report.StateConnecting
	StateEstablished  = report.StateEstablished
	StateReconnecting = report.StateReconnecting
	StateSuspended    = report.StateSuspended
	StateDisconnected = report.StateDisconnected

	HealthOK            = report.HealthOK
	HealthTesting       = report.HealthTesting
	HealthNoPath        = report.HealthNoPath
	HealthSuspended     = report.HealthSuspended
	HealthCaptivePortal = report.HealthCaptivePortal
)

// Why a gateway switch did not happen (report lists them).
var (
	ErrUnknownPeer         = report.ErrUnknownPeer
	ErrAmbiguousPeer       = report.ErrAmbiguousPeer
	ErrNotListenAddress    = report.ErrNotListenAddress
	ErrSwitchNotAdvertised = report.ErrSwitchNotAdvertised
	ErrSwitchRefused       = report.ErrSwitchRefused
	ErrSwitchNoResponse    = report.ErrSwitchNoResponse
)
