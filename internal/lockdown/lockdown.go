// Package lockdown keeps traffic from leaving the host outside a VPN tunnel
// (a kill switch). Rules is an nftables table of its own, inet roam, whose
// output chain drops every packet except those that leave through the
// tunnel's device, go to the gateway's IKE and NAT-T ports (and, for a
// connection that may use RFC 9329 streams, its TCP ports), are DHCP, IPv6
// neighbour discovery or loopback, and, when asked, go to the local network.
// Its forward chain lets what the host routes for others (containers, VMs)
// only into or out of the tunnel, or to the local network when asked.
//
// The table is kernel state: when the process dies without removing it the
// host stays locked (fail closed) until RemoveLeftovers runs, which the
// daemon does when it starts and on `roam disconnect --all`.
package lockdown

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of the inet table the rules live in; nothing else
// is touched.
const TableName = "roam"

// Config says what the rules let out.
type Config struct {
	// Interface is the tunnel's device: everything may leave through it.
	Interface string
	// Gateways are the gateway's addresses known so far; AllowGateways
	// adds those learnt later.
	Gateways []netip.Addr
	// Ports are the gateway's UDP ports for IKE and ESP in UDP.
	Ports []uint16
	// TCPPorts are the gateway's TCP ports for IKE and ESP in a TCP or
	// TLS stream (RFC 9329); none lets no TCP out to the gateway.
	TCPPorts []uint16
	// LAN lets out traffic to the private, link-local and multicast ranges.
	LAN bool
	// IPv6 lets out all IPv6, for a tunnel that carries IPv4 only.
	IPv6 bool
	// ProbeMark and ProbePort let out the daemon's captive portal probe:
	// TCP to ProbePort, and its name lookup (port 53), from sockets that
	// carry ProbeMark (SO_MARK, which only privileged processes set).
	// ProbePort 0: no probe.
	ProbeMark uint32
	ProbePort uint16
}

// ErrHeld means the table exists already: another connection holds the
// lockdown, or a crashed daemon left it.
var ErrHeld = errors.New("table inet " + TableName + " exists (another lockdown connection, or a crashed daemon's: `roam disconnect --all` removes it)")

// Rules are installed lockdown rules. Its methods are safe for concurrent use.
type Rules struct {
	mu       sync.Mutex
	table    *nftables.Table
	gw4, gw6 *nftables.Set
	known    []netip.Addr
	// portal4, portal6: a captive portal's addresses, let out on TCP
	// ports 80 and 443 while set (AllowPortal).
	portal4, portal6 *nftables.Set
	portal           []netip.Addr
	removed          bool
}

// Apply installs the rules in one transaction: they are in force entirely
// or not at all.
func Apply(cfg Config) (*Rules, error) {
	if cfg.Interface == "" || len(cfg.Interface) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("lockdown: bad interface name %q", cfg.Interface)
	}
	if len(cfg.Ports) == 0 {
		return nil, errors.New("lockdown: no gateway ports")
	}
	nc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("lockdown: %w", err)
	}
	if held, err := exists(nc); err != nil {
		return nil, fmt.Errorf("lockdown: listing tables: %w", err)
	} else if held {
		return nil, fmt.Errorf("lockdown: %w", ErrHeld)
	}
	r := &Rules{table: &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}}
	nc.CreateTable(r.table)
	r.gw4 = &nftables.Set{Table: r.table, Name: "gateway4", KeyType: nftables.TypeIPAddr}
	r.gw6 = &nftables.Set{Table: r.table, Name: "gateway6", KeyType: nftables.TypeIP6Addr}
	ports := &nftables.Set{Table: r.table, Name: "ikeports", KeyType: nftables.TypeInetService}
	r.portal4 = &nftables.Set{Table: r.table, Name: "portal4", KeyType: nftables.TypeIPAddr}
	r.portal6 = &nftables.Set{Table: r.table, Name: "portal6", KeyType: nftables.TypeIP6Addr}
	tcpPorts := &nftables.Set{Table: r.table, Name: "streamports", KeyType: nftables.TypeInetService}
	r.known = uniqueAddrs(cfg.Gateways)
	g4, g6 := addrElements(r.known)
	var pe, te []nftables.SetElement
	for _, p := range uniquePorts(cfg.Ports) {
		pe = append(pe, nftables.SetElement{Key: be16(p)})
	}
	for _, p := range uniquePorts(cfg.TCPPorts) {
		te = append(te, nftables.SetElement{Key: be16(p)})
	}
	for _, s := range []struct {
		set  *nftables.Set
		elts []nftables.SetElement
	}{{r.gw4, g4}, {r.gw6, g6}, {ports, pe}, {tcpPorts, te}, {r.portal4, nil}, {r.portal6, nil}} {
		if err := nc.AddSet(s.set, s.elts); err != nil {
			return nil, fmt.Errorf("lockdown: set %s: %w", s.set.Name, err)
		}
	}
	drop := nftables.ChainPolicyDrop
	out := nc.AddChain(&nftables.Chain{
		Name: "output", Table: r.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	for _, exprs := range append(ruleExprs(cfg, r.gw4, r.gw6, ports, tcpPorts), portalExprs(cfg, r.portal4, r.portal6)...) {
		nc.AddRule(&nftables.Rule{Table: r.table, Chain: out, Exprs: append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})})
	}
	fwd := nc.AddChain(&nftables.Chain{
		Name: "forward", Table: r.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	for _, exprs := range forwardExprs(cfg) {
		nc.AddRule(&nftables.Rule{Table: r.table, Chain: fwd, Exprs: append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})})
	}
	if err := nc.Flush(); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("lockdown: %w", ErrHeld)
		}
		return nil, fmt.Errorf("lockdown: installing the rules: %w", err)
	}
	return r, nil
}

