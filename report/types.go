// Package report is the contract between roam's process (package daemon)
// and the connections it runs (packages tunnel and gateway): the handles
// the process holds them by (Tunnel, GatewayHandle), what they report
// (Status and Event, the JSON of `roam status` and `roam events`, with
// their states, event kinds and health states), and the context values the
// process hands them. It never runs a connection or touches the network.
package report

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
)

// Tunnel is one live connection as the manager sees it.
type Tunnel interface {
	Status() Status
	// Close tears the tunnel down (IKE DELETE, TUN removal); Done is
	// closed once it is gone.
	Close(ctx context.Context) error
	// Done is closed when the tunnel has ended, for whatever reason.
	Done() <-chan struct{}
	// Err is why the tunnel ended; nil after a requested Close.
	Err() error
}

// DialFunc connects a profile. It returns once the tunnel carries traffic,
// or with an error whose text is the one-line reason for the user. ctx only
// bounds the wait for establishment; emit may be called from any goroutine
// for the tunnel's whole life.
type DialFunc func(ctx context.Context, p *config.Profile, emit func(Event)) (Tunnel, error)

// GatewayHandle is a running responder (`roam gateway`).
type GatewayHandle interface {
	// Status lists the connected clients, one entry per IKE SA.
	Status() []Status
	// Wait blocks until the gateway has stopped and released everything it
	// held. It returns nil when it stopped because its context ended, or
	// the error that stopped it.
	Wait() error
}

// GatewayFunc starts a responder for g. It returns once the gateway listens
// (or with the reason it cannot), and runs until ctx ends.
type GatewayFunc func(ctx context.Context, g *config.Gateway, emit func(Event)) (GatewayHandle, error)

// Status is one connection in `roam status --json`.
type Status struct {
	Name      string `json:"name"`
	State     State  `json:"state"`
	Gateway   string `json:"gateway"`
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	Transport string `json:"transport,omitempty"` // udp, tcp or tls (docs/transport.md)
	Interface string `json:"interface"`
	NAT       bool   `json:"nat"`
	VirtualIP string `json:"virtual_ip"`
	MOBIKE    bool   `json:"mobike"`
	IKESPIi   string `json:"ike_spi_i"` // hex, 16 digits
	IKESPIr   string `json:"ike_spi_r"`
	// Proposal is the IKE SA's negotiated proposal in strongSwan's
	// spelling, ke1_mlkem768 and the like included (docs/pq.md).
	Proposal      string        `json:"proposal,omitempty"`
	Children      []ChildStatus `json:"children"`
	PathChanges   int           `json:"path_changes"`
	PeerAddresses []string      `json:"peer_addresses,omitempty"` // gateway addresses a move may use (MOBIKE), current first
	EstablishedAt time.Time     `json:"established_at"`
	Drops         *Drops        `json:"drops"`
	// ReconnectAttempt and LastError are set while the state is
	// "reconnecting": the attempt under way (or waited for) and why the
	// previous SA or attempt failed.
	ReconnectAttempt int    `json:"reconnect_attempt,omitempty"`
	LastError        string `json:"last_error,omitempty"`
	// Reauthentications counts the IKE SAs that replaced the previous one
	// after a new authentication (RFC 4478, reauth_time); NextReauth is
	// when the next is due, when one is.
	Reauthentications int        `json:"reauthentications,omitempty"`
	NextReauth        *time.Time `json:"next_reauth,omitempty"`
	// PathMTU is the largest inner packet the current path carries
	// without outer fragments (0: unknown); ICMPTooBig and MSSClamped
	// count what the dataplane did to hold traffic to it (docs/roaming.md, Path MTU).
	PathMTU    int    `json:"path_mtu,omitempty"`
	ICMPTooBig uint64 `json:"icmp_too_big,omitempty"`
	MSSClamped uint64 `json:"mss_clamped,omitempty"`
	// Health says whether traffic really flows (ok, testing, no-path,
	// suspended; docs/roaming.md) and HealthReason why; a gateway's
	// clients are ok or testing, judged the same way from the gateway's
	// side (gateway_health.go). The times are the last ESP packet and
	// authenticated IKE message from the other end and the last ESP
	// packet to it (absent: none yet); RTTMS is the current path's
	// smoothed round-trip time from IKE exchanges (0: not measured yet),
	// RTTVarMS its variation.
	Health          string     `json:"health,omitempty"`
	HealthReason    string     `json:"health_reason,omitempty"`
	LastInboundESP  *time.Time `json:"last_inbound_esp,omitempty"`
	LastInboundIKE  *time.Time `json:"last_inbound_ike,omitempty"`
	LastOutboundESP *time.Time `json:"last_outbound_esp,omitempty"`
	RTTMS           float64    `json:"rtt_ms,omitempty"`
	RTTVarMS        float64    `json:"rtt_var_ms,omitempty"`
	RTTSamples      int        `json:"rtt_samples,omitempty"`
	// StreamsGarbage and StreamsRefused (a gateway's clients): TCP/TLS
	// streams closed for bytes that are no RFC 9329 stream, and refused
	// for their source's stream limit, gateway-wide.
	StreamsGarbage uint64 `json:"streams_garbage,omitempty"`
	StreamsRefused uint64 `json:"streams_refused,omitempty"`
	// Lockdown: the profile's kill switch is in force; LockdownGateways
	// are the gateway addresses it lets IKE and ESP out to.
	Lockdown         bool     `json:"lockdown,omitempty"`
	LockdownGateways []string `json:"lockdown_gateways,omitempty"`
	// DNS as applied: the gateway's servers, the routing domains (the
	// profile's and the gateway's) and how ("resolved", "resolvconf",
	// "file"); empty when none were applied.
	DNSServers []string `json:"dns_servers,omitempty"`
	DNSDomains []string `json:"dns_domains,omitempty"`
	DNSMethod  string   `json:"dns_method,omitempty"`
	// ConnectBudget is the first connect's time per step (tunnel/budget.go);
	// absent for a gateway's clients.
	ConnectBudget *ConnectBudget `json:"connect_budget,omitempty"`
	// CaptivePortal is the login page of a captive portal that holds the
	// uplink (IKE gets no answer, the HTTP probe was redirected), absent
	// otherwise; CaptiveStepAside: the full-tunnel routes are stepped
	// aside (and lockdown opened to the portal) for the login.
	CaptivePortal    string `json:"captive_portal,omitempty"`
	CaptiveStepAside bool   `json:"captive_step_aside,omitempty"`
}

