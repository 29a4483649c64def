package gateway

import (
	"crypto/rand"
	"testing"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/eap"
)

func TestGatewayEAP(t *testing.T) {
	none, err := gatewayEAP(&config.Gateway{Clients: []config.Client{{ID: "bob@example.com", PSK: []byte("k")}}})
	if err != nil || none != nil {
		t.Fatalf("without passwords: %v, %v", none != nil, err)
	}
	g := &config.Gateway{Clients: []config.Client{
		{ID: "bob@example.com", PSK: []byte("k")},
		{ID: "alice@example.com", EAPIdentity: "alice", Password: []byte("s3cret")},
	}}
	eapFor, err := gatewayEAP(g)
	if err != nil || eapFor == nil {
		t.Fatal(err)
	}
	alice, _ := ike.ParseIdentity("alice@example.com")
	bob, _ := ike.ParseIdentity("bob@example.com")
	if _, err := eapFor(bob); err == nil {
		t.Error("EAP server for a PSK client")
	}
	for _, tc := range []struct {
		user, password string
		ok             bool
	}{{"alice", "s3cret", true}, {"alice", "wrong", false}, {"bob", "s3cret", false}} {
		srv, err := eapFor(alice)
		if err != nil {
			t.Fatal(err)
		}
		m, err := eap.NewMSCHAPv2(tc.user, []byte(tc.password), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		peer := eap.NewPeer([]byte(tc.user), m)
		req, err := srv.Start()
		if err != nil {
			t.Fatal(err)
		}
		var res eap.Result
		done := false
		for i := 0; i < 10 && !done; i++ {
			resp, ok, _ := peer.Handle(req)
			if ok || resp == nil {
				break
			}
			if req, res, err = srv.Handle(resp); err != nil {
				t.Fatal(err)
			}
			done = res != eap.Continue
		}
		if (res == eap.Succeeded) != tc.ok {
			t.Errorf("%s/%s: result %v", tc.user, tc.password, res)
		}
	}
}
