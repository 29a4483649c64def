package esp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SetTransparent lets the socket keep sending from its bound address after
// that address has left the host (IP_TRANSPARENT / IPV6_TRANSPARENT, which
// need CAP_NET_ADMIN or CAP_NET_RAW). Without it the kernel refuses such a
// send (EINVAL: no local device has the source). A gateway needs exactly
// that send: when its address goes away it asks clients behind NATs to
// move, and only a request from the old address passes their NAT mappings
// (draft-smyslov-ipsecme-ikev2-r-mobike 4.2). Receiving is unaffected.
func (s *Socket) SetTransparent() error {
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("transparent: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if s.v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("transparent %s: %w", s.local, err)
	}
	return nil
}
