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

// AuthEAPTLS is the auth value of a profile whose client certificate
// (cert, key) goes inside EAP-TLS rather than in IKE's own AUTH.
const AuthEAPTLS = "eap-tls"

// checkEAPKeys refuses EAP keys in profiles whose auth does not use them.
func (r *rawProfile) checkEAPKeys(auth string) error {
	if r.EAPIdentity != "" && auth != AuthEAPMSCHAPv2 && auth != AuthEAPTLS {
		return fmt.Errorf("eap_identity: only for auth = %q or %q", AuthEAPMSCHAPv2, AuthEAPTLS)
	}
	if r.EAPOnly != nil && auth != AuthEAPMSCHAPv2 && auth != AuthEAPTLS {
		return fmt.Errorf("eap_only: only for auth = %q or %q", AuthEAPMSCHAPv2, AuthEAPTLS)
	}
	if r.PasswordFile != "" && auth != AuthEAPMSCHAPv2 {
		return fmt.Errorf("password_file: only for auth = %q", AuthEAPMSCHAPv2)
	}
	return nil
}

func (r *rawProfile) eapTLS(p *Profile) error {
	for _, kv := range []struct{ key, val string }{{"cert", r.Cert}, {"key", r.Key}, {"ca", r.CA}} {
		if kv.val == "" {
			return fmt.Errorf("%s: missing (auth = %q)", kv.key, AuthEAPTLS)
		}
		if _, err := os.Stat(kv.val); err != nil {
			return fmt.Errorf("%s: %w", kv.key, err)
		}
	}
	if err := checkPrivate(r.Key); err != nil {
		return fmt.Errorf("key: %w", err)
	}
	if r.PSKFile != "" {
		return fmt.Errorf("psk_file: not used with auth = %q", AuthEAPTLS)
	}
	return r.eapCommon(p)
}

// eapCommon reads eap_identity and eap_only.
func (r *rawProfile) eapCommon(p *Profile) error {
	p.EAPIdentity = r.EAPIdentity
	if p.EAPIdentity == "" {
		p.EAPIdentity = p.LocalID
	}
	if len(p.EAPIdentity) > 255 || !utf8.ValidString(p.EAPIdentity) {
		return errors.New("eap_identity: not a UTF-8 name of at most 255 bytes")
	}
	p.EAPOnly = boolOr(r.EAPOnly, false)
	return nil
}

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
	if err := r.eapCommon(p); err != nil {
		return err
	}
	if r.PasswordFile != "" {
		pw, err := readPasswordFile(r.PasswordFile)
		if err != nil {
			return err
		}
		p.Password = pw
	}
	return nil
}

// readPasswordFile reads a password_file and checks that MSCHAPv2 can
// carry the password; an error names the key.
func readPasswordFile(path string) ([]byte, error) {
	pw, err := ReadSecret(path)
	if err == nil {
		err = CheckPassword(pw)
	}
	if err != nil {
		return nil, fmt.Errorf("password_file: %w", err)
	}
	return pw, nil
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

// eap reads a gateway client's EAP-MSCHAPv2 login. The gateway must sign
// with its certificate: MSCHAPv2 alone would let anyone who learnt one
// password exchange impersonate it.
func (c rawClient) eap(g *Gateway, cl *Client) error {
	if c.PasswordFile == "" {
		if c.EAPIdentity != "" {
			return errors.New("eap_identity: only with password_file")
		}
		return nil
	}
	if g.Auth != "pubkey" {
		return errors.New(`password_file: needs auth = "pubkey" (the gateway proves itself with its certificate)`)
	}
	if c.PSKFile != "" {
		return errors.New("password_file: a client logs in with psk_file or password_file, not both")
	}
	pw, err := readPasswordFile(c.PasswordFile)
	if err != nil {
		return err
	}
	cl.Password = pw
	cl.EAPIdentity = c.EAPIdentity
	if cl.EAPIdentity == "" {
		cl.EAPIdentity = c.ID
	}
	return nil
}