// AllowGateways lets IKE and ESP out to more of the gateway's addresses
// (learnt through MOBIKE, or a gateway's switch request). Known ones cost
// nothing, so it may be called on every path test.
func (r *Rules) AllowGateways(addrs ...netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return nil
	}
	var added []netip.Addr
	for _, a := range uniqueAddrs(addrs) {
		if !slices.Contains(r.known, a) {
			added = append(added, a)
		}
	}
	if len(added) == 0 {
		return nil
	}
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("lockdown: %w", err)
	}
	if err := addAddrs(nc, r.gw4, r.gw6, added, "gateway addresses"); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("lockdown: adding gateway addresses %v: %w", added, err)
	}
	r.known = append(r.known, added...)
	return nil
}

// Gateways returns the gateway addresses the rules let IKE and ESP out to.
func (r *Rules) Gateways() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.known)
}

// Remove lifts the rules. It is idempotent.
func (r *Rules) Remove() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return nil
	}
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("lockdown: %w", err)
	}
	nc.DelTable(r.table)
	if err := nc.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lockdown: removing the rules: %w", err)
	}
	r.removed = true
	return nil
}

// RemoveLeftovers deletes the table a crashed process left, and reports
// whether there was one.
func RemoveLeftovers() (bool, error) {
	nc, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("lockdown: %w", err)
	}
	held, err := exists(nc)
	if err != nil || !held {
		if err != nil {
			err = fmt.Errorf("lockdown: listing tables: %w", err)
		}
		return false, err
	}
	nc.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
	if err := nc.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("lockdown: removing leftover rules: %w", err)
	}
	return true, nil
}

// Active reports whether the lockdown table is in place.
func Active() (bool, error) {
	nc, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("lockdown: %w", err)
	}
	return exists(nc)
}

func exists(nc *nftables.Conn) (bool, error) {
	ts, err := nc.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == TableName }), nil
}

// Header offsets the rules match on.
const (
	ip4DaddrOffset = 16
	ip6DaddrOffset = 24
	sportOffset    = 0
	dportOffset    = 2
	icmp6TypeOff   = 0
)

// ICMPv6 types let out: router and neighbour solicitation and
// advertisement, redirect (133-137), and MLDv2 reports (143), which
// switches that snoop multicast need for ND to keep working.
const (
	icmp6NDFirst   = 133
	icmp6NDLast    = 137
	icmp6MLDReport = 143
)

