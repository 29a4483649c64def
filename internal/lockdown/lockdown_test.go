package lockdown

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/nstest"
)

// send sends one UDP datagram from src port sport to dst and reports
// whether the output path let it go: a packet nftables drops in the
// output hook fails the send with EPERM.
func send(t *testing.T, sport uint16, dst netip.AddrPort) bool {
	t.Helper()
	laddr := &net.UDPAddr{Port: int(sport)}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatalf("dial %v: %v", dst, err)
	}
	defer c.Close()
	_, err = c.Write([]byte("probe"))
	if errors.Is(err, syscall.EPERM) {
		return false
	}
	if err != nil {
		t.Fatalf("send to %v: %v", dst, err)
	}
	return true
}

// lab makes an uplink (a veth pair) with IPv4 and IPv6 addresses, and a device
// standing for the tunnel whose prefixes everything to 203.0.113.0/24 and
// 2001:db8:77::/48 takes.
func lab(t *testing.T) {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p"},
		{"link", "set", "uplink0p", "up"},
		{"link", "set", "uplink0", "up"},
		{"addr", "add", "198.51.100.2/24", "dev", "uplink0"},
		{"addr", "add", "2001:db8:1::2/64", "dev", "uplink0", "nodad"},
		{"route", "add", "default", "via", "198.51.100.1"},
		{"-6", "route", "add", "default", "via", "2001:db8:1::1"},
		{"link", "add", "tunl0ck", "type", "veth", "peer", "name", "tunl0ckp"},
		{"link", "set", "tunl0ckp", "up"},
		{"link", "set", "tunl0ck", "up"},
		{"route", "add", "203.0.113.0/24", "dev", "tunl0ck"},
		{"-6", "route", "add", "2001:db8:77::/48", "dev", "tunl0ck"},
	} {
		nstest.Exec(t, "ip", args...)
	}
}

