package ike

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
)

var (
	espHybrid = Proposal{Text: "aes256gcm16-x25519-ke1_mlkem768", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 256), tr(wire.TransformDH, 31, 0), tr(wire.TransformESN, 0, 0), tr(wire.TransformADDKE1, 36, 0)}}
	espHybridECP = Proposal{Text: "aes256gcm16-ecp256-ke1_mlkem768", Transforms: []wire.Transform{
		tr(wire.TransformEncr, 20, 256), tr(wire.TransformDH, 19, 0), tr(wire.TransformESN, 0, 0), tr(wire.TransformADDKE1, 36, 0)}}
)

// hybridPair establishes an SA with hybrid IKE and ESP proposals on both
// ends (client ESP proposals esp, gateway gwESP).
func hybridPair(t *testing.T, seed int64, esp, gwESP []Proposal, mod func(*netsim.Network)) (client, gw *SA, ce, ge chan Event) {
	t.Helper()
	e := newEnv(t, seed, func(r *ResponderConfig) { r.IKE, r.ESP = []Proposal{ikeHybrid}, gwESP })
	if mod != nil {
		mod(e.net)
	}
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.IKE, cfg.ESP = []Proposal{ikeHybrid}, esp
	c := e.dial(cfg)
	est, err := c.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	if !strings.Contains(est.Proposal, "ke1_mlkem768") {
		t.Fatalf("IKE proposal %q", est.Proposal)
	}
	return est.SA, g.SA, c.events, e.respEvents
}

func ikeProposal(t *testing.T, sa *SA) string {
	t.Helper()
	var s string
	if !call(sa, func() { s = ProposalText(sa.ikeProp.Transforms) }) {
		t.Fatal("SA gone")
	}
	return s
}

// Child SA and IKE SA rekeys with additional key exchanges, from either
// end: the new SAs carry ke1_mlkem768 and both ends hold the same keys.
func TestRekeyWithAdditionalKeyExchanges(t *testing.T) {
	for i, tc := range []struct {
		name     string
		ike      bool
		byClient bool
	}{
		{"child by client", false, true},
		{"child by gateway", false, false},
		{"ike by client", true, true},
		{"ike by gateway", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, gw, ce, ge := hybridPair(t, int64(2000+i), []Proposal{espHybrid}, []Proposal{espHybrid}, nil)
			old := checkPair(t, cli, gw)
			if strings.Contains(old.Proposal, "ke1_") {
				t.Fatalf("IKE_AUTH's Child SA %q claims an additional key exchange", old.Proposal)
			}
			rekeyer, oldIn := cli, old.SPIIn
			if !tc.byClient {
				rekeyer, oldIn = gw, old.SPIOut
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.ike {
				oldKeys := cli.keysForTest()
				if err := rekeyer.RekeyIKE(ctx); err != nil {
					t.Fatal(err)
				}
				nextEvent[*IKERekeyed](t, ce, 3*time.Second)
				nextEvent[*IKERekeyed](t, ge, 3*time.Second)
				ck, gk := cli.keysForTest(), gw.keysForTest()
				if !bytes.Equal(ck.SKd, gk.SKd) || bytes.Equal(ck.SKd, oldKeys.SKd) {
					t.Fatal("rekeyed IKE SA keys differ across the ends, or did not change")
				}
				for _, sa := range []*SA{cli, gw} {
					if p := ikeProposal(t, sa); p != "aes256gcm16-prfsha384-curve25519-ke1_mlkem768" {
						t.Fatalf("rekeyed IKE SA proposal %q", p)
					}
				}
				if err := cli.CheckLiveness(ctx); err != nil {
					t.Fatalf("liveness on the rekeyed SA: %v", err)
				}
				// A Child SA rekey on the new IKE SA, with its own follow-up.
				if err := gw.RekeyChild(ctx, old.SPIOut); err != nil {
					t.Fatalf("Child SA rekey on the rekeyed IKE SA: %v", err)
				}
			} else {
				if err := rekeyer.RekeyChild(ctx, oldIn); err != nil {
					t.Fatal(err)
				}
			}
			now := settledPair(t, cli, gw)
			if tc.ike {
				return
			}
			if now.SPIIn == old.SPIIn {
				t.Fatal("the Child SA was not replaced")
			}
			want := "aes256gcm16-curve25519-ke1_mlkem768"
			gc := children(t, gw)[0]
			if now.Proposal != want || gc.Proposal != want {
				t.Fatalf("rekeyed Child SA: client %q gateway %q, want %q", now.Proposal, gc.Proposal, want)
			}
		})
	}
}

