package interop

import (
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestPQHybrid: roam's default IKE list (the ML-KEM hybrid first) against
// strongSwan 5.9, which has no RFC 9370, connects on a classical proposal;
// roam to roam with the hybrid on the gateway negotiates
// ke1_mlkem768 through IKE_INTERMEDIATE (fragmented: the encapsulation
// key alone is 1184 bytes), and the tunnel carries traffic.
func TestPQHybrid(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	const hybrid = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
	t.Run("strongswan-fallback", func(t *testing.T) {
		gw := startSwanGateway(t, l, pki, "psk", []string{"aes256gcm16-prfsha384-ecp384"})
		r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, []string{"default"}))
		if out, err := r.Connect("corp", 20*time.Second); err != nil {
			t.Logf("strongSwan gateway log:\n%s", gw.Log())
			t.Fatalf("connect with the default proposals: %v\n%s", err, out)
		}
		if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			t.Fatalf("ping through the tunnel: %v", err)
		}
		st := connected(t, r, "corp")
		if st.Proposal != "aes256gcm16-prfsha384-ecp384" {
			t.Errorf("status proposal %q, want the classical aes256gcm16-prfsha384-ecp384", st.Proposal)
		}
		if _, err := r.Disconnect("corp"); err != nil {
			t.Errorf("disconnect: %v", err)
		}
	})
	t.Run("roam-to-roam", func(t *testing.T) {
		_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, IKE: []string{hybrid}})
		r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, []string{"default"}))
		var out string
		var err error
		for i := 0; i < 3; i++ { // the gateway may still be starting
			if out, err = r.Connect("corp", 20*time.Second); err == nil {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		if err != nil {
			t.Logf("roam gateway output:\n%s", gp.Output())
			t.Fatalf("connect: %v\n%s", err, out)
		}
		if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			t.Fatalf("ping through the tunnel: %v", err)
		}
		tcpTransfer(t, l)
		st := connected(t, r, "corp")
		if !strings.Contains(st.Proposal, "ke1_mlkem768") {
			t.Errorf("status proposal %q lacks ke1_mlkem768", st.Proposal)
		}
		t.Logf("negotiated %s", st.Proposal)
		if _, err := r.Disconnect("corp"); err != nil {
			t.Errorf("disconnect: %v", err)
		}
	})
}
