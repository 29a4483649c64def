package interop

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestCrashUndo: a daemon killed by SIGKILL with a full tunnel and the
// kill switch up leaves policy rules and table inet roam behind (its TUN
// device and routes go with it); `roam disconnect --all` without a daemon,
// or the daemon the next `roam connect` starts, undoes them from the state
// file under the socket's directory, so the client's ip rule, ip route,
// links and nft ruleset are as before the first connect. A foreground
// connect stopped by SIGHUP leaves the same.
func TestCrashUndo(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, LocalTS: []string{"0.0.0.0/0"}})
	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.RemoteTS = []string{"0.0.0.0/0"}
	p.Lockdown = true
	// resolv.conf is another part's state file; this test is about the
	// network configuration.
	p.DNS = false
	r := roamClient(t, l, bin, p)
	stateDir := filepath.Join(filepath.Dir(r.Socket), "state")

	snapshot := func() string {
		t.Helper()
		var b strings.Builder
		for _, args := range [][]string{
			{"ip", "-4", "rule"}, {"ip", "-6", "rule"},
			{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
			{"ip", "-o", "link"}, {"nft", "list", "ruleset"},
		} {
			// Standard output only, and no peer namespace names: ip
			// resolves those by opening every namespace in /run/netns,
			// and another lab deleting one meanwhile makes it print
			// "Peer netns reference is invalid" or an id instead.
			out, err := l.Cmd(lab.Client, args...).Output()
			if err != nil {
				t.Fatalf("%s: %v", strings.Join(args, " "), err)
			}
			fmt.Fprintf(&b, "$ %s\n%s", strings.Join(args, " "), linkNetNS.ReplaceAllString(string(out), ""))
		}
		return b.String()
	}
	debug := func() {
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log")); err == nil {
			t.Logf("roam daemon log:\n%s", b)
		}
	}
	records := func() []string {
		names, _ := filepath.Glob(filepath.Join(stateDir, "*.json"))
		return names
	}
	connect := func(when string) {
		t.Helper()
		if out, err := r.Connect("corp", 20*time.Second); err != nil {
			debug()
			t.Fatalf("%s: connect: %v\n%s", when, err, out)
		}
		if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			debug()
			t.Fatalf("%s: no traffic through the full tunnel: %v", when, err)
		}
		out, _ := l.Output(lab.Client, "ip", "-4", "rule")
		if n := strings.Count(out, "lookup 21103"); n != 1 {
			t.Errorf("%s: %d full-tunnel rules for table 21103, want 1:\n%s", when, n, out)
		}
		if len(records()) != 2 {
			t.Errorf("%s: state files %v, want the TUN's and the lockdown's", when, records())
		}
	}
	kill := func(when string) {
		t.Helper()
		pids := r.Processes()
		if len(pids) == 0 {
			t.Fatalf("%s: no roam daemon in the client namespace", when)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill %d: %v", pid, err)
			}
		}
		// A killed process is listed as a zombie before its last thread
		// has closed its files: wait for its socket and TUN device to go.
		gone := func() bool {
			if len(r.Processes()) > 0 || l.Exec(lab.Client, "ip", "link", "show", "roam-corp") == nil {
				return false
			}
			c, err := net.Dial("unix", r.Socket)
			if err == nil {
				c.Close()
				return false
			}
			return true
		}
		killed := time.Now()
		defer func() {
			t.Logf("%s: the daemon was gone %v after SIGKILL", when, time.Since(killed).Round(time.Millisecond))
		}()
		for deadline := time.Now().Add(10 * time.Second); !gone(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: killed daemon still running, or its TUN device still there", when)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	same := func(when, before string) {
		t.Helper()
		if after := snapshot(); after != before {
			t.Errorf("%s: the client differs from before the first connect:\n%s\nwant:\n%s", when, after, before)
		}
		if left := records(); len(left) != 0 {
			t.Errorf("%s: state files left: %v", when, left)
		}
	}

	before := snapshot()

	// 1. SIGKILL, then roam disconnect --all with no daemon.
	connect("first connect")
	kill("first kill")
	if snapshot() == before {
		t.Fatal("the killed daemon left nothing behind: full tunnel rules and lockdown expected")
	}
	out, err := r.Run(15*time.Second, "disconnect", "--all")
	if err != nil {
		t.Fatalf("disconnect --all: %v\n%s", err, out)
	}
	for _, want := range []string{"removed leftover routes and policy rules of roam-corp", "removed leftover lockdown rules"} {
		if !strings.Contains(out, want) {
			t.Errorf("disconnect --all said %q, want %q", out, want)
		}
	}
	same("after disconnect --all", before)

	// 2. SIGKILL, then the next roam connect: its daemon undoes the
	// leftovers before it connects (one set of rules, not two), and a
	// plain disconnect then leaves nothing.
	connect("second connect")
	kill("second kill")
	connect("connect after the kill")
	if out, err := r.Disconnect("corp"); err != nil {
		t.Fatalf("disconnect: %v\n%s", err, out)
	}
	// The spawned daemon exits after its last connection (auto-exit).
	for deadline := time.Now().Add(10 * time.Second); len(r.Processes()) > 0; {
		if time.Now().After(deadline) {
			t.Fatal("daemon still running after the last disconnect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	same("after connect following a kill, and disconnect", before)

	// 3. A foreground connect ends cleanly on SIGHUP.
	fg, err := l.Start(lab.Client, bin, "connect", "--foreground", "--socket", r.Socket, "--config", r.Config, "corp")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if st, _, err := r.Status(); err == nil && len(st) == 1 && st[0].State == "established" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("foreground connect not established:\n%s", fg.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := fg.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := fg.Wait(10 * time.Second); err != nil {
		t.Fatalf("foreground connect after SIGHUP: %v\n%s", err, fg.Output())
	}
	same("after SIGHUP to a foreground connect", before)
}

// linkNetNS is the peer namespace in `ip -o link` output, by name or id.
var linkNetNS = regexp.MustCompile(` link-netns(id)? \S+`)
