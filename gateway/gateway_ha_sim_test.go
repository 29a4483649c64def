package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/netpath"
	"github.com/roam-vpn/roam/report"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ha"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/ikesim"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/internal/poll"
)

// TestHAStandbyBookkeeping: a standby node parks what the active node
// replicates (a real IKE SA's exported state, imported into a second
// responder), replaces it on a newer push, and forgets it on a delete or
// when the active's inventory lacks it; a blob that does not import is
// not parked.
// haSim is an IKE SA established between a client and an HA-enabled
// responder on an in-memory network, plus a second responder (the
// standby's) on another address.
type haSim struct {
	ctx          context.Context
	activeResp   *ike.Responder
	activeEvents chan ike.Event
	standbyResp  *ike.Responder
	sa           *ike.SA
	est          *ike.Established
}

func startHASim(t *testing.T) *haSim {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := netsim.New(1)
	t.Cleanup(func() { cancel(); n.Close() })
	responder := func(host *netsim.Host, events chan ike.Event) *ike.Responder {
		t.Helper()
		cfg := ikesim.ResponderConfig(t)
		cfg.MOBIKE, cfg.HA, cfg.Addresses = true, true, []netip.Addr{simR1, simR2}
		return ikesim.Listen(ctx, t, host, cfg, events)
	}
	activeEvents := make(chan ike.Event, 64)
	activeResp := responder(n.AddHost("gw", simR1), activeEvents)
	standbyResp := responder(n.AddHost("gw2", simR2), make(chan ike.Event, 64))

	icfg := ikesim.InitiatorConfig(t, netip.AddrPortFrom(simClient, 40000), netip.AddrPortFrom(simR1, 500))
	icfg.MOBIKE, icfg.Switch = true, true
	ikesim.Dial(ctx, t, n.AddHost("client", simClient), icfg, make(chan ike.Event, 64))
	est := ikesim.Established(t, activeEvents, 10*time.Second)
	return &haSim{ctx: ctx, activeResp: activeResp, activeEvents: activeEvents, standbyResp: standbyResp, sa: est.SA, est: est}
}

func TestHAStandbyBookkeeping(t *testing.T) {
	sim := startHASim(t)
	sa, standbyResp := sim.sa, sim.standbyResp
	blob, err := sa.ExportState()
	if err != nil {
		t.Fatal(err)
	}
	spii, spir := sa.SPIs()
	key := ha.SAKey{SPIi: spii, SPIr: spir}
	meta, _ := json.Marshal(haMeta{PeerID: "alice@example.com"})
	st := ha.State{SA: key, Seqs: []ha.ChildSeq{{SPIOut: 1, Seq: 7, InSeq: 9}}, Meta: meta, Blob: blob}

	gw := &gateway{cfg: &config.Gateway{Listen: []netip.Addr{simR2}}, log: discardLog(), resp: standbyResp, clients: map[*ike.SA]*gatewayClient{}, emit: func(report.Event) {}}
	h, err := newGatewayHA(gw, &config.HA{Role: "standby", Key: bytes.Repeat([]byte{1}, ha.KeySize),
		Listen: netip.MustParseAddrPort("127.0.0.1:1"), Peer: netip.MustParseAddrPort("127.0.0.1:2"), TakeoverAddress: simR1, DeadAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	parked := func() map[ha.SAKey]*parkedSA {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.parked
	}
	for _, step := range []struct {
		name string
		do   func()
		want bool // alice parked afterwards
	}{
		{"import", func() { h.Import(st) }, true},
		{"newer push replaces", func() { h.Import(st) }, true},
		{"inventory without it", func() { h.Keep([]ha.SAKey{{SPIi: 1, SPIr: 2}}) }, false},
		{"import again", func() { h.Import(st) }, true},
		{"inventory with it", func() { h.Keep([]ha.SAKey{key}) }, true},
		{"delete", func() { h.Drop(key) }, false},
		{"blob that does not import", func() { bad := st; bad.Blob = []byte("not a state"); h.Import(bad) }, false},
	} {
		step.do()
		p := parked()
		got, ok := p[key]
		if ok != step.want || len(p) > 1 {
			t.Fatalf("after %s: parked %v, want alice parked = %t", step.name, p, step.want)
		}
		if ok && (!got.sa.Parked() || got.meta.PeerID != "alice@example.com" || got.seqs[0].InSeq != 9) {
			t.Fatalf("after %s: parked copy %+v (parked %t)", step.name, got, got.sa.Parked())
		}
	}
}

// nopTUN is a TUN device for a dataplane that never runs: the active
// side's test only installs Child SAs and reads their counters.
type nopTUN struct{}

func (nopTUN) File() *os.File                         { return nil }
func (nopTUN) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (nopTUN) Write(b [][]byte, _ int) (int, error)   { return len(b), nil }
func (nopTUN) MTU() (int, error)                      { return 1400, nil }
func (nopTUN) Name() (string, error)                  { return "nop", nil }
func (nopTUN) Events() <-chan wgtun.Event             { return nil }
func (nopTUN) Close() error                           { return nil }
func (nopTUN) BatchSize() int                         { return 1 }

// haRecorder is a standby ha.Handler that keeps what arrived.
type haRecorder struct {
	mu       sync.Mutex
	imported []ha.State
	dropped  []ha.SAKey
	kept     int
}

func (r *haRecorder) Snapshot() []ha.State { return nil }
func (r *haRecorder) Import(s ha.State) {
	r.mu.Lock()
	r.imported = append(r.imported, s)
	r.mu.Unlock()
}
func (r *haRecorder) Drop(k ha.SAKey) { r.mu.Lock(); r.dropped = append(r.dropped, k); r.mu.Unlock() }
func (r *haRecorder) Keep([]ha.SAKey) { r.mu.Lock(); r.kept++; r.mu.Unlock() }
func (r *haRecorder) PeerDead()       {}

func (r *haRecorder) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return cond()
	})
}

