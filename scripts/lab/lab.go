// Package lab builds the roam test network out of Linux network namespaces:
// a client with two NATed uplinks ("wlan" and "wwan"), an internet router, a
// multihomed gateway and a host behind the gateway. Tests, the demo and the
// benchmarks share it, and strongSwan runs inside it as the independent peer.
//
//	client ─wlan─ nat-wlan ─┐            ┌─eth0 203.0.113.10, 2001:db8:113::10──┐
//	                        ├─ inet ─────┤                                      ├─ gw ─lan─ host 10.99.0.10
//	client ─wwan─ nat-wwan ─┘            └─eth1 203.0.113.26, 2001:db8:113:1::26┘
//
// wlan is IPv4 only. wwan is dual-stack, as cellular uplinks are: IPv4
// behind the NAT (masquerade), IPv6 routed without NAT (client
// 2001:db8:20::2); removing its IPv4 address leaves an IPv6-only uplink.
// Duplicate address detection is off, so IPv6 addresses are usable at once.
//
// Every namespace is named "<Prefix><pid>-<seq>-<role>", so a later run can
// recognise namespaces left behind by a run that was killed (its pid is gone)
// and remove them without touching anybody else's.
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/syncbuf"
)

// Prefix starts the name of every namespace the lab creates.
const Prefix = "roamlab"

// Namespace roles. Methods taking a namespace accept these names.
const (
	Client  = "client"
	NATWLAN = "nat-wlan"
	NATWWAN = "nat-wwan"
	Inet    = "inet"
	Gateway = "gw"
	Host    = "host"
)

// Roles lists every namespace of the topology in creation order.
var Roles = []string{Client, NATWLAN, NATWWAN, Inet, Gateway, Host}

// Uplink names on the client, in preference order.
const (
	WLAN = "wlan"
	WWAN = "wwan"
)

// Addresses of the topology. Documentation ranges (RFC 5737) stand for the
// public internet; they exist only inside the lab's namespaces.
var (
	ClientWLAN = netip.MustParsePrefix("192.168.10.2/24") // client side of the Wi-Fi NAT
	RouterWLAN = netip.MustParsePrefix("192.168.10.1/24")
	ClientWWAN = netip.MustParsePrefix("192.168.20.2/24") // client side of the cellular NAT
	RouterWWAN = netip.MustParsePrefix("192.168.20.1/24")

	PublicWLAN = netip.MustParsePrefix("198.51.100.2/30") // nat-wlan's outside address
	InetWLAN   = netip.MustParsePrefix("198.51.100.1/30")
	PublicWWAN = netip.MustParsePrefix("198.51.100.6/30") // nat-wwan's outside address
	InetWWAN   = netip.MustParsePrefix("198.51.100.5/30")

	GatewayAddr1 = netip.MustParsePrefix("203.0.113.10/28") // gw eth0, primary
	InetGW1      = netip.MustParsePrefix("203.0.113.1/28")
	GatewayAddr2 = netip.MustParsePrefix("203.0.113.26/28") // gw eth1, secondary
	InetGW2      = netip.MustParsePrefix("203.0.113.17/28")

	// IPv6 (documentation prefix 2001:db8::/32): wwan and the gateway.
	ClientWWANV6   = netip.MustParsePrefix("2001:db8:20::2/64")
	RouterWWANV6   = netip.MustParsePrefix("2001:db8:20::1/64")
	PublicWWANV6   = netip.MustParsePrefix("2001:db8:ff:6::2/64") // nat-wwan's outside address (routed, no NAT66)
	InetWWANV6     = netip.MustParsePrefix("2001:db8:ff:6::1/64")
	GatewayAddr1V6 = netip.MustParsePrefix("2001:db8:113::10/64") // gw eth0
	InetGW1V6      = netip.MustParsePrefix("2001:db8:113::1/64")
	GatewayAddr2V6 = netip.MustParsePrefix("2001:db8:113:1::26/64") // gw eth1
	InetGW2V6      = netip.MustParsePrefix("2001:db8:113:1::1/64")

	GatewayLAN    = netip.MustParsePrefix("10.99.0.1/24")
	HostAddr      = netip.MustParsePrefix("10.99.0.10/24")
	ProtectedNet  = netip.MustParsePrefix("10.99.0.0/24")
	VirtualIPPool = netip.MustParsePrefix("10.99.200.0/24")
)

