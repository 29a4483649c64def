package lockdown

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// PortalPorts are what a captive portal's addresses are let out on: its
// login page over HTTP and HTTPS.
var PortalPorts = []uint16{80, 443}

// portalExprs are the accepting matches of the captive portal: TCP to the
// portal sets' addresses on PortalPorts, and the daemon's marked probe.
func portalExprs(cfg Config, p4, p6 *nftables.Set) [][]expr.Any {
	var rules [][]expr.Any
	for _, port := range PortalPorts {
		rules = append(rules,
			concat(proto(unix.NFPROTO_IPV4, unix.IPPROTO_TCP),
				payloadIn(expr.PayloadBaseNetworkHeader, ip4DaddrOffset, 4, p4), dport(port)),
			concat(proto(unix.NFPROTO_IPV6, unix.IPPROTO_TCP),
				payloadIn(expr.PayloadBaseNetworkHeader, ip6DaddrOffset, 16, p6), dport(port)))
	}
	if cfg.ProbePort == 0 {
		return rules
	}
	marked := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, cfg.ProbeMark)},
	}
	for _, fam := range []byte{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6} {
		rules = append(rules,
			concat(marked, proto(fam, unix.IPPROTO_TCP), dport(cfg.ProbePort)),
			concat(marked, proto(fam, unix.IPPROTO_UDP), dport(53)),
			concat(marked, proto(fam, unix.IPPROTO_TCP), dport(53)))
	}
	return rules
}

func dport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: dportOffset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(p)},
	}
}

// AllowPortal lets TCP to a captive portal's addresses out on PortalPorts,
// in place of those allowed before; no addresses closes them again.
func (r *Rules) AllowPortal(addrs ...netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return nil
	}
	want := uniqueAddrs(addrs)
	if slices.Equal(want, r.portal) {
		return nil
	}
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("lockdown: %w", err)
	}
	nc.FlushSet(r.portal4)
	nc.FlushSet(r.portal6)
	if err := addAddrs(nc, r.portal4, r.portal6, want, "portal addresses"); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("lockdown: portal addresses %v: %w", want, err)
	}
	r.portal = want
	return nil
}

// Portal returns the captive portal addresses let out now.
func (r *Rules) Portal() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.portal)
}
