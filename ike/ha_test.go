package ike

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// haPair is an HA gateway pair: node A (the env's responder, on gwAddr)
// and node B (gwAddr2), with the same configuration; both announce both
// addresses. The client sits behind a restricted-cone NAT.
type haPair struct {
	e       *testEnv
	b       *Responder
	bEvents chan Event
	c       *client
	a       *SA // the SA on node A
	natted  *netsim.Host

	mu       sync.Mutex
	advanced map[uint32]uint64 // the client's AdvanceSeq calls
	// dp is the client's ESP, to which AdvanceSeq is passed on.
	dp *esp.Dataplane
}

func newHAPair(t *testing.T, clientSync bool) *haPair {
	t.Helper()
	e := newEnv(t, 5, func(c *ResponderConfig) {
		c.HA = true
		c.Addresses = []netip.Addr{gwAddr, gwAddr2}
	})
	p := &haPair{e: e, advanced: map[uint32]uint64{}, dp: esp.NewDataplane(nil, func([]byte, netpath.Path) {}, nil)}
	p.b, p.bEvents = e.haStandby(gwAddr2)
	p.natted = e.net.AddHost("client-nat", natInside)
	e.net.AddNAT(natPublic, netsim.RestrictedCone).Attach(p.natted)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Path.Local = netip.AddrPortFrom(natInside, 40000)
	cfg.Switch = clientSync
	cfg.AdvanceSeq = func(spiOut uint32, delta uint64) {
		p.mu.Lock()
		p.advanced[spiOut] += delta
		p.mu.Unlock()
		p.dp.AdvanceSeq(spiOut, delta)
	}
	p.c, p.a = e.established(cfg, p.natted)
	return p
}

// replicate waits for node A's StateChanged and imports the export on B.
func (p *haPair) replicate(t *testing.T) *SA {
	t.Helper()
	nextEvent[*StateChanged](t, p.e.respEvents, mobikeWait)
	return p.importNow(t)
}

func (p *haPair) importNow(t *testing.T) *SA {
	t.Helper()
	blob, err := p.a.ExportState()
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	sa, err := p.b.ImportState(blob)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	return sa
}

// installClientESP puts the client's current Child SAs into its dataplane.
func (p *haPair) installClientESP(t *testing.T) {
	t.Helper()
	peer := p.dp.NewPeer(p.c.sa.Path())
	for _, c := range p.c.sa.Children() {
		in, err := esp.NewInboundSA(c.SPIIn, c.KeyIn, c.ESN)
		if err != nil {
			t.Fatal(err)
		}
		out, err := esp.NewOutboundSA(c.SPIOut, c.KeyOut, c.ESN)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.dp.InstallChild(peer, esp.ChildConfig{In: in, Out: out}); err != nil {
			t.Fatal(err)
		}
	}
}

// stopA makes node A deaf and dumb, as a crashed node is.
func (p *haPair) stopA() {
	p.e.gwHost.HandleIKE(func([]byte, netip.AddrPort, netip.AddrPort) {})
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	t.Cleanup(cancel)
	return ctx
}