// tcpSent counts the TCP packets that got past the lockdown's output
// chain: a chain of a table of the test's own, hooked in after it, sees
// only what the lockdown accepted.
func tcpSent(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("nft", "list", "chain", "inet", "rmprobe", "out").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`packets (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in\n%s", out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// connectTCP starts a TCP connection to dst and reports whether its SYN
// got past the lockdown. Nothing answers behind the uplink: the connect
// is abandoned after its first SYN.
func connectTCP(t *testing.T, dst netip.AddrPort) bool {
	t.Helper()
	before := tcpSent(t)
	if c, err := net.DialTimeout("tcp", dst.String(), 100*time.Millisecond); err == nil {
		c.Close()
	}
	return tcpSent(t) > before
}

func TestRulesOnRealPackets(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	lab(t)
	nstest.Exec(t, "nft", "add table inet rmprobe; add chain inet rmprobe out { type filter hook output priority 10; }; add rule inet rmprobe out meta l4proto tcp counter")
	t.Cleanup(func() { exec.Command("nft", "delete", "table", "inet", "rmprobe").Run() })
	gw, gw6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8:5::10")
	type probe struct {
		name  string
		sport uint16
		dst   string
		want  bool
		tcp   bool
	}
	base := []probe{
		{"loopback", 0, "127.0.0.1:9", true, false},
		{"through the tunnel", 0, "203.0.113.7:443", true, false},
		{"through the tunnel, IPv6", 0, "[2001:db8:77::7]:443", true, false},
		{"IKE to the gateway", 0, "192.0.2.10:500", true, false},
		{"NAT-T to the gateway", 0, "192.0.2.10:4500", true, false},
		{"configured port to the gateway", 0, "192.0.2.10:4501", true, false},
		{"another port on the gateway", 0, "192.0.2.10:53", false, false},
		{"IKE to another host", 0, "192.0.2.11:500", false, false},
		{"beyond the uplink", 0, "192.0.2.99:53", false, false},
		{"the uplink's router", 0, "198.51.100.1:53", false, false},
		{"DHCP client", 68, "255.255.255.255:67", true, false},
		{"DHCPv6 client", 546, "[ff02::1:2%uplink0]:547", true, false},
		{"IPv6 beyond the uplink", 0, "[2001:db8:9::9]:53", false, false},
		{"a private address off the tunnel", 0, "10.1.2.3:53", false, false},
		{"TCP to the gateway's NAT-T port", 0, "192.0.2.10:4500", false, true},
		{"TCP to the gateway's TLS port", 0, "192.0.2.10:443", false, true},
		{"TCP to the gateway's TLS port, IPv6", 0, "[2001:db8:5::10]:443", false, true},
		{"TCP to the gateway, another port", 0, "192.0.2.10:22", false, true},
		{"TCP to another host's TLS port", 0, "192.0.2.11:443", false, true},
	}
	tests := []struct {
		name   string
		cfg    Config
		change map[string]bool
	}{
		{name: "plain", cfg: Config{}},
		{name: "lan", cfg: Config{LAN: true}, change: map[string]bool{"a private address off the tunnel": true}},
		{name: "ipv6 allowed", cfg: Config{IPv6: true}, change: map[string]bool{"IPv6 beyond the uplink": true, "TCP to the gateway's TLS port, IPv6": true}},
		{name: "streams", cfg: Config{TCPPorts: []uint16{4500, 443}}, change: map[string]bool{
			"TCP to the gateway's NAT-T port": true, "TCP to the gateway's TLS port": true, "TCP to the gateway's TLS port, IPv6": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Interface, cfg.Gateways, cfg.Ports = "tunl0ck", []netip.Addr{gw, gw6}, []uint16{500, 4500, 4501}
			r, err := Apply(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Remove()
			for _, p := range base {
				want := p.want
				if c, ok := tt.change[p.name]; ok {
					want = c
				}
				dst := netip.MustParseAddrPort(p.dst)
				got := false
				if p.tcp {
					got = connectTCP(t, dst)
				} else {
					got = send(t, p.sport, dst)
				}
				if got != want {
					t.Errorf("%s (%s): let out %v, want %v", p.name, p.dst, got, want)
				}
			}
		})
	}
	// After removal everything goes again.
	if send(t, 0, netip.MustParseAddrPort("192.0.2.99:53")) != true {
		t.Error("traffic still dropped after Remove")
	}
}

func TestAllowGatewaysAndLeftovers(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	lab(t)
	moved := netip.MustParseAddrPort("[2001:db8:2::10]:4500")
	r, err := Apply(Config{Interface: "tunl0ck", Gateways: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, Ports: []uint16{500, 4500}})
	if err != nil {
		t.Fatal(err)
	}
	if send(t, 0, moved) {
		t.Fatal("an address not learnt yet was let out")
	}
	if err := r.AllowGateways(moved.Addr(), netip.MustParseAddr("192.0.2.10")); err != nil {
		t.Fatal(err)
	}
	if !send(t, 0, moved) {
		t.Error("the gateway's new address stays blocked after AllowGateways")
	}
	if got := len(r.Gateways()); got != 2 {
		t.Errorf("%d gateway addresses known, want 2", got)
	}
	if _, err := Apply(Config{Interface: "tunl0ck", Ports: []uint16{500}}); !errors.Is(err, ErrHeld) {
		t.Errorf("second Apply: %v, want ErrHeld", err)
	}
	// A crashed daemon never calls Remove: the rules stay (fail closed)
	// until RemoveLeftovers.
	if on, err := Active(); err != nil || !on {
		t.Fatalf("Active = %v, %v; want true", on, err)
	}
	if had, err := RemoveLeftovers(); err != nil || !had {
		t.Fatalf("RemoveLeftovers = %v, %v; want true", had, err)
	}
	if had, err := RemoveLeftovers(); err != nil || had {
		t.Fatalf("second RemoveLeftovers = %v, %v; want false", had, err)
	}
	if !send(t, 0, netip.MustParseAddrPort("192.0.2.99:53")) {
		t.Error("traffic still dropped after RemoveLeftovers")
	}
	// Remove after the table went is harmless.
	if err := r.Remove(); err != nil {
		t.Errorf("Remove after RemoveLeftovers: %v", err)
	}
	if !r.Removed() {
		t.Error("Removed = false after Remove")
	}
}

func TestApplyRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no interface", Config{Ports: []uint16{500}}},
		{"interface name too long", Config{Interface: "a-very-long-name0", Ports: []uint16{500}}},
		{"no ports", Config{Interface: "roam-x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Apply(tt.cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// txPackets is the count of packets sent out of a device in this namespace.
func txPackets(t *testing.T, dev string) int {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + dev + "/statistics/tx_packets")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestForwardedTraffic: what the host routes for a container goes only
// through the tunnel (or to the LAN when allowed).
func TestForwardedTraffic(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	lab(t)
	ctr := fmt.Sprintf("rmtc%d", os.Getpid())
	nstest.Exec(t, "ip", "netns", "add", ctr)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ctr).Run() })
	for _, args := range [][]string{
		{"ip", "link", "add", "ctr0", "type", "veth", "peer", "name", "ctr0p"},
		{"ip", "link", "set", "ctr0p", "netns", ctr},
		{"ip", "addr", "add", "172.31.0.1/24", "dev", "ctr0"},
		{"ip", "link", "set", "ctr0", "up"},
		{"ip", "-n", ctr, "link", "set", "lo", "up"},
		{"ip", "-n", ctr, "addr", "add", "172.31.0.2/24", "dev", "ctr0p"},
		{"ip", "-n", ctr, "link", "set", "ctr0p", "up"},
		{"ip", "-n", ctr, "route", "add", "default", "via", "172.31.0.1"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		// Quiet devices: no IPv6 chatter, no ARP, so every packet
		// counted is one forwarded.
		{"sysctl", "-qw", "net.ipv6.conf.uplink0.disable_ipv6=1"},
		{"sysctl", "-qw", "net.ipv6.conf.tunl0ck.disable_ipv6=1"},
		{"ip", "neigh", "replace", "198.51.100.1", "lladdr", "02:00:00:00:00:01", "dev", "uplink0", "nud", "permanent"},
		{"ip", "neigh", "replace", "203.0.113.7", "lladdr", "02:00:00:00:00:02", "dev", "tunl0ck", "nud", "permanent"},
	} {
		nstest.Exec(t, args[0], args[1:]...)
	}
	// forwarded sends three echoes from the container to dst and returns
	// how many left through dev.
	forwarded := func(dst, dev string) int {
		before := txPackets(t, dev)
		// No answer comes back: ping's failure is expected.
		exec.Command("ip", "netns", "exec", ctr, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", dst).Run()
		return txPackets(t, dev) - before
	}
	if n := forwarded("192.0.2.99", "uplink0"); n < 3 {
		t.Fatalf("without lockdown %d of 3 echoes forwarded to the uplink", n)
	}
	tests := []struct {
		name     string
		lan      bool
		dst, dev string
		want     bool
	}{
		{"beyond the uplink", false, "192.0.2.99", "uplink0", false},
		{"a private address off the tunnel", false, "10.1.2.3", "uplink0", false},
		{"through the tunnel", false, "203.0.113.7", "tunl0ck", true},
		{"a private address, LAN allowed", true, "10.1.2.3", "uplink0", true},
		{"beyond the uplink, LAN allowed", true, "192.0.2.99", "uplink0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Apply(Config{Interface: "tunl0ck", Gateways: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, Ports: []uint16{500, 4500}, LAN: tt.lan})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Remove()
			n := forwarded(tt.dst, tt.dev)
			if got := n >= 3; got != tt.want || (!tt.want && n != 0) {
				t.Errorf("%d of 3 echoes to %s forwarded through %s; want them let through %v", n, tt.dst, tt.dev, tt.want)
			}
		})
	}
}
