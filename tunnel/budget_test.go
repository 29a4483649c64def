package tunnel

import (
	"log/slog"
	"testing"
	"time"

	"github.com/roam-vpn/roam/report"
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

func TestConnectBudgetReport(t *testing.T) {
	t0 := time.Unix(1000, 0)
	steps := []struct {
		name string
		at   time.Duration
	}{
		{"resolve", 100 * time.Microsecond}, {"route_lookup", 300 * time.Microsecond},
		{"credentials", 400 * time.Microsecond}, {"lockdown", 400 * time.Microsecond},
		{"tun", 1200 * time.Microsecond}, {"sockets", 1500 * time.Microsecond},
		{"ike", 44 * time.Millisecond}, {"install", 45 * time.Millisecond},
	}
	b := newConnectBudget(t0)
	for _, s := range steps {
		b.mark(s.name, t0.Add(s.at))
	}
	got := *b.report()
	want := report.ConnectBudget{ResolveMS: 0.1, RouteLookupMS: 0.2, CredentialsMS: 0.1, LockdownMS: 0, TUNMS: 0.8,
		SocketsMS: 0.3, IKEMS: 42.5, InstallMS: 1, TotalMS: 45}
	if got != want {
		t.Fatalf("report %+v, want %+v", got, want)
	}
}

// TestConnectBudgetOverlapped: a step that ran beside the others is
// reported with its own time but leaves the sequence and total alone.
func TestConnectBudgetOverlapped(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newConnectBudget(t0)
	b.mark("sockets", t0.Add(time.Millisecond))
	b.mark("ike", t0.Add(44*time.Millisecond))
	b.overlapped("tun", 2*time.Millisecond)
	b.mark("tun_wait", t0.Add(44*time.Millisecond))
	b.mark("install", t0.Add(47*time.Millisecond))
	got := *b.report()
	want := report.ConnectBudget{SocketsMS: 1, IKEMS: 43, TUNMS: 2, TUNWaitMS: 0, InstallMS: 3, TotalMS: 47}
	if got != want {
		t.Fatalf("report %+v, want %+v", got, want)
	}
}
