package ike

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// TestReplayedUpdateChecksRoutability: someone replays the client's last
// UPDATE_SA_ADDRESSES from an address the client used (and proved) before
// but has left. The gateway must check that address again before ESP goes
// there, instead of trusting the old proof.
func TestReplayedUpdateChecksRoutability(t *testing.T) {
	e := newMobikeEnv(t, nil)
	var mu sync.Mutex
	var lastUpdate []byte
	e.gwHost.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
		if src.Addr() == clientAddr2 && len(pkt) >= wire.HeaderLen &&
			wire.ExchangeType(pkt[18]) == wire.ExchangeInformational && pkt[19]&wire.FlagResponse == 0 {
			mu.Lock()
			lastUpdate = append([]byte(nil), pkt...)
			mu.Unlock()
		}
		e.resp.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
	})
	c, gw := e.established(defaultInitiatorConfig(t, "alice@example.com"), e.net.AddHost("client", clientAddr, clientAddr2))
	if _, err := e.move(c, pathFrom(clientAddr2, gwNATT)); err != nil {
		t.Fatal(err)
	}
	if pu := nextEvent[*PathUpdated](t, e.respEvents, mobikeWait); pu.Path.Remote.Addr() != clientAddr2 {
		t.Fatalf("gateway moved to %v", pu.Path)
	}
	// The client has left its first address: nothing there answers.
	e.net.SetLink(gwAddr, clientAddr, netsim.Impairment{Loss: 1})
	mu.Lock()
	replay := lastUpdate
	mu.Unlock()
	if replay == nil || binary.BigEndian.Uint32(replay[20:24]) == 0 {
		t.Fatal("no UPDATE_SA_ADDRESSES captured")
	}
	e.resp.HandlePacket(replay, netpath.Path{Local: gwNATT, Remote: netip.AddrPortFrom(clientAddr, 40000)})
	waitCounter(t, gw, "DuplicateRequests", func(c Counters) uint64 { return c.DuplicateRequests }, 1)
	waitCounter(t, gw, "RoutabilityFailures", func(c Counters) uint64 { return c.RoutabilityFailures }, 1)
	noPathUpdated(t, e.respEvents)
	if p := gw.Path(); p.Remote.Addr() != clientAddr2 {
		t.Fatalf("gateway SA moved to %v on a replay", p)
	}
}
