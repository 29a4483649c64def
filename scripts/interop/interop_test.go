// Package interop runs roam against strongSwan and against itself inside the
// netns lab: the interop matrix of issue 2. They need root, run by default
// as root, and ROAM_INTEROP=0 skips them.
package interop

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

const (
	goodPSK = "interop-correct-horse-battery"
	badPSK  = "interop-wrong-staple"
)

// The proposals of the matrix (strongSwan spelling, as in profiles).
var matrixIKE = []string{
	"aes128gcm16-prfsha256-ecp256",
	"aes256gcm16-prfsha384-ecp384",
	"aes256-sha256-modp2048",
	"aes256gcm16-prfsha256-curve25519",
}

var (
	buildOnce sync.Once
	roamBin   string
	buildErr  error
	binDir    string
)

// TestMain removes the build directory; the labs clean up after themselves.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// setup gates the test, builds roam once per run and returns a fresh lab.
func setup(t *testing.T) (*lab.Lab, string) {
	t.Helper()
	return setupWith(t, lab.Options{})
}

// setupWith is setup for a lab with options (the HA pair's second node).
func setupWith(t *testing.T, opts lab.Options) (*lab.Lab, string) {
	t.Helper()
	if os.Getenv("ROAM_INTEROP") == "0" {
		t.Skip("interop tests skipped: ROAM_INTEROP=0")
	}
	if !lab.Root() {
		t.Skip("interop tests need root (network namespaces)")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "roam-interop-bin-")
		if buildErr == nil {
			roamBin, buildErr = lab.BuildRoam(binDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return lab.NewT(t, opts), roamBin
}

func newPKI(t *testing.T, l *lab.Lab) *lab.PKI {
	t.Helper()
	pki, err := lab.NewPKI(filepath.Join(l.Dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

func startSwanGateway(t *testing.T, l *lab.Lab, pki *lab.PKI, auth string, ike []string) *lab.Charon {
	t.Helper()
	return startSwanConn(t, l, pki, lab.GatewayConn(auth, goodPSK, ike, nil))
}

// startSwanConn runs charon in the gateway namespace with the one
// connection conn (not on the lan side) until the test ends.
func startSwanConn(t *testing.T, l *lab.Lab, pki *lab.PKI, conn lab.SwanConn) *lab.Charon {
	t.Helper()
	gw, err := l.StartCharon(lab.Gateway, lab.CharonOptions{Conns: []lab.SwanConn{conn}, PKI: pki, InterfacesIgnore: []string{"lan"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	return gw
}

// labTempDir makes a directory for a test's files (a roam's config and
// socket, a shared /etc) under the lab's, so the lab's cleanup removes it.
func labTempDir(t *testing.T, l *lab.Lab, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp(l.Dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// roamClient writes a one-profile config and returns a CLI handle in the
// client namespace with its own control socket.
func roamClient(t *testing.T, l *lab.Lab, bin string, p lab.RoamProfile) *lab.Roam {
	t.Helper()
	dir := labTempDir(t, l, "roam-")
	r, err := lab.NewRoamClient(l, bin, dir, p)
	if err != nil {
		t.Fatal(err)
	}
	// The daemon that connect spawns is not our child: end it (and anything
	// else left in the client namespace) when the subtest ends.
	t.Cleanup(func() { l.KillAll(lab.Client) })
	return r
}

// startRoamGateway writes a gateway file for cfg and runs `roam gateway`
// in the gateway namespace until the test ends.
func startRoamGateway(t *testing.T, l *lab.Lab, bin string, cfg lab.RoamGatewayConfig) (*lab.Roam, *lab.Proc) {
	t.Helper()
	return startRoamGatewayIn(t, l, bin, lab.Gateway, "roamgw-", cfg)
}

// startRoamGatewayIn is startRoamGateway in namespace ns, its files in a
// directory named with prefix.
func startRoamGatewayIn(t *testing.T, l *lab.Lab, bin, ns, prefix string, cfg lab.RoamGatewayConfig) (*lab.Roam, *lab.Proc) {
	t.Helper()
	g, err := lab.NewRoamGateway(l, ns, bin, labTempDir(t, l, prefix), cfg)
	if err != nil {
		t.Fatal(err)
	}
	gp, err := g.StartGateway()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gp.Stop)
	return g, gp
}

// tcpTransfer sends data from the client to the host through the tunnel
// with iperf3 for two seconds and checks that bytes arrived.
func tcpTransfer(t *testing.T, l *lab.Lab) {
	t.Helper()
	mbps, err := l.TCPTransfer(lab.Client, lab.Host, lab.HostAddr.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TCP through the tunnel: %.0f Mbit/s", mbps)
}

func connected(t *testing.T, r *lab.Roam, profile string) lab.Status {
	t.Helper()
	st, raw, err := r.Status()
	if err != nil {
		t.Fatalf("roam status: %v", err)
	}
	for _, s := range st {
		if s.Name == profile {
			return s
		}
	}
	t.Fatalf("roam status has no %q:\n%s", profile, raw)
	return lab.Status{}
}

// statusEntry decodes the entry named name of r's `roam status --json`
// into T, the fields a test reads; false when there is no such entry or
// status does not answer.
func statusEntry[T any](r *lab.Roam, name string) (T, bool) {
	var zero T
	_, raw, err := r.Status()
	if err != nil {
		return zero, false
	}
	var entries []json.RawMessage
	if json.Unmarshal([]byte(raw), &entries) != nil {
		return zero, false
	}
	for _, e := range entries {
		var id struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(e, &id) != nil || id.Name != name {
			continue
		}
		var v T
		if json.Unmarshal(e, &v) != nil {
			return zero, false
		}
		return v, true
	}
	return zero, false
}

// connectFails runs `roam connect corp` (bounded by timeout), which must
// fail, and within bound: a refused connect says so quickly. what names
// the cause in the message when it succeeds. It returns connect's output.
func connectFails(t *testing.T, r *lab.Roam, timeout, bound time.Duration, what string) string {
	t.Helper()
	start := time.Now()
	out, err := r.Connect("corp", timeout)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("connect %s succeeded:\n%s", what, out)
	}
	if took > bound {
		t.Errorf("connect took %v to fail, want under %v", took, bound)
	}
	t.Logf("failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
	return out
}

// swanClientUp starts a strongSwan client with a connection "home" (auth
// with goodPSK or pki) to the roam gateway at gw, whose output gp is, and
// brings it up: initiated and a ping through the tunnel. It returns the
// client and the fatal-error function with both logs as evidence.
func swanClientUp(t *testing.T, l *lab.Lab, pki *lab.PKI, gp *lab.Proc, auth string, gw netip.Addr) (*lab.Charon, func(string, ...any)) {
	t.Helper()
	cl, err := l.StartCharon(lab.Client, lab.CharonOptions{
		Conns: []lab.SwanConn{lab.ClientConn(auth, goodPSK, gw, nil, nil)},
		PKI:   pki,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	fail := failWith(t, gatewayOutput(gp), swanLog("strongSwan client log", cl))
	// The gateway needs a moment to bind; strongSwan retransmits.
	if err := cl.Initiate("home", 15*time.Second); err != nil {
		fail("initiate: %v", err)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("ping through the tunnel: %v", err)
	}
	return cl, fail
}

// TestRoamClientToStrongSwan: roam connects through the wlan NAT to a
// strongSwan gateway for each auth method and proposal of the matrix.
func TestRoamClientToStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	for _, auth := range []string{"psk", "pubkey"} {
		for _, ike := range matrixIKE {
			t.Run(auth+"/"+ike, func(t *testing.T) {
				gw := startSwanGateway(t, l, pki, auth, []string{ike})
				r := roamClient(t, l, bin, lab.LabProfile(auth, goodPSK, pki, []string{ike}))
				fail := failWith(t, swanLog("strongSwan gateway log", gw))
				connectOnce(t, l, r, fail)
				if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 3); err != nil {
					fail("ping through the tunnel: %v", err)
				}
				tcpTransfer(t, l)
				sas, err := gw.WaitSA(2*time.Second, lab.Established)
				if err != nil {
					fail("%v", err)
				}
				st := connected(t, r, "corp")
				if len(sas[0].VirtualIPs) != 1 || sas[0].VirtualIPs[0].String() != strings.Split(st.VirtualIP, "/")[0] {
					t.Errorf("gateway lists virtual IPs %v, roam status says %q", sas[0].VirtualIPs, st.VirtualIP)
				}
				if sas[0].Remote.Addr() != lab.PublicWLAN.Addr() {
					t.Errorf("gateway sees roam at %v, want the NAT's %v", sas[0].Remote, lab.PublicWLAN.Addr())
				}
				if !st.NAT {
					t.Errorf("roam status does not report the NAT: %+v", st)
				}
				if _, err := r.Disconnect("corp"); err != nil {
					t.Errorf("disconnect: %v", err)
				}
				if left, err := gw.WaitSA(5*time.Second, nil); err != nil {
					t.Errorf("gateway keeps SAs after disconnect: %+v (%v)", left, err)
				}
			})
		}
	}
}

// TestWrongPSK: the gateway rejects the PSK; connect must fail within 10 s
// and say why.
func TestWrongPSK(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	startSwanGateway(t, l, pki, "psk", nil)
	r := roamClient(t, l, bin, lab.LabProfile("psk", badPSK, pki, nil))
	out := connectFails(t, r, 15*time.Second, 10*time.Second, "with a wrong PSK")
	if !regexp.MustCompile(`(?i)authentication[ _]failed`).MatchString(out) {
		t.Errorf("connect output does not name the authentication failure:\n%s", out)
	}
	if strings.Contains(out, badPSK) || strings.Contains(out, goodPSK) {
		t.Error("connect output contains a PSK")
	}
}

// TestConnectFailures: each way a connect can fail ends within seconds with
// a one-line reason that names it.
func TestConnectFailures(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	gw := startSwanGateway(t, l, pki, "psk", []string{"aes256gcm16-prfsha384-ecp384"})
	tests := []struct {
		name   string
		modify func(p *lab.RoamProfile)
		want   string
	}{
		// The lab's client always sits behind a NAT. strongSwan ignores
		// NO_NATS_ALLOWED (checked below: it answers normally), so roam's
		// own NAT detection refuses the SA.
		{"NAT forbidden", func(p *lab.RoamProfile) { p.ForbidNAT = true }, `(?i)NAT detected where NAT is forbidden.*UNEXPECTED_NAT_DETECTED`},
		{"no proposal chosen", func(p *lab.RoamProfile) { p.IKE = []string{"aes128-sha256-modp2048"} }, `(?i)no proposal chosen`},
		{"traffic selectors", func(p *lab.RoamProfile) { p.RemoteTS = []string{"192.0.2.0/24"} }, `(?i)traffic selectors unacceptable|TS_UNACCEPTABLE`},
		{"unreachable", func(p *lab.RoamProfile) { p.Gateway = "203.0.113.99" }, `(?i)unreachable`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := lab.LabProfile("psk", goodPSK, pki, []string{"aes256gcm16-prfsha384-ecp384"})
			tt.modify(&p)
			r := roamClient(t, l, bin, p)
			out := connectFails(t, r, 20*time.Second, 12*time.Second, "with "+tt.name)
			if !regexp.MustCompile(tt.want).MatchString(out) {
				t.Errorf("connect output does not match %s:\n%s", tt.want, out)
			}
			if tt.name == "NAT forbidden" && !regexp.MustCompile(`parsed IKE_SA_INIT request 0 \[[^]]*N\(NO_NATS\)`).MatchString(gw.Log()) {
				t.Errorf("strongSwan did not parse our NO_NATS_ALLOWED:\n%s", gw.Log())
			}
		})
	}
}

// netState is what a VPN client may change in its namespace.
func netState(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "addr", "show"},
		{"ip", "rule", "show"},
		{"ip", "route", "show", "table", "all"},
		{"cat", "/etc/resolv.conf"},
	} {
		out, err := l.Output(lab.Client, args...)
		if err != nil {
			t.Fatal(err)
		}
		// Link counters and flags like LOWER_UP are not what we compare.
		out = regexp.MustCompile(`(?m)\s+link/ether \S+ brd \S+`).ReplaceAllString(out, "")
		fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(args, " "), out)
	}
	return b.String()
}

// TestSIGTERMCleansUp: SIGTERM to the daemon leaves no TUN device, address,
// route, rule or DNS change behind.
func TestSIGTERMCleansUp(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	startSwanGateway(t, l, pki, "psk", nil)
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	before := netState(t, l)
	if _, err := r.Connect("corp", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	during := netState(t, l)
	if during == before {
		t.Fatal("connected, yet the client namespace looks unchanged (no TUN device?)")
	}
	pids := r.Processes()
	if len(pids) != 1 {
		t.Fatalf("want exactly one roam daemon in the client namespace, found %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Processes()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("daemon still running 10 s after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after := netState(t, l); after != before {
		t.Errorf("state after SIGTERM differs.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestStrongSwanClientToRoamGateway: a strongSwan client behind the NAT
// connects to `roam gateway` and reaches the host.
func TestStrongSwanClientToRoamGateway(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	for _, auth := range []string{"psk", "pubkey"} {
		t.Run(auth, func(t *testing.T) {
			_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: auth, PSK: goodPSK, PKI: pki})
			cl, fail := swanClientUp(t, l, pki, gp, auth, lab.GatewayAddr1.Addr())
			tcpTransfer(t, l)
			// MOBIKE: the gateway announced its other listen address in
			// the IKE_AUTH response (RFC 4555 3.4) and strongSwan parsed it.
			if log := cl.Log(); !strings.Contains(log, "N(ADD_4_ADDR)") {
				fail("strongSwan's IKE_AUTH response lacks ADDITIONAL_IP4_ADDRESS")
			}
			sas, err := cl.ListSAs()
			if err != nil || len(sas) != 1 || len(sas[0].LocalVIPs) != 1 || !lab.VirtualIPPool.Contains(sas[0].LocalVIPs[0]) {
				fail("client SA %+v (%v): want one SA with a virtual IP from %v", sas, err, lab.VirtualIPPool)
			}
			if err := cl.Terminate("home"); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestRoamToRoam: roam client to roam gateway through the NAT.
func TestRoamToRoam(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	for _, auth := range []string{"psk", "pubkey"} {
		t.Run(auth, func(t *testing.T) {
			ike := []string{"aes256gcm16-prfsha256-curve25519"}
			_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: auth, PSK: goodPSK, PKI: pki, IKE: ike})
			r := roamClient(t, l, bin, lab.LabProfile(auth, goodPSK, pki, ike))
			fail := failWith(t, gatewayOutput(gp))
			connectRoam(t, l, r, fail)
			tcpTransfer(t, l)
			st := connected(t, r, "corp")
			vip, err := netip.ParsePrefix(st.VirtualIP)
			if err != nil {
				a, aerr := netip.ParseAddr(st.VirtualIP)
				if aerr != nil {
					t.Fatalf("status virtual_ip %q: %v", st.VirtualIP, err)
				}
				vip = netip.PrefixFrom(a, 32)
			}
			if !lab.VirtualIPPool.Contains(vip.Addr()) {
				t.Errorf("virtual IP %v not from the pool %v", vip, lab.VirtualIPPool)
			}
			if _, err := r.Disconnect("corp"); err != nil {
				t.Errorf("disconnect: %v", err)
			}
		})
	}
}
