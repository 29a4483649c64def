package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CountTable is the nftables table the lab's named counters live in.
const CountTable = "roamcount"

// CountFromGateway puts two named counters into router (a NAT router) for
// UDP packets from the gateway address gw, port 4500: "<name>_local" counts
// those that found no NAT mapping and ended at the router itself (a
// restricted NAT's drop, "No mapping! Drop packet!" in the r-mobike
// slides), "<name>_fwd" those translated and forwarded to the client.
func (l *Lab) CountFromGateway(router, name string, gw netip.Addr) error {
	rules := fmt.Sprintf(`add table ip %[1]s
add counter ip %[1]s %[2]s_local
add counter ip %[1]s %[2]s_fwd
add chain ip %[1]s in_%[2]s { type filter hook input priority 0; }
add chain ip %[1]s fwd_%[2]s { type filter hook forward priority 0; }
add rule ip %[1]s in_%[2]s ip saddr %[3]s udp sport 4500 counter name %[2]s_local
add rule ip %[1]s fwd_%[2]s ip saddr %[3]s udp sport 4500 counter name %[2]s_fwd
`, CountTable, name, gw)
	_, err := l.Output(router, "sh", "-c", "nft -f - <<'EOF'\n"+rules+"EOF")
	return err
}

var reCounter = regexp.MustCompile(`packets (\d+) bytes \d+`)

// Counter reads the packets of a named counter in CountTable.
func (l *Lab) Counter(ns, name string) (uint64, error) {
	out, err := l.Output(ns, "nft", "list", "counter", "ip", CountTable, name)
	if err != nil {
		return 0, err
	}
	m := reCounter.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("lab: counter %s in %s: no packets in %q", name, ns, strings.TrimSpace(out))
	}
	return strconv.ParseUint(m[1], 10, 64)
}

// SendUDPFrom sends one UDP datagram from src to dst out of namespace ns
// through a raw socket, so src may be an address and port another socket
// is bound to (roam gateway's own 4500): what a gateway that does not know
// SWITCH_TO_IP_ADDRESS would send when it updates the SA from its new
// address by itself. IPv4 only.
func (l *Lab) SendUDPFrom(ns string, src, dst netip.AddrPort, payload []byte) error {
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		return errors.New("lab: SendUDPFrom is IPv4 only")
	}
	pkt := UDP4(src, dst, payload)
	return l.InNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("lab: raw socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			return fmt.Errorf("lab: send %s -> %s: %w", src, dst, err)
		}
		return nil
	})
}

// UDP4 builds an IPv4/UDP packet (UDP checksum zero, which IPv4 allows;
// the kernel fills in the IP checksum on a raw socket).
func UDP4(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}
