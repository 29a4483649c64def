package tcpencap

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// KeepAlive is the TCP keepalive period of streams. It keeps the NAT and
// firewall state of an idle stream, which is why no NAT keepalive records
// are sent over it.
const KeepAlive = 20 * time.Second

// DialOptions shape a stream's TCP connection.
type DialOptions struct {
	// Mark is set as SO_MARK, so that a full tunnel's policy routing does
	// not send the stream into the tunnel (0: none).
	Mark uint32
	// Local, when valid, is the source address, and IfIndex, when not 0,
	// the interface the connection leaves by (SO_BINDTOIFINDEX): a MOBIKE
	// move opens the new stream on the uplink it moves to.
	Local   netip.Addr
	IfIndex int
	// TLS, when set, runs a TLS handshake on the connection (RFC 9329
	// appendix A).
	TLS *tls.Config
}

// Dial opens a stream's connection to remote.
func Dial(ctx context.Context, remote netip.AddrPort, o DialOptions) (net.Conn, error) {
	d := net.Dialer{
		KeepAlive: KeepAlive,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				if o.Mark != 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark))
				}
				if serr == nil && o.IfIndex != 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX, o.IfIndex)
				}
			}); err != nil {
				return err
			}
			return serr
		},
	}
	if o.Local.IsValid() && !o.Local.IsUnspecified() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(o.Local, 0))
	}
	tlsConf := o.TLS
	nc, err := d.DialContext(ctx, "tcp", remote.String())
	if err != nil {
		return nil, err
	}
	if tlsConf == nil {
		return nc, nil
	}
	tc := tls.Client(nc, tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return tc, nil
}

// AddrPort converts a connection's address (TCP) to netip.
func AddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
