package ikeesp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/netpath"
)

// Binder is the one way either role (and the in-memory rig) puts what an
// IKE SA negotiated into its dataplane: Child SAs after IKE_AUTH, after a
// CREATE_CHILD_SA and after a rekey, their retirement on a DELETE, and the
// peer's path after a MOBIKE update. It holds no state of its own beyond
// the dataplane and the connection's settings, so a value may be made
// wherever one is needed.
type Binder struct {
	// DP is the dataplane the SAs go into.
	DP *esp.Dataplane
	// RekeyPackets is child_rekey_packets (0: no packet-count rekey).
	RekeyPackets uint64
	// Log gets the packet-count rekey's messages, and at debug level the
	// moment each Child SA's first packet leaves.
	Log *slog.Logger
}

// Install says how one Child SA goes in.
type Install struct {
	// Remote is the peer's selectors as prefixes; nil means the Child SA's
	// own RemoteTS (callers that route them pass what they computed).
	Remote []netip.Prefix
	// Pending (a rekey we answered) keeps outbound traffic on the old pair
	// until the peer uses the new one.
	Pending bool
	// OutboundSeq and InboundSeq start the pair's counters where another
	// node left them (HA takeover); zero for a fresh pair.
	OutboundSeq, InboundSeq uint64
}

// InstallChild puts ch, negotiated on sa, into the dataplane for peer with
// its packet-count rekey armed, and returns the configuration installed.
func (b Binder) InstallChild(peer *esp.Peer, sa *ike.SA, ch ike.ChildSA, in Install) (esp.ChildConfig, error) {
	remote := in.Remote
	if remote == nil {
		remote = SelectorsToPrefixes(ch.RemoteTS)
	}
	cfg, err := ChildConfig(ch, remote, in.Pending)
	if err != nil {
		return cfg, err
	}
	cfg.OutboundSeq, cfg.InboundSeq = in.OutboundSeq, in.InboundSeq
	// A pair taken over near its limit starts the rekey on its first packet.
	RekeyOnPackets(&cfg, sa, b.RekeyPackets, b.Log)
	logFirstOut(&cfg, ch.SPIOut, b.Log)
	return cfg, b.DP.InstallChild(peer, cfg)
}

// logFirstOut logs, at debug level, when the child's first packet is
// sealed for sending, to the nanosecond on the wall clock: the lab's delay
// line stamps packets on the same clock, so the two show the time from
// the dataplane to the wire (a connect's first tunnel packet).
func logFirstOut(cfg *esp.ChildConfig, spiOut uint32, log *slog.Logger) {
	if log == nil || !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	cfg.OnFirstOut = func(at time.Time) {
		log.Debug("first ESP sent", "spi_out", fmt.Sprintf("%08x", spiOut), "at", at.Format(time.RFC3339Nano))
	}
}

// InstallRekeyed puts the successor a Child SA rekey created in beside its
// predecessor (which leaves on the DELETE, so no packet finds neither).
// When we only answered the rekey, outbound traffic moves to it once the
// peer shows it has installed it.
func (b Binder) InstallRekeyed(peer *esp.Peer, sa *ike.SA, ev *ike.ChildRekeyed) (esp.ChildConfig, error) {
	return b.InstallChild(peer, sa, ev.Child, Install{Pending: !ev.Initiated})
}

// Retire takes a deleted Child SA out of outbound use; it still opens
// packets in flight for esp.RetireGrace.
func (b Binder) Retire(spiIn uint32) { b.DP.RetireChild(spiIn, esp.RetireGrace) }

// RetirePeer retires every Child SA of peer (an IKE SA replaced by a
// reauthentication) and removes the peer once their grace has run out.
func (b Binder) RetirePeer(peer *esp.Peer) {
	for _, cs := range b.DP.ChildStats(peer) {
		b.Retire(cs.SPIIn)
	}
	dp := b.DP
	time.AfterFunc(esp.RetireGrace, func() { dp.RemovePeer(peer) })
}

// Move sends peer's ESP on path from now on (a MOBIKE update the peer ran).
func (b Binder) Move(peer *esp.Peer, path netpath.Path) { b.DP.SetPath(peer, path) }

// MoveUnproved sends peer's ESP ahead on a path whose return routability
// check still runs, within the dataplane's amplification limit (credit:
// the bytes the peer sent from there); Move ends it.
func (b Binder) MoveUnproved(peer *esp.Peer, path netpath.Path, credit int) {
	b.DP.SetUnprovedPath(peer, path, credit)
}

// RekeyedReason is the reason of the rekeyed event either role reports for
// a Child SA rekey or an in-place IKE SA rekey; "" for other events.
func RekeyedReason(ev ike.Event) string {
	switch ev := ev.(type) {
	case *ike.ChildRekeyed:
		return fmt.Sprintf("child SA %08x replaced by %08x", ev.OldSPIIn, ev.Child.SPIIn)
	case *ike.IKERekeyed:
		return fmt.Sprintf("IKE SA now %016x_i %016x_r", ev.SPIi, ev.SPIr)
	}
	return ""
}
