package netmon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FuzzMonitorState feeds arbitrary sequences of link and address updates
// through the state and checks what a consumer relies on: the view holds
// only usable addresses on usable, non-ignored links, and replaying the
// reported events on the previous view gives the new one.
func FuzzMonitorState(f *testing.F) {
	f.Add([]byte{0, 2, 1, 1, 2, 0, 0, 2, 4, 0})
	f.Add([]byte{0, 9, 1, 1, 9, 3, 2, 2, 1, 0, 1, 2, 5, 0})
	f.Add([]byte{1, 2, 7, 7, 7, 7, 0, 3, 1, 1, 3, 4, 3, 3, 3, 2})
	names := []string{"lo", "eth0", "wlan0", "roam0", "wwan0"}
	addrs := []string{"192.0.2.1/24", "192.0.2.2/24", "2001:db8::1/64", "fe80::1/64", "127.0.0.1/8", "198.51.100.9/24", "::ffff:203.0.113.4/120", "0.0.0.0/0"}
	flagSets := []int{0, unix.IFA_F_TENTATIVE, unix.IFA_F_TENTATIVE | unix.IFA_F_OPTIMISTIC, unix.IFA_F_DEPRECATED, unix.IFA_F_DADFAILED, unix.IFA_F_PERMANENT}
	scopes := []int{unix.RT_SCOPE_UNIVERSE, unix.RT_SCOPE_LINK, unix.RT_SCOPE_HOST, unix.RT_SCOPE_SITE}
	linkFlags := []uint32{upFlags, unix.IFF_UP, 0, upFlags | unix.IFF_LOOPBACK, unix.IFF_LOWER_UP}
	opers := []netlink.LinkOperState{netlink.OperUp, netlink.OperUnknown, netlink.OperDown, netlink.OperDormant, netlink.OperLowerLayerDown}
	ignore := ignoreList{"roam*"}

	f.Fuzz(func(t *testing.T, data []byte) {
		st := newNetState()
		old := st.view(ignore)
		at := time.Unix(1, 0)
		for len(data) >= 5 {
			op, a, b, c, d := data[0], int(data[1]), int(data[2]), int(data[3]), int(data[4])
			data = data[5:]
			idx := 1 + a%6
			switch op % 4 {
			case 0:
				st.applyLink(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{
					Index: idx, Name: names[b%len(names)], RawFlags: linkFlags[c%len(linkFlags)], OperState: opers[d%len(opers)]}}})
			case 1:
				st.applyLink(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_DELLINK}, Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}})
			case 2, 3:
				p := netip.MustParsePrefix(addrs[b%len(addrs)])
				st.applyAddr(netlink.AddrUpdate{LinkAddress: prefixNet(p), LinkIndex: idx, NewAddr: op%4 == 2,
					Flags: flagSets[c%len(flagSets)], Scope: scopes[d%len(scopes)]})
			}
			now := st.view(ignore)
			for k, a := range now.addrs {
				l := st.links[k.ifindex]
				r := st.addrs[k]
				if !linkUsable(l) || ignore.match(l.name) || !usableLocalAddr(k.addr, r.flags, r.scope) || a.IfName != l.name {
					t.Fatalf("unusable address in view: %+v on %+v (%+v)", a, l, r)
				}
			}
			evs := diff(old, now, current{addr: netip.MustParseAddr("192.0.2.1"), ifindex: 2}, 0, at)
			replayed := make(map[addrKey]bool)
			for k := range old.addrs {
				replayed[k] = true
			}
			gained := false
			for i, ev := range evs {
				switch e := ev.(type) {
				case AddressAdded:
					gained = true
					replayed[addrKey{e.IfIndex, e.Addr}] = true
				case AddressRemoved:
					if gained {
						t.Fatalf("loss after a gain: %q", kinds(evs))
					}
					delete(replayed, addrKey{e.IfIndex, e.Addr})
				case LinkUp:
					gained = true
				case LinkDown:
					if gained {
						t.Fatalf("loss after a gain: %q", kinds(evs))
					}
				case Snapshot:
					if i != len(evs)-1 || len(e.Addrs) != len(now.addrs) {
						t.Fatalf("snapshot misplaced or incomplete: %q", kinds(evs))
					}
				}
			}
			if len(replayed) != len(now.addrs) {
				t.Fatalf("replay gives %v, view has %v", replayed, now.addrs)
			}
			for k := range now.addrs {
				if !replayed[k] {
					t.Fatalf("replay misses %v", k)
				}
			}
			if len(evs) == 0 && !slices.Equal(old.list(), now.list()) {
				t.Fatalf("no events for a changed set: %v -> %v", old.list(), now.list())
			}
			if len(evs) > 0 && !slices.Equal(evs[len(evs)-1].(Snapshot).Addrs, now.list()) {
				t.Fatalf("snapshot %v, view %v", evs[len(evs)-1], now.list())
			}
			old = now
		}
	})
}
