package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// requestIDs records the message IDs of the IKE requests (after the
// non-ESP marker) that pass a link, in order.
type requestIDs struct {
	mu  sync.Mutex
	ids []uint32
}

func (r *requestIDs) drop(_ int, d netsim.Datagram) bool {
	p := d.Payload
	if len(p) >= 4+wire.HeaderLen && binary.BigEndian.Uint32(p) == 0 && p[4+19]&wire.FlagResponse == 0 {
		r.mu.Lock()
		r.ids = append(r.ids, binary.BigEndian.Uint32(p[4+20:]))
		r.mu.Unlock()
	}
	return false
}

func (r *requestIDs) distinct() []uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// TestMoveDuringOutstandingUpdate: the client moves to a second uplink,
// the gateway takes the update and follows, but its answer is lost; the
// client moves again, to a third uplink, before any answer came, or after
// the first update ran out of retransmissions. The transmissions over the
// third uplink (message ID N, the earlier copy among them: RFC 7296 2.1,
// and a failed update is resumed, not replaced, as the peer may have
// taken it) bring back the gateway's stored answer to the second uplink's
// copy (2.11), whose NAT detection hashes are the second uplink's. That
// answer proves the third path reaches the gateway, not that the gateway
// is there (strongSwan, answering a bitwise retransmission from its
// cache, stays where the copy it took came from), so the client sends a
// new UPDATE_SA_ADDRESSES with message ID N+1 over the third uplink (RFC
// 4555 3.5: an address change during the update starts it again) before
// it reports the move, and then has no NAT to report. Both ends end on
// the newest path and the next exchange each way works.
func TestMoveDuringOutstandingUpdate(t *testing.T) {
	for _, tt := range []struct {
		name       string
		firstFails bool // the first update runs out of retransmissions first
	}{
		{"answer outstanding", false},
		{"first update failed", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { moveDuringOutstandingUpdate(t, tt.firstFails) })
		})
	}
}

func moveDuringOutstandingUpdate(t *testing.T, firstFails bool) {
	e := newMobikeEnv(t, nil)
	clientAddr3 := netip.MustParseAddr("192.0.2.30")
	var fromSecond, fromThird requestIDs
	e.net.SetLink(gwAddr, clientAddr2, netsim.Impairment{Drop: ikeResponseFrom(gwAddr)})
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2, clientAddr3))
	e.net.SetLink(clientAddr2, gwAddr, netsim.Impairment{Drop: fromSecond.drop})
	e.net.SetLink(clientAddr3, gwAddr, netsim.Impairment{Drop: fromThird.drop})

	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := c.sa.UpdateAddresses(ctx, []netpath.Path{pathFrom(clientAddr2, gwNATT)})
		first <- err
	}()
	// The gateway took the first update (its check of the second path
	// passes: only its responses toward that path are lost).
	for pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() != clientAddr2; {
		pu = nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	}
	if firstFails {
		var unreachable *UnreachableError
		if err := <-first; !errors.As(err, &unreachable) {
			t.Fatalf("the first update: %v, want unreachable", err)
		}
	}
	res, err := e.move(c, pathFrom(clientAddr3, gwNATT))
	if err != nil {
		t.Fatal(err)
	}
	if !firstFails {
		if err := <-first; err != nil {
			t.Fatalf("the first update: %v", err)
		}
	}
	if res.Path.Local.Addr() != clientAddr3 {
		t.Fatalf("client moved to %v", res.Path)
	}
	if res.NATLocal {
		t.Fatal("client detected a NAT: it took the stored answer to the second path's copy as the third path's")
	}
	ids := fromSecond.distinct()
	if len(ids) != 1 {
		t.Fatalf("message IDs over the second path: %v, want one", ids)
	}
	n := ids[0]
	if got, want := fromThird.distinct(), []uint32{n, n + 1}; !slices.Equal(got, want) {
		t.Fatalf("message IDs over the third path: %v, want %v (the outstanding update, then a new one)", got, want)
	}
	for gw.Path().Remote.Addr() != clientAddr3 {
		nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
	}
	if got := c.sa.Path().Local.Addr(); got != clientAddr3 {
		t.Fatalf("client SA on %v", got)
	}
	if got := gw.Counters().DuplicateRequests; got == 0 {
		t.Fatal("the gateway saw no retransmission of the first update")
	}
	// The message IDs agree: the next exchange each way is answered.
	if err := checkLiveness(c.sa); err != nil {
		t.Fatalf("client's liveness check: %v", err)
	}
	if err := checkLiveness(gw); err != nil {
		t.Fatalf("gateway's liveness check: %v", err)
	}
}

func checkLiveness(sa *SA) error {
	ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
	defer cancel()
	return sa.CheckLiveness(ctx)
}

