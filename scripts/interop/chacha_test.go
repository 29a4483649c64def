package interop

import (
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestChaCha20Poly1305StrongSwan: RFC 7634 for both the IKE SA and the
// Child SA against strongSwan's chapoly plugin, through the wlan NAT, with
// ping and a TCP transfer through the tunnel.
func TestChaCha20Poly1305StrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	ike := []string{"chacha20poly1305-prfsha256-curve25519"}
	esp := []string{"chacha20poly1305"}
	gw := startSwanConn(t, l, pki, lab.GatewayConn("psk", goodPSK, ike, esp))
	p := lab.LabProfile("psk", goodPSK, pki, ike)
	p.ESP = esp
	r := roamClient(t, l, bin, p)
	fail := failWith(t, swanLog("strongSwan gateway log", gw))
	connectOnce(t, l, r, fail)
	tcpTransfer(t, l)
	sas, err := gw.WaitSA(2*time.Second, lab.Established)
	if err != nil {
		fail("%v", err)
	}
	if !strings.Contains(strings.ToUpper(sas[0].Proposal), "CHACHA20") {
		t.Errorf("strongSwan's IKE SA uses %q, want ChaCha20-Poly1305", sas[0].Proposal)
	}
	st := connected(t, r, "corp")
	if len(st.Children) != 1 || st.Children[0].Proposal != "chacha20poly1305" {
		t.Errorf("roam status children %+v, want one chacha20poly1305 Child SA", st.Children)
	}
	if st.Children[0].PacketsIn == 0 {
		t.Errorf("no ESP packets opened: %+v", st.Children[0])
	}
}
