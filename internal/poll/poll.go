// Package poll waits in tests for a condition that another goroutine
// makes true. It is imported by tests only and never by the program.
package poll

import (
	"testing"
	"time"
)

// Every is how often Until looks again: often enough that a test does
// not idle, seldom enough not to starve the goroutines it waits for.
const Every = 5 * time.Millisecond

// Until looks at cond every Every until it holds, and fails tb naming what
// if it still does not after timeout. The timeout guards against a hang;
// on a shared machine it is no statement about how fast anything is.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(Every)
	}
}
