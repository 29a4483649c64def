package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/report"
)

// switchUpdateWait bounds the wait for the client's UPDATE_SA_ADDRESSES
// once it answered a switch request at the new address; the draft has it
// follow at once.
const switchUpdateWait = 10 * time.Second

// gatewayDebounce is the gateway's netmon batching window.
const gatewayDebounce = 5 * time.Millisecond

// gatewaySwitch is the gateway's half of SWITCH_TO_IP_ADDRESS outside the
// engine: `roam gateway switch` waiting for its result, and the automatic
// switch when one of the gateway's own addresses goes away.
type gatewaySwitch struct {
	mu      sync.Mutex
	waiters map[*ike.SA][]chan switchOutcome
	wg      sync.WaitGroup
}

// switchOutcome is how a switch ended for a waiting command.
type switchOutcome struct {
	done    *ike.SwitchDone
	failed  *ike.SwitchFailed
	deleted bool
}

func (s *gatewaySwitch) wait(sa *ike.SA) chan switchOutcome {
	ch := make(chan switchOutcome, 4)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiters == nil {
		s.waiters = map[*ike.SA][]chan switchOutcome{}
	}
	s.waiters[sa] = append(s.waiters[sa], ch)
	return ch
}

func (s *gatewaySwitch) unwait(sa *ike.SA, ch chan switchOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiters[sa]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(s.waiters, sa)
	} else {
		s.waiters[sa] = ws
	}
}

func (s *gatewaySwitch) tell(sa *ike.SA, o switchOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.waiters[sa] {
		select {
		case w <- o:
		default: // the buffer holds more outcomes than one switch has
		}
	}
}

// switchEvent turns the engine's switch reports into gateway events and
// hands them to a waiting `roam gateway switch`. It reports whether ev was
// one of them.
func (gw *gateway) switchEvent(ev ike.Event) bool {
	var sa *ike.SA
	var out report.Event
	var o switchOutcome
	switch ev := ev.(type) {
	case *ike.SwitchSent:
		sa, out = ev.SA, report.Event{Event: report.EventSwitchSent, From: ev.From.String(), To: ev.To.String()}
	case *ike.SwitchDone:
		sa, o = ev.SA, switchOutcome{done: ev}
		out = report.Event{Event: report.EventSwitchDone, From: ev.From.String(), To: ev.To.String(), TookMS: max(1, ev.Took.Milliseconds())}
	case *ike.SwitchFailed:
		sa, o = ev.SA, switchOutcome{failed: ev}
		out = report.Event{Event: report.EventSwitchFailed, To: ev.To.String(), Reason: ev.Err.Error()}
		if ev.TornDown {
			out.Reason += " (SA torn down: the old address is gone and no other was announced)"
		}
	case *ike.Deleted:
		gw.sw.tell(ev.SA, switchOutcome{deleted: true})
		return false
	default:
		return false
	}
	c := gw.client(sa)
	if c != nil {
		out.Profile = c.est.PeerID
		if out.From == "" {
			out.From = sa.Path().Local.Addr().String()
		}
	}
	gw.emit(out)
	if o != (switchOutcome{}) {
		gw.sw.tell(sa, o)
	}
	return true
}

// Switch is `roam gateway switch`: it asks the client peer names to move
// to our address to and returns once its SAs use to.
func (gw *gateway) Switch(ctx context.Context, peer string, to netip.Addr) (report.SwitchResult, error) {
	start := time.Now()
	sa, id, err := gw.findClient(peer)
	if err != nil {
		return report.SwitchResult{}, err
	}
	path := sa.Path()
	if err := checkSwitchTarget(gw.cfg.Listen, path.Local.Addr(), to); err != nil {
		return report.SwitchResult{}, fmt.Errorf("%s: %w", id, err)
	}
	if !sa.SwitchCapable() {
		return report.SwitchResult{}, fmt.Errorf("%s: %w", id, report.ErrSwitchNotAdvertised)
	}
	ch := gw.sw.wait(sa)
	defer gw.sw.unwait(sa, ch)
	if err := sa.RequestSwitch(ctx, to, ike.SwitchOptions{}); err != nil {
		return report.SwitchResult{}, fmt.Errorf("%s: %w", id, switchError(err))
	}
	t := time.NewTimer(switchUpdateWait)
	defer t.Stop()
	for {
		select {
		case o := <-ch:
			switch {
			case o.deleted:
				return report.SwitchResult{}, fmt.Errorf("%s: the SA was deleted during the switch", id)
			case o.failed != nil && o.failed.To == to:
				return report.SwitchResult{}, fmt.Errorf("%s: %w", id, switchError(o.failed.Err))
			case o.done != nil && o.done.To == to:
				return report.SwitchResult{Peer: id, Remote: sa.Path().Remote.String(), From: path.Local.Addr().String(), To: to.String(),
					TookMS: time.Since(start).Milliseconds()}, nil
			}
		case <-t.C:
			if gw.cfg.SwitchRevision == config.SwitchRevision03 {
				// Under -03 rules a refusal is answered like a yes.
				return report.SwitchResult{}, fmt.Errorf("%s: answered but sent no UPDATE_SA_ADDRESSES to %s within %v (refused, or the path to %s does not work)", id, to, switchUpdateWait, to)
			}
			return report.SwitchResult{}, fmt.Errorf("%s: answered at %s but sent no UPDATE_SA_ADDRESSES there within %v", id, to, switchUpdateWait)
		case <-ctx.Done():
			return report.SwitchResult{}, ctx.Err()
		}
	}
}

