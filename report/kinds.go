package report

import (
	"context"
	"errors"
	"net/netip"
)

// Health states of a client connection (Status.Health, the health event;
// docs/roaming.md, "Is traffic flowing?"). They say whether traffic really flows,
// judged from what came back, not from the state of the SAs.
const (
	// HealthOK: established, no path test in flight, and nothing we sent
	// (ESP, or an IKE request) has gone unanswered for dead_after: an
	// inbound ESP packet or an answer to an IKE request followed it. An idle
	// tunnel stays ok; its liveness checks (DPD) are IKE requests, so an
	// unanswered one turns it to testing.
	HealthOK = "ok"
	// HealthTesting: whether traffic flows is open: a path test (MOBIKE
	// UPDATE_SA_ADDRESSES) that doubts the current path is in flight, traffic went out for dead_after
	// with nothing back, or an IKE SA is being negotiated (connecting,
	// reconnecting).
	HealthTesting = "testing"
	// HealthNoPath: nothing can flow: no usable local address, or no
	// candidate path answered a test. Outbound packets are dropped.
	HealthNoPath = "no-path"
	// HealthSuspended: the system slept or the daemon was stopped for
	// longer than a NAT mapping lives (netmon.Wake), and the path has not
	// yet been found dead since the wake-up; outbound waits for a path test.
	HealthSuspended = "suspended"
)

// EventHealth reports a change of Status.Health: from and to are states,
// reason why the new one holds.
const EventHealth = "health"

// EventCaptivePortal reports a captive portal on the uplink: IKE gets no
// answer and the HTTP probe (captive_probe) was redirected or answered by
// someone else. To is the portal's login page, Interface the uplink,
// Reason what the probe got and whether the routes stepped aside.
const EventCaptivePortal = "captive-portal"

// HealthCaptivePortal: nothing flows because the uplink is held by a
// captive portal (the probe says so); IKE is retried meanwhile.
const HealthCaptivePortal = "captive-portal"

// EventFailover: a standby took over from a silent active node; reason
// says how many clients moved, took_ms how long from declaring the active
// node dead until the last client answered.
const EventFailover = "failover"

// EventReauthenticated: a new IKE SA replaced the old one after a new
// authentication; Reason says why and whether the inner address changed.
const EventReauthenticated = "reauthenticated"

// StateReconnecting is the status state while a lost IKE SA is being
// replaced: the TUN device, its addresses and routes stay, packets wait
// (are dropped) until the new SA's Child SAs are installed.
const StateReconnecting State = "reconnecting"

// StateSuspended is the status state while no path works (every uplink
// down, or the system asleep): the IKE and Child SAs are kept, outbound
// packets are dropped, and the connection resumes when a path answers.
const StateSuspended State = "suspended"

// Gateway events of responder-initiated moves (SWITCH_TO_IP_ADDRESS).
const (
	EventSwitchSent   = "switch-sent"   // the request left from the old address
	EventSwitchDone   = "switch-done"   // the client's UPDATE_SA_ADDRESSES arrived at the new one; took_ms
	EventSwitchFailed = "switch-failed" // refused, unanswered, or impossible; reason
)

// SwitchResult is what `roam gateway switch` prints.
type SwitchResult struct {
	Peer   string `json:"peer"`   // the client's identity
	Remote string `json:"remote"` // its address:port, as the gateway sees it
	From   string `json:"from"`   // the gateway address the SA used
	To     string `json:"to"`     // and uses now
	TookMS int64  `json:"took_ms"`
}

// GatewaySwitcher is a GatewayHandle that can ask a client to move its SAs
// to another of the gateway's addresses. peer names the client by
// identity, address or address:port; the call returns once the client's
// SAs use to, or with one of the Err* reasons below.
type GatewaySwitcher interface {
	Switch(ctx context.Context, peer string, to netip.Addr) (SwitchResult, error)
}

// Why a switch did not happen. The gateway wraps them with the client and
// address concerned, so the CLI prints one line naming the problem.
var (
	ErrUnknownPeer         = errors.New("no such client")
	ErrAmbiguousPeer       = errors.New("more than one client matches")
	ErrNotListenAddress    = errors.New("not one of the gateway's listen addresses")
	ErrSwitchNotAdvertised = errors.New("the client did not advertise the switch extension (MOBIKE_SUPPORTED without 'R')")
	ErrSwitchRefused       = errors.New("the client refused the switch")
	ErrSwitchNoResponse    = errors.New("no response from the client")
)

// State is a connection's state in Status (the JSON's "state").
type State string

// States a connection passes through besides reconnecting and suspended.
const (
	StateConnecting   State = "connecting"
	StateEstablished  State = "established"
	StateDisconnected State = "disconnected"
)

// CaptiveReason is the health reason while a portal holds the uplink.
func CaptiveReason(location string) string {
	return "captive portal at " + location + ": log in there; IKE is retried meanwhile"
}