// ChildStatus is one Child SA of a connection.
type ChildStatus struct {
	SPIIn      string `json:"spi_in"` // hex, 8 digits
	SPIOut     string `json:"spi_out"`
	BytesIn    uint64 `json:"bytes_in"`
	BytesOut   uint64 `json:"bytes_out"`
	PacketsIn  uint64 `json:"packets_in"`
	PacketsOut uint64 `json:"packets_out"`
	Proposal   string `json:"proposal"`
	// RemoteTS and LocalTS are the Child SA's traffic selectors as
	// prefixes: the peer's side and ours.
	RemoteTS []string `json:"remote_ts,omitempty"`
	LocalTS  []string `json:"local_ts,omitempty"`
}

// Drops counts packets the dataplane discarded, one key per reason (the
// keys are esp.DropStats' field names in snake_case; docs/dataplane.md lists them).
type Drops struct {
	Malformed  uint64 `json:"malformed"`
	UnknownSPI uint64 `json:"unknown_spi"`
	Replayed   uint64 `json:"replayed"`
	BadICV     uint64 `json:"bad_icv"`
	// NoPath: outbound while no path works (the connection suspended).
	NoPath uint64 `json:"no_path"`
	// TooBig: outbound packets larger than the path MTU that must not be
	// fragmented, answered with ICMP instead.
	TooBig     uint64 `json:"too_big"`
	NoRoute    uint64 `json:"no_route"`
	SendErrors uint64 `json:"send_errors"`
	// OutsideSelectors: inbound packets from or to an address the Child
	// SA was not negotiated for (RFC 4301 5.2).
	OutsideSelectors uint64 `json:"outside_selectors"`
	// SeqExhausted: outbound on an SA whose sequence numbers ran out.
	SeqExhausted uint64 `json:"seq_exhausted"`
	// SocketOverflow: datagrams the kernel dropped on a full socket
	// receive buffer before roam read them.
	SocketOverflow uint64 `json:"socket_overflow"`
	// TUNWrite: failed writes of decrypted packets to the TUN device.
	TUNWrite uint64 `json:"tun_write"`
	// Truncated: datagrams larger than the receive buffer.
	Truncated uint64 `json:"truncated"`
	// StreamFull: outbound a TCP stream refused (down, or stalled).
	StreamFull uint64 `json:"stream_full"`
	// TooOld: ESP left of the replay window (more than its size late);
	// Replayed counts the ones seen already.
	TooOld uint64 `json:"too_old"`
	// Stale: ESP dropped unopened after waiting in a receive queue longer
	// than the dataplane's bound (100 ms), so IKE behind it is answered in
	// time.
	Stale uint64 `json:"stale"`
}

// DropsFrom maps the dataplane's counters to the status object; a new
// esp.DropStats reason gets its field in Drops and its line here
// (TestDropsFromEveryReason fails until it has both).
func DropsFrom(d esp.DropStats) *Drops {
	return &Drops{
		Malformed: d.Malformed, UnknownSPI: d.UnknownSPI, Replayed: d.Replayed, BadICV: d.BadICV,
		NoPath: d.NoPath, TooBig: d.TooBig, NoRoute: d.NoRoute, SendErrors: d.SendErrors,
		OutsideSelectors: d.OutsideSelectors, SeqExhausted: d.SeqExhausted,
		SocketOverflow: d.SocketOverflow, TUNWrite: d.TUNWrite, Truncated: d.Truncated,
		StreamFull: d.StreamFull, TooOld: d.TooOld, Stale: d.Stale,
	}
}

