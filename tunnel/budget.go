package tunnel

import (
	"log/slog"
	"time"
)

// connectBudget records where a connect's time goes, step by step, for the
// debug log ("connect budget"): the target is traffic within two
// RTTs of the command, so every wait outside the IKE exchanges shows.
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
	b.steps = append(b.steps, budgetStep{name, now.Sub(b.last)})
	b.last = now
}

// attrs lists each step's milliseconds, in order, then the total.
func (b *connectBudget) attrs() []any {
	out := make([]any, 0, len(b.steps)+1)
	for _, s := range b.steps {
		out = append(out, slog.Float64(s.name+"_ms", ms(s.took)))
	}
	return append(out, slog.Float64("total_ms", ms(b.last.Sub(b.start))))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
