package daemon

import (
	"fmt"

	"github.com/roam-vpn/roam/config"
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
