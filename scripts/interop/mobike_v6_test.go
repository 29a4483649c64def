package interop

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// v6Scenario is issue 3's (f): the tunnel runs over IPv4 Wi-Fi; the only
// other uplink, wwan, has lost its IPv4 (an IPv6-only cellular network);
// Wi-Fi goes away. The tunnel must move to one of the gateway's IPv6
// addresses, learnt from its MOBIKE address announcement, and keep its
// inner IPv4 address and TCP connection.
var v6Scenario = mobikeScenario{
	name:      "f-ipv4-replaced-by-ipv6-only",
	prepare:   func(l *lab.Lab) error { return l.DelAddr(lab.Client, lab.WWAN, lab.ClientWWAN) },
	prepareIf: lab.WLAN,
	move:      func(l *lab.Lab) error { return l.LinkDown(lab.Client, lab.WLAN) },
	wantIf:    lab.WWAN,
	before: func(t *testing.T, st lab.Status) {
		t.Helper()
		t.Logf("gateway addresses the client knows: %v", st.PeerAddresses)
		if len(gatewayV6(st)) == 0 {
			t.Fatalf("the gateway announced no IPv6 address; peer addresses %v", st.PeerAddresses)
		}
	},
	after: onIPv6,
}

// gatewayV6 lists the gateway's IPv6 addresses the client knows.
func gatewayV6(st lab.Status) []netip.Addr {
	var out []netip.Addr
	for _, s := range st.PeerAddresses {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			out = append(out, a)
		}
	}
	return out
}

// onIPv6 checks that the tunnel runs from wwan's IPv6 address to one of the
// gateway's, then that it returns to IPv4 when Wi-Fi does.
func onIPv6(t *testing.T, l *lab.Lab, r *lab.Roam, st lab.Status, _ []lab.Event) {
	t.Helper()
	local, err1 := netip.ParseAddrPort(st.Local)
	remote, err2 := netip.ParseAddrPort(st.Remote)
	if err1 != nil || err2 != nil {
		t.Fatalf("status local %q remote %q: %v %v", st.Local, st.Remote, err1, err2)
	}
	gw6 := []netip.Addr{lab.GatewayAddr1V6.Addr(), lab.GatewayAddr2V6.Addr()}
	if local.Addr() != lab.ClientWWANV6.Addr() || !slices.Contains(gw6, remote.Addr()) {
		t.Fatalf("tunnel runs %v -> %v, want %v -> one of %v", local, remote, lab.ClientWWANV6.Addr(), gw6)
	}
	t.Logf("tunnel moved to IPv6: %v -> %v", local, remote)
	backToIPv4(t, l, r)
}

// backToIPv4 brings Wi-Fi back after the move to IPv6: the tunnel returns
// to the preferred IPv4 uplink (IPv6 -> IPv4 outer).
func backToIPv4(t *testing.T, l *lab.Lab, r *lab.Roam) {
	t.Helper()
	if err := wlanBack(l); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := connected(t, r, "corp")
		remote, _ := netip.ParseAddrPort(st.Remote)
		if st.Interface == lab.WLAN && remote.Addr().Is4() {
			t.Logf("back on IPv4: %s -> %s", st.Local, st.Remote)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel did not return to IPv4 wlan: %s -> %s on %s", st.Local, st.Remote, st.Interface)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		t.Fatalf("no ping after returning to IPv4: %v", err)
	}
}

// TestMOBIKEIPv6StrongSwanGateway: scenario (f) against strongSwan, which
// announces every address of the gateway but those of ignored interfaces.
func TestMOBIKEIPv6StrongSwanGateway(t *testing.T) {
	mobikeSwan(t, v6Scenario)
}

// TestMOBIKEIPv6RoamGateway: scenario (f) against roam gateway listening
// on its IPv4 and IPv6 addresses. The client learns the IPv6 ones only from
// the gateway's ADDITIONAL_IP6_ADDRESS notifies, so a gateway that stopped
// announcing its listen addresses fails here.
func TestMOBIKEIPv6RoamGateway(t *testing.T) {
	sc := v6Scenario
	sc.before = func(t *testing.T, st lab.Status) {
		t.Helper()
		if len(gatewayV6(st)) == 0 {
			t.Fatalf("roam gateway announced no IPv6 address (ADDITIONAL_IP6_ADDRESS); peer addresses %v", st.PeerAddresses)
		}
	}
	mobikeRoamGW(t, sc)
}
