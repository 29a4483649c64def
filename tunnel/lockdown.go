package tunnel

import (
	"fmt"
	"net/netip"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/internal/lockdown"
	"github.com/roam-vpn/roam/report"
	"github.com/roam-vpn/roam/tun"
)

// IKE's ports (RFC 7296 2.23): a gateway may answer on either, and NAT-T
// floats to 4500 whatever the configured port.
const (
	ikePort  = 500
	nattPort = 4500
)

// startLockdown puts the profile's kill switch in place before anything
// is sent: from then on only the tunnel, IKE to the gateway (over UDP, and
// over TCP to the stream port the transport may use), DHCP, ND and
// loopback leave the host (internal/lockdown).
func (c *conn) startLockdown(ifname string, gw netip.AddrPort) error {
	p := c.profile
	if !p.Lockdown {
		return nil
	}
	if err := c.undo.Record(report.UndoLockdown, ifname, report.LockdownState{Table: "inet roam"}); err != nil {
		return fmt.Errorf("lockdown: recording it for a crash: %w", err)
	}
	r, err := lockdown.Apply(lockdown.Config{
		Interface: ifname,
		Gateways:  []netip.Addr{gw.Addr()},
		Ports:     []uint16{ikePort, nattPort, gw.Port()},
		TCPPorts:  streamPorts(p.Transport),
		LAN:       p.LockdownLAN,
		IPv6:      p.LockdownIPv6,
		// The captive portal probe leaves from marked sockets (captive.go).
		ProbeMark: tun.DefaultMark,
		ProbePort: probePort(p.Captive.Probe),
	})
	if err != nil {
		c.undo.Forget(report.UndoLockdown, ifname)
		return err
	}
	c.lock = r
	c.log.Info("lockdown on", "interface", ifname, "lan", p.LockdownLAN, "ipv6", p.LockdownIPv6)
	return nil
}

// streamPorts are the gateway's TCP ports the profile's transport may open
// a stream to: tcp_port for auto's fallback and tcp, tls_port for tls.
func streamPorts(t config.Transport) []uint16 {
	switch t.Mode {
	case config.TransportAuto, config.TransportTCP:
		return []uint16{t.TCPPort}
	case config.TransportTLS:
		return []uint16{t.TLSPort}
	}
	return nil
}

// allowGateways lets IKE and ESP out to gateway addresses learnt since
// (MOBIKE's additional addresses, a switch's target, a move's path).
func (c *conn) allowGateways(addrs ...netip.Addr) {
	if c.lock == nil {
		return
	}
	if err := c.lock.AllowGateways(addrs...); err != nil {
		c.log.Error("lockdown: gateway address not let out", "addrs", addrs, "err", err)
	}
}

// stopLockdown lifts the kill switch when the connection ends. Rules it
// could not lift stay recorded, for the next daemon to lift.
func (c *conn) stopLockdown() {
	if c.lock == nil {
		return
	}
	if err := c.lock.Remove(); err != nil {
		c.log.Error("lockdown: rules not lifted", "err", err)
		return
	}
	if err := c.undo.Forget(report.UndoLockdown, c.tunName); err != nil {
		c.log.Warn("lockdown: record not removed", "err", err)
	}
	c.log.Info("lockdown off")
}

// lockdownStatus reports the kill switch in `roam status`.
func (c *conn) lockdownStatus(st *report.Status) {
	if c.lock == nil || c.lock.Removed() {
		return
	}
	st.Lockdown = true
	for _, a := range c.lock.Gateways() {
		st.LockdownGateways = append(st.LockdownGateways, a.String())
	}
}
