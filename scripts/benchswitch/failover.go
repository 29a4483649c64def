package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab"
)

// The HA group (issue 5, draft-smyslov-ipsecme-ikev2-r-mobike 4.2.1): roam
// gateway nodes gw (203.0.113.10) and gw2 (203.0.113.42) replicate over
// their own link; the client connects through the active one. Each
// repetition kills the active node's process (SIGKILL); the standby
// notices the silence (dead_after, 1 s by default), sends the takeover
// request from the failed node's address and the client moves to it. The
// killed node comes back as the new standby, so the next repetition fails
// over the other way.

var failoverScenario = scenario{
	name: "failover", desc: "SIGKILL of the active HA node; the standby takes the client over after dead_after",
	trigger: func(cfg config, e *env, rep int, event time.Time) (move, error) {
		return e.ha.failover(cfg, e, event)
	},
}

// haNode is one gateway node of the pair.
type haNode struct {
	ns     string
	addr   netip.Addr
	dir    string
	files  map[string]string // role -> gateway file
	starts int
	roam   *lab.Roam
	proc   *lab.Proc
	events *lab.Proc
}

type haPair struct {
	nodes  [2]*haNode
	active int // index into nodes
}

func setupHAPair(cfg config, e *env) error {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	act, stby := lab.HAPair(hex.EncodeToString(k), cfg.haDeadAfter)
	// Node gw's tables as they are at start; gw2's mirror them. A node
	// always restarts as standby.
	gwTables := map[string]*lab.RoamHA{"active": act, "standby": {Role: "standby", Listen: act.Listen, Peer: act.Peer, Key: act.Key, Takeover: act.Takeover, DeadAfter: act.DeadAfter}}
	gw2Tables := map[string]*lab.RoamHA{"standby": stby}
	h := &haPair{}
	for i, n := range []struct {
		ns     string
		addr   netip.Addr
		tables map[string]*lab.RoamHA
	}{{lab.Gateway, lab.GatewayAddr1.Addr(), gwTables}, {lab.Gateway2, lab.Gateway2Addr.Addr(), gw2Tables}} {
		node := &haNode{ns: n.ns, addr: n.addr, dir: filepath.Join(e.l.Dir, "ha-"+n.ns), files: map[string]string{}}
		for role, t := range n.tables {
			f, err := lab.WriteRoamGateway(filepath.Join(node.dir, role), lab.RoamGatewayConfig{Auth: "psk", PSK: psk, Listen: []netip.Addr{n.addr}, HA: t})
			if err != nil {
				return err
			}
			node.files[role] = f
		}
		h.nodes[i] = node
	}
	e.ha = h
	if err := h.nodes[1].start(cfg, e.l, "standby"); err != nil {
		return err
	}
	if err := h.nodes[0].start(cfg, e.l, "active"); err != nil {
		return err
	}
	cdir, err := e.newClient(cfg)
	if err != nil {
		return err
	}
	e.logs = func() map[string]string {
		m := map[string]string{}
		for _, n := range h.nodes {
			if n.proc != nil {
				m[n.ns+".out"] = n.proc.Output()
			}
			if n.events != nil {
				m[n.ns+"-events.json"] = n.events.Output()
			}
		}
		benchkit.AddLogFile(m, "roam.log", filepath.Join(cdir, "roam.log"))
		return m
	}
	if err := e.client.ConnectRetry("corp"); err != nil {
		return err
	}
	e.cur = h.nodes[0].addr
	return h.nodes[1].waitReplicating(15 * time.Second)
}

// start runs `roam gateway` on the node with the role's file, a control
// socket of its own each time (a killed node leaves its socket behind) and
// an event stream.
func (n *haNode) start(cfg config, l *lab.Lab, role string) error {
	n.starts++
	n.roam = &lab.Roam{Lab: l, NS: n.ns, Bin: cfg.roamBin, Config: n.files[role], Socket: filepath.Join(n.dir, fmt.Sprintf("gw%d.sock", n.starts))}
	var err error
	if n.proc, err = n.roam.StartGateway(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, statErr := os.Stat(n.roam.Socket); statErr == nil {
			break
		}
		select {
		case <-n.proc.Done():
			return fmt.Errorf("%s: roam gateway exited: %s", n.ns, n.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: roam gateway did not start: %s", n.ns, n.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.events, err = n.roam.StartEvents()
	return err
}

// waitReplicating waits until the node, as standby, has the active's full
// push (the channel is up: the snapshot goes first).
func (n *haNode) waitReplicating(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(n.proc.Output(), "ha: connected") {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: replication channel not up after %v: %s", n.ns, timeout, n.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The full push follows the handshake at once; leave it a moment.
	time.Sleep(300 * time.Millisecond)
	return nil
}

// failover kills the active node and waits for the standby's failover
// event; then the corp host's route to the pool follows the new active node
// (what the cluster's routing does) and the killed node restarts as the
// standby. The measurement runs from event on the delay lines' log, so the
// restart after the failover is not in the figure.
func (h *haPair) failover(cfg config, e *env, event time.Time) (move, error) {
	act, stby := h.nodes[h.active], h.nodes[1-h.active]
	if err := act.proc.Signal(syscall.SIGKILL); err != nil {
		return move{}, err
	}
	applied := time.Now()
	deadline := event.Add(cfg.bound)
	before := strings.Count(stby.events.Output(), `"event":"failover"`)
	for strings.Count(stby.events.Output(), `"event":"failover"`) == before {
		if time.Now().After(deadline) {
			return move{}, fmt.Errorf("no failover event from %s within %v", stby.ns, cfg.bound)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// How the figure splits: the standby's detection (dead_after) and
	// its takeover exchanges (took_ms of the event) against the rest.
	fmt.Fprintf(os.Stderr, "  failover event from %s %.1f ms after the kill: %s\n", stby.ns, msf(time.Since(event)), lastFailover(stby.events.Output()))
	if err := e.l.CorpRouteVia(stby.ns); err != nil {
		return move{}, err
	}
	act.proc.Wait(5 * time.Second)
	act.events.Stop()
	h.active = 1 - h.active
	e.cur = stby.addr
	// The killed node's TUN device goes with its process; a restart right
	// after may still find it.
	var err error
	for i := 0; i < 20; i++ {
		if err = act.start(cfg, e.l, "standby"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return move{}, fmt.Errorf("restarting %s as standby: %w", act.ns, err)
	}
	if err := act.waitReplicating(15 * time.Second); err != nil {
		return move{}, err
	}
	return move{to: stby.addr, since: event, applied: applied}, nil
}

// lastFailover is the took_ms and reason of the newest failover event.
func lastFailover(events string) string {
	var last lab.Event
	for _, ev := range lab.ParseEvents(events) {
		if ev.Event == "failover" {
			last = ev
		}
	}
	return fmt.Sprintf("took_ms %d, %s", last.TookMS, last.Reason)
}