// Uplink describes one of the client's uplinks after it has been built.
type Uplink struct {
	Name   string // interface name in the client namespace
	Router string // role of its NAT router
	Client netip.Prefix
	Gate   netip.Prefix // router's inside address (client's next hop)
	Public netip.Prefix // router's outside address (what the gateway sees)
	Metric int          // metric of the client's default route through it
	// IPv6, routed without NAT; invalid on an IPv4-only uplink.
	Client6 netip.Prefix
	Gate6   netip.Prefix
	Public6 netip.Prefix // router's outside IPv6 address
}

// Options shapes a lab.
type Options struct {
	// OnUplink runs once per client uplink after the topology is up. It is
	// the place to add impairments to an uplink: this kernel has no netem,
	// so a one-way delay will be an NFQUEUE rule in the uplink's NAT router
	// plus a userspace consumer that holds packets for N ms, installed here.
	OnUplink func(l *Lab, u Uplink) error
	// Logf receives one line per lab command when set (test verbose output).
	Logf func(format string, args ...any)
	// HA adds a second gateway node for active/standby tests (ha.go).
	HA bool
}

var seq atomic.Int64

// Lab is one running topology. Close removes it.
type Lab struct {
	Prefix  string // namespace name prefix of this lab, e.g. "roamlab1234-1-"
	Dir     string // scratch directory (short path: unix sockets live here)
	Uplinks []Uplink
	logf    func(string, ...any)
	roles   []string

	mu      sync.Mutex
	procs   []*Proc
	closers []func() error
	closed  bool
}

// NS returns the namespace name of a role.
func (l *Lab) NS(role string) string { return l.Prefix + role }

// Root reports whether the process can build labs.
func Root() bool { return os.Geteuid() == 0 }

// NewT builds a lab for a test: it skips the test when not root and removes
// the lab when the test ends, passed or failed.
func NewT(t testing.TB, opts Options) *Lab {
	t.Helper()
	if !Root() {
		t.Skip("lab tests need root (network namespaces); run as root: sudo go test ./scripts/...")
	}
	if opts.Logf == nil && testing.Verbose() {
		opts.Logf = t.Logf
	}
	l, err := New(opts)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return l
}

