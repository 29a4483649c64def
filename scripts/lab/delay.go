package lab

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BuildDelay compiles the delay line (./scripts/nfdelay) into dir and
// returns the binary's path.
func BuildDelay(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nfdelay")
	cmd := exec.Command("go", "build", "-o", bin, "./scripts/nfdelay")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nfdelay: %w: %s", err, out)
	}
	return bin, nil
}

// Delay is the delay line of one NAT router: every packet forwarded through
// its "wan" interface, in either direction, is held for D before it goes on,
// so an uplink's round trip grows by 2*D. It also records the tunnel (ESP)
// packets it forwards, which tells which uplink a tunnel uses and when.
type Delay struct {
	Router string
	D      time.Duration
	proc   *Proc
	log    *tunnelLog
}

// TunnelPacket is one ESP packet a delay line forwarded.
type TunnelPacket struct {
	In      bool      // from the internet toward the client
	Enter   time.Time // when the delay line took it
	Release time.Time // when it went on toward its destination
	Len     int
	// Peer is the packet's internet-side end: the gateway address it
	// came from ("in") or goes to; invalid when the line did not say.
	Peer netip.Addr
}

// Delays maps a NAT router's role to its delay line.
type Delays map[string]*Delay

// DelayUplinks is an Options.OnUplink hook that puts a delay line of d on
// every uplink's NAT router and records it in into.
func DelayUplinks(bin string, d time.Duration, into Delays) func(*Lab, Uplink) error {
	return func(l *Lab, u Uplink) error {
		dl, err := l.AddDelay(u.Router, bin, d)
		if err != nil {
			return err
		}
		into[u.Router] = dl
		return nil
	}
}

// AddDelay starts the delay line bin (see BuildDelay) in router and then
// sends the router's forwarded traffic through it. The process is the lab's:
// Close stops it by its PID, and the rules go with the namespace.
func (l *Lab) AddDelay(router, bin string, d time.Duration) (*Delay, error) {
	dl := &Delay{Router: router, D: d, log: &tunnelLog{ready: make(chan struct{})}}
	cmd := l.Cmd(router, bin, "-queue", "0", "-delay", d.String(), "-wan", "wan", "-log")
	cmd.Stdout = dl.log
	p, err := l.StartCmd(cmd)
	if err != nil {
		return nil, err
	}
	dl.proc = p
	select {
	case <-dl.log.ready:
	case <-p.Done():
		return nil, fmt.Errorf("lab: delay line in %s exited: %s", router, p.Output())
	case <-time.After(10 * time.Second):
		p.Stop()
		return nil, fmt.Errorf("lab: delay line in %s not ready: %s", router, p.Output())
	}
	// Without --queue-bypass a dead delay line cuts the uplink, which a
	// benchmark notices, instead of silently removing the delay.
	for _, dir := range []string{"-i", "-o"} {
		if err := l.Exec(router, "iptables", "-t", "mangle", "-A", "FORWARD", dir, "wan", "-j", "NFQUEUE", "--queue-num", "0"); err != nil {
			p.Stop()
			return nil, err
		}
	}
	return dl, nil
}

// PID of the delay line's process.
func (d *Delay) PID() int { return d.proc.PID() }

// Running reports whether the delay line still runs.
func (d *Delay) Running() bool {
	select {
	case <-d.proc.Done():
		return false
	default:
		return true
	}
}

// Stop ends the delay line (its uplink then carries nothing).
func (d *Delay) Stop() { d.proc.Stop() }

// Output is the delay line's stderr (its counters once stopped).
func (d *Delay) Output() string { return d.proc.Output() }

// Tunnel returns the tunnel packets forwarded so far.
func (d *Delay) Tunnel() []TunnelPacket { return d.log.packets() }

// FirstIn returns the first tunnel packet toward the client that the delay
// line took at or after t.
func (d *Delay) FirstIn(t time.Time) (TunnelPacket, bool) {
	return d.log.first(func(p TunnelPacket) bool { return p.In && !p.Enter.Before(t) })
}

// FirstOut returns the first tunnel packet from the client that the delay
// line took at or after t.
func (d *Delay) FirstOut(t time.Time) (TunnelPacket, bool) {
	return d.log.first(func(p TunnelPacket) bool { return !p.In && !p.Enter.Before(t) })
}

// FirstInFrom returns the first tunnel packet toward the client from the
// gateway address peer that the delay line took at or after t.
func (d *Delay) FirstInFrom(t time.Time, peer netip.Addr) (TunnelPacket, bool) {
	return d.log.first(func(p TunnelPacket) bool { return p.In && p.Peer == peer && !p.Enter.Before(t) })
}

// LastIn returns the last tunnel packet toward the client so far.
func (d *Delay) LastIn() (TunnelPacket, bool) {
	return d.log.last(func(p TunnelPacket) bool { return p.In })
}

// tunnelLog parses nfdelay's stdout as it arrives.
type tunnelLog struct {
	mu      sync.Mutex
	partial []byte
	pkts    []TunnelPacket
	bad     int
	ready   chan struct{}
	isReady bool
}

func (t *tunnelLog) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, b...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		line := string(t.partial[:i])
		t.partial = t.partial[i+1:]
		if line == "ready" {
			if !t.isReady {
				t.isReady = true
				close(t.ready)
			}
			continue
		}
		p, ok := ParseTunnelLine(line)
		if !ok {
			t.bad++
			continue
		}
		t.pkts = append(t.pkts, p)
	}
	return len(b), nil
}

// ParseTunnelLine parses one "esp <in|out> <enter ns> <release ns> <len>
// [peer]" line of nfdelay -log.
func ParseTunnelLine(line string) (TunnelPacket, bool) {
	f := strings.Fields(line)
	if len(f) != 5 && len(f) != 6 || f[0] != "esp" || (f[1] != "in" && f[1] != "out") {
		return TunnelPacket{}, false
	}
	var peer netip.Addr
	if len(f) == 6 && f[5] != "-" {
		a, err := netip.ParseAddr(f[5])
		if err != nil {
			return TunnelPacket{}, false
		}
		peer = a
	}
	enter, err1 := strconv.ParseInt(f[2], 10, 64)
	rel, err2 := strconv.ParseInt(f[3], 10, 64)
	n, err3 := strconv.Atoi(f[4])
	if err1 != nil || err2 != nil || err3 != nil || rel < enter || n < 0 {
		return TunnelPacket{}, false
	}
	return TunnelPacket{In: f[1] == "in", Enter: time.Unix(0, enter), Release: time.Unix(0, rel), Len: n, Peer: peer}, true
}

func (t *tunnelLog) packets() []TunnelPacket {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]TunnelPacket(nil), t.pkts...)
}

func (t *tunnelLog) first(match func(TunnelPacket) bool) (TunnelPacket, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pkts {
		if match(p) {
			return p, true
		}
	}
	return TunnelPacket{}, false
}

func (t *tunnelLog) last(match func(TunnelPacket) bool) (TunnelPacket, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.pkts) - 1; i >= 0; i-- {
		if match(t.pkts[i]) {
			return t.pkts[i], true
		}
	}
	return TunnelPacket{}, false
}
