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

// Dial opens a TCP connection to remote with SO_MARK mark (so that a
// full tunnel's policy routing does not send it into the tunnel), and, with
// tlsConf, runs a TLS handshake on it (RFC 9329 appendix A).
func Dial(ctx context.Context, remote netip.AddrPort, mark uint32, tlsConf *tls.Config) (net.Conn, error) {
	d := net.Dialer{
		KeepAlive: KeepAlive,
		Control: func(_, _ string, rc syscall.RawConn) error {
			if mark == 0 {
				return nil
			}
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}); err != nil {
				return err
			}
			return serr
		},
	}
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
