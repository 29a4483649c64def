package tunnel

import (
	"log/slog"
	"time"

	"github.com/roam-vpn/roam/report"
)

// connectBudget records where a connect's time goes, step by step, for the
// log ("connect budget") and `roam connect --json` (ConnectBudget): the
// issue's target is traffic within two RTTs of the command, so every wait
// outside the IKE exchanges shows.
type connectBudget struct {
	start, last time.Time
	steps       []budgetStep
}

type budgetStep struct {
	name string
	took time.Duration
}

func newConnectBudget(now time.Time) *connectBudget {
	return &connectBudget{start: now, last: now}
}

// mark ends the step name at now.
func (b *connectBudget) mark(name string, now time.Time) {
	b.steps = append(b.steps, budgetStep{name: name, took: now.Sub(b.last)})
	b.last = now
}

// overlapped records a step that ran beside the sequence (the TUN device
// beside IKE): it is reported with its own time but is not part of the sum
// that makes the total, and the sequence's clock stays where it is.
func (b *connectBudget) overlapped(name string, took time.Duration) {
	b.steps = append(b.steps, budgetStep{name: name, took: took})
}

// attrs lists each step's milliseconds, in order, then the total.
func (b *connectBudget) attrs() []any {
	out := make([]any, 0, len(b.steps)+1)
	for _, s := range b.steps {
		out = append(out, slog.Float64(s.name+"_ms", ms(s.took)))
	}
	return append(out, slog.Float64("total_ms", ms(b.last.Sub(b.start))))
}

// report turns the recorded steps into a ConnectBudget; steps of other
// names (none today) count in the total only.
func (b *connectBudget) report() *report.ConnectBudget {
	r := &report.ConnectBudget{TotalMS: ms(b.last.Sub(b.start))}
	for _, s := range b.steps {
		v := ms(s.took)
		switch s.name {
		case "resolve":
			r.ResolveMS = v
		case "route_lookup":
			r.RouteLookupMS = v
		case "credentials":
			r.CredentialsMS = v
		case "lockdown":
			r.LockdownMS = v
		case "tun":
			r.TUNMS = v
		case "tun_wait":
			r.TUNWaitMS = v
		case "sockets":
			r.SocketsMS = v
		case "ike":
			r.IKEMS = v
		case "install":
			r.InstallMS = v
		}
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
