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
		connectRoam(t, l, r, failWith(t, gatewayOutput(gp)))
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
	t.Run("roam-to-roam-rekeys", func(t *testing.T) { pqRekeys(t, l, bin, hybrid) })
}

// pqRekeys: roam to roam with the hybrid for the IKE SA and (with PFS)
// the Child SA, and the client's lifetimes short (10 s, the shortest
// allowed, for both): within 30 s the Child SA and the IKE SA are rekeyed,
// each with an IKE_FOLLOWUP_KE after its CREATE_CHILD_SA
// (the gateway logs the additional key exchange of each), while a pinger
// and a TCP transfer run; status still shows ke1_mlkem768 for the IKE SA
// and the Child SA afterwards.
func pqRekeys(t *testing.T, l *lab.Lab, bin, hybrid string) {
	const (
		espHybrid = "aes256gcm16-x25519-ke1_mlkem768"
		run       = 30 * time.Second
	)
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, IKE: []string{hybrid}, ESP: []string{espHybrid}})
	p := lab.LabProfile("psk", goodPSK, nil, []string{hybrid})
	p.ESP = []string{espHybrid}
	p.ChildRekey, p.IKERekey = 10*time.Second, 10*time.Second
	r := roamClient(t, l, bin, p)
	fail := failWith(t, gatewayOutput(gp))
	connectRoam(t, l, r, fail)
	first := map[string]bool{}
	for _, c := range connected(t, r, "corp").Children {
		first[string(c.SPIIn)] = true
	}
	ping := startPinger(t, l, run)
	tcp := tcpInBackground(l.TCPTransferRate, 10*time.Second, "20M")
	// followups counts the rekeys the gateway completed after an
	// IKE_FOLLOWUP_KE.
	followups := func() (child, ikeSA int) {
		return countRekeyLines(gp.Output(), "additional_key_exchanges=1", "Child SA rekeyed by peer", "IKE SA rekeyed by peer")
	}
	childSPIs, ikeSPIs := map[string]bool{}, map[string]bool{}
	var childFollowups, ikeFollowups int
	for deadline := time.Now().Add(run); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		st := connected(t, r, "corp")
		ikeSPIs[st.IKESPIi] = true
		for _, c := range st.Children {
			childSPIs[string(c.SPIIn)] = true
		}
		if childFollowups, ikeFollowups = followups(); childFollowups >= 1 && ikeFollowups >= 1 && len(childSPIs) >= 2 && len(ikeSPIs) >= 2 {
			break
		}
	}
	// The pinger is stopped where it is (it may lag behind its schedule).
	sent, recv := ping.result(t, time.Second)
	if err := <-tcp; err != nil {
		fail("TCP transfer through the rekeys: %v", err)
	}
	st := connected(t, r, "corp")
	t.Logf("%d Child SAs and %d IKE SAs seen; the gateway completed %d Child and %d IKE SA rekeys with an IKE_FOLLOWUP_KE; pinger lost %d of %d; now %s",
		len(childSPIs), len(ikeSPIs), childFollowups, ikeFollowups, sent-recv, sent, st.Proposal)
	if len(childSPIs) < 2 || len(ikeSPIs) < 2 || childFollowups < 1 || ikeFollowups < 1 {
		fail("too few hybrid rekeys in %v", run)
	}
	if !strings.Contains(st.Proposal, "ke1_mlkem768") {
		fail("after the IKE SA rekeys: status proposal %q lacks ke1_mlkem768", st.Proposal)
	}
	rekeyed := 0
	for _, c := range st.Children {
		if first[string(c.SPIIn)] {
			continue // the first Child SA, until its DELETE
		}
		rekeyed++
		if !strings.Contains(c.Proposal, "ke1_mlkem768") {
			fail("after the Child SA rekeys: child proposal %q lacks ke1_mlkem768", c.Proposal)
		}
	}
	if rekeyed == 0 {
		fail("status lists no rekeyed Child SA")
	}
	// Rekeys are make-before-break: a lost echo or two on a loaded
	// machine is reported, a stalled tunnel is not accepted.
	if recv == 0 || sent-recv > sent/20 {
		fail("pinger lost %d of %d across the rekeys", sent-recv, sent)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("no ping after the rekeys: %v", err)
	}
	if _, err := r.Disconnect("corp"); err != nil {
		t.Errorf("disconnect: %v", err)
	}
}