// TestHAActiveReplicates: the active node's full push when the standby
// connects carries the installed client (a state that imports on the
// standby's responder, the Child SA's sequence numbers, the status
// record); after an IKE rekey the standby is told to forget the old SPIs
// and gets the SA under the new ones; a deleted SA is deleted there too.
func TestHAActiveReplicates(t *testing.T) {
	sim := startHASim(t)
	// Both listeners stay open until both ports are chosen: a port closed
	// and asked for again can come back the same.
	var ports [2]netip.AddrPort
	var held []net.Listener
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).AddrPort()
	}
	for _, ln := range held {
		ln.Close()
	}
	key := bytes.Repeat([]byte{7}, ha.KeySize)
	activeAt, standbyAt := ports[0], ports[1]
	cfg := &config.HA{Role: "active", Key: key, Listen: activeAt, Peer: standbyAt, TakeoverAddress: simR2, DeadAfter: time.Second}
	gw := &gateway{cfg: &config.Gateway{Listen: []netip.Addr{simR1}, HA: cfg}, log: discardLog(), resp: sim.activeResp,
		clients: map[*ike.SA]*gatewayClient{}, emit: func(report.Event) {}}
	gw.dp = esp.NewDataplane(nopTUN{}, func([]byte, netpath.Path) {}, discardLog())
	gw.install(sim.est)
	var err error
	if gw.ha, err = newGatewayHA(gw, cfg); err != nil {
		t.Fatal(err)
	}
	rec := &haRecorder{}
	standby, err := ha.New(ha.Config{Key: key, Listen: standbyAt, Peer: activeAt, Role: ha.Standby, Log: discardLog()}, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(sim.ctx)
	defer cancel()
	waitHA := gw.startHA(ctx)
	done := make(chan struct{})
	go func() { defer close(done); standby.Run(ctx) }()
	defer func() { cancel(); waitHA(); <-done }()

	rec.wait(t, "the full push", func() bool { return rec.kept == 1 && len(rec.imported) >= 1 })
	spii, spir := sim.sa.SPIs()
	first := rec.imported[0]
	if first.SA != (ha.SAKey{SPIi: spii, SPIr: spir}) {
		t.Fatalf("pushed %v, want %016x/%016x", first.SA, spii, spir)
	}
	ch := sim.est.Children[0]
	if len(first.Seqs) != 1 || first.Seqs[0].SPIOut != ch.SPIOut {
		t.Fatalf("sequence numbers %+v, want one entry for child %08x", first.Seqs, ch.SPIOut)
	}
	var meta haMeta
	if err := json.Unmarshal(first.Meta, &meta); err != nil || meta.PeerID != "alice@example.com" || len(meta.VirtualIPs) != 1 {
		t.Fatalf("status record %s (%v)", first.Meta, err)
	}
	if _, err := sim.standbyResp.ImportState(first.Blob); err != nil {
		t.Fatalf("the pushed state does not import on the standby: %v", err)
	}

	if err := sim.sa.RekeyIKE(sim.ctx); err != nil {
		t.Fatal(err)
	}
	gw.haEvent(&ike.StateChanged{SA: sim.sa})
	nspii, nspir := sim.sa.SPIs()
	rec.wait(t, "the rekeyed SA", func() bool {
		return len(rec.dropped) == 1 && rec.imported[len(rec.imported)-1].SA == ha.SAKey{SPIi: nspii, SPIr: nspir}
	})
	if rec.dropped[0] != first.SA {
		t.Fatalf("after the rekey the standby was told to drop %v, want %v", rec.dropped[0], first.SA)
	}
	gw.haEvent(&ike.Deleted{SA: sim.sa})
	rec.wait(t, "the delete", func() bool { return len(rec.dropped) == 2 })
	if rec.dropped[1] != (ha.SAKey{SPIi: nspii, SPIr: nspir}) {
		t.Fatalf("deleted %v, want the rekeyed SA", rec.dropped[1])
	}
}
