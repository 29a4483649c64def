package tunnel

import (
	"errors"
	"fmt"
	"os"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ikeesp"
)

// eapAuthenticators: the client logs in with EAP-MSCHAPv2 or EAP-TLS,
// the gateway proves itself with a certificate issued by the profile's ca
// (in IKE, and for EAP-TLS inside TLS too).
func eapAuthenticators(p *config.Profile) (ike.LocalAuth, ike.PeerAuth, error) {
	caPEM, err := os.ReadFile(p.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	var local ike.LocalAuth
	if p.Auth == config.AuthEAPTLS {
		certPEM, keyPEM, err := readCertKey(p)
		if err != nil {
			return nil, nil, err
		}
		if local, err = ike.NewEAPTLSAuth(p.LocalID, p.EAPIdentity, certPEM, keyPEM, caPEM, p.RemoteID, p.EAPOnly); err != nil {
			return nil, nil, fmt.Errorf("cert/key: %w", err)
		}
	} else {
		if len(p.Password) == 0 {
			return nil, nil, errors.New("EAP-MSCHAPv2: no password")
		}
		if local, err = ike.NewEAPMSCHAPv2Auth(p.LocalID, p.EAPIdentity, p.Password, p.EAPOnly); err != nil {
			return nil, nil, fmt.Errorf("local_id/eap_identity: %w", err)
		}
	}
	peer, err := ike.NewCertPeer(p.RemoteID, caPEM, ikeesp.SHA1RSA(p.AllowSHA1RSA)...)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	return local, peer, nil
}