// New sweeps namespaces left by killed runs, then builds the topology.
func New(opts Options) (*Lab, error) {
	if !Root() {
		return nil, errors.New("lab: need root")
	}
	if err := Sweep(); err != nil {
		return nil, err
	}
	n := seq.Add(1)
	dir, err := os.MkdirTemp("", fmt.Sprintf("rl%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("lab: scratch dir: %w", err)
	}
	l := &Lab{
		Prefix: fmt.Sprintf("%s%d-%d-", Prefix, os.Getpid(), n),
		Dir:    dir,
		logf:   opts.Logf,
		roles:  Roles,
	}
	if opts.HA {
		l.roles = append(append([]string{}, Roles...), Gateway2)
	}
	if err := l.build(); err != nil {
		l.Close()
		return nil, err
	}
	if opts.HA {
		if err := l.buildHA(); err != nil {
			l.Close()
			return nil, err
		}
	}
	for _, u := range l.Uplinks {
		if opts.OnUplink != nil {
			if err := opts.OnUplink(l, u); err != nil {
				l.Close()
				return nil, fmt.Errorf("lab: uplink %s hook: %w", u.Name, err)
			}
		}
	}
	return l, nil
}

func (l *Lab) build() error {
	for _, r := range l.roles {
		if err := run("ip", "netns", "add", l.NS(r)); err != nil {
			return err
		}
		l.OnClose(func() error { return run("ip", "netns", "delete", l.NS(r)) })
	}
	// Processes started with ip netns exec see /etc/netns/<ns>/resolv.conf
	// bind-mounted over /etc/resolv.conf, so a VPN client that applies DNS
	// inside the lab edits this file instead of the machine's.
	etc := filepath.Join("/etc/netns", l.NS(Client))
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	l.OnClose(func() error { return os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte(ResolvConf), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}

	l.Uplinks = []Uplink{
		{Name: WLAN, Router: NATWLAN, Client: ClientWLAN, Gate: RouterWLAN, Public: PublicWLAN, Metric: 100},
		{Name: WWAN, Router: NATWWAN, Client: ClientWWAN, Gate: RouterWWAN, Public: PublicWWAN, Metric: 200,
			Client6: ClientWWANV6, Gate6: RouterWWANV6, Public6: PublicWWANV6},
	}
	inetSide6 := map[string]netip.Prefix{NATWWAN: InetWWANV6}
	inetSide := map[string]netip.Prefix{NATWLAN: InetWLAN, NATWWAN: InetWWAN}
	nftFile := filepath.Join(l.Dir, "nat.nft")
	if err := os.WriteFile(nftFile, []byte(natRuleset+"\n"), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	var steps [][]string
	for _, r := range l.roles {
		steps = append(steps, []string{r, "ip", "link", "set", "lo", "up"})
		steps = append(steps, sysctls(r)...)
	}
	for _, u := range l.Uplinks {
		inetIf := "to-" + u.Name
		steps = append(steps,
			l.veth(Client, u.Name, u.Router, "lan"),
			l.veth(u.Router, "wan", Inet, inetIf),
			[]string{Client, "ip", "addr", "add", u.Client.String(), "dev", u.Name},
			[]string{u.Router, "ip", "addr", "add", u.Gate.String(), "dev", "lan"},
			[]string{u.Router, "ip", "addr", "add", u.Public.String(), "dev", "wan"},
			[]string{Inet, "ip", "addr", "add", inetSide[u.Router].String(), "dev", inetIf},
			[]string{Client, "ip", "link", "set", u.Name, "up"},
			[]string{u.Router, "ip", "link", "set", "lan", "up"},
			[]string{u.Router, "ip", "link", "set", "wan", "up"},
			[]string{Inet, "ip", "link", "set", inetIf, "up"},
			[]string{u.Router, "ip", "route", "add", "default", "via", inetSide[u.Router].Addr().String()},
			[]string{Client, "ip", "route", "add", "default", "via", u.Gate.Addr().String(), "dev", u.Name, "metric", strconv.Itoa(u.Metric)},
			[]string{u.Router, "nft", "-f", nftFile},
		)
		if u.Client6.IsValid() {
			inet6 := inetSide6[u.Router]
			steps = append(steps,
				addr6(Client, u.Client6, u.Name),
				addr6(u.Router, u.Gate6, "lan"),
				addr6(u.Router, u.Public6, "wan"),
				addr6(Inet, inet6, inetIf),
				[]string{u.Router, "ip", "-6", "route", "add", "default", "via", inet6.Addr().String()},
				[]string{Inet, "ip", "-6", "route", "add", u.Client6.Masked().String(), "via", u.Public6.Addr().String()},
				[]string{Client, "ip", "-6", "route", "add", "default", "via", u.Gate6.Addr().String(), "dev", u.Name, "metric", strconv.Itoa(u.Metric)},
			)
		}
	}
	steps = append(steps,
		l.veth(Gateway, "eth0", Inet, "to-gw0"),
		l.veth(Gateway, "eth1", Inet, "to-gw1"),
		l.veth(Gateway, "lan", Host, "eth0"),
		[]string{Gateway, "ip", "addr", "add", GatewayAddr1.String(), "dev", "eth0"},
		[]string{Gateway, "ip", "addr", "add", GatewayAddr2.String(), "dev", "eth1"},
		[]string{Gateway, "ip", "addr", "add", GatewayLAN.String(), "dev", "lan"},
		[]string{Inet, "ip", "addr", "add", InetGW1.String(), "dev", "to-gw0"},
		[]string{Inet, "ip", "addr", "add", InetGW2.String(), "dev", "to-gw1"},
		[]string{Host, "ip", "addr", "add", HostAddr.String(), "dev", "eth0"},
		[]string{Gateway, "ip", "link", "set", "eth0", "up"},
		[]string{Gateway, "ip", "link", "set", "eth1", "up"},
		[]string{Gateway, "ip", "link", "set", "lan", "up"},
		[]string{Inet, "ip", "link", "set", "to-gw0", "up"},
		[]string{Inet, "ip", "link", "set", "to-gw1", "up"},
		[]string{Host, "ip", "link", "set", "eth0", "up"},
		[]string{Host, "ip", "route", "add", "default", "via", GatewayLAN.Addr().String()},
		// Replies leave through the interface of the address they come from,
		// so losing one uplink of the gateway does not break the other.
		[]string{Gateway, "ip", "route", "add", "default", "via", InetGW1.Addr().String(), "dev", "eth0", "metric", "100"},
		[]string{Gateway, "ip", "route", "add", "default", "via", InetGW2.Addr().String(), "dev", "eth1", "metric", "200"},
		[]string{Gateway, "ip", "route", "add", "default", "via", InetGW2.Addr().String(), "dev", "eth1", "table", "102"},
		[]string{Gateway, "ip", "route", "add", "default", "via", InetGW1.Addr().String(), "dev", "eth0", "table", "101"},
		[]string{Gateway, "ip", "rule", "add", "from", GatewayAddr1.Addr().String(), "table", "101", "priority", "1000"},
		[]string{Gateway, "ip", "rule", "add", "from", GatewayAddr2.Addr().String(), "table", "102", "priority", "1000"},
		// The same for the gateway's IPv6 addresses.
		addr6(Gateway, GatewayAddr1V6, "eth0"),
		addr6(Gateway, GatewayAddr2V6, "eth1"),
		addr6(Inet, InetGW1V6, "to-gw0"),
		addr6(Inet, InetGW2V6, "to-gw1"),
		[]string{Gateway, "ip", "-6", "route", "add", "default", "via", InetGW1V6.Addr().String(), "dev", "eth0", "metric", "100"},
		[]string{Gateway, "ip", "-6", "route", "add", "default", "via", InetGW2V6.Addr().String(), "dev", "eth1", "metric", "200"},
		[]string{Gateway, "ip", "-6", "route", "add", "default", "via", InetGW2V6.Addr().String(), "dev", "eth1", "table", "102"},
		[]string{Gateway, "ip", "-6", "route", "add", "default", "via", InetGW1V6.Addr().String(), "dev", "eth0", "table", "101"},
		[]string{Gateway, "ip", "-6", "rule", "add", "from", GatewayAddr1V6.Addr().String(), "table", "101", "priority", "1000"},
		[]string{Gateway, "ip", "-6", "rule", "add", "from", GatewayAddr2V6.Addr().String(), "table", "102", "priority", "1000"},
	)
	// The build's ~100 commands would drown a test's verbose output.
	return l.runQuiet(steps)
}

// runQuiet runs each step (a namespace, then a command) without logging
// it, stopping at the first that fails.
func (l *Lab) runQuiet(steps [][]string) error {
	logf := l.logf
	l.logf = nil
	defer func() { l.logf = logf }()
	for _, s := range steps {
		if _, err := l.Output(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// ResolvConf is the client namespace's /etc/resolv.conf at start.
const ResolvConf = "# roam lab client\nnameserver 192.0.2.53\n"

const natRuleset = `add table ip nat
add chain ip nat post { type nat hook postrouting priority srcnat; }
add rule ip nat post oifname "wan" masquerade`

func sysctls(role string) [][]string {
	var s [][]string
	for _, kv := range []string{
		"net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
		"net.ipv6.conf.all.disable_ipv6=0",
		"net.ipv6.conf.default.disable_ipv6=0",
		"net.ipv6.conf.all.forwarding=1",
		// No router advertisements or DAD: addresses and routes are
		// exactly the ones the lab sets, usable (not tentative) at once.
		"net.ipv6.conf.all.accept_ra=0",
		"net.ipv6.conf.default.accept_ra=0",
		"net.ipv6.conf.all.accept_dad=0",
		"net.ipv6.conf.default.accept_dad=0",
	} {
		s = append(s, []string{role, "sysctl", "-qw", kv})
	}
	return s
}

// addr6 adds an IPv6 address without duplicate address detection, so it is
// never tentative.
func addr6(ns string, p netip.Prefix, dev string) []string {
	return []string{ns, "ip", "-6", "addr", "add", p.String(), "dev", dev, "nodad"}
}

// veth creates the pair from inside ns a, so neither name ever exists in the
// machine's own namespace and parallel labs cannot collide.
func (l *Lab) veth(a, aName, b, bName string) []string {
	return []string{a, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", l.NS(b)}
}

// OnClose registers f to run on Close, in reverse order of registration.
func (l *Lab) OnClose(f func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, f)
}

// Close kills every process the lab started (and anything else still running
// in its namespaces), then removes the namespaces and scratch files. It is
// idempotent and returns the first error.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	closers := l.closers
	l.mu.Unlock()

	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
	var nss []string
	for _, r := range l.roles {
		nss = append(nss, l.NS(r))
	}
	killInNamespaces(nss)
	for i := len(closers) - 1; i >= 0; i-- {
		keep(closers[i]())
	}
	keep(os.RemoveAll(l.Dir))
	return first
}

// Exec runs a command in a namespace and returns its error, with the
// command's output in the error message.
func (l *Lab) Exec(ns string, args ...string) error {
	_, err := l.Output(ns, args...)
	return err
}

// Output runs a command in a namespace and returns its combined output.
func (l *Lab) Output(ns string, args ...string) (string, error) {
	return l.OutputContext(context.Background(), ns, args...)
}

// OutputContext is Output bounded by ctx.
func (l *Lab) OutputContext(ctx context.Context, ns string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.NS(ns)}, args...)...)
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if l.logf != nil {
		l.logf("lab[%s]$ %s", ns, strings.Join(args, " "))
	}
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %s: %w: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Cmd prepares a command in a namespace (for callers that need pipes or env).
func (l *Lab) Cmd(ns string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.NS(ns)}, args...)...)
}

