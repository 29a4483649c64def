package ike

import (
	"bytes"
	"context"
	"testing"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

var (
	ikeChaCha = Proposal{Text: "chacha20poly1305-prfsha256-x25519", Transforms: []wire.Transform{
		tr(wire.TransformEncr, ikecrypto.EncrChaCha20Poly1305, 0), tr(wire.TransformPRF, 5, 0), tr(wire.TransformDH, 31, 0)}}
	espChaCha = Proposal{Text: "chacha20poly1305", Transforms: []wire.Transform{
		tr(wire.TransformEncr, ikecrypto.EncrChaCha20Poly1305, 0), tr(wire.TransformESN, 0, 0)}}
)

// TestEstablishChaCha20Poly1305 negotiates RFC 7634 for the IKE SA (so
// IKE_AUTH and the DELETE travel in ChaCha20-Poly1305 SK payloads) and for
// the Child SA, whose key material must be 32 bytes of key and 4 of salt.
func TestEstablishChaCha20Poly1305(t *testing.T) {
	for i, tc := range []struct {
		name     string
		respIKE  []Proposal
		respESP  []Proposal
		esp      []Proposal
		wantIKE  string
		wantESP  string
		wantKeys int
	}{
		{"both", []Proposal{ikeECP384, ikeChaCha}, []Proposal{esp256, espChaCha}, []Proposal{espChaCha, esp128}, "chacha20poly1305-prfsha256-curve25519", "chacha20poly1305", 36},
		{"GCM for ESP", []Proposal{ikeChaCha}, []Proposal{esp128, espChaCha}, []Proposal{esp128, espChaCha}, "chacha20poly1305-prfsha256-curve25519", "aes128gcm16", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(100+i), func(r *ResponderConfig) { r.IKE, r.ESP = tc.respIKE, tc.respESP })
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.IKE = []Proposal{ikeChaCha}
			cfg.ESP = tc.esp
			c, est := e.dialEstablished(t, cfg)
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			if est.Proposal != tc.wantIKE || gw.Proposal != tc.wantIKE {
				t.Fatalf("IKE proposal %q/%q, want %q", est.Proposal, gw.Proposal, tc.wantIKE)
			}
			cc, gc := est.Children[0], gw.Children[0]
			if cc.Proposal != tc.wantESP || gc.Proposal != tc.wantESP {
				t.Fatalf("ESP proposal %q/%q, want %q", cc.Proposal, gc.Proposal, tc.wantESP)
			}
			if len(cc.KeyIn) != tc.wantKeys || !bytes.Equal(cc.KeyOut, gc.KeyIn) || !bytes.Equal(cc.KeyIn, gc.KeyOut) {
				t.Fatalf("child keys: %d bytes (want %d), crossed %v", len(cc.KeyIn), tc.wantKeys, bytes.Equal(cc.KeyOut, gc.KeyIn))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.sa.Close(ctx); err != nil {
				t.Fatalf("DELETE over the ChaCha20-Poly1305 IKE SA: %v", err)
			}
			nextEvent[*Deleted](t, e.respEvents, 2*time.Second)
		})
	}
}
