package tunnel

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/wire"
)

// TestUserError: the line roam connect prints starts with the class of
// failure, once.
func TestUserError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"gateway refused our AUTH", &ike.NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: wire.ExchangeIKEAuth, Remote: true},
			"authentication failed: peer sent AUTHENTICATION_FAILED in IKE_AUTH"},
		{"failure without the class in its text", fmt.Errorf("EAP-MSCHAPv2 rejected the password: %w", ike.ErrAuthenticationFailed),
			"authentication failed: EAP-MSCHAPv2 rejected the password: authentication failed"},
		{"no proposal", &ike.NotifyError{Type: wire.NotifyNoProposalChosen, Exchange: wire.ExchangeIKESAInit, Remote: true},
			"no proposal chosen: peer sent NO_PROPOSAL_CHOSEN in IKE_SA_INIT"},
		{"unrelated error passes through", errors.New("TUN device: permission denied"), "TUN device: permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := userError(tc.err)
			if got.Error() != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for _, class := range []string{"authentication failed: authentication failed", "no proposal chosen: no proposal chosen"} {
				if strings.Contains(got.Error(), class) {
					t.Fatalf("class doubled in %q", got)
				}
			}
			if !errors.Is(got, tc.err) {
				t.Fatalf("%q does not wrap the engine's error", got)
			}
		})
	}
	if userError(nil) != nil {
		t.Fatal("userError(nil) != nil")
	}
}
