package gateway

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ike"
	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
)

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
