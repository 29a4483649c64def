package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab"
)

const psk = "bench-tput-psk-correct-horse"

// Tunnel kinds.
const (
	kindRoam = "roam"
	kindWG   = "wireguard"
	kindSwan = "strongswan"
	// kindRoamTCP is roam <-> roam over an RFC 9329 stream (transport tcp).
	kindRoamTCP = "roam-tcp"
	// kindRoamBase is roam <-> roam with another roam binary (ROAM_BASE),
	// for an A/B of two builds in one run.
	kindRoamBase = "roam-base"
)

var kindLabel = map[string]string{
	kindRoam:     "roam",
	kindWG:       "wireguard-go",
	kindSwan:     "roam->strongSwan",
	kindRoamTCP:  "roam over TCP",
	kindRoamBase: "roam-base",
}

// tunnel is one kind's tunnel, up between the client and the gateway
// namespace of a lab.
type tunnel struct {
	pids  []int  // the tunnel's processes on both ends (their CPU is counted)
	iface string // client-side device the host is routed through
	mtu   int
	logs  func() map[string]string
	// roamDrops, for the roam kinds, reads the non-zero drop counters of
	// `roam status --json` of each roam end, by "end/reason".
	roamDrops func() map[string]int64
	// stop ends the tunnel's processes in order (client first) and waits
	// for them: a CPU profile is complete once it returns.
	stop func() error
}

// binaries are what the kinds run.
type binaries struct {
	roam, wireguardGo string
	roamBase          string // ROAM_BASE: the build kind roam-base runs
}

// profile asks roam's ends for CPU profiles (ROAM_CPUPROFILE) into these
// files; empty: no profile.
type profile struct{ client, gateway string }

// wgNet is the wireguard-go tunnel's own addresses, apart from roam's pool.
var (
	wgClient  = netip.MustParsePrefix("10.99.201.2/32")
	wgGateway = netip.MustParsePrefix("10.99.201.1/32")
)

const wgPort = 51820

func startTunnel(l *lab.Lab, kind string, bin binaries, n int, prof profile) (*tunnel, error) {
	var t *tunnel
	var err error
	switch kind {
	case kindRoam:
		t, err = startRoamRoam(l, bin, prof, false)
	case kindRoamTCP:
		t, err = startRoamRoam(l, bin, prof, true)
	case kindRoamBase:
		base := bin
		base.roam = bin.roamBase
		t, err = startRoamRoam(l, base, prof, false)
	case kindSwan:
		t, err = startRoamSwan(l, bin)
	case kindWG:
		t, err = startWireGuard(l, bin, n)
	default:
		return nil, fmt.Errorf("unknown tunnel kind %q", kind)
	}
	if err != nil {
		return t, err
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 10*time.Second); err != nil {
		return t, fmt.Errorf("%s: no ping through the tunnel: %w", kind, err)
	}
	// The device the client's kernel routes the host through, whatever
	// routing rules the kind installed.
	route, err := l.Output(lab.Client, "ip", "route", "get", lab.HostAddr.Addr().String())
	if err != nil {
		return t, err
	}
	if t.iface, err = routeDevice(route); err != nil {
		return t, err
	}
	if t.mtu, err = linkMTU(l, lab.Client, t.iface); err != nil {
		return t, err
	}
	return t, nil
}

// routeDevice reads the device from `ip route get` output.
func routeDevice(out string) (string, error) { return routeField(out, "dev") }

func envFor(file string) []string {
	if file == "" {
		return nil
	}
	return []string{"ROAM_CPUPROFILE=" + file}
}

func startRoamClient(l *lab.Lab, bin binaries, prof profile, transport string) (*lab.Roam, string, error) {
	dir := filepath.Join(l.Dir, "roam")
	p := lab.LabProfile("psk", psk, nil, nil)
	p.Transport = transport
	r, err := lab.NewRoamClient(l, bin.roam, dir, p)
	if err != nil {
		return nil, "", err
	}
	r.Env = envFor(prof.client)
	return r, filepath.Join(dir, "roam.log"), r.ConnectRetry("corp")
}

