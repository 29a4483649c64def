package interop

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestTSClaimRefused: alice (roam, virtual IP by CP) and two strongSwan
// clients in the inet namespace, without CP, on one roam gateway. Carol,
// granted nothing, asks for alice's inner address as her TSi: she gets
// TS_UNACCEPTABLE. Bob, granted 10.99.201.0/24 (ts in the gateway file),
// asks for alice's address and his network: he gets only his network.
// Alice's traffic keeps reaching alice throughout.
func TestTSClaimRefused(t *testing.T) {
	l, bin := setup(t)
	const bobPSK, carolPSK = "interop-bob-tree-horse", "interop-carol-river-stone"
	bobNet := netip.MustParsePrefix("10.99.201.0/24")
	ike := []string{"aes256gcm16-prfsha256-curve25519"}
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, IKE: ike,
		Clients: []lab.RoamGatewayClient{
			{ID: "bob@example.com", PSK: bobPSK, TS: []string{bobNet.String()}},
			{ID: "carol@example.com", PSK: carolPSK},
		}})
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, nil, ike))
	var sw *lab.Charon
	fail := func(format string, args ...any) {
		t.Helper()
		t.Logf("roam gateway output:\n%s", gp.Output())
		if sw != nil {
			t.Logf("strongSwan clients' log:\n%s", sw.Log())
		}
		t.Fatalf(format, args...)
	}
	var err error
	for i := 0; i < 3; i++ { // the gateway may still be starting
		if _, err = r.Connect("corp", 20*time.Second); err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		fail("alice connect: %v", err)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("alice's ping through the tunnel: %v", err)
	}
	st := connected(t, r, "corp")
	alice, err := netip.ParseAddr(strings.Split(st.VirtualIP, "/")[0])
	if err != nil {
		fail("alice's virtual IP %q: %v", st.VirtualIP, err)
	}
	aliceTS := netip.PrefixFrom(alice, 32)
	claim := func(name, id, psk string, ts []netip.Prefix) lab.SwanConn {
		return lab.SwanConn{Name: name, Role: "client", Auth: "psk", PSK: psk,
			Remote: []netip.Addr{lab.GatewayAddr1.Addr()}, LocalID: id, RemoteID: lab.GatewayID,
			IKE: ike, ESP: lab.DefaultESP, RemoteTS: []netip.Prefix{lab.ProtectedNet}, LocalTS: ts}
	}
	sw, err = l.StartCharon(lab.Inet, lab.CharonOptions{Conns: []lab.SwanConn{
		claim("carol", "carol@example.com", carolPSK, []netip.Prefix{aliceTS}),
		claim("bob", "bob@example.com", bobPSK, []netip.Prefix{aliceTS, bobNet}),
	}})
	if err != nil {
		fail("strongSwan clients: %v", err)
	}
	t.Cleanup(sw.Stop)

	if err := sw.Initiate("carol", 10*time.Second); err == nil {
		fail("carol's Child SA for alice's address %v was accepted", aliceTS)
	}
	if !strings.Contains(sw.Log(), "TS_UNACCEPTABLE") {
		fail("carol was not told TS_UNACCEPTABLE")
	}
	if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 3); err != nil {
		fail("alice's traffic after carol's claim: %v", err)
	}

	// strongSwan routes the tunnel from an address of bob's network.
	if err := l.AddAddr(lab.Inet, "lo", netip.PrefixFrom(bobNet.Addr().Next(), 24)); err != nil {
		fail("bob's network: %v", err)
	}
	if err := sw.Initiate("bob", 10*time.Second); err != nil {
		fail("bob's Child SA: %v", err)
	}
	sas, err := sw.WaitSA(3*time.Second, func(sa lab.IKESA) bool {
		return sa.Conn == "bob" && lab.Established(sa) && len(sa.Children) > 0
	})
	if err != nil {
		fail("bob's SA: %v", err)
	}
	for _, sa := range sas {
		if sa.Conn != "bob" {
			continue
		}
		for _, c := range sa.Children {
			if !slices.Equal(c.LocalTS, []string{bobNet.String()}) {
				fail("bob's Child SA has local TS %v, want only %v", c.LocalTS, bobNet)
			}
		}
	}
	if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 3); err != nil {
		fail("alice's traffic after bob's claim: %v", err)
	}
}
