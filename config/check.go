package config

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/roam-vpn/roam/internal/suggest"
)

// Problem is one thing `roam check` reports: where (a profile, the gateway
// or the file itself), and what, starting with the key.
type Problem struct {
	Profile string // profile name; "" for the file or a gateway file
	Gateway bool   // in the [gateway] table
	Msg     string
	// Warning marks what works today but will not for long (a
	// certificate about to expire); it does not fail the check.
	Warning bool
}

// String is the line `roam check` prints, without the file name.
func (p Problem) String() string {
	var b strings.Builder
	if p.Warning {
		b.WriteString("warning: ")
	}
	switch {
	case p.Profile != "":
		fmt.Fprintf(&b, "profile %q: ", p.Profile)
	case p.Gateway:
		b.WriteString("gateway: ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// ExpiryWarning is how long before a certificate expires `roam check` starts
// warning about it.
const ExpiryWarning = 30 * 24 * time.Hour

// IsGatewayFile reports whether the TOML file at path is a gateway file (a
// [gateway] table) rather than a profile file.
func IsGatewayFile(path string) bool {
	var raw map[string]toml.Primitive
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return false
	}
	_, ok := raw["gateway"]
	return ok
}

// CheckProfiles validates the profile file offline, as far as that can
// go: everything LoadProfile checks, and that certificates and keys parse,
// match each other, are within their lifetimes, chain to ca, and name
// local_id. names limits the check to those profiles (none: all).
func CheckProfiles(path string, names []string, now time.Time) []Problem {
	var out []Problem
	if p := checkFileMode(path); p != "" {
		out = append(out, Problem{Msg: p})
	}
	f, err := ReadProfiles(path)
	if err != nil {
		return append(out, Problem{Msg: strings.TrimPrefix(err.Error(), path+": ")})
	}
	if f.SocketGroup != "" {
		if _, err := user.LookupGroup(f.SocketGroup); err != nil {
			out = append(out, Problem{Msg: fmt.Sprintf("socket_group: %v", err)})
		}
	}
	if len(names) == 0 {
		names = f.Names()
	}
	for _, name := range names {
		_, broken := f.Broken[name]
		r, decoded := f.raw[name]
		if !broken && !decoded {
			msg := "no such profile"
			if s := suggest.Closest(name, f.Names()); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			out = append(out, Problem{Profile: name, Msg: msg})
			continue
		}
		var reported []string
		for _, err := range f.problems[name] {
			reported = append(reported, err.Error())
			out = append(out, Problem{Profile: name, Msg: err.Error()})
		}
		if !decoded {
			continue
		}
		for _, p := range newCredentials(r.Auth, r.Cert, r.Key, r.CA, r.LocalID, now, reported) {
			p.Profile = name
			out = append(out, p)
		}
	}
	return out
}

// CheckGateway is CheckProfiles for a gateway file.
func CheckGateway(path string, now time.Time) []Problem {
	var out []Problem
	if p := checkFileMode(path); p != "" {
		out = append(out, Problem{Msg: p})
	}
	var reported []string
	if _, err := LoadGateway(path); err != nil {
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), path+": "), "gateway: ")
		reported = append(reported, msg)
		out = append(out, Problem{Gateway: true, Msg: msg})
	}
	var raw rawGatewayFile
	if _, err := toml.DecodeFile(path, &raw); err != nil || raw.Gateway == nil {
		return out
	}
	g := raw.Gateway
	for _, p := range newCredentials(g.Auth, g.Cert, g.Key, g.CA, g.LocalID, now, reported) {
		p.Gateway = true
		out = append(out, p)
	}
	return out
}

// newCredentials is checkCredentials for a profile or a gateway section
// (auth defaulting to psk as the loaders do), without the problems the
// loader reported already.
func newCredentials(auth, cert, key, ca, localID string, now time.Time, reported []string) []Problem {
	if auth == "" {
		auth = "psk"
	}
	var out []Problem
	for _, p := range checkCredentials(auth, cert, key, ca, localID, now) {
		if !alreadyReported(reported, p.Msg) {
			out = append(out, p)
		}
	}
	return out
}

// alreadyReported keeps a file LoadProfile already complained about (a
// missing cert, say) from being reported twice.
func alreadyReported(reported []string, msg string) bool {
	key, _, ok := strings.Cut(msg, ": ")
	for _, r := range reported {
		if ok && strings.HasPrefix(r, key+": ") {
			return true
		}
	}
	return false
}

// checkFileMode: a profile file others may write lets them point psk_file
// or key at files of their choosing.
func checkFileMode(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "" // ReadProfiles says why
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Sprintf("file: writable by group or others (mode %04o); chmod go-w it", fi.Mode().Perm())
	}
	return ""
}

