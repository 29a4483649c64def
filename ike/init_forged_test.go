package ike

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// TestForgedInitErrorIgnored: anyone on the path can answer our
// IKE_SA_INIT with an error notify, since nothing authenticates it. The
// client keeps waiting (RFC 7296 2.21.1), and the gateway's real answer,
// arriving after the forgery, establishes the SA.
func TestForgedInitErrorIgnored(t *testing.T) {
	tests := []struct {
		name   string
		forged []wire.Payload
		spir   uint64
	}{
		{"no-proposal-chosen", []wire.Payload{&wire.Notify{Type: wire.NotifyNoProposalChosen}}, 0},
		{"invalid-syntax", []wire.Payload{&wire.Notify{Type: wire.NotifyInvalidSyntax}}, 0},
		{"no-sa-payload", []wire.Payload{&wire.Nonce{Data: make([]byte, 32)}}, 77},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(1000+i), nil)
			ready := make(chan struct{})
			var c *client
			var once sync.Once
			e.gwHost.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) {
				if m, err := wire.Decode(pkt); err == nil && m.Header.Exchange == wire.ExchangeIKESAInit {
					once.Do(func() {
						<-ready
						h := wire.Header{SPIi: m.Header.SPIi, SPIr: tc.spir, Version: 0x20, Exchange: wire.ExchangeIKESAInit, Flags: wire.FlagResponse}
						b, err := (&wire.Message{Header: h, Payloads: tc.forged}).Encode()
						if err != nil {
							t.Error(err)
							return
						}
						c.sa.HandlePacket(b, netpath.Path{Local: src, Remote: dst})
					})
				}
				e.resp.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src})
			})
			c = e.dial(defaultInitiatorConfig(t, "alice@example.com"))
			close(ready)
			if _, err := c.wait(t, 5*time.Second); err != nil {
				t.Fatalf("a forged IKE_SA_INIT answer ended the attempt: %v", err)
			}
		})
	}
}