// The gateway wants another primary group: INVALID_KE_PAYLOAD, and the
// retry with it runs the additional key exchange too.
func TestRekeyHybridInvalidKE(t *testing.T) {
	cli, gw, _, _ := hybridPair(t, 2100, []Proposal{espHybrid, espHybridECP}, []Proposal{espHybridECP}, nil)
	old := checkPair(t, cli, gw)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cli.RekeyChild(ctx, old.SPIIn); err != nil {
		t.Fatal(err)
	}
	now := settledPair(t, cli, gw)
	if now.Proposal != "aes256gcm16-ecp256-ke1_mlkem768" {
		t.Fatalf("rekeyed Child SA %q", now.Proposal)
	}
}

// Both ends rekey at once over a slow link. With additional key exchanges
// a crossing request is answered TEMPORARY_FAILURE (neither new SA exists
// before its IKE_FOLLOWUP_KE exchanges), and the retry after a random
// wait completes: one SA remains, the same at both ends, still hybrid.
func TestRekeyHybridCollision(t *testing.T) {
	for i, ikeSA := range []bool{false, true} {
		name := map[bool]string{false: "child", true: "ike"}[ikeSA]
		t.Run(name, func(t *testing.T) {
			cli, gw, _, _ := hybridPair(t, int64(2200+i), []Proposal{espHybrid}, []Proposal{espHybrid}, func(n *netsim.Network) {
				n.SetDefault(netsim.Impairment{Delay: 30 * time.Millisecond})
			})
			old := checkPair(t, cli, gw)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make([]error, 2)
			wg.Add(2)
			if ikeSA {
				go func() { defer wg.Done(); errs[0] = cli.RekeyIKE(ctx) }()
				go func() { defer wg.Done(); errs[1] = gw.RekeyIKE(ctx) }()
			} else {
				go func() { defer wg.Done(); errs[0] = cli.RekeyChild(ctx, old.SPIIn) }()
				go func() { defer wg.Done(); errs[1] = gw.RekeyChild(ctx, old.SPIOut) }()
			}
			wg.Wait()
			if errs[0] != nil || errs[1] != nil {
				t.Fatalf("rekeys: client %v, gateway %v", errs[0], errs[1])
			}
			now := settledPair(t, cli, gw)
			if ikeSA {
				ck, gk := cli.keysForTest(), gw.keysForTest()
				if !bytes.Equal(ck.SKd, gk.SKd) || !strings.Contains(ikeProposal(t, cli), "ke1_mlkem768") {
					t.Fatal("after the collision the IKE SA differs across the ends or lost its hybrid")
				}
				if err := cli.CheckLiveness(ctx); err != nil {
					t.Fatalf("liveness after the collision: %v", err)
				}
				return
			}
			if now.SPIIn == old.SPIIn || !strings.Contains(now.Proposal, "ke1_mlkem768") {
				t.Fatalf("after the collision: %+v", now)
			}
		})
	}
}

// IKE_FOLLOWUP_KE requests the responder has no exchange for, or with the
// wrong method, are refused and end nothing else.
func TestFollowupRefusals(t *testing.T) {
	_, gw, _, _ := hybridPair(t, 2300, []Proposal{espHybrid}, []Proposal{espHybrid}, nil)
	var unknown, wrong, gone []wire.Payload
	ok := call(gw, func() {
		unknown, _ = gw.handleFollowupRequest([]wire.Payload{
			&wire.Notify{Type: wire.NotifyAdditionalKeyExchange, Data: []byte("nosuchid")},
			&wire.KE{Group: 36, Data: make([]byte, 1184)}})
		n := gw.deferAdditional([]wire.Transform{tr(wire.TransformADDKE1, 36, 0)}, []byte("secret"), false,
			func([]byte) func() { t.Error("completed with a wrong method"); return nil }, nil)
		wrong, _ = gw.handleFollowupRequest([]wire.Payload{n, &wire.KE{Group: 37, Data: make([]byte, 1568)}})
		// The failed exchange is forgotten.
		gone, _ = gw.handleFollowupRequest([]wire.Payload{n, &wire.KE{Group: 36, Data: make([]byte, 1184)}})
	})
	if !ok {
		t.Fatal("SA gone")
	}
	notify := func(ps []wire.Payload) *wire.Notify {
		if len(ps) != 1 {
			return nil
		}
		n, _ := ps[0].(*wire.Notify)
		return n
	}
	if n := notify(unknown); n == nil || n.Type != wire.NotifyStateNotFound {
		t.Errorf("unknown exchange: %+v", unknown)
	}
	if n := notify(wrong); n == nil || n.Type != wire.NotifyInvalidKEPayload || len(n.Data) != 2 || binary.BigEndian.Uint16(n.Data) != 36 {
		t.Errorf("wrong method: %+v", wrong)
	}
	if n := notify(gone); n == nil || n.Type != wire.NotifyStateNotFound {
		t.Errorf("after the failure: %+v", gone)
	}
}