// DropCount is one reason of Drops.
type DropCount struct {
	Reason string // the status key
	Count  uint64
}

// Nonzero lists the reasons that counted a drop, in Drops' order.
func (d Drops) Nonzero() []DropCount {
	var out []DropCount
	v := reflect.ValueOf(d)
	for i := 0; i < v.NumField(); i++ {
		if n := v.Field(i).Uint(); n > 0 {
			out = append(out, DropCount{Reason: v.Type().Field(i).Tag.Get("json"), Count: n})
		}
	}
	return out
}

// MarshalJSON keeps the documented shape stable for scripts: children is
// always an array, drops always an object, and established_at is null until
// the tunnel is up rather than Go's zero time.
func (s Status) MarshalJSON() ([]byte, error) {
	type plain Status
	out := struct {
		plain
		Children      []ChildStatus `json:"children"`
		EstablishedAt *time.Time    `json:"established_at"`
		Drops         Drops         `json:"drops"`
	}{plain: plain(s), Children: s.Children}
	if out.Children == nil {
		out.Children = []ChildStatus{}
	}
	if !s.EstablishedAt.IsZero() {
		at := s.EstablishedAt
		out.EstablishedAt = &at
	}
	if s.Drops != nil {
		out.Drops = *s.Drops
	}
	return json.Marshal(out)
}

// Event kinds, as docs/reference.md lists them.
const (
	EventConnecting      = "connecting"
	EventEstablished     = "established"
	EventPathTest        = "path-test"
	EventPathChanged     = "path-changed"
	EventNATChanged      = "nat-changed"
	EventSwitchRequested = "switch-requested"
	EventSwitchRefused   = "switch-refused"
	EventSuspended       = "suspended"
	EventResumed         = "resumed"
	EventRekeyed         = "rekeyed"
	EventDisconnected    = "disconnected"
	EventError           = "error"
	// EventHealth (health.go): Status.Health changed, from -> to.
)

// Event is one line of `roam events --json`. The manager fills Time (and
// Profile, when the emitter left it empty).
type Event struct {
	Time      time.Time `json:"time"`
	Profile   string    `json:"profile"`
	Event     string    `json:"event"`
	From      string    `json:"from,omitempty"`
	To        string    `json:"to,omitempty"`
	Interface string    `json:"interface,omitempty"`
	TookMS    int64     `json:"took_ms,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	VirtualIP string    `json:"virtual_ip,omitempty"`
	Proposal  string    `json:"proposal,omitempty"`
	// Transport (established): udp, tcp or tls.
	Transport string `json:"transport,omitempty"`

	// FromGateway and ToGateway are the gateway's ends of a path change
	// (path-changed): a switch moves them while From and To stay.
	FromGateway string `json:"from_gateway,omitempty"`
	ToGateway   string `json:"to_gateway,omitempty"`
}

// eventTimeLayout is RFC 3339 with all nine fractional digits, so lines
// sort and align as text.
const eventTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// MarshalJSON writes time with nanoseconds (RFC3339Nano would trim zeros).
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		plain
		Time string `json:"time"`
	}{plain(e), e.Time.Format(eventTimeLayout)})
}

// ConnectBudget is a connect's time per step, in milliseconds, as status
// shows it (`connect_budget`). The daemon fills the steps of its dial; the
// CLI adds its own two figures to what `roam connect --json` prints.
type ConnectBudget struct {
	ResolveMS     float64 `json:"resolve_ms"`      // the gateway's name
	RouteLookupMS float64 `json:"route_lookup_ms"` // the kernel's route to it
	CredentialsMS float64 `json:"credentials_ms"`  // keys and certificates read
	LockdownMS    float64 `json:"lockdown_ms"`     // lockdown rules, when configured
	// TUNMS: creating the TUN device. It runs beside IKE (from the first
	// IKE message sent), so it is not part of TotalMS's sum; TUNWaitMS is
	// how long install still waited for it after IKE.
	TUNMS     float64 `json:"tun_ms"`
	TUNWaitMS float64 `json:"tun_wait_ms"`
	SocketsMS float64 `json:"sockets_ms"` // the UDP sockets opened
	IKEMS     float64 `json:"ike_ms"`     // IKE_SA_INIT and IKE_AUTH
	InstallMS float64 `json:"install_ms"` // Child SAs, inner addresses, routes, DNS
	TotalMS   float64 `json:"total_ms"`   // the daemon's dial: the sum of the steps but tun_ms
	// DaemonStartMS: from starting `roam daemon` to its first answer on
	// the control socket; absent when a daemon was running.
	DaemonStartMS float64 `json:"daemon_start_ms,omitempty"`
	// CommandMS: from the start of `roam connect` to the daemon's reply.
	CommandMS float64 `json:"command_ms,omitempty"`
}
