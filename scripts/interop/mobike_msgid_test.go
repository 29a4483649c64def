package interop

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// dropIKEResponsesToClient makes a NAT router drop every IKE response
// (UDP from port 4500 behind the non-ESP marker, the header's Response
// flag set) on its way to the client, and nothing else: the gateway's
// answers are lost, its requests and ESP pass.
func dropIKEResponsesToClient(l *lab.Lab, router string) error {
	// Transport header bits: 0-63 UDP, 64-95 the non-ESP marker, then the
	// IKE header, whose flags octet is its 20th (bit 96+152); the Response
	// flag is that octet's third bit.
	return l.Exec(router, "nft", `add table inet ikeresp; add chain inet ikeresp inbound { type filter hook forward priority 0; }; add rule inet ikeresp inbound oifname "lan" udp sport 4500 @th,64,32 0 @th,250,1 1 counter drop`)
}

// TestMOBIKEMoveTwiceAnswerLostStrongSwan: the client loses Wi-Fi and
// moves to the cellular uplink, whose NAT router drops the gateway's IKE
// answers; strongSwan takes the UPDATE_SA_ADDRESSES and moves there, but
// the client never hears it. Wi-Fi returns while that update is
// outstanding (or after it gave up): the client retransmits it over
// Wi-Fi (same message ID, the cellular copy among the copies) and
// strongSwan answers the copy it took from its cache, over Wi-Fi, while
// its SA stays on the cellular NAT's address. The client must then send
// a new update (next message ID) over Wi-Fi, and strongSwan must end on
// the Wi-Fi NAT's address with traffic flowing; before, the client
// believed it was on Wi-Fi while strongSwan sent ESP to the cellular
// uplink.
func TestMOBIKEMoveTwiceAnswerLostStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gw := startSwanGateway(t, l, pki, "psk", nil)
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	fail := failWith(t, evidence{"gateway log", gw.Log}, roamStatus("roam status", r), clientLog(r), evidence{"nft counter", func() string {
		out, _ := l.Output(lab.NATWWAN, "nft", "list", "table", "inet", "ikeresp")
		return out
	}})
	connectOnce(t, l, r, fail)
	if st := connected(t, r, "corp"); st.Interface != lab.WLAN {
		fail("tunnel starts on %q, want wlan", st.Interface)
	}
	remoteIs := func(want string) (string, bool) {
		sas, err := gw.ListSAs()
		if err != nil || len(sas) != 1 {
			return fmt.Sprintf("%d SAs, %v", len(sas), err), false
		}
		return sas[0].Remote.Addr().String(), sas[0].Remote.Addr().String() == want
	}
	if err := dropIKEResponsesToClient(l, lab.NATWWAN); err != nil {
		fail("nft: %v", err)
	}
	if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
		fail("wlan down: %v", err)
	}
	// strongSwan took the update from the cellular NAT's address.
	wwanPublic := lab.PublicWWAN.Addr().String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, ok := remoteIs(wwanPublic)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			fail("strongSwan's SA on %s, want %s after the move to wwan", got, wwanPublic)
		}
		time.Sleep(50 * time.Millisecond)
	}
	movedAt := time.Now()
	if err := wlanBack(l); err != nil {
		fail("wlan back: %v", err)
	}
	wlanPublic := lab.PublicWLAN.Addr().String()
	// The returning uplink joins the update still unanswered (at once, or
	// once it is 300 ms old): about 0.25-0.45 s on the lab at load 0.5-1.4.
	// Before, the client waited for that update to run out (10.5 s); 5 s
	// leaves room for a loaded machine and fails the old behaviour.
	deadline = time.Now().Add(5 * time.Second)
	for {
		got, ok := remoteIs(wlanPublic)
		st := connected(t, r, "corp")
		if ok && st.Interface == lab.WLAN && st.State == "established" {
			t.Logf("strongSwan on %s and the client on wlan %v after Wi-Fi returned", got, time.Since(movedAt).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			fail("after Wi-Fi returned: strongSwan's SA on %s (want %s), client %s on %q", got, wlanPublic, st.State, st.Interface)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("no traffic through the tunnel after the moves: %v", err)
	}
	// Still right a while later: nothing moved strongSwan back.
	time.Sleep(3 * time.Second)
	if got, ok := remoteIs(wlanPublic); !ok {
		fail("strongSwan's SA on %s 3 s later, want %s", got, wlanPublic)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("no traffic through the tunnel 3 s later: %v", err)
	}
	out, _ := l.Output(lab.NATWWAN, "nft", "list", "table", "inet", "ikeresp")
	t.Logf("nat-wwan's drop rule:\n%s", out)
	if log := clientLog(r).read(); strings.Contains(log, "updating again") {
		t.Logf("the client followed strongSwan's stored answer with a new update")
	} else {
		t.Logf("the client's log shows no follow-up update")
	}
}
