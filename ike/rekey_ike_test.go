package ike

import (
	"context"
	"testing"
	"time"
)

// TestRekeyIKE rekeys the IKE SA from either end: afterwards both ends use
// the new SPIs and keys, the old IKE SA is gone, the Child SA is still
// there, and the rekeyed SA carries exchanges in both directions (a
// liveness check from the client, a Child SA rekey from the gateway, and
// a second IKE rekey from the other end, which flips the I flag back).
func TestRekeyIKE(t *testing.T) {
	for i, byClient := range []bool{true, false} {
		name := map[bool]string{true: "client", false: "gateway"}[byClient]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, int64(1300+i), nil)
			c := e.dial(defaultInitiatorConfig(t, "alice@example.com"))
			est, err := c.wait(t, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second).SA
			cli := est.SA
			first, second := cli, gw
			if !byClient {
				first, second = gw, cli
			}
			oldI, oldR := cli.SPIs()
			child := checkPair(t, cli, gw)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := first.RekeyIKE(ctx); err != nil {
				t.Fatal(err)
			}
			nextEvent[*IKERekeyed](t, c.events, 2*time.Second)
			nextEvent[*IKERekeyed](t, e.respEvents, 2*time.Second)
			ci, cr := cli.SPIs()
			gi, gr := gw.SPIs()
			if ci != gi || cr != gr || ci == oldI || cr == oldR {
				t.Fatalf("SPIs: client %x/%x gateway %x/%x, old %x/%x", ci, cr, gi, gr, oldI, oldR)
			}
			if got := len(e.resp.SAs()); got != 1 {
				t.Fatalf("responder lists %d SAs", got)
			}
			if now := checkPair(t, cli, gw); now.SPIIn != child.SPIIn {
				t.Fatal("the Child SA did not survive the IKE rekey")
			}
			if err := cli.CheckLiveness(ctx); err != nil {
				t.Fatalf("liveness check on the rekeyed SA: %v", err)
			}
			if err := gw.RekeyChild(ctx, child.SPIOut); err != nil {
				t.Fatalf("Child SA rekey on the rekeyed IKE SA: %v", err)
			}
			if err := second.RekeyIKE(ctx); err != nil {
				t.Fatalf("rekey by the other end: %v", err)
			}
			if err := cli.CheckLiveness(ctx); err != nil {
				t.Fatalf("liveness check after the second rekey: %v", err)
			}
			checkPair(t, cli, gw)
		})
	}
}