// lanPrefixes are what lockdown_lan lets out: private, link-local and
// multicast ranges (RFC 1918, 3927, 4193, 4291).
var lanPrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// ruleExprs are the accepting rules' matches, in order (each gets an
// accept verdict); the chain's policy drops the rest.
func ruleExprs(cfg Config, gw4, gw6, ports, tcpPorts *nftables.Set) [][]expr.Any {
	rules := [][]expr.Any{
		oifname("lo"),
		oifname(cfg.Interface),
		// IKE and ESP in UDP to the gateway.
		concat(proto(unix.NFPROTO_IPV4, unix.IPPROTO_UDP),
			payloadIn(expr.PayloadBaseNetworkHeader, ip4DaddrOffset, 4, gw4),
			payloadIn(expr.PayloadBaseTransportHeader, dportOffset, 2, ports)),
		concat(proto(unix.NFPROTO_IPV6, unix.IPPROTO_UDP),
			payloadIn(expr.PayloadBaseNetworkHeader, ip6DaddrOffset, 16, gw6),
			payloadIn(expr.PayloadBaseTransportHeader, dportOffset, 2, ports)),
		// DHCP and DHCPv6 clients.
		concat(proto(unix.NFPROTO_IPV4, unix.IPPROTO_UDP), udpPorts(68, 67)),
		concat(proto(unix.NFPROTO_IPV6, unix.IPPROTO_UDP), udpPorts(546, 547)),
		// IPv6 neighbour discovery.
		concat(proto(unix.NFPROTO_IPV6, unix.IPPROTO_ICMPV6),
			[]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: icmp6TypeOff, Len: 1},
				&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{icmp6NDFirst}, ToData: []byte{icmp6NDLast}},
			}),
		concat(proto(unix.NFPROTO_IPV6, unix.IPPROTO_ICMPV6),
			[]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: icmp6TypeOff, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{icmp6MLDReport}},
			}),
	}
	if len(cfg.TCPPorts) > 0 {
		// IKE and ESP in a TCP stream to the gateway (RFC 9329).
		rules = append(rules,
			concat(proto(unix.NFPROTO_IPV4, unix.IPPROTO_TCP),
				payloadIn(expr.PayloadBaseNetworkHeader, ip4DaddrOffset, 4, gw4),
				payloadIn(expr.PayloadBaseTransportHeader, dportOffset, 2, tcpPorts)),
			concat(proto(unix.NFPROTO_IPV6, unix.IPPROTO_TCP),
				payloadIn(expr.PayloadBaseNetworkHeader, ip6DaddrOffset, 16, gw6),
				payloadIn(expr.PayloadBaseTransportHeader, dportOffset, 2, tcpPorts)))
	}
	return withLANAndIPv6(cfg, rules)
}

// forwardExprs are the forward chain's accepting matches: what the host
// routes for others (containers, VMs) goes through the tunnel, or comes
// back from it, or stays on the LAN when allowed.
func forwardExprs(cfg Config) [][]expr.Any {
	rules := [][]expr.Any{
		ifname(expr.MetaKeyIIFNAME, cfg.Interface),
		ifname(expr.MetaKeyOIFNAME, cfg.Interface),
	}
	return withLANAndIPv6(cfg, rules)
}

// withLANAndIPv6 adds the matches both chains share: the LAN prefixes when
// cfg allows the LAN, and all IPv6 when cfg lets it out (a tunnel that
// carries IPv4 only).
func withLANAndIPv6(cfg Config, rules [][]expr.Any) [][]expr.Any {
	if cfg.LAN {
		for _, p := range lanPrefixes {
			rules = append(rules, prefixMatch(p))
		}
	}
	if cfg.IPv6 {
		rules = append(rules, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		})
	}
	return rules
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func oifname(name string) []expr.Any { return ifname(expr.MetaKeyOIFNAME, name) }

func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// proto matches the network family and the transport protocol.
func proto(family, l4 byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
	}
}

func payloadIn(base expr.PayloadBase, off, n uint32, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func udpPorts(src, dst uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: sportOffset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(src)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: dportOffset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(dst)},
	}
}

// prefixMatch matches a destination inside p, of p's family.
func prefixMatch(p netip.Prefix) []expr.Any {
	family, off := byte(unix.NFPROTO_IPV4), uint32(ip4DaddrOffset)
	if p.Addr().Is6() {
		family, off = unix.NFPROTO_IPV6, ip6DaddrOffset
	}
	n := uint32(p.Addr().BitLen() / 8)
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func be16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// addrElements splits addrs into the elements of an IPv4 set and those of
// an IPv6 set.
func addrElements(addrs []netip.Addr) (v4, v6 []nftables.SetElement) {
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, nftables.SetElement{Key: a.AsSlice()})
		} else {
			v6 = append(v6, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	return v4, v6
}

// addAddrs queues addrs on nc for set4 and set6 by family, to be added at
// nc's Flush; what names the addresses in an error.
func addAddrs(nc *nftables.Conn, set4, set6 *nftables.Set, addrs []netip.Addr, what string) error {
	v4, v6 := addrElements(addrs)
	for _, s := range []struct {
		set  *nftables.Set
		elts []nftables.SetElement
	}{{set4, v4}, {set6, v6}} {
		if len(s.elts) == 0 {
			continue
		}
		if err := nc.SetAddElements(s.set, s.elts); err != nil {
			return fmt.Errorf("lockdown: %s: %w", what, err)
		}
	}
	return nil
}

func uniqueAddrs(as []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if a = a.Unmap(); a.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func uniquePorts(ps []uint16) []uint16 {
	var out []uint16
	for _, p := range ps {
		if p != 0 && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Removed reports whether Remove has lifted the rules.
func (r *Rules) Removed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removed
}
