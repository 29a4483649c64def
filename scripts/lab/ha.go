package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Gateway2 is the second gateway node of an HA lab (Options.HA): the
// standby of an active/standby pair whose active node is Gateway.
//
//	inet ─to-gw0── gw  eth0 203.0.113.10 ─┐ lan 10.99.0.1 ─┐
//	                   ha 10.98.0.1       │                ├─ br0 host 10.99.0.10 ("corp")
//	                   ha 10.98.0.2       │                │
//	inet ─to-gw2── gw2 eth0 203.0.113.42 ─┘ lan 10.99.0.2 ─┘
//
// The nodes replicate over their own link (ha). Both reach the corp LAN;
// the host's route to the client pool points at the active node, and
// CorpRouteVia moves it: what a cluster's routing (a routing protocol, a
// VRRP address) does when the standby takes over.
const Gateway2 = "gw2"

// Addresses of the HA part.
var (
	Gateway2Addr = netip.MustParsePrefix("203.0.113.42/28") // gw2 eth0, the standby's public address
	InetGW3      = netip.MustParsePrefix("203.0.113.33/28")
	HALinkGW     = netip.MustParsePrefix("10.98.0.1/30") // gw's replication address
	HALinkGW2    = netip.MustParsePrefix("10.98.0.2/30")
	Gateway2LAN  = netip.MustParsePrefix("10.99.0.2/24")
)

// HAPort is the replication port both nodes listen on.
const HAPort = 4510

func (l *Lab) buildHA() error {
	steps := [][]string{
		l.veth(Gateway2, "eth0", Inet, "to-gw2"),
		l.veth(Gateway, "ha", Gateway2, "ha"),
		l.veth(Gateway2, "lan", Host, "eth1"),
		{Gateway2, "ip", "addr", "add", Gateway2Addr.String(), "dev", "eth0"},
		{Gateway2, "ip", "addr", "add", HALinkGW2.String(), "dev", "ha"},
		{Gateway2, "ip", "addr", "add", Gateway2LAN.String(), "dev", "lan"},
		{Gateway, "ip", "addr", "add", HALinkGW.String(), "dev", "ha"},
		{Inet, "ip", "addr", "add", InetGW3.String(), "dev", "to-gw2"},
		{Gateway2, "ip", "link", "set", "eth0", "up"},
		{Gateway2, "ip", "link", "set", "ha", "up"},
		{Gateway2, "ip", "link", "set", "lan", "up"},
		{Gateway, "ip", "link", "set", "ha", "up"},
		{Inet, "ip", "link", "set", "to-gw2", "up"},
		{Gateway2, "ip", "route", "add", "default", "via", InetGW3.Addr().String()},
		// One corp LAN behind both nodes.
		{Host, "ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0"},
		{Host, "ip", "link", "set", "eth0", "master", "br0"},
		{Host, "ip", "link", "set", "eth1", "master", "br0"},
		{Host, "ip", "addr", "del", HostAddr.String(), "dev", "eth0"},
		{Host, "ip", "addr", "add", HostAddr.String(), "dev", "br0"},
		{Host, "ip", "link", "set", "eth1", "up"},
		{Host, "ip", "link", "set", "br0", "up"},
		{Host, "ip", "route", "replace", "default", "via", GatewayLAN.Addr().String()},
		// The standby sends its takeover request from the failed node's
		// address (a non-local source): nothing on the way may filter it
		// by reverse path. sysctls() set rp_filter 0 in every namespace;
		// these make the two hops it crosses explicit.
		{Gateway2, "sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=0"},
		{Inet, "sysctl", "-qw", "net.ipv4.conf.to-gw2.rp_filter=0"},
	}
	return l.runQuiet(steps)
}

// CorpRouteVia points the corp host's route to the client pool at a
// gateway node (Gateway or Gateway2).
func (l *Lab) CorpRouteVia(node string) error {
	via := GatewayLAN.Addr()
	if node == Gateway2 {
		via = Gateway2LAN.Addr()
	}
	return l.Exec(Host, "ip", "route", "replace", VirtualIPPool.String(), "via", via.String())
}

// RoamHA is the [gateway.ha] table of one node's gateway file.
type RoamHA struct {
	Role      string // active | standby
	Listen    netip.AddrPort
	Peer      netip.AddrPort
	Key       string // the key file's contents
	Takeover  netip.Addr
	DeadAfter time.Duration // 0: roam's default
}

// HAPair returns the [gateway.ha] tables of the lab's two nodes: gw active,
// gw2 standby, one fresh key.
func HAPair(key string, deadAfter time.Duration) (active, standby *RoamHA) {
	a := netip.AddrPortFrom(HALinkGW.Addr(), HAPort)
	b := netip.AddrPortFrom(HALinkGW2.Addr(), HAPort)
	return &RoamHA{Role: "active", Listen: a, Peer: b, Key: key, Takeover: Gateway2Addr.Addr(), DeadAfter: deadAfter},
		&RoamHA{Role: "standby", Listen: b, Peer: a, Key: key, Takeover: GatewayAddr1.Addr(), DeadAfter: deadAfter}
}

// writeHA appends the [gateway.ha] table (and writes its key file).
func writeHA(b *strings.Builder, dir string, h *RoamHA) error {
	f := filepath.Join(dir, "ha.key")
	if err := os.WriteFile(f, []byte(h.Key+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(b, "\n[gateway.ha]\nrole = %q\nlisten = %q\npeer = %q\nkey_file = %q\ntakeover_address = %q\n",
		h.Role, h.Listen.String(), h.Peer.String(), f, h.Takeover.String())
	if h.DeadAfter > 0 {
		fmt.Fprintf(b, "dead_after = %q\n", h.DeadAfter.String())
	}
	return nil
}
