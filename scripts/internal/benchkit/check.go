package benchkit

import (
	"strings"
	"testing"
)

// WantErr is the benchmarks' table tests' error check: with want empty,
// err must be nil; otherwise err must contain want (such as the setting
// it names). It reports whether an error was wanted, so the case is done.
func WantErr(t testing.TB, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want one containing %q", err, want)
	}
	return true
}
