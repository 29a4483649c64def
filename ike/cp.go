package ike

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/roam-vpn/roam/ike/wire"
)

// Configuration attribute types (RFC 7296 3.15.1).
const (
	cfgIP4Address = 1
	cfgIP4Netmask = 2
	cfgIP4DNS     = 3
	cfgIP6Address = 8
	cfgIP6DNS     = 10
)

// parseCPReply extracts the assigned addresses and DNS servers; malformed
// attributes are skipped.
func parseCPReply(c *wire.Config) (vips, dns []netip.Addr) {
	for _, a := range c.Attributes {
		switch a.Type {
		case cfgIP4Address:
			if len(a.Value) == 4 {
				vips = append(vips, netip.AddrFrom4([4]byte(a.Value)))
			}
		case cfgIP6Address:
			if len(a.Value) == 17 {
				vips = append(vips, netip.AddrFrom16([16]byte(a.Value[:16])))
			}
		case cfgIP4DNS:
			if len(a.Value) == 4 {
				dns = append(dns, netip.AddrFrom4([4]byte(a.Value)))
			}
		case cfgIP6DNS:
			if len(a.Value) == 16 {
				dns = append(dns, netip.AddrFrom16([16]byte(a.Value)))
			}
		}
	}
	return vips, dns
}

// cpRequested reports which address families a CFG_REQUEST asks for.
func cpRequested(c *wire.Config) (v4, v6, dns4, dns6 bool) {
	for _, a := range c.Attributes {
		switch a.Type {
		case cfgIP4Address:
			v4 = true
		case cfgIP6Address:
			v6 = true
		case cfgIP4DNS:
			dns4 = true
		case cfgIP6DNS:
			dns6 = true
		}
	}
	return
}

func cpReply(vips []netip.Addr, dns []netip.Addr, dns4, dns6 bool) *wire.Config {
	c := &wire.Config{CfgType: wire.CfgReply}
	for _, a := range vips {
		if a.Is4() {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP4Address, Value: a.AsSlice()})
		} else {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP6Address, Value: append(a.AsSlice(), 128)})
		}
	}
	for _, d := range dns {
		if d.Is4() && dns4 {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP4DNS, Value: d.AsSlice()})
		}
		if d.Is6() && dns6 {
			c.Attributes = append(c.Attributes, wire.ConfigAttribute{Type: cfgIP6DNS, Value: d.AsSlice()})
		}
	}
	return c
}

// identityString renders an identity for logs and events.
func identityString(id *wire.Identification) string { return formatIdentity(id) }

// poolKey identifies a client to the address pool: names compare
// case-insensitively, as identities do in authentication.
func poolKey(id *wire.Identification) string {
	switch id.IDType {
	case wire.IDFQDN, wire.IDRFC822Addr:
		return fmt.Sprintf("%d:%s", id.IDType, strings.ToLower(strings.TrimSuffix(string(id.Data), ".")))
	}
	return fmt.Sprintf("%d:%s", id.IDType, hex.EncodeToString(id.Data))
}
