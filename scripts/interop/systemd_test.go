package interop

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// bootSystemd installs roam (make install DESTDIR=..., the package's
// layout) into a container whose PID 1 is a real systemd, in the lab's
// client network namespace, with the lab's profile for corp in
// /etc/roam/roam.toml and the lab's resolv.conf as its /etc/resolv.conf.
// The machine's own /etc/resolv.conf must come out of it unchanged.
func bootSystemd(t *testing.T, l *lab.Lab, p lab.RoamProfile, binds ...string) *lab.Container {
	t.Helper()
	for _, tool := range []string{"systemd-nspawn", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found; scripts/install-deps.sh installs it", tool)
		}
	}
	hostResolv, hostErr := os.ReadFile("/etc/resolv.conf")
	t.Cleanup(func() {
		if b, err := os.ReadFile("/etc/resolv.conf"); string(b) != string(hostResolv) || (err == nil) != (hostErr == nil) {
			t.Errorf("the machine's /etc/resolv.conf changed: %q, was %q", b, hostResolv)
		}
	})
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	stage := filepath.Join(l.Dir, "stage")
	// deb.sh's layout; the package itself is built by make deb, which
	// also compresses a few megabytes with xz: too slow for every run.
	mk := exec.Command("make", "--no-print-directory", "install", "DESTDIR="+stage, "PREFIX=/usr",
		"SYSTEMDDIR=/usr/lib/systemd/system", "ZSHCOMPDIR=/usr/share/zsh/vendor-completions")
	mk.Dir = root
	t0 := time.Now()
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	t.Logf("make install: %.1f s", time.Since(t0).Seconds())
	share := labTempDir(t, l, "etc-")
	os.Chmod(share, 0o755)
	cfg, err := lab.WriteRoamConfig(share, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "resolv.conf"), []byte(lab.ResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	c, err := l.BootContainer(lab.ContainerOptions{NS: lab.Client, Install: stage, Binds: append([]string{share}, binds...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("container booted: %.1f s", time.Since(t0).Seconds())
	t.Cleanup(c.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.Run(20*time.Second, "journalctl", "-b", "--no-pager", "-n", "150")
			t.Logf("container journal:\n%s", out)
		}
	})
	// The profile's files as an admin would put them into /etc/roam.
	if out, err := c.Sh(20*time.Second, fmt.Sprintf(`set -e
install -d -m 0755 /etc/roam
sed 's|%[1]s|/etc/roam|g' %[2]s > /etc/roam/roam.toml
install -m 0600 %[1]s/%[3]s.psk /etc/roam/%[3]s.psk
cat %[1]s/resolv.conf > /etc/resolv.conf
systemctl daemon-reload`, share, cfg, p.Name)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return c
}

// ctState is what a VPN client may change, seen from inside the
// container: links, addresses, rules, routes, nftables and resolv.conf.
func ctState(t *testing.T, c *lab.Container) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range []string{"ip -o link show", "ip -o addr show", "ip rule show", "ip route show table all", "nft list ruleset", "cat /etc/resolv.conf"} {
		out, err := c.Sh(10*time.Second, cmd)
		if err != nil {
			t.Fatal(err)
		}
		out = regexp.MustCompile(`(?m)\s+link/ether \S+ brd \S+`).ReplaceAllString(out, "")
		fmt.Fprintf(&b, "$ %s\n%s\n", cmd, out)
	}
	return b.String()
}

// ctStatus is `roam status --json` inside the container.
func ctStatus(t *testing.T, c *lab.Container) []lab.Status {
	t.Helper()
	out, err := c.Run(10*time.Second, "roam", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := lab.ParseStatus([]byte(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return st
}

func ctConnected(t *testing.T, c *lab.Container, profile string) lab.Status {
	t.Helper()
	for _, s := range ctStatus(t, c) {
		if s.Name == profile && s.State == "established" {
			return s
		}
	}
	out, _ := c.Run(10*time.Second, "roam", "status")
	t.Fatalf("%s not connected:\n%s", profile, out)
	return lab.Status{}
}

// journal is the container's journal of one unit, one map per record
// (journalctl -o json; a binary field is an array and is dropped).
func journal(t *testing.T, c *lab.Container, unit string) []map[string]string {
	t.Helper()
	out, err := c.Run(20*time.Second, "journalctl", "-u", unit, "-o", "json", "--no-pager")
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var raw map[string]any
		if json.Unmarshal(sc.Bytes(), &raw) != nil {
			continue
		}
		rec := map[string]string{}
		for k, v := range raw {
			if s, ok := v.(string); ok {
				rec[k] = s
			}
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("journalctl -u %s: %v", unit, err)
	}
	return recs
}

// journalUntil is journal once it has a record for each of msgs, or after
// 10 s: journald files datagrams in its own time, and a loaded machine
// can leave it behind the test.
func journalUntil(t *testing.T, c *lab.Container, unit string, msgs ...string) []map[string]string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		recs := journal(t, c, unit)
		all := true
		for _, m := range msgs {
			all = all && record(recs, m) != nil
		}
		if all || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// record is the first record whose message is msg (MESSAGE is the
// message and then its attributes, " key=value"), nil when none.
func record(recs []map[string]string, msg string) map[string]string {
	for _, r := range recs {
		if m := r["MESSAGE"]; m == msg || strings.HasPrefix(m, msg+" ") {
			return r
		}
	}
	return nil
}

// waitUnit polls systemctl is-active until it prints want for unit.
func waitUnit(t *testing.T, c *lab.Container, unit, want string, timeout time.Duration) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(timeout); ; {
		out, _ := c.Run(10*time.Second, "systemctl", "is-active", unit)
		if got = strings.TrimSpace(out); got == want {
			return
		}
		if time.Now().After(deadline) {
			st, _ := c.Run(10*time.Second, "systemctl", "status", "--no-pager", unit)
			t.Fatalf("%s is %q after %v, want %q\n%s", unit, got, timeout, want, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSystemdUnits: the installed units on a real systemd (PID 1 of a
// container in the lab's client namespace). systemctl enable --now
// roam@corp starts roam.service (Type=notify: active only after READY=1)
// and connects to roam gateway; the daemon's records are in the journal
// with priorities and ROAM_* fields and without the PSK; a drop-in with
// ROAM_LOG_LEVEL=debug and a restart bring the debug records and the
// connection back; reload is refused and leaves the tunnel up; a SIGKILL
// of the daemon is recovered by systemd's restart; systemctl stop leaves
// the namespace as it was.
func TestSystemdUnits(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, DNSDomains: []string{"corp.example"}})
	c := bootSystemd(t, l, lab.LabProfile("psk", goodPSK, pki, nil))
	before := ctState(t, c)

	if out, err := c.Run(60*time.Second, "systemctl", "enable", "--now", "roam@corp"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, u := range []string{"roam.service", "roam@corp.service"} {
		if out, _ := c.Run(10*time.Second, "systemctl", "is-active", u); strings.TrimSpace(out) != "active" {
			t.Fatalf("%s is %q after enable --now", u, out)
		}
	}
	if out, _ := c.Run(10*time.Second, "systemctl", "is-enabled", "roam@corp"); strings.TrimSpace(out) != "enabled" {
		t.Errorf("roam@corp is %q after enable, want enabled", out)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 10*time.Second); err != nil {
		t.Fatalf("no ping through the tunnel: %v", err)
	}
	if st := ctConnected(t, c, "corp"); st.DNSMethod != "file" {
		t.Errorf("dns_method %q, want file (no resolved, no resolvconf in the container)", st.DNSMethod)
	}
	if out, _ := c.Run(10*time.Second, "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 10.99.0.53") {
		t.Errorf("container's resolv.conf lacks the gateway's server:\n%s", out)
	}

	// The journal: native records with priorities and fields, the
	// connection's records among them, no secret anywhere.
	recs := journalUntil(t, c, "roam.service", "daemon listening", "DNS applied")
	if r := record(recs, "daemon listening"); r == nil {
		t.Errorf("no \"daemon listening\" record for roam.service (%d records)", len(recs))
	} else if r["PRIORITY"] != "6" || r["ROAM_SOCKET"] != "/run/roam/roam.sock" || !strings.Contains(r["MESSAGE"], " socket=/run/roam/roam.sock") {
		t.Errorf("\"daemon listening\": PRIORITY %q ROAM_SOCKET %q MESSAGE %q, want 6 and /run/roam/roam.sock in both", r["PRIORITY"], r["ROAM_SOCKET"], r["MESSAGE"])
	}
	if r := record(recs, "DNS applied"); r == nil || r["ROAM_PROFILE"] != "corp" || r["ROAM_METHOD"] != "file" || r["PRIORITY"] != "6" {
		t.Errorf("\"DNS applied\" record %v, want ROAM_PROFILE corp, ROAM_METHOD file, PRIORITY 6", r)
	}
	if record(recs, "daemon settings") != nil {
		t.Error("a debug record at the default level info")
	}
	// roam@corp's own journal is what roam connect printed.
	said := false
	for _, r := range journal(t, c, "roam@corp.service") {
		said = said || strings.HasPrefix(r["MESSAGE"], "corp: connected to ")
	}
	if !said {
		t.Error("roam@corp's journal lacks roam connect's \"corp: connected to\" line")
	}
	if out, err := c.Run(20*time.Second, "journalctl", "-o", "export", "--no-pager"); err != nil || strings.Contains(out, goodPSK) {
		t.Errorf("the journal holds the PSK (or could not be read: %v)", err)
	}

	// Debug records: the unit's documented switch, then a restart, which
	// takes roam@corp (PartOf) with it.
	if out, err := c.Sh(60*time.Second, `set -e
mkdir -p /etc/systemd/system/roam.service.d
printf '[Service]\nEnvironment=ROAM_LOG_LEVEL=debug\n' > /etc/systemd/system/roam.service.d/debug.conf
systemctl daemon-reload
systemctl restart roam.service`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitUnit(t, c, "roam@corp.service", "active", 30*time.Second)
	ctConnected(t, c, "corp")
	if r := record(journalUntil(t, c, "roam.service", "daemon settings"), "daemon settings"); r == nil || r["PRIORITY"] != "7" || r["ROAM_LOG_LEVEL"] != "debug" {
		t.Errorf("\"daemon settings\" record %v, want PRIORITY 7 and ROAM_LOG_LEVEL debug", r)
	}

	// No reload: systemd refuses it, and the tunnel stays as it was.
	if out, err := c.Run(20*time.Second, "systemctl", "reload", "roam.service"); err == nil {
		t.Errorf("systemctl reload roam succeeded: %s", out)
	}
	ctConnected(t, c, "corp")

	// SIGKILL: systemd restarts the daemon (Restart=on-failure), whose
	// start undoes what the killed one left; roam@corp follows the
	// restart and connects again.
	if out, err := c.Run(20*time.Second, "systemctl", "kill", "-s", "KILL", "roam.service"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, _ := c.Run(10*time.Second, "systemctl", "show", "-P", "NRestarts", "roam.service")
		if strings.TrimSpace(out) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("roam.service not restarted after SIGKILL (NRestarts %q)", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitUnit(t, c, "roam.service", "active", 30*time.Second)
	waitUnit(t, c, "roam@corp.service", "active", 30*time.Second)
	if st := ctStatus(t, c); len(st) != 1 || st[0].State != "established" {
		t.Errorf("after SIGKILL and restart: status %+v, want corp established", st)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 10*time.Second); err != nil {
		t.Errorf("no ping after the restart: %v", err)
	}
	undid := []string{"undid what an earlier daemon left", "DNS settings of an earlier run restored"}
	recs = journalUntil(t, c, "roam.service", undid...)
	for _, msg := range undid {
		if record(recs, msg) == nil {
			t.Errorf("no %q record: the restarted daemon did not undo the killed one's changes", msg)
		}
	}
	// The restart stopped roam@corp against a daemon that was gone: its
	// ExecStop has nothing to disconnect, which is no failure.
	for _, r := range journal(t, c, "roam@corp.service") {
		if strings.Contains(r["MESSAGE"], "Failed with result") {
			t.Errorf("roam@corp failed around the restart: %q", r["MESSAGE"])
		}
	}

	// systemctl stop: roam@corp disconnects, roam.service ends, nothing
	// is left.
	if out, err := c.Run(30*time.Second, "systemctl", "stop", "roam@corp.service"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if st := ctStatus(t, c); len(st) != 0 {
		t.Errorf("after systemctl stop roam@corp: status %+v, want nothing", st)
	}
	if out, err := c.Run(30*time.Second, "systemctl", "stop", "roam.service"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if after := ctState(t, c); after != before {
		t.Errorf("state after systemctl stop differs.\nbefore:\n%s\nafter:\n%s", before, after)
	}
	recs = journalUntil(t, c, "roam.service", "daemon stopped")
	if r := record(recs, "daemon stopped"); r == nil {
		t.Error("no \"daemon stopped\" record: the daemon did not stop cleanly")
	}
	// systemd logs the sd_notify messages it takes at debug level, which
	// is on only now: its forked children log at that level too, and
	// journald then files a daemon's first records under the child's
	// stale cgroup (init.scope) instead of roam.service.
	if out, err := c.Sh(30*time.Second, `set -e
systemd-analyze log-level debug
systemctl start roam.service
systemctl stop roam.service
systemd-analyze log-level info`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var notified map[string]int
	for deadline := time.Now().Add(10 * time.Second); ; {
		notified = map[string]int{}
		for _, r := range journal(t, c, "roam.service") {
			if m := r["MESSAGE"]; strings.Contains(m, "Got notification message") {
				for _, st := range []string{"READY=1", "STOPPING=1"} {
					if strings.Contains(m, st) {
						notified[st]++
					}
				}
			}
		}
		if notified["READY=1"] >= 1 && notified["STOPPING=1"] >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if notified["READY=1"] != 1 || notified["STOPPING=1"] != 1 {
		t.Errorf("systemd took READY=1 %d times and STOPPING=1 %d times, want once each", notified["READY=1"], notified["STOPPING=1"])
	}
	out, _ := c.Run(20*time.Second, "journalctl", "-u", "roam.service", "-u", "roam@corp.service", "-o", "short-monotonic", "--no-pager")
	t.Logf("journal of the units:\n%s", out)
}

// debsDir holds the openresolv and resolvconf packages that
// scripts/install-deps.sh downloads (and does not install).
const debsDir = "/var/cache/roam-lab/debs"

// TestSystemdResolvconf: roam's resolvconf method with the real programs,
// installed with dpkg inside the systemd container (on this machine
// either would take over /etc/resolv.conf). The uplink's server comes in
// as the record a DHCP client would add; roam gateway sends a server and
// a domain in CP. Connected, the generated resolv.conf has the tunnel's
// server first and the domain; systemctl stop takes them back; so does
// roam disconnect --all after the daemon was killed with nobody to
// restart it.
func TestSystemdResolvconf(t *testing.T) {
	tests := []struct {
		name string
		debs []string // globs in debsDir, installed in this order
	}{
		{"openresolv", []string{"openresolv_*.deb"}},
		{"resolvconf", []string{"lsb-base_*.deb", "resolvconf_*.deb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var debs []string
			for _, g := range tt.debs {
				m, _ := filepath.Glob(filepath.Join(debsDir, g))
				if len(m) == 0 {
					t.Skipf("%s not in %s; scripts/install-deps.sh downloads it", g, debsDir)
				}
				debs = append(debs, m[len(m)-1])
			}
			l, bin := setup(t)
			pki := newPKI(t, l)
			startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, DNSDomains: []string{"corp.example"}})
			c := bootSystemd(t, l, lab.LabProfile("psk", goodPSK, pki, nil), debsDir)
			t0 := time.Now()
			// No triggers (man-db would index every manual page of the
			// machine's) and no fsync: the container is thrown away.
			if out, err := c.Run(60*time.Second, append([]string{"env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--no-triggers", "--force-unsafe-io", "-i"}, debs...)...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			t.Logf("dpkg -i: %.1f s", time.Since(t0).Seconds())
			// What the uplink's DHCP client would have handed resolvconf.
			if out, err := c.Sh(20*time.Second, `printf 'nameserver 192.0.2.53\n' | resolvconf -a wlan && resolvconf -u`); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			resolv := func() string {
				t.Helper()
				out, err := c.Run(10*time.Second, "cat", "/etc/resolv.conf")
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			before := resolv()
			if !strings.Contains(before, "nameserver 192.0.2.53") {
				t.Fatalf("resolvconf did not take the uplink's record:\n%s", before)
			}
			applied := func(when string) {
				t.Helper()
				got := resolv()
				ours, theirs := strings.Index(got, "nameserver 10.99.0.53"), strings.Index(got, "nameserver 192.0.2.53")
				if ours < 0 || !strings.Contains(got, "corp.example") {
					t.Fatalf("%s: resolv.conf lacks the tunnel's server or domain:\n%s", when, got)
				}
				if theirs >= 0 && theirs < ours {
					t.Errorf("%s: the uplink's server comes before the tunnel's:\n%s", when, got)
				}
			}

			if out, err := c.Run(60*time.Second, "systemctl", "start", "roam@corp"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if st := ctConnected(t, c, "corp"); st.DNSMethod != "resolvconf" {
				t.Errorf("dns_method %q, want resolvconf", st.DNSMethod)
			}
			applied("connected")
			if out, err := c.Run(30*time.Second, "systemctl", "stop", "roam@corp"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got := resolv(); got != before {
				t.Errorf("resolv.conf after systemctl stop:\n%s\nwant as before:\n%s", got, before)
			}

			// Killed with nobody to restart it: the record stays until
			// disconnect --all finds the killed daemon's undo state.
			if out, err := c.Sh(60*time.Second, `set -e
mkdir -p /etc/systemd/system/roam.service.d
printf '[Service]\nRestart=no\n' > /etc/systemd/system/roam.service.d/norestart.conf
systemctl daemon-reload
systemctl start roam@corp`); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			applied("connected again")
			if out, err := c.Run(20*time.Second, "systemctl", "kill", "-s", "KILL", "roam.service"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			waitUnit(t, c, "roam.service", "failed", 30*time.Second)
			applied("daemon killed")
			out, err := c.Run(30*time.Second, "roam", "disconnect", "--all")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "restored leftover DNS settings") {
				t.Errorf("disconnect --all said %q, want it to name the DNS settings it restored", out)
			}
			if got := resolv(); got != before {
				t.Errorf("resolv.conf after disconnect --all:\n%s\nwant as before:\n%s", got, before)
			}
		})
	}
}
