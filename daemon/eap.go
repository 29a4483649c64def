package daemon

import (
	"errors"
	"fmt"
	"os"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
)

// usePassword gives a profile that needs one the password the client sent
// over the control socket; a password for a profile that has its own
// password_file (or no EAP) is refused rather than silently ignored.
func usePassword(p *config.Profile, password []byte) error {
	if len(password) == 0 {
		if p.NeedsPassword() {
			return fmt.Errorf("%s: auth = %q without password_file needs the password typed into `roam connect` on a terminal", p.Name, p.Auth)
		}
		return nil
	}
	if !p.NeedsPassword() {
		return fmt.Errorf("%s: a password was sent, but the profile does not ask for one", p.Name)
	}
	if err := config.CheckPassword(password); err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	p.Password = password
	return nil
}

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
		certPEM, err := os.ReadFile(p.Cert)
		if err != nil {
			return nil, nil, fmt.Errorf("cert: %w", err)
		}
		keyPEM, err := os.ReadFile(p.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("key: %w", err)
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
	peer, err := ike.NewCertPeer(p.RemoteID, caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	return local, peer, nil
}
