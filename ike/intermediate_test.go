package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

var (
	ikeHybrid = Proposal{Text: "aes256gcm16-prfsha384-x25519-ke1_mlkem768", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 31, 0),
		tr(wire.TransformADDKE1, 36, 0)}}
	// Two additional exchanges: IKE_INTERMEDIATE twice.
	ikeHybrid2 = Proposal{Text: "aes256gcm16-prfsha384-ecp256-ke1_mlkem768-ke2_mlkem1024", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 6, 0), tr(wire.TransformDH, 19, 0),
		tr(wire.TransformADDKE1, 36, 0), tr(wire.TransformADDKE1+1, 37, 0)}}
	// ML-KEM optional: NONE allowed for ADDKE1.
	ikeHybridOptional = Proposal{Text: "aes128gcm16-prfsha256-x25519-ke1_mlkem768-ke1_none", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 128), tr(wire.TransformPRF, 5, 0), tr(wire.TransformDH, 31, 0),
		tr(wire.TransformADDKE1, 36, 0), tr(wire.TransformADDKE1, 0, 0)}}
	ikeHybridCBC = Proposal{Text: "aes256-sha256-modp2048-ke1_mlkem1024", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 12, 256), tr(wire.TransformPRF, 5, 0), tr(wire.TransformInteg, 12, 0), tr(wire.TransformDH, 14, 0),
		tr(wire.TransformADDKE1, 37, 0)}}
)

func TestEstablishAdditionalKeyExchanges(t *testing.T) {
	tests := []struct {
		name         string
		client, gw   []Proposal
		noFrag       bool
		wantProposal string
		wantErr      error
		wantFrags    bool
	}{
		{name: "hybrid", client: []Proposal{ikeHybrid}, gw: []Proposal{ikeECP384, ikeHybrid},
			wantProposal: "aes256gcm16-prfsha384-curve25519-ke1_mlkem768", wantFrags: true},
		{name: "hybrid-unfragmented", client: []Proposal{ikeHybrid}, gw: []Proposal{ikeHybrid}, noFrag: true,
			wantProposal: "aes256gcm16-prfsha384-curve25519-ke1_mlkem768"},
		{name: "two-intermediates", client: []Proposal{ikeHybrid2}, gw: []Proposal{ikeHybrid2},
			wantProposal: "aes256gcm16-prfsha384-ecp256-ke1_mlkem768-ke2_mlkem1024", wantFrags: true},
		{name: "cbc-hybrid", client: []Proposal{ikeHybridCBC}, gw: []Proposal{ikeHybridCBC},
			wantProposal: "aes256-prfsha256-sha256-modp2048-ke1_mlkem1024", wantFrags: true},
		// A gateway without RFC 9370 proposals: the classical second choice.
		{name: "classical-fallback", client: []Proposal{ikeHybrid, ikeECP384}, gw: []Proposal{ikeECP384},
			wantProposal: "aes256gcm16-prfsha384-ecp384"},
		{name: "optional-taken", client: []Proposal{ikeHybridOptional}, gw: []Proposal{ikeHybridOptional},
			wantProposal: "aes128gcm16-prfsha256-curve25519-ke1_mlkem768", wantFrags: true},
		{name: "optional-declined", client: []Proposal{ikeHybridOptional}, gw: []Proposal{ikeX25519},
			wantProposal: "aes128gcm16-prfsha256-curve25519"},
		{name: "gateway-insists", client: []Proposal{ikeX25519}, gw: []Proposal{ikeHybridOptional},
			wantProposal: "aes128gcm16-prfsha256-curve25519"},
		{name: "hybrid-required", client: []Proposal{ikeHybrid}, gw: []Proposal{ikeECP384, ikeX25519},
			wantErr: ErrNoProposalChosen},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(100+i), func(r *ResponderConfig) {
				r.IKE = tc.gw
				r.NoFragmentation = tc.noFrag
			})
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.IKE = tc.client
			cfg.NoFragmentation = tc.noFrag
			c := e.dial(cfg)
			est, err := c.wait(t, 10*time.Second)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("establish: %v", err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			want := tc.wantProposal
			if est.Proposal != want {
				t.Errorf("client proposal %q, want %q", est.Proposal, want)
			}
			if gw.Proposal != want {
				t.Errorf("gateway proposal %q, want %q", gw.Proposal, want)
			}
			cc, gc := est.Children[0], gw.Children[0]
			if !bytes.Equal(cc.KeyOut, gc.KeyIn) || !bytes.Equal(cc.KeyIn, gc.KeyOut) {
				t.Fatal("child keys differ across the sides")
			}
			ck, gk := c.sa.keysForTest(), gw.SA.keysForTest()
			if !bytes.Equal(ck.SKd, gk.SKd) {
				t.Fatal("SK_d differs across the sides")
			}
			frags := c.sa.Counters().FragmentsSent
			if tc.wantFrags != (frags > 0) {
				t.Errorf("client sent %d fragments, want some: %v", frags, tc.wantFrags)
			}
			if n := len(addKETransforms(c.sa.ikeProp.Transforms)); c.sa.intDoneForTest() != n {
				t.Errorf("%d IKE_INTERMEDIATE exchanges, want %d", c.sa.intDoneForTest(), n)
			}
		})
	}
}

