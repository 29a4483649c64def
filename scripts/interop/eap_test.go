package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

const (
	eapUser     = "alice"
	eapPassword = "interop EAP pässword"
	eapWrong    = "interop EAP password"
)

// needPlugins fails clearly when strongSwan lacks an EAP plugin, instead
// of a confusing authentication failure later.
func needPlugins(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/usr/lib/ipsec/plugins", "libstrongswan-"+n+".so")); err != nil {
			t.Fatalf("strongSwan's %s plugin is missing (%v): run scripts/install-deps.sh (Debian package libcharon-extauth-plugins or libcharon-extra-plugins)", n, err)
		}
	}
}

// startSwanEAPGateway runs the strongSwan gateway signing with its
// certificate and logging clients in with EAP-MSCHAPv2 (EAP-Identity
// first), alice's password in its secrets.
func startSwanEAPGateway(t *testing.T, l *lab.Lab, pki *lab.PKI) *lab.Charon {
	t.Helper()
	needPlugins(t, "eap-identity", "eap-mschapv2")
	gw, err := l.StartCharon(lab.Gateway, eapGatewayOptions(pki, "pubkey"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	return gw
}

// eapGatewayOptions: localAuth "pubkey" signs with the gateway's
// certificate; "eap-mschapv2" makes strongSwan authenticate itself through
// EAP only (RFC 5998), for clients that offer it.
func eapGatewayOptions(pki *lab.PKI, localAuth string) lab.CharonOptions {
	c := lab.GatewayConn(localAuth, "", nil, nil)
	c.RemoteAuth = "eap-mschapv2"
	c.EAPSecrets = map[string]string{eapUser: eapPassword}
	return lab.CharonOptions{Conns: []lab.SwanConn{c}, PKI: pki, InterfacesIgnore: []string{"lan"}}
}

func eapProfile(pki *lab.PKI, password string) lab.RoamProfile {
	p := lab.LabProfile("eap-mschapv2", "", pki, nil)
	p.EAPIdentity, p.Password = eapUser, password
	return p
}

// noPassword fails when a password shows in text.
func noPassword(t *testing.T, what, text string) {
	t.Helper()
	for _, pw := range []string{eapPassword, eapWrong} {
		if strings.Contains(text, pw) {
			t.Errorf("%s contains a password", what)
		}
	}
}

// TestEAPMSCHAPv2ToStrongSwan: roam logs in with a username and password
// through EAP-MSCHAPv2 to strongSwan's eap-mschapv2 plugin, the gateway
// proving itself with its certificate; a wrong password fails within 10 s
// and says so.
func TestEAPMSCHAPv2ToStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gw := startSwanEAPGateway(t, l, pki)

	t.Run("connect", func(t *testing.T) {
		r := roamClient(t, l, bin, eapProfile(pki, eapPassword))
		fail := failWith(t, swanLog("strongSwan gateway log", gw))
		out, err := r.Connect("corp", 20*time.Second)
		if err != nil {
			fail("connect: %v\n%s", err, out)
		}
		t.Logf("roam connect:\n%s", out)
		noPassword(t, "connect output", out)
		if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			fail("ping through the tunnel: %v", err)
		}
		if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 3); err != nil {
			fail("ping through the tunnel: %v", err)
		}
		sas, err := gw.WaitSA(2*time.Second, lab.Established)
		if err != nil {
			fail("%v", err)
		}
		if sas[0].EAPID != eapUser {
			t.Errorf("gateway lists EAP identity %q, want %q", sas[0].EAPID, eapUser)
		}
		st := connected(t, r, "corp")
		if len(sas[0].VirtualIPs) != 1 || sas[0].VirtualIPs[0].String() != strings.Split(st.VirtualIP, "/")[0] {
			t.Errorf("gateway lists virtual IPs %v, roam status says %q", sas[0].VirtualIPs, st.VirtualIP)
		}
		if log := gw.Log(); !strings.Contains(log, "EAP method EAP_MSCHAPV2 succeeded") {
			t.Errorf("the gateway log does not show EAP-MSCHAPv2 succeeding:\n%s", log)
		}
		_, raw, _ := r.Status()
		noPassword(t, "roam status", raw)
		if _, err := r.Disconnect("corp"); err != nil {
			t.Errorf("disconnect: %v", err)
		}
		if left, err := gw.WaitSA(5*time.Second, nil); err != nil {
			t.Errorf("gateway keeps SAs after disconnect: %+v (%v)", left, err)
		}
		noPassword(t, "the daemon's log", daemonLog(t, r))
	})

	t.Run("wrong password", func(t *testing.T) {
		r := roamClient(t, l, bin, eapProfile(pki, eapWrong))
		out := connectFails(t, r, 20*time.Second, 10*time.Second, "with a wrong password")
		if !regexp.MustCompile(`authentication failed: EAP-MSCHAPv2 rejected the username or password`).MatchString(out) {
			t.Errorf("connect output does not say the password was rejected:\n%s", out)
		}
		noPassword(t, "connect output", out)
		noPassword(t, "the daemon's log", daemonLog(t, r))
		if sas, err := gw.WaitSA(5*time.Second, nil); err != nil {
			t.Errorf("gateway keeps SAs after the failure: %+v (%v)", sas, err)
		}
	})

	t.Run("eap-only", func(t *testing.T) {
		if err := gw.Reconfigure(eapGatewayOptions(pki, "eap-mschapv2")); err != nil {
			t.Fatal(err)
		}
		// Without eap_only the client insists on the gateway's signature,
		// which this gateway does not give.
		r := roamClient(t, l, bin, eapProfile(pki, eapPassword))
		if out, err := r.Connect("corp", 20*time.Second); err == nil {
			t.Fatalf("connect without eap_only to an EAP-only gateway succeeded:\n%s", out)
		} else if !regexp.MustCompile(`(?i)authentication failed`).MatchString(out) {
			t.Errorf("connect output does not name the authentication failure:\n%s", out)
		} else {
			t.Logf("without eap_only: %s", strings.TrimSpace(out))
		}
		l.KillAll(lab.Client)
		p := eapProfile(pki, eapPassword)
		p.EAPOnly = true
		r = roamClient(t, l, bin, p)
		out, err := r.Connect("corp", 20*time.Second)
		if err != nil {
			t.Logf("strongSwan gateway log:\n%s", gw.Log())
			t.Fatalf("connect with eap_only: %v\n%s", err, out)
		}
		if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			t.Fatalf("ping through the tunnel: %v", err)
		}
		if _, err := r.Disconnect("corp"); err != nil {
			t.Errorf("disconnect: %v", err)
		}
	})
}