// checkCredentials checks the certificate files an auth method uses.
func checkCredentials(auth, certPath, keyPath, caPath, localID string, now time.Time) []Problem {
	var out []Problem
	add := func(warning bool, format string, args ...any) {
		out = append(out, Problem{Msg: fmt.Sprintf(format, args...), Warning: warning})
	}
	var cas []*x509.Certificate
	if caPath != "" {
		var err error
		if cas, err = readCertificates(caPath); err != nil {
			add(false, "ca: %v", err)
		}
		for _, ca := range cas {
			if !ca.IsCA {
				add(false, "ca: %s: %q is not a CA certificate (no CA basic constraint)", caPath, ca.Subject)
			}
			lifetime(add, "ca", caPath, ca, now)
		}
	}
	if auth != "pubkey" && auth != AuthEAPTLS || certPath == "" {
		return out
	}
	chain, err := readCertificates(certPath)
	if err != nil {
		add(false, "cert: %v", err)
		return out
	}
	cert := chain[0]
	lifetime(add, "cert", certPath, cert, now)
	if keyPath != "" {
		if key, err := readPrivateKey(keyPath); err != nil {
			add(false, "key: %v", err)
		} else if !samePublicKey(key.Public(), cert.PublicKey) {
			add(false, "key: %s is not the private key of cert %s", keyPath, certPath)
		}
	}
	if len(cas) > 0 {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, ca := range cas {
			roots.AddCert(ca)
		}
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		var unknown x509.UnknownAuthorityError
		switch {
		case errors.As(err, &unknown):
			add(false, "cert: %s is not issued by ca %s (issuer %q)", certPath, caPath, cert.Issuer)
		case err != nil && !isTimeError(err):
			add(false, "cert: does not verify against ca %s: %v", caPath, err)
		}
	}
	if localID != "" && !namesIdentity(cert, localID) {
		add(false, "local_id: %q is not named by cert %s (subject %q%s); the peer will refuse it", localID, certPath, cert.Subject, sanList(cert))
	}
	return out
}

// isTimeError: expiry is reported once, by lifetime.
func isTimeError(err error) bool {
	var ce x509.CertificateInvalidError
	return errors.As(err, &ce) && ce.Reason == x509.Expired
}

func lifetime(add func(bool, string, ...any), key, path string, c *x509.Certificate, now time.Time) {
	switch {
	case now.Before(c.NotBefore):
		add(false, "%s: %s: %q is not valid before %s", key, path, c.Subject, c.NotBefore.UTC().Format(time.DateOnly))
	case now.After(c.NotAfter):
		add(false, "%s: %s: %q expired on %s", key, path, c.Subject, c.NotAfter.UTC().Format(time.DateOnly))
	case c.NotAfter.Sub(now) < ExpiryWarning:
		add(true, "%s: %s: %q expires on %s", key, path, c.Subject, c.NotAfter.UTC().Format(time.DateOnly))
	}
}

// readCertificates reads PEM certificates (a chain, leaf first) or one DER
// certificate.
func readCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		out = append(out, c)
	}
	if len(out) > 0 {
		return out, nil
	}
	if bytes.Contains(b, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("%s: no CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PEM or DER certificate", path)
	}
	return []*x509.Certificate{c}, nil
}

// readPrivateKey reads a PKCS #8, PKCS #1 or SEC 1 key, PEM or DER.
func readPrivateKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		if strings.Contains(blk.Type, "ENCRYPTED") || blk.Headers["Proc-Type"] != "" {
			return nil, fmt.Errorf("%s: the key is encrypted; roam needs it unencrypted (mode 0600)", path)
		}
		der = blk.Bytes
	}
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s: not a PKCS #8, PKCS #1 or EC private key", path)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	// Every public key type of crypto/rsa, ecdsa and ed25519 has Equal.
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// namesIdentity reports whether the certificate names the identity: a SAN
// (DNS name, e-mail address, IP address) or its subject DN.
func namesIdentity(c *x509.Certificate, id string) bool {
	for _, n := range c.DNSNames {
		if strings.EqualFold(n, id) {
			return true
		}
	}
	for _, e := range c.EmailAddresses {
		if strings.EqualFold(e, id) {
			return true
		}
	}
	if a, err := netip.ParseAddr(id); err == nil {
		for _, ip := range c.IPAddresses {
			if b, ok := netip.AddrFromSlice(ip); ok && b.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return sameDN(c.Subject.String(), id)
}

// sameDN compares distinguished names ignoring spacing, case and RDN
// order: Go prints "CN=x,O=y", strongSwan users write "O=y, CN=x".
func sameDN(a, b string) bool {
	norm := func(s string) string {
		parts := strings.Split(s, ",")
		for i, p := range parts {
			parts[i] = strings.ToLower(strings.TrimSpace(p))
		}
		sort.Strings(parts)
		return strings.Join(parts, ",")
	}
	return strings.Contains(b, "=") && norm(a) == norm(b)
}

func sanList(c *x509.Certificate) string {
	var sans []string
	sans = append(sans, c.DNSNames...)
	sans = append(sans, c.EmailAddresses...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, ip.String())
	}
	if len(sans) == 0 {
		return ", no subjectAltName"
	}
	return ", subjectAltName " + strings.Join(sans, " ")
}
