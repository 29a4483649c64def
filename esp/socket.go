package esp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// batchConn is the part of ipv4.PacketConn and ipv6.PacketConn we use; both
// have the same Message type underneath.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Socket is one UDP socket with batch I/O and per-packet source address
// and interface control (PKTINFO), so a path test can leave through a chosen
// uplink and every received packet tells which local address it reached.
type Socket struct {
	conn  *net.UDPConn
	local netip.AddrPort // as bound (address may be unspecified)
	v6    bool
	batch batchConn
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
}

// ListenUDP binds a UDP socket. mark, when non-zero, is set as SO_MARK so
// full-tunnel policy routing sends our own packets around the tunnel.
func ListenUDP(local netip.AddrPort, mark uint32) (*Socket, error) {
	network := "udp4"
	if local.Addr().Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}
			if serr == nil && local.Addr().Is6() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
			if serr == nil {
				// Bind to an address we may not have yet (a gateway's
				// second address being brought up, an HA takeover).
				if local.Addr().Is6() {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, local.String())
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", local, err)
	}
	conn := pc.(*net.UDPConn)
	s := &Socket{conn: conn, v6: local.Addr().Is6()}
	s.local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	s.local = netip.AddrPortFrom(s.local.Addr().Unmap(), s.local.Port())
	if s.v6 {
		s.p6 = ipv6.NewPacketConn(conn)
		if err := s.p6.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
			conn.Close()
			return nil, fmt.Errorf("IPV6_RECVPKTINFO: %w", err)
		}
		s.batch = s.p6
	} else {
		s.p4 = ipv4.NewPacketConn(conn)
		if err := s.p4.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
			conn.Close()
			return nil, fmt.Errorf("IP_PKTINFO: %w", err)
		}
		s.batch = s.p4
	}
	return s, nil
}

// LocalAddr is the bound address and port.
func (s *Socket) LocalAddr() netip.AddrPort { return s.local }

// LocalPort is the bound port.
func (s *Socket) LocalPort() uint16 { return s.local.Port() }

// Close closes the socket; a blocked read returns.
func (s *Socket) Close() error { return s.conn.Close() }

// oob returns the control message that makes a packet leave from src
// through ifindex, or nil when the kernel may choose.
func (s *Socket) oob(src netip.Addr, ifindex int) []byte {
	if s.local.Addr().IsValid() && !s.local.Addr().IsUnspecified() {
		return nil // bound to one address already
	}
	if !src.IsValid() || src.IsUnspecified() {
		if ifindex == 0 {
			return nil
		}
	}
	if s.v6 {
		cm := &ipv6.ControlMessage{IfIndex: ifindex}
		if src.IsValid() && !src.IsUnspecified() {
			cm.Src = src.AsSlice()
		}
		return cm.Marshal()
	}
	cm := &ipv4.ControlMessage{IfIndex: ifindex}
	if src.IsValid() && !src.IsUnspecified() {
		cm.Src = src.AsSlice()
	}
	return cm.Marshal()
}

// parseOOB returns the destination address and interface of a received
// packet.
func (s *Socket) parseOOB(oob []byte) (netip.Addr, int) {
	if len(oob) == 0 {
		return s.local.Addr(), 0
	}
	if s.v6 {
		var cm ipv6.ControlMessage
		if cm.Parse(oob) != nil {
			return s.local.Addr(), 0
		}
		a, _ := netip.AddrFromSlice(cm.Dst)
		return a, cm.IfIndex
	}
	var cm ipv4.ControlMessage
	if cm.Parse(oob) != nil {
		return s.local.Addr(), 0
	}
	a, _ := netip.AddrFromSlice(cm.Dst)
	return a.Unmap(), cm.IfIndex
}

// oobSpace is enough room for either family's PKTINFO.
var oobSpace = max(len(ipv4.NewControlMessage(ipv4.FlagDst|ipv4.FlagInterface)), len(ipv6.NewControlMessage(ipv6.FlagDst|ipv6.FlagInterface)))
