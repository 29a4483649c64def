package lab

import (
	"path/filepath"
	"testing"
	"time"
)

// TestStrongSwanPair proves the lab end to end with strongSwan on both
// sides: a client behind the wlan NAT connects to the gateway with a PSK and
// with ECDSA certificates, pings the host behind the gateway through the
// tunnel, and the gateway lists the SA with the client's virtual IP.
func TestStrongSwanPair(t *testing.T) {
	var l *Lab
	t.Cleanup(func() {
		// Registered before the lab, so it runs after the lab's cleanup:
		// nothing of ours may remain.
		if l == nil {
			return
		}
		left, _ := l.Namespaces()
		if len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
	l = NewT(t, Options{})
	pki, err := NewPKI(filepath.Join(l.Dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth string
		ike  []string
	}{
		{"psk", []string{"aes128gcm16-prfsha256-ecp256"}},
		{"pubkey", []string{"aes256gcm16-prfsha384-ecp384"}},
	} {
		t.Run(tc.auth, func(t *testing.T) {
			const psk = "lab-self-test-secret"
			gwOpts := CharonOptions{
				Conns:            []SwanConn{GatewayConn(tc.auth, psk, tc.ike, nil)},
				PKI:              pki,
				InterfacesIgnore: []string{"lan"},
			}
			gw, err := l.StartCharon(Gateway, gwOpts)
			if err != nil {
				t.Fatal(err)
			}
			defer gw.Stop()
			cl, err := l.StartCharon(Client, CharonOptions{
				Conns: []SwanConn{ClientConn(tc.auth, psk, GatewayAddr1.Addr(), tc.ike, nil)},
				PKI:   pki,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Stop()
			dump := func() {
				t.Logf("gateway charon log:\n%s", gw.Log())
				t.Logf("client charon log:\n%s", cl.Log())
			}
			start := time.Now()
			if err := cl.Initiate("home", 10*time.Second); err != nil {
				dump()
				t.Fatal(err)
			}
			t.Logf("%s connect took %v", tc.auth, time.Since(start))
			if err := l.WaitPing(Client, HostAddr.Addr(), 5*time.Second); err != nil {
				dump()
				t.Fatalf("ping through the tunnel: %v", err)
			}
			if err := l.Ping(Client, HostAddr.Addr(), 3); err != nil {
				t.Errorf("ping through the tunnel: %v", err)
			}
			if tc.auth == "psk" {
				mbps, err := l.TCPTransfer(Client, Host, HostAddr.Addr(), time.Second)
				if err != nil {
					dump()
					t.Fatal(err)
				}
				t.Logf("TCP through strongSwan's tunnel: %.0f Mbit/s", mbps)
			}
			sas, err := gw.WaitSA(2*time.Second, Established)
			if err != nil {
				dump()
				t.Fatal(err)
			}
			sa := sas[0]
			if sa.RemoteID != ClientID || sa.LocalID != GatewayID {
				t.Errorf("identities %q/%q", sa.LocalID, sa.RemoteID)
			}
			if sa.Remote.Addr() != PublicWLAN.Addr() {
				t.Errorf("gateway sees the client at %v, want the NAT's %v", sa.Remote, PublicWLAN.Addr())
			}
			if len(sa.VirtualIPs) != 1 || !VirtualIPPool.Contains(sa.VirtualIPs[0]) {
				t.Errorf("virtual IPs %v not from %v", sa.VirtualIPs, VirtualIPPool)
			}
			if len(sa.Children) == 0 || sa.Children[0].PacketsIn == "0" || sa.Children[0].PacketsIn == "" {
				t.Errorf("child SA shows no inbound packets: %+v", sa.Children)
			}
			csas, err := cl.ListSAs()
			if err != nil || len(csas) != 1 || len(csas[0].LocalVIPs) != 1 || csas[0].LocalVIPs[0] != sa.VirtualIPs[0] {
				t.Errorf("client SA %+v (%v) does not match the gateway's virtual IP %v", csas, err, sa.VirtualIPs)
			}
			if err := cl.Terminate("home"); err != nil {
				t.Error(err)
			}
			if _, err := gw.WaitSA(5*time.Second, nil); err != nil {
				t.Errorf("gateway still has an SA after terminate: %v", err)
			}
		})
	}
}
