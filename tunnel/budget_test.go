package tunnel

import (
	"log/slog"
	"testing"
	"time"
)

func TestConnectBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name  string
		marks []time.Duration // offsets from the start, in order
		want  []string        // key=value of each attribute
	}{
		{"no steps", nil, []string{"total_ms=0"}},
		{"steps and total", []time.Duration{2 * time.Millisecond, 2500 * time.Microsecond, 45 * time.Millisecond},
			[]string{"a_ms=2", "b_ms=0.5", "c_ms=42.5", "total_ms=45"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newConnectBudget(t0)
			for i, m := range tt.marks {
				b.mark(string(rune('a'+i)), t0.Add(m))
			}
			got := b.attrs()
			if len(got) != len(tt.want) {
				t.Fatalf("%d attributes %v, want %v", len(got), got, tt.want)
			}
			for i, a := range got {
				if s := a.(slog.Attr).String(); s != tt.want[i] {
					t.Errorf("attribute %d = %s, want %s", i, s, tt.want[i])
				}
			}
		})
	}
}
