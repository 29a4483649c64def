package esp

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSetTransparent(t *testing.T) {
	for _, local := range []string{"127.0.0.1:0", "[::1]:0"} {
		s, err := ListenUDP(netip.MustParseAddrPort(local), 0)
		if err != nil {
			t.Skipf("listen %s: %v", local, err)
		}
		err = s.SetTransparent()
		if errors.Is(err, unix.EPERM) {
			s.conn.Close()
			t.Skip("IP_TRANSPARENT needs CAP_NET_ADMIN")
		}
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := s.conn.SyscallConn()
		var v int
		var gerr error
		rc.Control(func(fd uintptr) {
			if s.v6 {
				v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT)
			} else {
				v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT)
			}
		})
		if gerr != nil || v != 1 {
			t.Errorf("%s: transparent = %d, %v", local, v, gerr)
		}
		s.conn.Close()
	}
}