// roamTunnel fills in the client side common to both roam kinds.
func roamTunnel(l *lab.Lab, r *lab.Roam, logFile string, t *tunnel) error {
	st, _, err := r.Status()
	if err != nil {
		return err
	}
	if len(st) != 1 || st[0].State != "established" {
		return fmt.Errorf("roam status: want one established connection, have %+v", st)
	}
	daemons := r.Processes()
	if len(daemons) != 1 {
		return fmt.Errorf("roam client: %d daemon processes in the client namespace, want 1", len(daemons))
	}
	t.pids = append(t.pids, daemons...)
	prevDrops := t.roamDrops
	t.roamDrops = func() map[string]int64 {
		m := map[string]int64{}
		if prevDrops != nil {
			m = prevDrops()
		}
		addRoamDrops(m, "client", r)
		return m
	}
	prev := t.logs
	t.logs = func() map[string]string {
		m := prev()
		benchkit.AddLogFile(m, "roam.log", logFile)
		benchkit.AddStatus(m, "roam-status.json", r)
		return m
	}
	return nil
}

// stopRoamClient disconnects; the daemon (started with --auto-exit) then
// exits, which writes its profile.
func stopRoamClient(r *lab.Roam, pid int) error {
	if out, err := r.Disconnect("corp"); err != nil {
		return fmt.Errorf("roam disconnect: %w: %s", err, out)
	}
	return waitExit(pid, 10*time.Second)
}

func startRoamRoam(l *lab.Lab, bin binaries, prof profile, tcp bool) (*tunnel, error) {
	gw, err := lab.NewRoamGateway(l, lab.Gateway, bin.roam, filepath.Join(l.Dir, "gw"), lab.RoamGatewayConfig{Auth: "psk", PSK: psk, TCP: tcp})
	if err != nil {
		return nil, err
	}
	gw.Env = envFor(prof.gateway)
	gwProc, err := gw.StartGateway()
	if err != nil {
		return nil, err
	}
	t := &tunnel{
		pids: []int{gwProc.PID()},
		logs: func() map[string]string { return map[string]string{"gateway.out": gwProc.Output()} },
		roamDrops: func() map[string]int64 {
			m := map[string]int64{}
			addRoamDrops(m, "gateway", gw)
			return m
		},
	}
	transport := ""
	if tcp {
		transport = "tcp"
	}
	return t, withRoamClient(l, bin, prof, transport, t, gwProc.Stop)
}

func startRoamSwan(l *lab.Lab, bin binaries) (*tunnel, error) {
	gw, err := l.StartCharon(lab.Gateway, lab.CharonOptions{
		Conns:            []lab.SwanConn{lab.GatewayConn("psk", psk, nil, nil)},
		InterfacesIgnore: []string{"lan"},
	})
	if err != nil {
		return nil, fmt.Errorf("strongSwan gateway: %w", err)
	}
	charon := pidsOf(l, lab.Gateway, lab.CharonBinary)
	if len(charon) != 1 {
		return nil, fmt.Errorf("strongSwan gateway: %d charon processes, want 1", len(charon))
	}
	t := &tunnel{
		pids: charon,
		logs: func() map[string]string { return map[string]string{"gateway-charon.log": gw.Log()} },
	}
	return t, withRoamClient(l, bin, profile{}, "", t, gw.Stop)
}

// withRoamClient connects a roam client to t's gateway and completes t:
// stopping it stops the client, then the gateway (stopGateway).
func withRoamClient(l *lab.Lab, bin binaries, prof profile, transport string, t *tunnel, stopGateway func()) error {
	r, logFile, err := startRoamClient(l, bin, prof, transport)
	if err != nil {
		return err
	}
	if err := roamTunnel(l, r, logFile, t); err != nil {
		return err
	}
	client := t.pids[1]
	t.stop = func() error {
		err := stopRoamClient(r, client)
		stopGateway()
		return err
	}
	return nil
}

