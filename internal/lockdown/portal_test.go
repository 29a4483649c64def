package lockdown

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/nstest"
)

// connect opens a TCP connection to dst (from a socket with mark, when not
// 0) and reports whether its SYN left through the uplink: nobody answers
// there, and a SYN that nftables drops in the output hook never reaches
// the device's counter (TCP retries a dropped SYN instead of failing the
// connect, so the error says nothing).
func connect(t *testing.T, dst netip.AddrPort, mark uint32) bool {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if mark != 0 {
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
			}); err != nil {
				return err
			}
		}
		return serr
	}}
	before := synsOut(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if c, err := d.DialContext(ctx, "tcp", dst.String()); err == nil {
		c.Close()
	}
	return synsOut(t) > before
}

// synsOut counts TCP SYNs that passed the output hook after lockdown's
// chain (the counting table's chain comes later in priority, so what
// lockdown drops never reaches it).
func synsOut(t *testing.T) int {
	t.Helper()
	out := nstest.Exec(t, "nft", "list", "chain", "inet", "roamtest", "out")
	f := strings.Fields(out[strings.Index(out, "packets")+len("packets"):])
	n, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("counter in %q: %v", out, err)
	}
	return n
}

func TestPortalAllowance(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	lab(t)
	nstest.Exec(t, "nft", "add table inet roamtest")
	nstest.Exec(t, "nft", "add chain inet roamtest out { type filter hook output priority 10 ; }")
	nstest.Exec(t, "nft", "add rule inet roamtest out tcp flags syn counter")
	const mark = 0x526f616d
	r, err := Apply(Config{Interface: "tunl0ck", Gateways: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, Ports: []uint16{500, 4500},
		ProbeMark: mark, ProbePort: 8080})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove()
	type try struct {
		dst  string
		mark uint32
	}
	steps := []struct {
		name   string
		portal []string
		want   map[try]bool
	}{
		{"no portal", nil, map[try]bool{
			{"198.51.100.1:80", 0}: false, {"198.51.100.1:443", 0}: false,
			{"198.51.100.1:8080", mark}: true, {"198.51.100.1:8080", 0}: false, {"198.51.100.1:80", mark}: false,
		}},
		{"portal", []string{"198.51.100.1", "2001:db8:1::1"}, map[try]bool{
			{"198.51.100.1:80", 0}: true, {"198.51.100.1:443", 0}: true, {"198.51.100.1:22", 0}: false,
			{"[2001:db8:1::1]:443", 0}: true, {"[2001:db8:1::9]:443", 0}: false, {"198.51.100.9:80", 0}: false,
		}},
		{"another portal", []string{"198.51.100.9"}, map[try]bool{
			{"198.51.100.1:80", 0}: false, {"198.51.100.9:80", 0}: true,
		}},
		{"closed", nil, map[try]bool{
			{"198.51.100.9:80", 0}: false, {"[2001:db8:1::1]:443", 0}: false,
		}},
	}
	for _, st := range steps {
		var addrs []netip.Addr
		for _, a := range st.portal {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		if err := r.AllowPortal(addrs...); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := r.Portal(); len(got) != len(addrs) {
			t.Errorf("%s: Portal() = %v, want %v", st.name, got, addrs)
		}
		for tr, want := range st.want {
			if got := connect(t, netip.MustParseAddrPort(tr.dst), tr.mark); got != want {
				t.Errorf("%s: TCP to %s (mark %#x) let out %v, want %v", st.name, tr.dst, tr.mark, got, want)
			}
		}
	}
	// The probe's name lookup, and only the probe's.
	if !sendMarked(t, mark, netip.MustParseAddrPort("198.51.100.1:53")) {
		t.Error("marked DNS query dropped")
	}
	if send(t, 0, netip.MustParseAddrPort("198.51.100.1:53")) {
		t.Error("unmarked DNS query let out")
	}
}

func sendMarked(t *testing.T, mark uint32, dst netip.AddrPort) bool {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("udp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Write([]byte("q"))
	return !errors.Is(err, syscall.EPERM)
}
