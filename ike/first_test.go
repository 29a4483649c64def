package ike

import (
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// initCounter is a transport that counts the IKE_SA_INIT requests and
// their SPIs sent through it.
type initCounter struct {
	h    *netsim.Host
	mu   sync.Mutex
	spis []uint64
}

func (c *initCounter) SendIKE(pkt []byte, path netpath.Path) error {
	if h, err := wire.DecodeHeader(pkt); err == nil && h.Exchange == wire.ExchangeIKESAInit {
		c.mu.Lock()
		c.spis = append(c.spis, h.SPIi)
		c.mu.Unlock()
	}
	return c.h.SendIKE(pkt, path)
}

func (c *initCounter) sent() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.spis...)
}

// TestFirstMessageTakenOver: an IKE_SA_INIT that PrepareInit made and
// another sender put on the wire is taken over by Dial as its own, the
// exchange going on from the gateway's answer; one that does not fit the
// configuration is replaced by a fresh request under a new SPI.
func TestFirstMessageTakenOver(t *testing.T) {
	tests := []struct {
		name string
		// change alters the prepared message or Dial's configuration.
		change func(f *FirstMessage, cfg *InitiatorConfig)
		resp   func(*ResponderConfig)
		// sendFirst puts the prepared request on the wire before Dial
		// (false: it was lost).
		sendFirst bool
		// taken: Dial sends no IKE_SA_INIT of its own at first; the SA
		// keeps the prepared SPI.
		taken bool
	}{
		{name: "answered", sendFirst: true, taken: true},
		{name: "lost, retransmitted", sendFirst: false, taken: true},
		{name: "cookie asked", sendFirst: true, taken: true, resp: func(r *ResponderConfig) { r.CookieThreshold = -1 }},
		{name: "true NAT hash", sendFirst: true, taken: true, change: func(_ *FirstMessage, cfg *InitiatorConfig) { cfg.NoForceEncap = true }},
		{name: "other group first", sendFirst: true, change: func(_ *FirstMessage, cfg *InitiatorConfig) {
			cfg.IKE = []Proposal{{Text: "aes256gcm16-prfsha384-x25519-ecp384", Transforms: []wire.Transform{
				tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 31, 0), tr(wire.TransformDH, 20, 0)}}}
		}},
		{name: "nonce not the one sent", sendFirst: true, change: func(f *FirstMessage, _ *InitiatorConfig) { f.Nonce[0] ^= 1 }},
		{name: "key seed not the one sent", sendFirst: true, change: func(f *FirstMessage, _ *InitiatorConfig) { f.KESeed[0] ^= 1 }},
		{name: "SPI not the one sent", sendFirst: true, change: func(f *FirstMessage, _ *InitiatorConfig) { f.SPIi ^= 1 }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, int64(70+i), tt.resp)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			prep := cfg
			if tt.name == "true NAT hash" {
				prep.NoForceEncap = true
			}
			f, err := PrepareInit(prep)
			if err != nil {
				t.Fatal(err)
			}
			sentSPI := f.SPIi
			h := e.net.AddHost("client", cfg.Path.Local.Addr())
			if tt.sendFirst {
				if err := h.SendIKE(f.Packet, cfg.Path); err != nil {
					t.Fatal(err)
				}
			}
			if tt.change != nil {
				tt.change(f, &cfg)
			}
			cfg.First = f
			out := &initCounter{h: h}
			c := e.dialOn(cfg, out, h)
			est, err := c.wait(t, 5*time.Second)
			if err != nil {
				t.Fatalf("establish: %v", err)
			}
			spii, _ := est.SA.SPIs()
			sent := out.sent()
			if tt.taken {
				if spii != sentSPI {
					t.Fatalf("SA's SPI %x, want the prepared %x", spii, sentSPI)
				}
				// Retransmissions and the COOKIE's resend are the
				// prepared request's; none goes out at once.
				for _, s := range sent {
					if s != sentSPI {
						t.Fatalf("an IKE_SA_INIT under SPI %x went out", s)
					}
				}
				if tt.sendFirst && tt.resp == nil && len(sent) != 0 {
					t.Fatalf("%d IKE_SA_INIT sent beside the prepared one", len(sent))
				}
				return
			}
			if spii == sentSPI || len(sent) == 0 || sent[0] != spii {
				t.Fatalf("SA's SPI %x (prepared %x), sent %x: want a fresh request under a new SPI", spii, sentSPI, sent)
			}
		})
	}
}

// TestFirstMessageString: the secrets stay out of its text.
func TestFirstMessageString(t *testing.T) {
	f, err := PrepareInit(defaultInitiatorConfig(t, "alice@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	s := f.String()
	for _, secret := range [][]byte{f.KESeed, f.Nonce} {
		if len(secret) == 0 {
			t.Fatal("empty secret")
		}
		if containsHex(s, secret) {
			t.Fatalf("%q shows a secret", s)
		}
	}
}

func containsHex(s string, b []byte) bool {
	return strings.Contains(strings.ToLower(s), hex.EncodeToString(b[:8]))
}

// TestFirstMessageRTT: the first round trip of a taken-over IKE_SA_INIT is
// timed from when the other process sent it, not from the takeover, which
// came after (here 15 ms later, on a 20 ms round trip): timed from the
// takeover, the sample was a few milliseconds and the dead-path window
// fell to its floor at once. Unknown, it gives no sample, and IKE_AUTH's
// provisional one stands.
func TestFirstMessageRTT(t *testing.T) {
	const delay, late = 10 * time.Millisecond, 15 * time.Millisecond
	tests := []struct {
		name      string
		sentKnown bool
	}{
		{name: "sent time passed", sentKnown: true},
		{name: "sent time unknown", sentKnown: false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, int64(90+i), nil)
			e.net.SetDefault(netsim.Impairment{Delay: delay})
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.Retransmit = Retransmit{Initial: 5 * time.Second, Factor: 1, Retries: 1}
			f, err := PrepareInit(cfg)
			if err != nil {
				t.Fatal(err)
			}
			h := e.net.AddHost("client", cfg.Path.Local.Addr())
			if tt.sentKnown {
				f.SentAt = time.Now().UnixNano()
			}
			if err := h.SendIKE(f.Packet, cfg.Path); err != nil {
				t.Fatal(err)
			}
			time.Sleep(late) // the daemon's start
			cfg.First = f
			est, err := e.dialOn(cfg, h, h).wait(t, 5*time.Second)
			if err != nil {
				t.Fatalf("establish: %v", err)
			}
			r, ok := est.SA.RTT(est.SA.Path())
			if !ok || r.Samples != 1 || r.SRTT < 2*delay {
				t.Fatalf("%+v ok=%v, want one sample of at least the %v round trip", r, ok, 2*delay)
			}
		})
	}
}