// TestMoveWhileRequestOutstanding: the client's own request (a liveness
// check, a Child SA rekey) is out on an uplink that has just gone, both
// ways, when the client moves to another. The update waits for the window
// (RFC 7296 2.3), so the outstanding request must follow the move (RFC
// 4555 3.5: outstanding requests are retransmitted over the new
// addresses), the same message with the same ID; left on the dead uplink
// it runs out of retransmissions and takes the SA with it, the update
// never sent.
func TestMoveWhileRequestOutstanding(t *testing.T) {
	for _, tt := range []struct {
		name    string
		request func(ctx context.Context, sa *SA, est *Established) error
	}{
		{"liveness", func(ctx context.Context, sa *SA, _ *Established) error { return sa.CheckLiveness(ctx) }},
		{"child rekey", func(ctx context.Context, sa *SA, est *Established) error {
			return sa.RekeyChild(ctx, est.Children[0].SPIIn)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newMobikeEnv(t, nil)
			c := e.dialHosts(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
			est, err := c.wait(t, mobikeWait)
			if err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, mobikeWait).SA
			gone := netsim.Impairment{Drop: func(int, netsim.Datagram) bool { return true }}
			e.net.SetLink(clientAddr, gwAddr, gone)
			e.net.SetLink(gwAddr, clientAddr, gone)
			done := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), mobikeWait)
				defer cancel()
				done <- tt.request(ctx, c.sa, est)
			}()
			waitCounter(t, c.sa, "Retransmits", func(c Counters) uint64 { return c.Retransmits }, 1)
			res, err := e.move(c, pathFrom(clientAddr2, gwNATT))
			if err != nil {
				t.Fatalf("move: %v; client %+v gateway %+v", err, c.sa.Counters(), gw.Counters())
			}
			if res.Path.Local.Addr() != clientAddr2 {
				t.Fatalf("moved to %v", res.Path)
			}
			if err := <-done; err != nil {
				t.Fatalf("the outstanding request: %v", err)
			}
			for gw.Path().Remote.Addr() != clientAddr2 {
				nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
			}
			if err := checkLiveness(c.sa); err != nil {
				t.Fatalf("liveness check after the move: %v", err)
			}
		})
	}
}

// TestGatewayFollowsRetransmittedUpdate: roam's gateway as responder. It
// took the client's UPDATE_SA_ADDRESSES from a second uplink and moved
// there, but its answer was lost; the client's retransmission (message ID
// N) arrives from a third. The gateway answers with its stored response,
// bitwise the lost one, sent where the retransmission came from (RFC 7296
// 2.11), and follows the client there (RFC 4555 3.5: the newest request
// counts, its addresses taken from the IP header), after a return
// routability check, as a retransmission proves nothing about its
// source. The client's own follow-up (message ID N+1) is held back until
// then, so only the retransmission can have moved the gateway.
func TestGatewayFollowsRetransmittedUpdate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMobikeEnv(t, nil)
		clientAddr3 := netip.MustParseAddr("192.0.2.30")
		var mu sync.Mutex
		var lost, toThird [][]byte
		gwResponse := ikeResponseFrom(gwAddr)
		keep := func(to *[][]byte, drop bool) func(int, netsim.Datagram) bool {
			return func(i int, d netsim.Datagram) bool {
				if !gwResponse(i, d) {
					return false
				}
				mu.Lock()
				*to = append(*to, slices.Clone(d.Payload))
				mu.Unlock()
				return drop
			}
		}
		e.net.SetLink(gwAddr, clientAddr2, netsim.Impairment{Drop: keep(&lost, true)})
		e.net.SetLink(gwAddr, clientAddr3, netsim.Impairment{Drop: keep(&toThird, false)})
		c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2, clientAddr3))
		var fromSecond requestIDs
		e.net.SetLink(clientAddr2, gwAddr, netsim.Impairment{Drop: fromSecond.drop})

		moves := make(chan error, 2)
		move := func(p netpath.Path) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := c.sa.UpdateAddresses(ctx, []netpath.Path{p})
			moves <- err
		}
		go move(pathFrom(clientAddr2, gwNATT))
		for pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() != clientAddr2; {
			pu = nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
		}
		ids := fromSecond.distinct()
		if len(ids) != 1 {
			t.Fatalf("message IDs over the second path: %v", ids)
		}
		n := ids[0]
		var followUp atomic.Bool
		followUp.Store(true)
		e.net.SetLink(clientAddr3, gwAddr, netsim.Impairment{Drop: func(_ int, d netsim.Datagram) bool {
			p := d.Payload
			isReq := len(p) >= 4+wire.HeaderLen && binary.BigEndian.Uint32(p) == 0 && p[4+19]&wire.FlagResponse == 0
			return isReq && followUp.Load() && binary.BigEndian.Uint32(p[4+20:]) != n
		}})
		go move(pathFrom(clientAddr3, gwNATT))
		pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait)
		if want := netip.AddrPortFrom(clientAddr3, 40000); pu.Path.Remote != want || gw.Path().Remote != want {
			t.Fatalf("gateway moved to %v (SA on %v), want %v", pu.Path.Remote, gw.Path().Remote, want)
		}
		mu.Lock()
		var cached bool
		for _, p := range toThird {
			for _, l := range lost {
				cached = cached || (binary.BigEndian.Uint32(p[4+20:]) == n && slices.Equal(p, l))
			}
		}
		mu.Unlock()
		if !cached {
			t.Fatalf("no response toward the third path is the stored answer to message %d (%d lost, %d sent there)", n, len(lost), len(toThird))
		}
		if got := gw.Counters(); got.DuplicateRequests == 0 || got.RoutabilityChecks < 2 {
			t.Fatalf("gateway counters %+v: want duplicates and a routability check for each path", got)
		}
		followUp.Store(false)
		for range 2 {
			if err := <-moves; err != nil {
				t.Fatalf("client's move: %v", err)
			}
		}
		if err := checkLiveness(gw); err != nil {
			t.Fatalf("gateway's liveness check: %v", err)
		}
	})
}
