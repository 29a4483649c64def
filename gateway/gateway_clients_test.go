package gateway

import (
	"testing"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
)

// TestCertClientsAllowed: with clients_match, a certificate client's
// identity must match the pattern or be listed; without, any will do.
func TestCertClientsAllowed(t *testing.T) {
	tests := []struct {
		match  string
		listed []string
		id     string
		want   bool
	}{
		{"", nil, "mallory@evil.example", true},
		{"*@example.com", nil, "alice@example.com", true},
		{"*@example.com", nil, "Alice@EXAMPLE.com", true},
		{"*@example.com", nil, "mallory@evil.example", false},
		{"*@example.com", nil, "alice@example.com.evil.example", false},
		{"*@example.com", []string{"partner@other.example"}, "partner@other.example", true},
		{"*.vpn.example.com", nil, "laptop1.vpn.example.com", true},
		{"*.vpn.example.com", nil, "vpn.example.com", false},
	}
	for _, tc := range tests {
		t.Run(tc.match+"/"+tc.id, func(t *testing.T) {
			g := &config.Gateway{ClientsMatch: tc.match}
			for _, id := range tc.listed {
				g.Clients = append(g.Clients, config.Client{ID: id})
			}
			allowed, err := certClientsAllowed(g)
			if err != nil {
				t.Fatal(err)
			}
			id, err := ike.ParseIdentity(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if got := allowed(id); got != tc.want {
				t.Fatalf("allowed(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}