// Proc is a background process started in a namespace.
type Proc struct {
	Cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{}
	err  error
}

// Start runs a command in the background in a namespace. Its output is
// collected (Output); Close kills it.
func (l *Lab) Start(ns string, args ...string) (*Proc, error) {
	return l.StartCmd(l.Cmd(ns, args...))
}

// StartCmd starts a prepared command (from Cmd) as a lab process.
func (l *Lab) StartCmd(cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &p.out
	}
	if l.logf != nil {
		l.logf("lab: start %s", strings.Join(cmd.Args, " "))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	l.procs = append(l.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID of the process.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Output so far (stdout and stderr) when the lab collected it.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit, bounded by timeout.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("lab: %s still running after %v", p.Cmd.Args, timeout)
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	return syscall.Kill(p.PID(), sig)
}

// Stop sends SIGTERM, then SIGKILL after two seconds, and waits.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(2 * time.Second):
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// PIDs lists the processes running in a lab namespace.
func (l *Lab) PIDs(ns string) []int {
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join("/run/netns", l.NS(ns)), &st) != nil {
		return nil
	}
	return pidsIn(map[uint64]bool{st.Ino: true})
}

// KillAll ends every process in a lab namespace (SIGTERM, then SIGKILL).
// Everything in a lab namespace was started by this lab, so this also
// reaches daemons that a command forked off.
func (l *Lab) KillAll(ns string) {
	killInNamespaces([]string{l.NS(ns)})
}

