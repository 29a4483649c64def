package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestSystemdGatewayPackage: the Debian package as a gateway's admin lives
// with it, on a real systemd (PID 1 of a container in the lab's gateway
// namespace). dpkg -i installs roam-gateway.service; with
// /etc/roam/gateway.toml, systemctl enable --now starts it (Type=notify:
// active only after READY=1) and a client connects through it; systemctl
// stop ends the gateway cleanly and the client loses its tunnel; dpkg -r
// stops a running gateway and keeps the admin's enable symlink, so a
// reinstall would keep it; dpkg --purge removes the symlink.
func TestSystemdGatewayPackage(t *testing.T) {
	for _, tool := range []string{"systemd-nspawn", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found; scripts/install-deps.sh installs it", tool)
		}
	}
	l, bin := setup(t)
	pki := newPKI(t, l)
	deb := buildDeb(t, l)

	share, err := os.MkdirTemp(l.Dir, "gwetc-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(share, 0o755)
	gwFile, err := lab.WriteRoamGateway(share, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK})
	if err != nil {
		t.Fatal(err)
	}
	c, err := l.BootContainer(lab.ContainerOptions{NS: lab.Gateway, Binds: []string{share, filepath.Dir(deb)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.Run(20*time.Second, "journalctl", "-b", "--no-pager", "-n", "150")
			t.Logf("container journal:\n%s", out)
		}
	})
	sh := func(what, script string) string {
		t.Helper()
		out, err := c.Sh(60*time.Second, script)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		return out
	}
	const unit = "roam-gateway.service"
	const wants = "/etc/systemd/system/multi-user.target.wants/" + unit
	sh("dpkg -i", "DEBIAN_FRONTEND=noninteractive dpkg --no-triggers --force-unsafe-io -i "+deb)
	// The gateway file and its PSK as an admin would put them into /etc/roam.
	sh("gateway file", fmt.Sprintf(`set -e
install -d -m 0755 /etc/roam
sed 's|%[1]s|/etc/roam|g' %[2]s > /etc/roam/gateway.toml
install -m 0600 %[1]s/alice.psk /etc/roam/alice.psk`, share, gwFile))

	sh("enable --now", "systemctl enable --now "+unit)
	// Type=notify: enable --now returns once systemd took READY=1.
	waitUnit(t, c, unit, "active", 5*time.Second)

	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	connectRoam(t, l, r, t.Fatalf)
	out := sh("gateway status", "roam status --socket /run/roam/gateway.sock --json")
	if !strings.Contains(out, lab.ClientID) {
		t.Errorf("the gateway's status does not name the client %s:\n%s", lab.ClientID, out)
	}
	if j := sh("journal", "journalctl -u "+unit+" -o export --no-pager"); strings.Contains(j, goodPSK) {
		t.Error("the gateway's journal holds the PSK")
	}

	// A clean stop: the gateway ends, and tells the client so (its IKE SA
	// is deleted), so the client does not keep a dead tunnel.
	sh("stop", "systemctl stop "+unit)
	waitUnit(t, c, unit, "inactive", 5*time.Second)
	if recs := journalUntil(t, c, unit, "gateway stopped"); record(recs, "gateway stopped") == nil {
		t.Error("no \"gateway stopped\" record: the gateway did not stop cleanly")
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, _, err := r.Status()
		if err == nil && (len(st) == 0 || st[0].State != "established") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client still established 10 s after the gateway stopped: %+v (%v)", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// dpkg -r stops the running gateway and keeps the enable symlink.
	sh("start", "systemctl start "+unit)
	sh("dpkg -r", "DEBIAN_FRONTEND=noninteractive dpkg --no-triggers -r roam")
	waitUnit(t, c, unit, "inactive", 5*time.Second)
	if _, err := c.Run(10*time.Second, "test", "-L", wants); err != nil {
		t.Errorf("dpkg -r removed the admin's enable symlink %s", wants)
	}
	if _, err := c.Run(10*time.Second, "test", "-e", "/usr/bin/roam"); err == nil {
		t.Error("dpkg -r left /usr/bin/roam")
	}
	sh("dpkg --purge", "DEBIAN_FRONTEND=noninteractive dpkg --no-triggers --purge roam")
	if out, err := c.Sh(10*time.Second, "ls /etc/systemd/system/*.wants/ | grep roam"); err == nil {
		t.Errorf("enable symlinks left after dpkg --purge:\n%s", out)
	}
}

// buildDeb builds the package with scripts/deb.sh into the lab's
// directory and returns its path.
func buildDeb(t *testing.T, l *lab.Lab) string {
	t.Helper()
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(l.Dir, "deb-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cmd := exec.Command("./scripts/deb.sh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION=0.0.0~lab", "DEB_OUT="+dir)
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deb.sh: %v\n%s", err, out)
	}
	t.Logf("deb.sh: %.1f s", time.Since(t0).Seconds())
	debs, _ := filepath.Glob(filepath.Join(dir, "roam_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("deb.sh built %v in %s, want one package", debs, dir)
	}
	return debs[0]
}
