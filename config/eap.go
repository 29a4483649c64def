package config

import (
	"errors"
	"fmt"
	"os"
	"unicode/utf8"
)

// AuthEAPMSCHAPv2 is the auth value of a profile whose user logs in with a
// username and password through EAP-MSCHAPv2, the gateway proving itself
// with a certificate from ca.
const AuthEAPMSCHAPv2 = "eap-mschapv2"

// NeedsPassword reports that the profile's password must be asked for: an
// EAP-MSCHAPv2 profile without password_file.
func (p *Profile) NeedsPassword() bool {
	return p.Auth == AuthEAPMSCHAPv2 && len(p.Password) == 0
}

func (r *rawProfile) eapMSCHAPv2(p *Profile) error {
	if r.CA == "" {
		return fmt.Errorf("ca: missing (auth = %q: the gateway's certificate is checked against it)", AuthEAPMSCHAPv2)
	}
	if _, err := os.Stat(r.CA); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if r.Cert != "" || r.Key != "" || r.PSKFile != "" {
		return fmt.Errorf("cert, key, psk_file: not used with auth = %q", AuthEAPMSCHAPv2)
	}
	p.EAPIdentity = r.EAPIdentity
	if p.EAPIdentity == "" {
		p.EAPIdentity = p.LocalID
	}
	if len(p.EAPIdentity) > 255 || !utf8.ValidString(p.EAPIdentity) {
		return errors.New("eap_identity: not a UTF-8 name of at most 255 bytes")
	}
	p.EAPOnly = boolOr(r.EAPOnly, false)
	if r.PasswordFile != "" {
		pw, err := ReadSecret(r.PasswordFile)
		if err != nil {
			return fmt.Errorf("password_file: %w", err)
		}
		if err := CheckPassword(pw); err != nil {
			return fmt.Errorf("password_file: %w", err)
		}
		p.Password = pw
	}
	return nil
}

// CheckPassword refuses passwords MSCHAPv2 cannot carry (RFC 2759: at
// most 256 Unicode characters), without saying anything about the
// password itself.
func CheckPassword(pw []byte) error {
	if len(pw) == 0 {
		return errors.New("empty password")
	}
	if !utf8.Valid(pw) {
		return errors.New("password is not valid UTF-8")
	}
	if utf8.RuneCount(pw) > 256 {
		return errors.New("password longer than 256 characters")
	}
	return nil
}