// LinkDown sets an interface down.
func (l *Lab) LinkDown(ns, dev string) error { return l.Exec(ns, "ip", "link", "set", dev, "down") }

// LinkUp sets an interface up.
func (l *Lab) LinkUp(ns, dev string) error { return l.Exec(ns, "ip", "link", "set", dev, "up") }

// AddAddr adds an address (with prefix length) to an interface.
// IPv6 addresses skip duplicate address detection, as at build time.
func (l *Lab) AddAddr(ns, dev string, p netip.Prefix) error {
	if p.Addr().Is6() {
		a := addr6(ns, p, dev)
		return l.Exec(a[0], a[1:]...)
	}
	return l.Exec(ns, "ip", "addr", "add", p.String(), "dev", dev)
}

// DelAddr removes an address from an interface.
func (l *Lab) DelAddr(ns, dev string, p netip.Prefix) error {
	return l.Exec(ns, "ip", "addr", "del", p.String(), "dev", dev)
}

// FlushConntrack drops every connection tracking entry in a namespace (in a
// NAT router: the NAT mappings).
func (l *Lab) FlushConntrack(ns string) error {
	out, err := l.Output(ns, "conntrack", "-F")
	// conntrack -F prints a notice on stderr even on success; only the exit
	// status counts.
	if err != nil {
		return fmt.Errorf("conntrack flush: %w (%s)", err, out)
	}
	return nil
}

