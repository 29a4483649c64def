package ike

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/syncbuf"
)

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestOnlineGuessingBackoff: after a few wrong PSKs, from one source or for
// one identity, even the right PSK is refused (unchecked) until the backoff
// has passed; each failure is one log line with source and identity and
// without the key.
func TestOnlineGuessingBackoff(t *testing.T) {
	wrong := []byte("guess-number-one")
	tests := []struct {
		name string
		// guess i comes from addr(i) for identity id(i); then the right
		// key is tried for rightID from rightAddr.
		addr      func(i int) netip.Addr
		id        func(i int) string
		rightAddr netip.Addr
		rightID   string
	}{
		{"per-identity",
			func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}) },
			func(int) string { return "alice@example.com" },
			netip.MustParseAddr("192.0.2.99"), "alice@example.com"},
		{"per-source",
			func(int) netip.Addr { return netip.MustParseAddr("192.0.2.10") },
			func(i int) string { return fmt.Sprintf("user%d@example.com", i) },
			netip.MustParseAddr("192.0.2.10"), "bob@example.com"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			var logs syncbuf.Buffer
			e := newEnv(t, int64(700+i), func(r *ResponderConfig) {
				r.Clock = clock
				r.Log = slog.New(slog.NewTextHandler(&logs, nil))
			})
			try := func(j int, addr netip.Addr, id string, psk []byte) error {
				cfg := defaultInitiatorConfig(t, id)
				cfg.LocalAuth = mustPSKAuth(t, id, psk)
				cfg.Path.Local = netip.AddrPortFrom(addr, uint16(40000+j))
				_, err := e.dial(cfg).wait(t, 5*time.Second)
				return err
			}
			const guesses = guessFree + 1 // the last one starts the backoff
			for j := range guesses {
				if err := try(j, tc.addr(j), tc.id(j), wrong); !errors.Is(err, ErrAuthenticationFailed) {
					t.Fatalf("guess %d: %v", j, err)
				}
			}
			if err := try(50, tc.rightAddr, tc.rightID, testPSK); !errors.Is(err, ErrAuthenticationFailed) {
				t.Fatalf("right key during the backoff: %v, want AUTHENTICATION_FAILED", err)
			}
			st := e.resp.Stats()
			if st.AuthFailures != guesses || st.AuthThrottled != 1 {
				t.Fatalf("failures %d, throttled %d; want %d and 1", st.AuthFailures, st.AuthThrottled, guesses)
			}
			clock.advance(guessMax)
			if err := try(51, tc.rightAddr, tc.rightID, testPSK); err != nil {
				t.Fatalf("right key after the backoff: %v", err)
			}
			out := logs.String()
			if n := strings.Count(out, "initiator authentication failed"); n != guesses {
				t.Errorf("%d failure lines for %d failures:\n%s", n, guesses, out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "initiator authentication failed") &&
					(!strings.Contains(line, "remote=192.0.2.") || !strings.Contains(line, "identity=")) {
					t.Errorf("failure line without source or identity: %s", line)
				}
			}
			if strings.Contains(out, string(wrong)) || strings.Contains(out, string(testPSK)) {
				t.Error("a key is in the log")
			}
		})
	}
}
