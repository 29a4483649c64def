package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/report"
)

// TestSwitchEvents: the engine's switch reports become the gateway's
// switch-sent, switch-done (took_ms) and switch-failed (reason) events and
// reach a waiting command; other events pass through.
func TestSwitchEvents(t *testing.T) {
	r1, r2 := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.26")
	sa := new(ike.SA) // a key only: no client is registered for it
	tests := []struct {
		ev      ike.Event
		handled bool
		want    report.Event
		outcome string
	}{
		{ev: &ike.SwitchSent{SA: sa, From: r1, To: r2}, handled: true, want: report.Event{Event: report.EventSwitchSent, From: "203.0.113.10", To: "203.0.113.26"}},
		{ev: &ike.SwitchDone{SA: sa, From: r1, To: r2, Took: 23 * time.Millisecond}, handled: true,
			want: report.Event{Event: report.EventSwitchDone, From: "203.0.113.10", To: "203.0.113.26", TookMS: 23}, outcome: "done"},
		{ev: &ike.SwitchDone{SA: sa, From: r1, To: r2, Took: 300 * time.Microsecond}, handled: true,
			want: report.Event{Event: report.EventSwitchDone, From: "203.0.113.10", To: "203.0.113.26", TookMS: 1}, outcome: "done"},
		{ev: &ike.SwitchFailed{SA: sa, To: r2, Err: ike.ErrSwitchRefused}, handled: true,
			want: report.Event{Event: report.EventSwitchFailed, To: "203.0.113.26", Reason: ike.ErrSwitchRefused.Error()}, outcome: "failed"},
		{ev: &ike.SwitchFailed{SA: sa, To: r2, Err: errors.New("no answer"), TornDown: true}, handled: true,
			want: report.Event{Event: report.EventSwitchFailed, To: "203.0.113.26", Reason: "no answer (SA torn down: the old address is gone and no other was announced)"}, outcome: "failed"},
		{ev: &ike.Deleted{SA: sa}, outcome: "deleted"},
		{ev: &ike.ChildDeleted{SA: sa}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%d %T", i, tt.ev), func(t *testing.T) {
			var got []report.Event
			gw := &gateway{emit: func(ev report.Event) { got = append(got, ev) }, clients: map[*ike.SA]*gatewayClient{}}
			ch := gw.sw.wait(sa)
			if h := gw.switchEvent(tt.ev); h != tt.handled {
				t.Errorf("handled = %v", h)
			}
			switch {
			case tt.handled && (len(got) != 1 || got[0] != tt.want):
				t.Errorf("events %+v, want %+v", got, tt.want)
			case !tt.handled && len(got) != 0:
				t.Errorf("events %+v for a passed-through event", got)
			}
			var o switchOutcome
			select {
			case o = <-ch:
			default:
			}
			gotOutcome := ""
			switch {
			case o.done != nil:
				gotOutcome = "done"
			case o.failed != nil:
				gotOutcome = "failed"
			case o.deleted:
				gotOutcome = "deleted"
			}
			if gotOutcome != tt.outcome {
				t.Errorf("waiter told %q, want %q", gotOutcome, tt.outcome)
			}
			gw.sw.unwait(sa, ch)
			if len(gw.sw.waiters) != 0 {
				t.Errorf("waiter left behind")
			}
		})
	}
}

func TestSwitchError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want error
		text string
	}{
		{ike.ErrNotSwitchCapable, report.ErrSwitchNotAdvertised, "did not advertise"},
		{fmt.Errorf("%w: answer came to 203.0.113.10", ike.ErrSwitchRefused), report.ErrSwitchRefused, "answered at the old address"},
		{fmt.Errorf("ike: no answer: %w", &ike.UnreachableError{Retransmissions: 5}), report.ErrSwitchNoResponse, "no response from the client"},
		{errors.New("ike: a switch to 203.0.113.26 is in progress"), nil, "in progress"},
	} {
		got := switchError(tt.err)
		if tt.want != nil && !errors.Is(got, tt.want) || !strings.Contains(got.Error(), tt.text) {
			t.Errorf("switchError(%v) = %v", tt.err, got)
		}
	}
}