// TestFollowupTimeout: a responder waiting for an IKE_FOLLOWUP_KE that
// never comes drops the pending CREATE_CHILD_SA after followupTimeout,
// counted from the answer that asked for it (RFC 9370 2.2.4), undoing what
// it reserved; a later request quoting it finds no state. A request that
// comes in time restarts the wait for the next one.
func TestFollowupTimeout(t *testing.T) {
	ml768 := tr(wire.TransformADDKE1, 36, 0)
	for i, tc := range []struct {
		name     string
		addKEs   []wire.Transform
		ikeRekey bool
		answer   bool // answer the first follow-up at half the timeout
	}{
		{"child, none comes", []wire.Transform{ml768}, false, false},
		{"ike rekey, none comes", []wire.Transform{ml768}, true, false},
		{"second of two never comes", []wire.Transform{ml768, tr(wire.TransformADDKE1+1, 36, 0)}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			e := newEnv(t, int64(2400+i), func(r *ResponderConfig) {
				r.IKE, r.ESP, r.Clock = []Proposal{ikeHybrid}, []Proposal{espHybrid}, clock
			})
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.IKE, cfg.ESP = []Proposal{ikeHybrid}, []Proposal{espHybrid}
			if _, err := e.dial(cfg).wait(t, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second).SA
			var abandoned, completed int
			var link *wire.Notify
			if !call(gw, func() {
				link = gw.deferAdditional(tc.addKEs, []byte("first secret"), tc.ikeRekey,
					func([]byte) func() { completed++; return nil }, func() { abandoned++ })
			}) {
				t.Fatal("SA gone")
			}
			pending := func() (n int, ikeRekey bool) {
				t.Helper()
				if !call(gw, func() { n, ikeRekey = len(gw.addKE.followups), gw.followupPending() }) {
					t.Fatal("SA gone")
				}
				return n, ikeRekey
			}
			step := func(d time.Duration) {
				clock.advance(d)
				clock.fireDue()
			}
			if tc.answer {
				step(followupTimeout / 2)
				kx, err := ikecrypto.NewKeyExchange(36, nil)
				if err != nil {
					t.Fatal(err)
				}
				var resp []wire.Payload
				call(gw, func() {
					resp, _ = gw.handleFollowupRequest([]wire.Payload{link, &wire.KE{Group: 36, Data: kx.PublicKey()}})
				})
				if len(resp) != 2 {
					t.Fatalf("first follow-up answered %+v, want KE and the next ADDITIONAL_KEY_EXCHANGE", resp)
				}
				link = resp[1].(*wire.Notify)
				// The wait restarted: past the first deadline, still there.
				step(followupTimeout/2 + time.Second)
				if n, _ := pending(); n != 1 || abandoned != 0 {
					t.Fatalf("after an answered follow-up: %d pending, %d abandoned; want 1 and 0", n, abandoned)
				}
			}
			step(followupTimeout - time.Second - map[bool]time.Duration{true: followupTimeout/2 + time.Second}[tc.answer])
			if n, ike := pending(); n != 1 || ike != tc.ikeRekey || abandoned != 0 {
				t.Fatalf("before the timeout: %d pending (IKE rekey %v), %d abandoned; want 1 (%v) and 0", n, ike, abandoned, tc.ikeRekey)
			}
			step(2 * time.Second)
			if n, ike := pending(); n != 0 || ike || abandoned != 1 || completed != 0 {
				t.Fatalf("after the timeout: %d pending (IKE rekey %v), %d abandoned, %d completed; want 0, 1, 0", n, ike, abandoned, completed)
			}
			var late []wire.Payload
			kx, err := ikecrypto.NewKeyExchange(36, nil)
			if err != nil {
				t.Fatal(err)
			}
			call(gw, func() {
				late, _ = gw.handleFollowupRequest([]wire.Payload{link, &wire.KE{Group: 36, Data: kx.PublicKey()}})
			})
			if n, ok := late[0].(*wire.Notify); len(late) != 1 || !ok || n.Type != wire.NotifyStateNotFound {
				t.Errorf("a follow-up after the timeout: %+v, want STATE_NOT_FOUND", late)
			}
			if abandoned != 1 || completed != 0 {
				t.Errorf("the late follow-up changed things: %d abandoned, %d completed", abandoned, completed)
			}
		})
	}
}