// switchError maps the engine's errors to the reasons the CLI prints.
func switchError(err error) error {
	switch {
	case errors.Is(err, ike.ErrNotSwitchCapable):
		return report.ErrSwitchNotAdvertised
	case errors.Is(err, ike.ErrSwitchRefused):
		return fmt.Errorf("%w (it answered at the old address)", report.ErrSwitchRefused)
	case errors.Is(err, ike.ErrUnreachable):
		return fmt.Errorf("%w to the switch request after the retransmissions; the SA stays where it was", report.ErrSwitchNoResponse)
	}
	return err
}

// findClient resolves peer (identity, address or address:port) to one SA.
func (gw *gateway) findClient(peer string) (*ike.SA, string, error) {
	type entry struct {
		sa   *ike.SA
		cand switchCandidate
	}
	gw.mu.Lock()
	var es []entry
	for sa, c := range gw.clients {
		es = append(es, entry{sa, switchCandidate{ID: c.est.PeerID, Remote: sa.Path().Remote}})
	}
	gw.mu.Unlock()
	// Map order is random; errors that list clients should not be.
	sort.Slice(es, func(i, j int) bool {
		if es[i].cand.ID != es[j].cand.ID {
			return es[i].cand.ID < es[j].cand.ID
		}
		return es[i].cand.Remote.String() < es[j].cand.Remote.String()
	})
	cands := make([]switchCandidate, len(es))
	for i, e := range es {
		cands[i] = e.cand
	}
	i, err := matchPeer(cands, peer)
	if err != nil {
		return nil, "", err
	}
	return es[i].sa, es[i].cand.ID, nil
}

// transparent lets a listen socket keep sending from its address after the
// address went away, which the switch request off a vanished address
// needs. Without the capability the gateway still runs; such a request
// then fails to send and ends as switch-failed.
func (gw *gateway) transparent(s *esp.Socket) {
	if err := s.SetTransparent(); err != nil {
		gw.log.Warn("switch requests from a vanished address will fail", "err", err)
	}
}

// startSwitching watches our own addresses (netmon) and, when one that SAs
// use goes away while another listen address of its family is usable,
// asks every switch-capable client on it to move there. The returned func
// waits for the watcher and the switches it started, after ctx ended.
func (gw *gateway) startSwitching(ctx context.Context) (wait func()) {
	// A gateway's addresses change rarely, and every millisecond between
	// the removal and the request is lost traffic, so the batching window
	// is short (netmon's 50 ms default suits a laptop's flapping Wi-Fi).
	mon, err := netmon.New(netmon.Options{Ignore: []string{gatewayTUN}, Debounce: gatewayDebounce})
	if err != nil {
		gw.log.Error("address monitor: automatic switches off", "err", err)
		return func() {}
	}
	gw.sw.wg.Add(2)
	go func() {
		defer gw.sw.wg.Done()
		if err := mon.Run(ctx); err != nil && ctx.Err() == nil {
			gw.log.Error("address monitor stopped: automatic switches off", "err", err)
		}
	}()
	go func() {
		defer gw.sw.wg.Done()
		gw.watchAddresses(ctx, mon.Events())
	}()
	return gw.sw.wg.Wait
}

// watchAddresses follows netmon's view of our usable addresses.
func (gw *gateway) watchAddresses(ctx context.Context, events <-chan netmon.Event) {
	usable := map[netip.Addr]bool{}
	for ev := range events {
		switch ev := ev.(type) {
		case netmon.Snapshot:
			clear(usable)
			for _, a := range ev.Addrs {
				usable[a.Addr.Unmap()] = true
			}
		case netmon.AddressAdded:
			usable[ev.Addr.Unmap()] = true
		case netmon.AddressRemoved:
			gone := ev.Addr.Unmap()
			delete(usable, gone)
			gw.addressGone(ctx, gone, func(a netip.Addr) bool { return usable[a] })
		}
	}
}

// addressGone moves the clients off gone. netmon reports the removal after
// the fact: the request still leaves from gone (the listen sockets are
// transparent, see gw.transparent), which is what the clients' NATs let
// through; if the kernel refuses even that, the retransmissions run out
// and the switch ends as switch-failed (the SA is torn down when we had
// announced no other address, as the draft says).
func (gw *gateway) addressGone(ctx context.Context, gone netip.Addr, usable func(netip.Addr) bool) {
	listened := false
	for _, a := range gw.cfg.Listen {
		listened = listened || a.Unmap() == gone
	}
	if !listened {
		return
	}
	to, ok := switchTarget(gw.cfg.Listen, usable, gone)
	gw.mu.Lock()
	type victim struct {
		sa *ike.SA
		id string
	}
	var vs []victim
	for sa, c := range gw.clients {
		if sa.Path().Local.Addr().Unmap() == gone {
			vs = append(vs, victim{sa, c.est.PeerID})
		}
	}
	gw.mu.Unlock()
	for _, v := range vs {
		if !v.sa.SwitchCapable() {
			gw.log.Info("our address went away; the client did not advertise the switch extension and must move by itself (MOBIKE)", "peer", v.id, "address", gone)
			continue
		}
		if !ok {
			gw.emit(report.Event{Event: report.EventSwitchFailed, Profile: v.id, From: gone.String(),
				Reason: fmt.Sprintf("%s went away and no other listen address of its family is usable", gone)})
			continue
		}
		gw.log.Info("our address went away: switching the client", "peer", v.id, "from", gone, "to", to)
		gw.sw.wg.Add(1)
		go func(sa *ike.SA) {
			defer gw.sw.wg.Done()
			// The engine reports the outcome (switch-done or
			// switch-failed) through switchEvent.
			sa.RequestSwitch(ctx, to, ike.SwitchOptions{OldGone: true})
		}(v.sa)
	}
}