// After one IKE_INTERMEDIATE the AUTH input carries both IntAuth chains
// and IKE_AUTH's Message ID (2: IKE_SA_INIT 0, IKE_INTERMEDIATE 1).
func TestIntermediateIntAuth(t *testing.T) {
	e := newEnv(t, 7, func(r *ResponderConfig) { r.IKE = []Proposal{ikeHybrid} })
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.IKE = []Proposal{ikeHybrid}
	c := e.dial(cfg)
	if _, err := c.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var ia []byte
	var li, lr int
	done := make(chan struct{})
	c.sa.post(func() { ia, li, lr = c.sa.intAuth(), len(c.sa.addKE.authI), len(c.sa.addKE.authR); close(done) })
	<-done
	if li != 48 || lr != 48 {
		t.Fatalf("IntAuth chains of %d and %d bytes, want the PRF size 48", li, lr)
	}
	if len(ia) != 100 || binary.BigEndian.Uint32(ia[96:]) != 2 {
		t.Fatalf("IntAuth %x: want IntAuth_i | IntAuth_r | IKE_AUTH_MID 2", ia)
	}
}

// intAuthStep over a known message, against the formula written out.
func TestIntAuthStep(t *testing.T) {
	prf, _ := ikecrypto.NewPRF(ikecrypto.PRFHMACSHA2_256)
	skp := bytes.Repeat([]byte{9}, 32)
	h := wire.Header{SPIi: 1, SPIr: 2, Version: 0x20, Exchange: wire.ExchangeIKEIntermediate, Flags: wire.FlagInitiator, MessageID: 1}
	plain := []byte{0, 0, 0, 8, 0, 36, 0, 0} // a KE payload header, empty data
	a := []byte{
		0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, // SPIs
		46, 0x20, 43, 0x08, 0, 0, 0, 1, // SK, version, IKE_INTERMEDIATE, I, Message ID
		0, 0, 0, 28 + 4 + 8, // length as if unencrypted
		34, 0, 0, 4 + 8, // Encrypted payload header: first inner KE
	}
	prev := []byte("previous")
	got := intAuthStep(prf, skp, prev, h, wire.PayloadKE, plain)
	want := prf.Sum(skp, append(append(append([]byte{}, prev...), a...), plain...))
	if !bytes.Equal(got, want) {
		t.Fatalf("IntAuth step %x, want %x", got, want)
	}
	if first := intAuthStep(prf, skp, nil, h, wire.PayloadKE, plain); !bytes.Equal(first, prf.Sum(skp, a, plain)) {
		t.Fatal("first IntAuth step must have no chain input")
	}
}

func TestWithoutADDKE(t *testing.T) {
	ps := []wire.Proposal{
		{Number: 1, Transforms: ikeHybrid.Transforms},
		{Number: 2, Transforms: ikeHybridOptional.Transforms},
		{Number: 3, Transforms: ikeECP384.Transforms},
	}
	got := withoutADDKE(ps)
	if len(got) != 2 || got[0].Number != 2 || got[1].Number != 3 {
		t.Fatalf("got %+v", got)
	}
	for _, tt := range got[0].Transforms {
		if tt.Type.IsADDKE() {
			t.Fatalf("ADDKE left in %+v", got[0].Transforms)
		}
	}
}

// keysForTest reads the SA's keys on its goroutine.
func (sa *SA) keysForTest() ikecrypto.IKEKeys {
	var k ikecrypto.IKEKeys
	done := make(chan struct{})
	if !sa.post(func() { k = sa.keys; close(done) }) {
		return k
	}
	<-done
	return k
}

func (sa *SA) intDoneForTest() int {
	n := -1
	done := make(chan struct{})
	if !sa.post(func() { n = sa.addKE.intDone; close(done) }) {
		return n
	}
	<-done
	return n
}
