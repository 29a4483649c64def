package tunnel

import (
	"strings"
	"testing"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/internal/testpki"
)

func TestEAPAuthenticators(t *testing.T) {
	p := &config.Profile{Name: "corp", Auth: config.AuthEAPMSCHAPv2, LocalID: "alice@example.com",
		EAPIdentity: "alice", RemoteID: "vpn.example.com", CA: "/nonexistent/ca.pem"}
	if _, _, err := authenticators(p); err == nil || !strings.Contains(err.Error(), "ca:") {
		t.Fatalf("missing CA: %v", err)
	}
	p.CA = testpki.WriteCA(t)
	if _, _, err := authenticators(p); err == nil || !strings.Contains(err.Error(), "no password") {
		t.Fatalf("without password: %v", err)
	}
	p.Password = []byte("s3cret")
	local, peer, err := authenticators(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := local.(*ike.EAPAuth); !ok || peer == nil || len(peer.CertReqs()) != 1 {
		t.Fatalf("local %T, peer %T", local, peer)
	}
}
