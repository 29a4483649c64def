package poll

import (
	"sync/atomic"
	"testing"
	"time"
)

// fakeTB records a failure instead of ending the test.
type fakeTB struct {
	testing.TB
	failed atomic.Bool
	msg    string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed.Store(true)
	f.msg = format
}

func TestUntil(t *testing.T) {
	tests := []struct {
		name     string
		holdsAt  int // the look at which cond first holds; 0: never
		wantFail bool
	}{
		{"at once", 1, false},
		{"after some looks", 4, false},
		{"never", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := &fakeTB{TB: t}
			looks := 0
			// A failing Fatalf returns here (the fake does not stop the
			// goroutine), so a never-true cond must end the loop itself.
			Until(tb, 20*Every, "the condition", func() bool {
				looks++
				return (tc.holdsAt > 0 && looks >= tc.holdsAt) || tb.failed.Load()
			})
			if tb.failed.Load() != tc.wantFail {
				t.Fatalf("failed %v, want %v (%d looks)", tb.failed.Load(), tc.wantFail, looks)
			}
			if !tc.wantFail && looks != tc.holdsAt {
				t.Errorf("%d looks, want %d", looks, tc.holdsAt)
			}
		})
	}
}

// A condition made true by another goroutine is seen.
func TestUntilOtherGoroutine(t *testing.T) {
	var done atomic.Bool
	go func() {
		time.Sleep(2 * Every)
		done.Store(true)
	}()
	Until(t, time.Minute, "the goroutine", done.Load)
}
