package daemon

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
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
	peer, err := ike.NewCertPeer(p.RemoteID, caPEM, sha1RSA(p.AllowSHA1RSA)...)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	return local, peer, nil
}

// gatewayEAP returns the EAP-MSCHAPv2 server for clients listed with a
// password_file (nil when there are none): the client named by IDi may
// log in only as its own eap_identity.
func gatewayEAP(g *config.Gateway) (func(*wire.Identification) (ike.EAPServer, error), error) {
	type login struct {
		id       *wire.Identification
		user     string
		password []byte
	}
	var logins []login
	for _, c := range g.Clients {
		if len(c.Password) == 0 {
			continue
		}
		id, err := ike.ParseIdentity(c.ID)
		if err != nil {
			return nil, fmt.Errorf("client %q: %w", c.ID, err)
		}
		logins = append(logins, login{id, c.EAPIdentity, c.Password})
	}
	if len(logins) == 0 {
		return nil, nil
	}
	return func(idi *wire.Identification) (ike.EAPServer, error) {
		for _, l := range logins {
			if ike.IdentitiesEqual(l.id, idi) {
				return eap.NewMSCHAPv2Server(func(user string) ([]byte, bool) {
					return l.password, user == l.user
				}, rand.Reader), nil
			}
		}
		return nil, errors.New("no EAP login configured for this identity")
	}, nil
}
