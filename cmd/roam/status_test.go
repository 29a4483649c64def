package main

import (
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/report"
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

// TestPrintStatusHealth: the health line says the state, why, when the
// gateway was last heard and the RTT once measured.
func TestPrintStatusHealth(t *testing.T) {
	now := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	esp, ike := now.Add(-200*time.Millisecond), now.Add(-12*time.Second)
	tests := []struct {
		name string
		st   daemon.Status
		want string
	}{
		{"ok", daemon.Status{Name: "corp", State: "established", Health: report.HealthOK, HealthReason: "the gateway answers",
			LastInboundESP: &esp, LastInboundIKE: &ike, RTTMS: 21.34, RTTSamples: 4},
			"  health ok (the gateway answers); last received: ESP 200ms ago, IKE 12s ago; RTT 21.3 ms\n"},
		{"nothing back", daemon.Status{Name: "corp", State: "established", Health: report.HealthTesting,
			HealthReason: "nothing received for 1.5s since sending", LastInboundIKE: &ike},
			"  health testing (nothing received for 1.5s since sending); last received: ESP never, IKE 12s ago\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := printStatus(&b, []daemon.Status{tt.st}, now); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), tt.want) {
				t.Fatalf("output lacks %q:\n%s", tt.want, b.String())
			}
		})
	}
}

// TestPrintStatusChildren: each Child SA's line names the networks it
// carries when the status has them, so several are told apart.
func TestPrintStatusChildren(t *testing.T) {
	tests := []struct {
		name  string
		child daemon.ChildStatus
		want  string
	}{
		{"with selectors", daemon.ChildStatus{SPIIn: "c0000001", SPIOut: "d0000001", Proposal: "aes256gcm16", PacketsIn: 3, BytesIn: 252,
			RemoteTS: []string{"10.1.0.0/24", "10.2.0.0/24"}},
			"  child aes256gcm16 (in c0000001, out d0000001) to 10.1.0.0/24,10.2.0.0/24: in 252 bytes/3 packets, out 0 bytes/0 packets\n"},
		{"without", daemon.ChildStatus{SPIIn: "c0000002", SPIOut: "d0000002", Proposal: "aes128gcm16"},
			"  child aes128gcm16 (in c0000002, out d0000002): in 0 bytes/0 packets, out 0 bytes/0 packets\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			st := daemon.Status{Name: "corp", State: "established", Children: []daemon.ChildStatus{tt.child}}
			if err := printStatus(&b, []daemon.Status{st}, time.Now()); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), tt.want) {
				t.Fatalf("output lacks %q:\n%s", tt.want, b.String())
			}
		})
	}
}