// RestartNAT makes a NAT router lose its mappings the way a restart does:
// the table is flushed while the router forwards nothing from its LAN side,
// until a UDP packet from outside (a download still under way) has reached
// it and taken its old public port, or maxPause has passed. The client's
// flow then gets a new public port, as nf_nat picks one when the natural
// one is taken; lab.md notes this is what breaks strongSwan's own client.
// It returns how long the LAN side was held.
func (l *Lab) RestartNAT(router string, maxPause time.Duration) (time.Duration, error) {
	var public netip.Addr
	for _, u := range l.Uplinks {
		if u.Router == router {
			public = u.Public.Addr()
		}
	}
	if !public.IsValid() {
		return 0, fmt.Errorf("lab: %q is not a NAT router", router)
	}
	if err := l.Exec(router, "nft", "add table ip natpause; add chain ip natpause hold { type filter hook forward priority 0; }; add rule ip natpause hold iifname \"lan\" drop"); err != nil {
		return 0, err
	}
	start := time.Now()
	err := l.FlushConntrack(router)
	for err == nil && time.Since(start) < maxPause {
		// After the flush, with the LAN side held, every entry toward
		// the public address was made by a packet from outside.
		out, lerr := l.Output(router, "conntrack", "-L", "-p", "udp", "-d", public.String())
		if lerr == nil && strings.Contains(out, "dst="+public.String()) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	held := time.Since(start)
	return held, errors.Join(err, l.Exec(router, "nft", "delete table ip natpause"))
}

// NATMappings lists a NAT router's UDP conntrack entries (conntrack -L).
func (l *Lab) NATMappings(router string) (string, error) {
	return l.Output(router, "conntrack", "-L", "-p", "udp")
}

// NewPublic is the address ChangeNATAddress gives each NAT router: still
// routed to the router by inet, but not the one the gateway knows.
var NewPublic = map[string]netip.Addr{
	NATWLAN: netip.MustParseAddr("198.51.100.10"),
	NATWWAN: netip.MustParseAddr("198.51.100.14"),
}

// ChangeNATAddress makes a NAT router translate to a new public address and
// forget its mappings, as a carrier-grade NAT does when it reassigns a
// subscriber: the client keeps its own address and sees no interface event.
func (l *Lab) ChangeNATAddress(router string) error {
	addr, ok := NewPublic[router]
	if !ok {
		return fmt.Errorf("lab: %q is not a NAT router", router)
	}
	for _, s := range [][]string{
		{router, "ip", "addr", "add", addr.String() + "/32", "dev", "wan"},
		{Inet, "ip", "route", "replace", addr.String() + "/32", "dev", "to-" + l.uplinkOf(router)},
		{router, "nft", "flush chain ip nat post; add rule ip nat post oifname \"wan\" snat to " + addr.String()},
	} {
		if err := l.Exec(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return l.FlushConntrack(router)
}

func (l *Lab) uplinkOf(router string) string {
	for _, u := range l.Uplinks {
		if u.Router == router {
			return u.Name
		}
	}
	return ""
}

// Ping sends count pings from ns to dst and fails unless all are answered
// (one reply is enough when count is 1).
func (l *Lab) Ping(ns string, dst netip.Addr, count int) error {
	_, err := l.Output(ns, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-W", "2", "-i", "0.2", dst.String())
	return err
}

// WaitPing retries a single ping until it is answered or timeout passes.
func (l *Lab) WaitPing(ns string, dst netip.Addr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := l.Output(ns, "ping", "-n", "-q", "-c", "1", "-W", "1", dst.String())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Namespaces lists the lab's namespaces that currently exist.
func (l *Lab) Namespaces() ([]string, error) {
	all, err := listNamespaces()
	if err != nil {
		return nil, err
	}
	var ours []string
	for _, n := range all {
		if strings.HasPrefix(n, l.Prefix) {
			ours = append(ours, n)
		}
	}
	return ours, nil
}

func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// Sweep removes namespaces (and /etc/netns entries) of lab runs whose
// process no longer exists, killing whatever still runs inside them.
// Namespaces of live runs and names without our prefix are left alone.
func Sweep() error {
	names, err := listNamespaces()
	if err != nil {
		return err
	}
	var stale []string
	for _, n := range names {
		if pid, ok := ownerPID(n); ok && !alive(pid) {
			stale = append(stale, n)
		}
	}
	if etc, err := os.ReadDir("/etc/netns"); err == nil {
		for _, e := range etc {
			if pid, ok := ownerPID(e.Name()); ok && !alive(pid) {
				os.RemoveAll(filepath.Join("/etc/netns", e.Name()))
			}
		}
	}
	if len(stale) == 0 {
		return nil
	}
	killInNamespaces(stale)
	for _, n := range stale {
		if err := run("ip", "netns", "delete", n); err != nil {
			return err
		}
	}
	return nil
}

// ownerPID parses "<Prefix><pid>-<seq>-<role>".
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	pidStr, rest, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	seqStr, role, ok := strings.Cut(rest, "-")
	if !ok || role == "" {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	if _, err := strconv.Atoi(seqStr); err != nil {
		return 0, false
	}
	return pid, true
}

// alive reports whether pid runs. A killed run can linger as a zombie until
// its parent reaps it (or forever under an init that does not reap), which
// counts as dead.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

// killInNamespaces kills every process whose network namespace is one of
// the named ones. Only lab namespaces are passed here, and everything inside
// them was started by a lab run (daemons spawned by our commands included).
func killInNamespaces(names []string) {
	inodes := map[uint64]bool{}
	for _, n := range names {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", n), &st) == nil {
			inodes[st.Ino] = true
		}
	}
	if len(inodes) == 0 {
		return
	}
	for round := 0; round < 20; round++ {
		pids := pidsIn(inodes)
		if len(pids) == 0 {
			return
		}
		sig := syscall.SIGTERM
		if round >= 10 {
			sig = syscall.SIGKILL
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pidsIn(inodes map[uint64]bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st) != nil {
			continue
		}
		if inodes[st.Ino] {
			pids = append(pids, pid)
		}
	}
	return pids
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

var reIperfReceiver = regexp.MustCompile(`([\d.]+) Mbits/sec\s+(?:\d+\s+)?receiver`)

// TCPTransfer runs an iperf3 server in srvNS on dst and a client in cliNS
// sending for d, and returns the receiver's throughput in Mbit/s. It fails
// when nothing arrived.
func (l *Lab) TCPTransfer(cliNS, srvNS string, dst netip.Addr, d time.Duration) (float64, error) {
	return l.TCPTransferRate(cliNS, srvNS, dst, d, "")
}

// TCPTransferRate is TCPTransfer capped at rate (iperf3 -b, e.g. "20M"; ""
// means as fast as it goes): a connection that must survive a move without
// filling every queue on the way.
func (l *Lab) TCPTransferRate(cliNS, srvNS string, dst netip.Addr, d time.Duration, rate string) (float64, error) {
	return l.tcpTransfer(cliNS, srvNS, dst, d, rate, false)
}

// TCPDownloadRate is TCPTransferRate with the data flowing from the server
// to the client (iperf3 -R): traffic the far side keeps sending while the
// client's uplink changes under it.
func (l *Lab) TCPDownloadRate(cliNS, srvNS string, dst netip.Addr, d time.Duration, rate string) (float64, error) {
	return l.tcpTransfer(cliNS, srvNS, dst, d, rate, true)
}

func (l *Lab) tcpTransfer(cliNS, srvNS string, dst netip.Addr, d time.Duration, rate string, reverse bool) (float64, error) {
	srv, err := l.Start(srvNS, "iperf3", "-s", "-1", "-B", dst.String())
	if err != nil {
		return 0, err
	}
	defer srv.Stop()
	secs := strconv.Itoa(max(1, int(d.Seconds())))
	var out string
	for i := 0; i < 30; i++ { // the server needs a moment to listen
		args := []string{"iperf3", "-c", dst.String(), "-t", secs, "-f", "m"}
		if rate != "" {
			args = append(args, "-b", rate)
		}
		if reverse {
			args = append(args, "-R")
		}
		out, err = l.Output(cliNS, args...)
		if err == nil || !strings.Contains(out, "refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return 0, fmt.Errorf("TCP transfer to %v: %w", dst, err)
	}
	m := reIperfReceiver.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("TCP transfer to %v: no receiver line in:\n%s", dst, out)
	}
	mbps, err := strconv.ParseFloat(m[1], 64)
	if err != nil || mbps <= 0 {
		return 0, fmt.Errorf("TCP transfer to %v moved nothing:\n%s", dst, out)
	}
	return mbps, nil
}

// gatewayIf is the lab gateway's interface of one of its addresses, with
// the default routes that leave through it (New builds them; removing the
// address flushes them).
type gatewayIf struct {
	dev    string
	prefix netip.Prefix
	via    netip.Addr
	metric string
	table  string
}

func gatewayIfOf(a netip.Addr) (gatewayIf, error) {
	switch a {
	case GatewayAddr1.Addr():
		return gatewayIf{"eth0", GatewayAddr1, InetGW1.Addr(), "100", "101"}, nil
	case GatewayAddr2.Addr():
		return gatewayIf{"eth1", GatewayAddr2, InetGW2.Addr(), "200", "102"}, nil
	case GatewayAddr1V6.Addr():
		return gatewayIf{"eth0", GatewayAddr1V6, InetGW1V6.Addr(), "100", "101"}, nil
	case GatewayAddr2V6.Addr():
		return gatewayIf{"eth1", GatewayAddr2V6, InetGW2V6.Addr(), "200", "102"}, nil
	}
	return gatewayIf{}, fmt.Errorf("gateway address %s is not one of the lab's", a)
}

// RemoveGatewayAddr removes one of the gateway's addresses from its
// interface, which takes the default routes through it along.
func (l *Lab) RemoveGatewayAddr(a netip.Addr) error {
	g, err := gatewayIfOf(a)
	if err != nil {
		return err
	}
	return l.DelAddr(Gateway, g.dev, g.prefix)
}

// RestoreGatewayAddr puts an address RemoveGatewayAddr removed back, with
// its default routes (the main table's and the address's own).
func (l *Lab) RestoreGatewayAddr(a netip.Addr) error {
	g, err := gatewayIfOf(a)
	if err != nil {
		return err
	}
	cmd := fmt.Sprintf("ip addr add %[1]s dev %[2]s && ip route replace default via %[3]s dev %[2]s metric %[4]s && ip route replace default via %[3]s dev %[2]s table %[5]s",
		g.prefix, g.dev, g.via, g.metric, g.table)
	if a.Is6() {
		// Without DAD where the kernel allows it: a tentative address
		// cannot be sent from yet.
		cmd = fmt.Sprintf("ip -6 addr add %[1]s dev %[2]s nodad 2>/dev/null || ip -6 addr add %[1]s dev %[2]s; ip -6 route replace default via %[3]s dev %[2]s metric %[4]s && ip -6 route replace default via %[3]s dev %[2]s table %[5]s",
			g.prefix, g.dev, g.via, g.metric, g.table)
	}
	return l.Exec(Gateway, "sh", "-c", cmd)
}
