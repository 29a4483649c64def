package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RemoveAddress takes an inner address off the device: after a reconnect the
// gateway may assign another one, and the old one must not stay as a source
// the gateway no longer routes back to us. An address already gone is not
// an error.
func (d *Device) RemoveAddress(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("tun: device closed")
	}
	link := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: d.index, Name: d.name}}
	if err := netlink.AddrDel(link, &netlink.Addr{IPNet: prefixToIPNet(p)}); err != nil &&
		!errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove address %s from %s: %w", p, d.name, err)
	}
	kept := d.addrs[:0]
	for _, a := range d.addrs {
		if a.IPNet.String() != prefixToIPNet(p).String() {
			kept = append(kept, a)
		}
	}
	d.addrs = kept
	return nil
}
