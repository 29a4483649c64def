package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ContainerOptions shape a systemd container (BootContainer).
type ContainerOptions struct {
	// NS is the lab role whose network namespace the container joins, so
	// its traffic stays in the lab.
	NS string
	// Install is a tree (make install DESTDIR=...) copied over the
	// container's root before it boots.
	Install string
	// Binds are host directories the container sees read-only at the same
	// path.
	Binds []string
}

// Container is a real systemd booted as PID 1 by systemd-nspawn on a
// copy-on-write view of this machine's root: an overlay whose upper layer
// is a tmpfs, mounted in a private mount namespace, so nothing the
// container writes (packages, /etc, its resolv.conf, its journal) reaches
// the machine, and all of it vanishes when the container stops.
type Container struct {
	nspawn *Proc
	// Init is PID 1 of the container as this machine's PID namespace
	// numbers it.
	Init int
}

// containerTarget is the unit the container boots into instead of the
// machine's default target: only the basics (journald, the D-Bus socket),
// so that services enabled on the machine (a strongSwan, a database) do not
// start inside the lab's network namespace.
const containerTarget = `[Unit]
Description=roam lab container
Requires=sysinit.target sockets.target
After=sysinit.target sockets.target
AllowIsolate=yes
`

// containerScript runs under unshare -m: the overlay and every other mount
// live in that mount namespace only.
const containerScript = `set -eu
D=$1 NS=$2 INSTALL=$3 MACHINE=$4
shift 4
mount -t tmpfs -o mode=0755 roamlab-layer "$D/layer"
mkdir "$D/layer/upper" "$D/layer/work"
mount -t overlay roamlab-root -o "lowerdir=/,upperdir=$D/layer/upper,workdir=$D/layer/work" "$D/root"
# nspawn keeps its propagation directories under /run/systemd; this
# tmpfs keeps them off the machine (where /run/systemd may not exist
# when systemd is not PID 1: an empty directory is all it leaves).
mkdir -p /run/systemd
mount -t tmpfs -o mode=0755 roamlab-run /run/systemd
if [ -n "$INSTALL" ]; then cp -a "$INSTALL/." "$D/root/"; fi
cp "$D/roamlab.target" "$D/root/etc/systemd/system/roamlab.target"
# A machine-id of its own: the journal would otherwise refuse to keep
# the container's records apart from the machine's.
systemd-id128 new > "$D/root/etc/machine-id"
# CAP_NET_ADMIN: nspawn grants it for a network namespace of its own
# (--private-network), not for one it joins.
exec systemd-nspawn --quiet --capability=CAP_NET_ADMIN --directory="$D/root" --machine="$MACHINE" \
	--register=no --keep-unit --boot --console=read-only \
	--link-journal=no --resolv-conf=off --timezone=off \
	--network-namespace-path="/run/netns/$NS" "$@" -- systemd.unit=roamlab.target
`

// BootContainer starts the container and waits until its systemd has
// finished booting. Stop ends it.
func (l *Lab) BootContainer(o ContainerOptions) (*Container, error) {
	for _, tool := range []string{"systemd-nspawn", "unshare", "nsenter", "systemd-id128"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("lab: container: %s not found (scripts/install-deps.sh installs it): %w", tool, err)
		}
	}
	dir, err := os.MkdirTemp(l.Dir, "ct-")
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"layer", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	script := filepath.Join(dir, "boot.sh")
	if err := os.WriteFile(script, []byte(containerScript), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "roamlab.target"), []byte(containerTarget), 0o644); err != nil {
		return nil, err
	}
	var extra []string
	for _, b := range o.Binds {
		extra = append(extra, "--bind-ro="+b)
	}
	// The machine name is the namespace's: unique per lab run.
	args := append([]string{"-m", "--propagation", "private", "sh", script, dir, l.NS(o.NS), o.Install, l.NS(o.NS)}, extra...)
	cmd := exec.Command("unshare", args...)
	p, err := l.StartCmd(cmd)
	if err != nil {
		return nil, err
	}
	c := &Container{nspawn: p}
	deadline := time.Now().Add(60 * time.Second)
	for c.Init == 0 {
		select {
		case <-p.Done():
			return nil, fmt.Errorf("lab: container exited while booting: %v\n%s", p.err, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("lab: container: no init after 60 s\n%s", p.Output())
		}
		// nspawn's first child forks the container's init and exits; the
		// init is the child that has become systemd.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.PID(), p.PID())); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if comm, err := os.ReadFile("/proc/" + f + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "systemd" {
					fmt.Sscan(f, &c.Init)
				}
			}
		}
		if c.Init == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// is-system-running --wait returns once the boot transaction is done:
	// "running", or "degraded" when a unit of the machine's failed, which
	// is not ours to judge.
	for {
		state, _ := c.Run(30*time.Second, "systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(state)
		if state == "running" || state == "degraded" {
			return c, nil
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("lab: container: systemd is %q after 60 s\n%s", state, p.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Run runs a command inside the container (all its namespaces, a clean
// environment) and returns its combined output, bounded by timeout.
func (c *Container) Run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append([]string{"--target", fmt.Sprint(c.Init), "--all", "--",
		"env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("container: %s: no result within %v: %s", strings.Join(args, " "), timeout, out)
	}
	if err != nil {
		return string(out), fmt.Errorf("container: %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sh runs a shell script inside the container.
func (c *Container) Sh(timeout time.Duration, script string) (string, error) {
	return c.Run(timeout, "sh", "-c", script)
}

// Stop shuts the container down as a machine would (nspawn turns SIGTERM
// into a poweroff of its systemd), SIGKILL after 30 s, and waits.
func (c *Container) Stop() {
	select {
	case <-c.nspawn.Done():
		return
	default:
	}
	_ = c.nspawn.Signal(syscall.SIGTERM)
	select {
	case <-c.nspawn.Done():
		return
	case <-time.After(30 * time.Second):
	}
	_ = c.nspawn.Signal(syscall.SIGKILL)
	<-c.nspawn.Done()
}