// startWireGuard runs wireguard-go (userspace, foreground) in the client
// and the gateway namespace, configured with wg, over the same path as
// the other kinds: the client's wlan uplink through its NAT to the
// gateway's primary address.
func startWireGuard(l *lab.Lab, bin binaries, n int) (*tunnel, error) {
	// Interface names are global to the machine's /var/run/wireguard,
	// whatever the namespace: unique per benchmark process and run.
	cif := fmt.Sprintf("wg%dc%d", os.Getpid()%100000, n)
	gif := fmt.Sprintf("wg%dg%d", os.Getpid()%100000, n)
	keys := map[string][2]string{}
	for _, side := range []string{"client", "gateway"} {
		priv, pub, err := wgKeyPair(l.Dir, side)
		if err != nil {
			return nil, err
		}
		keys[side] = [2]string{priv, pub}
	}
	t := &tunnel{logs: func() map[string]string { return map[string]string{} }}
	var procs []*lab.Proc
	for _, e := range []struct{ ns, ifname string }{{lab.Gateway, gif}, {lab.Client, cif}} {
		sock := filepath.Join("/var/run/wireguard", e.ifname+".sock")
		l.OnClose(func() error { os.Remove(sock); return nil })
		cmd := l.Cmd(e.ns, bin.wireguardGo, e.ifname)
		cmd.Env = append(os.Environ(), "WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error")
		p, err := l.StartCmd(cmd)
		if err != nil {
			return t, err
		}
		procs = append(procs, p)
		t.pids = append(t.pids, p.PID())
		prev, name := t.logs, e.ns+"-wireguard-go.out"
		t.logs = func() map[string]string { m := prev(); m[name] = p.Output(); return m }
		if err := waitFile(sock, 5*time.Second); err != nil {
			return t, fmt.Errorf("wireguard-go %s: %w: %s", e.ifname, err, p.Output())
		}
	}
	steps := [][]string{
		{lab.Gateway, "wg", "set", gif, "listen-port", strconv.Itoa(wgPort), "private-key", keys["gateway"][0],
			"peer", keys["client"][1], "allowed-ips", wgClient.String()},
		{lab.Gateway, "ip", "addr", "add", wgGateway.String(), "dev", gif},
		{lab.Gateway, "ip", "link", "set", gif, "up"},
		{lab.Gateway, "ip", "route", "add", wgClient.String(), "dev", gif},
		{lab.Client, "wg", "set", cif, "private-key", keys["client"][0],
			"peer", keys["gateway"][1], "endpoint", fmt.Sprintf("%s:%d", lab.GatewayAddr1.Addr(), wgPort),
			"allowed-ips", lab.ProtectedNet.String() + "," + wgGateway.String(), "persistent-keepalive", "25"},
		{lab.Client, "ip", "addr", "add", wgClient.String(), "dev", cif},
		{lab.Client, "ip", "link", "set", cif, "up"},
		{lab.Client, "ip", "route", "add", lab.ProtectedNet.String(), "dev", cif, "src", wgClient.Addr().String()},
	}
	for _, s := range steps {
		if err := l.Exec(s[0], s[1:]...); err != nil {
			return t, err
		}
	}
	t.stop = func() error {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop()
		}
		return nil
	}
	return t, nil
}

// wgKeyPair writes a private key file (mode 0600) with `wg genkey` and
// returns its path and the public key.
func wgKeyPair(dir, name string) (privFile, pub string, err error) {
	priv, err := exec.Command("wg", "genkey").Output()
	if err != nil {
		return "", "", fmt.Errorf("wg genkey: %w", err)
	}
	privFile = filepath.Join(dir, name+".wgkey")
	if err := os.WriteFile(privFile, priv, 0o600); err != nil {
		return "", "", err
	}
	cmd := exec.Command("wg", "pubkey")
	cmd.Stdin = strings.NewReader(string(priv))
	p, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("wg pubkey: %w", err)
	}
	return privFile, strings.TrimSpace(string(p)), nil
}

// pidsOf lists the processes in a lab namespace running exe.
func pidsOf(l *lab.Lab, ns, exe string) []int {
	var pids []int
	for _, pid := range l.PIDs(ns) {
		if e, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && e == exe {
			pids = append(pids, pid)
		}
	}
	return pids
}

func linkMTU(l *lab.Lab, ns, dev string) (int, error) {
	out, err := l.Output(ns, "cat", "/sys/class/net/"+dev+"/mtu")
	if err != nil {
		return 0, err
	}
	mtu, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return 0, fmt.Errorf("mtu of %s: %q", dev, out)
	}
	return mtu, nil
}

func waitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits until pid has exited (or is a zombie).
func waitExit(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return nil
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			return fmt.Errorf("process %d still running %v after the disconnect", pid, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// addRoamDrops adds r's non-zero drop counters to m as "end/reason"; a
// status that cannot be read shows as "end/status-error".
func addRoamDrops(m map[string]int64, end string, r *lab.Roam) {
	st, _, err := r.Status()
	if err != nil || len(st) == 0 {
		m[end+"/status-error"] = 1
		return
	}
	var d map[string]int64
	if json.Unmarshal(st[0].Drops, &d) != nil {
		m[end+"/status-error"] = 1
		return
	}
	for k, v := range d {
		if v != 0 {
			m[end+"/"+k] = v
		}
	}
}
