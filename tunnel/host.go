package tunnel

import (
	"context"
	"net/netip"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/tun"
)

// Host is what a tunnel takes from the machine it runs on: its TUN device,
// its UDP sockets, the kernel's route lookup and the interface monitor. A
// nil field means the machine's own (root: a real TUN device, marked
// sockets, netlink); tests hand in-memory ones (internal/memrig), so the
// tunnel runs without root. What a profile may add beyond these still
// uses the machine itself: lockdown's nftables table, the captive-portal
// probe and the TCP/TLS stream transport.
type Host struct {
	// CreateTUN makes the tunnel's device of that name and inner MTU;
	// journal is to be called with the device's state-to-be before each
	// change to the machine's rules and routes (crash undo, tun.State).
	CreateTUN func(name string, mtu int, journal func(tun.State) error) (Device, error)
	// ListenUDP opens a UDP endpoint on local (port 0: any) whose
	// packets carry mark, so the tunnel's routes do not capture them.
	ListenUDP func(local netip.AddrPort, mark uint32) (esp.Conn, error)
	// RouteTo is the route the kernel would take to dst for packets with
	// mark: the uplink, its source address and MTU.
	RouteTo func(dst netip.Addr, mark uint32) (netmon.Route, error)
	// NewMonitor makes an interface monitor that never counts the ignored
	// interfaces (the tunnel's own device) as uplinks.
	NewMonitor func(ignore []string) (Monitor, error)
}

// Device is the tunnel's TUN device: its packets (Dev, for the dataplane)
// and its settings.
type Device interface {
	Dev() wgtun.Device
	DeviceSettings
}

// DeviceSettings is what a connection configures on its TUN device
// (*tun.Device).
type DeviceSettings interface {
	Name() string
	AddAddress(netip.Prefix) error
	RemoveAddress(netip.Prefix) error
	AddRoutes(ps []netip.Prefix, mark uint32, table int) error
	SetDNS(tun.DNSOptions) error
	DNSMethod() string
	// StepAside takes the full-tunnel routes out of the way or back
	// (a captive portal's login, captive.go).
	StepAside(on bool) error
	Close() error
}

// Monitor is what a tunnel asks of its interface monitor (*netmon.Monitor).
type Monitor interface {
	// Usable lists the usable addresses now, before Run (the IKE_AUTH
	// announcement of our addresses).
	Usable() ([]netmon.Address, error)
	// Addresses are the usable addresses as of the last Snapshot event.
	Addresses() []netmon.Address
	// Run watches until ctx is done; Events delivers what it saw.
	Run(ctx context.Context) error
	Events() <-chan netmon.Event
	// FollowPath hears of the current path, whose loss is reported at
	// once.
	netpath.Follower
}

// withDefaults fills the fields left nil with the machine's own.
func (h Host) withDefaults() Host {
	if h.CreateTUN == nil {
		h.CreateTUN = createTUN
	}
	if h.ListenUDP == nil {
		h.ListenUDP = listenUDP
	}
	if h.RouteTo == nil {
		h.RouteTo = netmon.RouteTo
	}
	if h.NewMonitor == nil {
		h.NewMonitor = newMonitor
	}
	return h
}

func createTUN(name string, mtu int, journal func(tun.State) error) (Device, error) {
	dev, err := tun.Create(name, mtu)
	if err != nil {
		return nil, err
	}
	dev.SetJournal(journal)
	return dev, nil
}

func listenUDP(local netip.AddrPort, mark uint32) (esp.Conn, error) {
	s, err := esp.ListenUDP(local, mark)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return s, nil
}

func newMonitor(ignore []string) (Monitor, error) {
	m, err := netmon.New(netmon.Options{Ignore: ignore})
	if err != nil {
		return nil, err
	}
	return m, nil
}