// TestHAFailover: the standby node takes the SA over from the failed active
// node although its replicated Message IDs lag behind; the client
// synchronises, answers at the standby's address (through its
// restricted-cone NAT, which would drop the standby's packets from its own
// address), moves the SA there, and liveness checks and Child SA rekeys
// then work both ways over the standby, which proves keys and Message IDs.
func TestHAFailover(t *testing.T) {
	p := newHAPair(t, true)
	ctx := timeout(t)
	standby := p.replicate(t)
	if !standby.Parked() {
		t.Fatal("import not parked")
	}
	// Exchanges that reach the standby: a liveness check each way and a
	// Child SA rekey by the gateway.
	if err := p.c.sa.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
	standby = p.replicate(t)
	if err := p.a.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
	old := p.a.Children()[0]
	if err := p.a.RekeyChild(ctx, old.SPIIn); err != nil {
		t.Fatalf("rekey on A: %v", err)
	}
	nextEvent[*ChildDeleted](t, p.e.respEvents, mobikeWait)
	standby = p.importNow(t)
	if n := len(standby.Children()); n != 1 {
		t.Fatalf("standby has %d Child SAs, want the rekeyed one", n)
	}
	child := standby.Children()[0]
	// Replication lag: A uses Message IDs both ways that B never hears of.
	for range 2 {
		if err := p.c.sa.CheckLiveness(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.a.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
	if got := standby.Counters().ParkedDrops; got != 0 {
		t.Fatalf("the standby saw %d messages; the pair's addresses are apart", got)
	}
	p.stopA()
	p.installClientESP(t)
	clientOut := p.c.sa.Children()[0].SPIOut

	const delta = 4096
	err := standby.TakeOver(ctx, TakeOverOptions{From: gwNATT, To: gwAddr2, ReplayDelta: delta})
	if err != nil {
		t.Fatalf("TakeOver: %v", err)
	}
	synced := nextEvent[*MessageIDSynced](t, p.c.events, mobikeWait)
	if !synced.Switched || synced.SwitchTo != gwAddr2 || synced.ReplayDelta != delta {
		t.Fatalf("client sync event %+v", synced)
	}
	p.mu.Lock()
	adv := p.advanced[child.SPIIn] // the client's outbound SPI is our inbound one
	p.mu.Unlock()
	if adv != delta {
		t.Fatalf("client advanced its outbound sequence numbers by %d, want %d", adv, delta)
	}
	if seq, ok := p.dp.ChildSeq(clientOut); !ok || seq != delta {
		t.Fatalf("client's ESP sequence number %d (%v), want %d", seq, ok, delta)
	}
	// The owner's part (daemon/mobility): move the SA to the new address.
	res, err := p.c.sa.UpdateAddresses(ctx, []netpath.Path{{Local: netip.AddrPortFrom(natInside, 40000), Remote: gw2NATT}})
	if err != nil {
		t.Fatalf("UPDATE_SA_ADDRESSES to the standby: %v", err)
	}
	if res.Path.Remote != gw2NATT {
		t.Fatalf("client moved to %v", res.Path.Remote)
	}
	pu := nextEvent[*PathUpdated](t, p.bEvents, mobikeWait)
	if pu.SA != standby || pu.Path.Local != gw2NATT || pu.Path.Remote.Addr() != natPublic {
		t.Fatalf("standby path %v", pu.Path)
	}
	if sd := nextEvent[*SwitchDone](t, p.bEvents, mobikeWait); sd.From != gwAddr || sd.To != gwAddr2 {
		t.Fatalf("standby switch event %+v", sd)
	}
	if got := standby.Counters().RoutabilityChecks; got != 0 {
		t.Fatalf("%d return routability checks after our own switch", got)
	}
	// Both directions of Message IDs and the keys are right.
	if err := p.c.sa.CheckLiveness(ctx); err != nil {
		t.Fatalf("client liveness over the standby: %v", err)
	}
	if err := standby.CheckLiveness(ctx); err != nil {
		t.Fatalf("standby liveness: %v", err)
	}
	cur := p.c.sa.Children()[0]
	if err := p.c.sa.RekeyChild(ctx, cur.SPIIn); err != nil {
		t.Fatalf("client rekey over the standby: %v", err)
	}
	nextEvent[*ChildRekeyed](t, p.bEvents, mobikeWait)
	next := standby.Children()
	if err := standby.RekeyChild(ctx, next[len(next)-1].SPIIn); err != nil {
		t.Fatalf("standby rekey: %v", err)
	}
	if got := p.c.sa.Counters(); got.SyncDropped != 0 || got.Undecryptable != 0 {
		t.Fatalf("client counters %+v", got)
	}
}

// TestTakeOverRefusals: what a standby cannot take over.
func TestTakeOverRefusals(t *testing.T) {
	t.Run("not negotiated", func(t *testing.T) {
		p := newHAPair(t, false)
		standby := p.replicate(t)
		err := standby.TakeOver(timeout(t), TakeOverOptions{From: gwNATT, To: gwAddr2})
		if !errors.Is(err, ErrNoHASupport) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("replaced copy", func(t *testing.T) {
		p := newHAPair(t, true)
		first := p.replicate(t)
		p.importNow(t)
		err := first.TakeOver(timeout(t), TakeOverOptions{From: gwNATT, To: gwAddr2})
		if !errors.Is(err, ErrNotParked) && !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("active SA", func(t *testing.T) {
		p := newHAPair(t, true)
		err := p.a.TakeOver(timeout(t), TakeOverOptions{From: gwNATT, To: gwAddr2})
		if !errors.Is(err, ErrNotParked) {
			t.Fatalf("err = %v", err)
		}
	})
}

// sendSync makes gw send a Message ID zero INFORMATIONAL with ps, as a
// standby would (or a broken one).
func sendSync(t *testing.T, gw *SA, ps []wire.Payload) {
	t.Helper()
	done := make(chan error, 1)
	gw.post(func() {
		pkt, err := gw.seal(gw.header(wire.ExchangeInformational, 0, false), ps)
		if err == nil {
			gw.send(pkt, nil, gw.Path())
		}
		done <- err
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSyncRequestDropped: a client drops Message ID zero synchronisation
// it did not negotiate, malformed, or stale, and counts it; a valid one is
// answered and a retransmission of it gets the same answer.
func TestSyncRequestDropped(t *testing.T) {
	good := msgIDSync{[4]byte{1, 2, 3, 4}, 50, 60}.notify()
	tests := []struct {
		name    string
		sync    bool
		ps      []wire.Payload
		badNote bool
	}{
		{"not negotiated", false, []wire.Payload{good}, false},
		{"short", true, []wire.Payload{&wire.Notify{Type: wire.NotifyIKEv2MessageIDSync, Data: make([]byte, 11)}}, true},
		{"long", true, []wire.Payload{&wire.Notify{Type: wire.NotifyIKEv2MessageIDSync, Data: make([]byte, 13)}}, true},
		{"with SPI", true, []wire.Payload{&wire.Notify{Type: wire.NotifyIKEv2MessageIDSync, Protocol: wire.ProtoESP, SPI: []byte{1, 2, 3, 4}, Data: make([]byte, 12)}}, true},
		{"bad replay delta", true, []wire.Payload{good, &wire.Notify{Type: wire.NotifyIPsecReplayCounterSync, Data: make([]byte, 3)}}, true},
		{"stale", true, []wire.Payload{msgIDSync{[4]byte{9}, 0, 0}.notify()}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newHAPair(t, tc.sync)
			ctx := timeout(t)
			if tc.name == "stale" {
				// The gateway's requests so far make 0 a replay.
				if err := p.a.CheckLiveness(ctx); err != nil {
					t.Fatal(err)
				}
			}
			before := p.c.sa.Counters()
			sendSync(t, p.a, tc.ps)
			waitCounter(t, p.c.sa, "SyncDropped", func(c Counters) uint64 { return c.SyncDropped }, before.SyncDropped+1)
			if got := p.c.sa.Counters().BadNotifies - before.BadNotifies; (got == 1) != tc.badNote {
				t.Fatalf("BadNotifies grew by %d", got)
			}
			// The SA still works.
			if err := p.c.sa.CheckLiveness(ctx); err != nil {
				t.Fatal(err)
			}
			if err := p.a.CheckLiveness(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSyncWithoutSwitch: a synchronisation without SWITCH_TO_IP_ADDRESS
// (nodes sharing one address) is answered where it came from, the client
// adopts the larger counters, and a retransmission gets the same answer.
func TestSyncWithoutSwitch(t *testing.T) {
	p := newHAPair(t, true)
	ctx := timeout(t)
	// Jump both counters far ahead, as a standby's margin would.
	sendSync(t, p.a, []wire.Payload{msgIDSync{[4]byte{7, 7, 7, 7}, 40, 30}.notify()})
	ev := nextEvent[*MessageIDSynced](t, p.c.events, mobikeWait)
	if ev.Switched || ev.NextRequest != 30 || ev.NextPeerRequest != 40 {
		t.Fatalf("sync event %+v", ev)
	}
	dups := p.c.sa.Counters().DuplicateRequests
	sendSync(t, p.a, []wire.Payload{msgIDSync{[4]byte{7, 7, 7, 7}, 40, 30}.notify()})
	waitCounter(t, p.c.sa, "DuplicateRequests", func(c Counters) uint64 { return c.DuplicateRequests }, dups+1)
	// Node A did not adopt (it sent the request by hand), so put it where
	// the client now is and check both directions.
	done := make(chan struct{})
	p.a.post(func() { p.a.nextMsgID, p.a.peerNextMsgID = 40, 30; close(done) })
	<-done
	if err := p.c.sa.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.a.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStateChangedCoalesced: changes the owner has not exported yet are
// reported once; the next change after an export is reported again.
func TestStateChangedCoalesced(t *testing.T) {
	p := newHAPair(t, true)
	ctx := timeout(t)
	count := func() int {
		p.a.Children() // a barrier: the gateway's steps so far are done
		n := 0
		for {
			select {
			case ev := <-p.e.respEvents:
				if _, ok := ev.(*StateChanged); ok {
					n++
				}
			default:
				return n
			}
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("%d StateChanged after establishment, want 1", n)
	}
	for range 3 {
		if err := p.a.CheckLiveness(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 0 {
		t.Fatalf("%d more StateChanged before any export, want 0", n)
	}
	if _, err := p.a.ExportState(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d StateChanged for an unchanged state", n)
	}
	if err := p.a.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d StateChanged after a change following the export, want 1", n)
	}
}

// TestTakeOverWithOutstandingRequest: the client's request to the failed
// node is still unanswered when the standby takes over; the sync tells the
// standby to expect its Message ID, its retransmissions follow the switch,
// and the standby answers it (the address update queued behind it then
// runs).
func TestTakeOverWithOutstandingRequest(t *testing.T) {
	p := newHAPair(t, true)
	ctx := timeout(t)
	standby := p.replicate(t)
	p.stopA()
	// Patient retransmissions: the request must outlive the takeover.
	done := make(chan struct{})
	p.c.sa.post(func() {
		p.c.sa.cfg.retransmit = Retransmit{Initial: 100 * time.Millisecond, Factor: 1.5, Max: 500 * time.Millisecond, Retries: 30}.normalized()
		close(done)
	})
	<-done
	live := make(chan error, 1)
	go func() { live <- p.c.sa.CheckLiveness(ctx) }()
	waitCounter(t, p.c.sa, "Retransmits", func(c Counters) uint64 { return c.Retransmits }, 1)
	if err := standby.TakeOver(ctx, TakeOverOptions{From: gwNATT, To: gwAddr2}); err != nil {
		t.Fatalf("TakeOver: %v", err)
	}
	if err := <-live; err != nil {
		t.Fatalf("the outstanding liveness check: %v", err)
	}
	if _, err := p.c.sa.UpdateAddresses(ctx, []netpath.Path{{Local: netip.AddrPortFrom(natInside, 40000), Remote: gw2NATT}}); err != nil {
		t.Fatalf("UPDATE_SA_ADDRESSES: %v", err)
	}
	if err := standby.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestImportAfterIKERekey: the standby's copy follows the SA through an
// IKE SA rekey on the active node (new SPIs, same HA identity), and the
// copy taken over works under the new keys.
func TestImportAfterIKERekey(t *testing.T) {
	for _, byGateway := range []bool{false, true} {
		t.Run(map[bool]string{false: "client rekeys", true: "gateway rekeys"}[byGateway], func(t *testing.T) {
			p := newHAPair(t, true)
			ctx := timeout(t)
			first := p.replicate(t)
			rekeyer := p.c.sa
			if byGateway {
				rekeyer = p.a
			}
			if err := rekeyer.RekeyIKE(ctx); err != nil {
				t.Fatal(err)
			}
			nextEvent[*IKERekeyed](t, p.e.respEvents, mobikeWait)
			if _, err := p.a.ExportState(); err != nil { // settle: the old SA's DELETE is done
				t.Fatal(err)
			}
			second := p.importNow(t)
			select {
			case <-first.Done():
			case <-time.After(mobikeWait):
				t.Fatal("the copy from before the rekey is still there")
			}
			if n := len(p.b.SAs()); n != 1 {
				t.Fatalf("%d SAs on the standby", n)
			}
			ai, ar := p.a.SPIs()
			if bi, br := second.SPIs(); bi != ai || br != ar {
				t.Fatalf("standby SPIs %x/%x, active %x/%x", bi, br, ai, ar)
			}
			if second.LocalSPI() != p.a.LocalSPI() {
				t.Fatal("local SPIs differ")
			}
			if byGateway {
				// Our end's SPI is SPIi now; DropState takes SPIr too.
				third := p.importNow(t)
				p.b.DropState(ar)
				select {
				case <-third.Done():
				case <-time.After(mobikeWait):
					t.Fatal("DropState(SPIr) left the copy")
				}
				second = p.importNow(t)
			}
			p.stopA()
			if err := second.TakeOver(ctx, TakeOverOptions{From: gwNATT, To: gwAddr2}); err != nil {
				t.Fatalf("TakeOver: %v", err)
			}
			if _, err := p.c.sa.UpdateAddresses(ctx, []netpath.Path{{Local: netip.AddrPortFrom(natInside, 40000), Remote: gw2NATT}}); err != nil {
				t.Fatal(err)
			}
			if err := second.CheckLiveness(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTakeOverAnswersFromReplicatedCache: the failed node processed the
// client's last request and replicated that, but its answer was lost; the
// client's retransmission, sent to the standby after the switch, gets the
// replicated cached answer.
func TestTakeOverAnswersFromReplicatedCache(t *testing.T) {
	p := newHAPair(t, true)
	ctx := timeout(t)
	p.replicate(t)
	done := make(chan struct{})
	p.c.sa.post(func() {
		p.c.sa.cfg.retransmit = Retransmit{Initial: 100 * time.Millisecond, Factor: 1.5, Max: 500 * time.Millisecond, Retries: 30}.normalized()
		close(done)
	})
	<-done
	// Answers from node A to the client are lost from now on.
	p.e.net.SetLink(gwAddr, natPublic, netsim.Impairment{Drop: ikeResponseFrom(gwAddr)})
	live := make(chan error, 1)
	go func() { live <- p.c.sa.CheckLiveness(ctx) }()
	standby := p.replicate(t) // A answered (into the void) and replicated
	p.stopA()
	if err := standby.TakeOver(ctx, TakeOverOptions{From: gwNATT, To: gwAddr2}); err != nil {
		t.Fatalf("TakeOver: %v", err)
	}
	if err := <-live; err != nil {
		t.Fatalf("the liveness check A answered: %v", err)
	}
	if got := standby.Counters().DuplicateRequests; got == 0 {
		t.Fatal("the standby did not answer from its replicated cache")
	}
	if _, err := p.c.sa.UpdateAddresses(ctx, []netpath.Path{{Local: netip.AddrPortFrom(natInside, 40000), Remote: gw2NATT}}); err != nil {
		t.Fatalf("UPDATE_SA_ADDRESSES: %v", err)
	}
	if err := p.c.sa.CheckLiveness(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSyncSwitchRefused: a failover's switch to an address the gateway
// never announced is refused by the switch policy: the answer goes back
// where the request came from, and the event says so.
func TestSyncSwitchRefused(t *testing.T) {
	p := newHAPair(t, true)
	other := netip.MustParseAddr("198.51.100.77")
	sendSync(t, p.a, []wire.Payload{switchNotify(DefaultSwitchNotify, other), msgIDSync{[4]byte{3}, 10, 0}.notify()})
	ev := nextEvent[*MessageIDSynced](t, p.c.events, mobikeWait)
	if ev.Switched || ev.SwitchTo != other || ev.NextPeerRequest != 10 {
		t.Fatalf("sync event %+v", ev)
	}
	// The answer reached node A (a response the engine there does not
	// expect: it sent the request by hand).
	waitCounter(t, p.a, "Unexpected", func(c Counters) uint64 { return c.Unexpected }, 1)
}
