package main

import (
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/daemon"
)

// TestPrintStatusReconnecting: while a lost SA is replaced the table says
// so, with the attempt and the error that made the previous one fail.
func TestPrintStatusReconnecting(t *testing.T) {
	var b strings.Builder
	st := []daemon.Status{{Name: "corp", State: "reconnecting", Gateway: "198.51.100.1:500", VirtualIP: "10.99.200.1",
		ReconnectAttempt: 3, LastError: "gateway unreachable: no response to IKE_SA_INIT after 4 retransmissions"}}
	if err := printStatus(&b, st, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"corp  reconnecting", "10.99.200.1",
		"corp:\n  reconnect attempt 3, last error: gateway unreachable: no response to IKE_SA_INIT after 4 retransmissions\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