// daemonLog is the log of the daemon `roam connect` spawned (beside its
// socket).
func daemonLog(t *testing.T, r *lab.Roam) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(r.Socket), "*.log"))
	var b strings.Builder
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err == nil {
			b.Write(data)
		}
	}
	return b.String()
}

// TestEAPTLSToStrongSwan: roam's client certificate goes inside EAP-TLS
// (TLS 1.2, fragmented over IKE_AUTH round trips) to strongSwan's eap-tls
// plugin; the gateway signs IKE with its certificate.
func TestEAPTLSToStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	needPlugins(t, "eap-identity", "eap-tls")
	c := lab.GatewayConn("pubkey", "", nil, nil)
	c.RemoteAuth = "eap-tls"
	gw := startSwanConn(t, l, pki, c)
	r := roamClient(t, l, bin, lab.LabProfile("eap-tls", "", pki, nil))
	fail := failWith(t, swanLog("strongSwan gateway log", gw))
	connectOnce(t, l, r, fail)
	sas, err := gw.WaitSA(2*time.Second, lab.Established)
	if err != nil {
		fail("%v", err)
	}
	// swanctl names the EAP identity only when it differs from the IKE one.
	if id := sas[0].EAPID; id != "" && id != lab.ClientID {
		t.Errorf("gateway lists EAP identity %q, want %q", id, lab.ClientID)
	}
	if log := gw.Log(); !strings.Contains(log, "EAP method EAP_TLS succeeded") {
		t.Errorf("the gateway log does not show EAP-TLS succeeding:\n%s", log)
	}
	if _, err := r.Disconnect("corp"); err != nil {
		t.Errorf("disconnect: %v", err)
	}
	if left, err := gw.WaitSA(5*time.Second, nil); err != nil {
		t.Errorf("gateway keeps SAs after disconnect: %+v (%v)", left, err)
	}
	l.KillAll(lab.Client)

	// A client certificate from a CA the gateway does not know: IKE
	// trusts the gateway (the profile's ca is the lab CA), but the
	// gateway's EAP-TLS server refuses us.
	other, err := lab.NewPKI(filepath.Join(l.Dir, "other-pki"))
	if err != nil {
		t.Fatal(err)
	}
	r = roamClient(t, l, bin, lab.LabProfile("eap-tls", "", other, nil))
	cfg, err := os.ReadFile(r.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), fmt.Sprintf("ca = %q", other.CACert), fmt.Sprintf("ca = %q", pki.CACert), 1))
	if err := os.WriteFile(r.Config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	out := connectFails(t, r, 20*time.Second, 10*time.Second, "with an untrusted client certificate")
	if !strings.Contains(out, "authentication failed: EAP-TLS: the gateway refused our certificate") {
		t.Errorf("connect output does not say the certificate was refused:\n%s", out)
	}
}

// TestStrongSwanEAPClientToRoamGateway: roam's gateway, signing with its
// certificate, logs a strongSwan client in with EAP-MSCHAPv2: its EAP
// server against an independent peer.
func TestStrongSwanEAPClientToRoamGateway(t *testing.T) {
	l, bin := setup(t)
	needPlugins(t, "eap-mschapv2")
	pki := newPKI(t, l)
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "pubkey", PKI: pki, EAPPassword: eapPassword})
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{{"right password", eapPassword, true}, {"wrong password", eapWrong, false}} {
		t.Run(tc.name, func(t *testing.T) {
			conn := lab.ClientConn("eap-mschapv2", "", lab.GatewayAddr1.Addr(), nil, nil)
			conn.RemoteAuth = "pubkey"
			conn.EAPSecrets = map[string]string{lab.ClientID: tc.password}
			cl, err := l.StartCharon(lab.Client, lab.CharonOptions{Conns: []lab.SwanConn{conn}, PKI: pki})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Stop()
			err = cl.Initiate("home", 15*time.Second)
			if !tc.ok {
				if err == nil {
					t.Fatal("strongSwan logged in with a wrong password")
				}
				if log := cl.Log(); !strings.Contains(log, "EAP-MS-CHAPv2 failed") {
					t.Errorf("strongSwan's log does not show the MSCHAPv2 failure:\n%s", log)
				}
				return
			}
			if err != nil {
				t.Logf("roam gateway output:\n%s", gp.Output())
				t.Logf("strongSwan client log:\n%s", cl.Log())
				t.Fatalf("initiate: %v", err)
			}
			if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
				t.Fatalf("ping through the tunnel: %v", err)
			}
			if log := cl.Log(); !strings.Contains(log, "EAP-MS-CHAPv2 succeeded") {
				t.Errorf("strongSwan's log does not show MSCHAPv2 succeeding:\n%s", log)
			}
			noPassword(t, "the roam gateway's output", gp.Output())
			if err := cl.Terminate("home"); err != nil {
				t.Error(err)
			}
		})
	}
}
