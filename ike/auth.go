package ike

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// LocalAuth produces our side of IKE_AUTH: the ID payload, the certificates
// to send and the AUTH payload over the signed octets (RFC 7296 2.15).
// Implementations are immutable and safe for concurrent use by many IKE SAs.
type LocalAuth interface {
	Identity() *wire.Identification
	Certs() []*wire.Cert
	Sign(prf *ikecrypto.PRF, octets []byte) (*wire.Auth, error)
}

// PeerAuth checks the peer's side of IKE_AUTH. Verify returns nil only when
// the AUTH payload proves possession of the configured secret or a key
// certified by the configured CA, and the peer's ID is the expected one.
// Every error it returns matches ErrAuthenticationFailed and is safe to log.
type PeerAuth interface {
	CertReqs() []*wire.CertReq
	Verify(prf *ikecrypto.PRF, octets []byte, id *wire.Identification, auth *wire.Auth, certs []*wire.Cert) error
}

// AuthError is why a peer's authentication was refused. Reason never holds
// secrets (no PSK, no key material), so it can go to logs and the user.
type AuthError struct {
	Reason string
	Err    error // underlying cause, may be nil
}

func (e *AuthError) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

func (e *AuthError) Unwrap() error { return e.Err }

// Is makes every AuthError an ErrAuthenticationFailed, so callers can
// classify without knowing the concrete reason.
func (e *AuthError) Is(target error) bool { return target == ErrAuthenticationFailed }

func authErrorf(cause error, format string, args ...any) error {
	return &AuthError{Reason: fmt.Sprintf(format, args...), Err: cause}
}

// SignatureHashNotify returns the RFC 7427 SIGNATURE_HASH_ALGORITHMS
// notification announcing SHA2-256, SHA2-384 and SHA2-512 (RFC 7427 4,
// IANA "IKEv2 Hash Algorithms" 2, 3, 4): the hashes Verify accepts in
// Digital Signature AUTH payloads.
func SignatureHashNotify() *wire.Notify {
	return &wire.Notify{
		Type: wire.NotifySignatureHashAlgorithms,
		Data: []byte{0, 2, 0, 3, 0, 4},
	}
}

// SignedOctets returns the octets an AUTH payload covers (RFC 7296 2.15):
// message (the sender's IKE_SA_INIT message), nonce (the peer's nonce data)
// and prf(skp, RestOfIDPayload), where RestOfIDPayload is the ID payload
// body: ID Type, three reserved zero octets and the identification data.
// skp is SK_pi when the initiator signs, SK_pr when the responder does.
func SignedOctets(message, nonce []byte, prf *ikecrypto.PRF, skp []byte, id *wire.Identification) []byte {
	return ikecrypto.SignedOctets(prf, message, nonce, skp, idPayloadBody(id))
}

func idPayloadBody(id *wire.Identification) []byte {
	b := make([]byte, 4, 4+len(id.Data))
	b[0] = byte(id.IDType)
	return append(b, id.Data...)
}

// maxIdentityText bounds an identity as a profile or gateway file writes it.
const maxIdentityText = 1024

// ParseIdentity turns a configured identity into an ID payload the way
// strongSwan reads leftid/rightid:
//   - an IPv4 or IPv6 literal is ID_IPV4_ADDR / ID_IPV6_ADDR;
//   - "C=CH, O=Example, CN=vpn" (attribute=value pairs) is ID_DER_ASN1_DN,
//     encoded in the order written;
//   - "user@example.com" is ID_RFC822_ADDR, "@vpn.example.com" is ID_FQDN
//     without the '@', "@#0a1b" is ID_KEY_ID from hex;
//   - anything else is ID_FQDN.
//
// Explicit prefixes override the guess: "fqdn:", "email:" (also
// "rfc822:", "userfqdn:"), "ipv4:", "ipv6:", "dn:" (also "asn1dn:") and
// "keyid:" (the bytes as written, or hex after "#").
func ParseIdentity(s string) (*wire.Identification, error) {
	if s == "" {
		return nil, errors.New("empty identity")
	}
	if len(s) > maxIdentityText {
		return nil, fmt.Errorf("identity longer than %d bytes", maxIdentityText)
	}
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("identity %q is not valid UTF-8", s)
	}
	if prefix, rest, ok := strings.Cut(s, ":"); ok {
		if id, err, known := parsePrefixedIdentity(strings.ToLower(prefix), rest); known {
			if err != nil {
				return nil, fmt.Errorf("identity %q: %w", s, err)
			}
			return id, nil
		}
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return addrIdentity(a), nil
	}
	if looksLikeDN(s) {
		der, err := encodeDN(s)
		if err != nil {
			return nil, fmt.Errorf("identity %q: %w", s, err)
		}
		return &wire.Identification{IDType: wire.IDDERASN1DN, Data: der}, nil
	}
	if strings.HasPrefix(s, "@#") {
		b, err := hex.DecodeString(strings.ReplaceAll(s[2:], ":", ""))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("identity %q: bad hex key ID", s)
		}
		return &wire.Identification{IDType: wire.IDKeyID, Data: b}, nil
	}
	if strings.HasPrefix(s, "@") {
		return nonEmptyID(wire.IDFQDN, s[1:], s)
	}
	if strings.Contains(s, "@") {
		return nonEmptyID(wire.IDRFC822Addr, s, s)
	}
	return nonEmptyID(wire.IDFQDN, s, s)
}

func nonEmptyID(t wire.IDType, v, orig string) (*wire.Identification, error) {
	if v == "" {
		return nil, fmt.Errorf("identity %q has no value", orig)
	}
	return &wire.Identification{IDType: t, Data: []byte(v)}, nil
}

func addrIdentity(a netip.Addr) *wire.Identification {
	a = a.Unmap()
	if a.Is4() {
		return &wire.Identification{IDType: wire.IDIPv4Addr, Data: a.AsSlice()}
	}
	return &wire.Identification{IDType: wire.IDIPv6Addr, Data: a.AsSlice()}
}

// parsePrefixedIdentity handles "type:value"; known is false when prefix is
// not an identity type, so "host:8080"-like strings fall through to guessing.
func parsePrefixedIdentity(prefix, v string) (id *wire.Identification, err error, known bool) {
	switch prefix {
	case "fqdn":
		id, err = nonEmptyID(wire.IDFQDN, v, prefix+":"+v)
	case "email", "rfc822", "userfqdn":
		id, err = nonEmptyID(wire.IDRFC822Addr, v, prefix+":"+v)
	case "ipv4", "ipv6":
		a, perr := netip.ParseAddr(v)
		switch {
		case perr != nil || a.Zone() != "":
			err = errors.New("not an IP address")
		case (prefix == "ipv4") != a.Unmap().Is4():
			err = fmt.Errorf("not an %s address", strings.ToUpper(prefix[:2])+prefix[2:])
		default:
			id = addrIdentity(a)
		}
	case "dn", "asn1dn":
		var der []byte
		if der, err = encodeDN(v); err == nil {
			id = &wire.Identification{IDType: wire.IDDERASN1DN, Data: der}
		}
	case "keyid":
		var b []byte
		if h, ok := strings.CutPrefix(v, "#"); ok {
			b, err = hex.DecodeString(strings.ReplaceAll(h, ":", ""))
			if err != nil {
				err = errors.New("bad hex key ID")
			}
		} else {
			b = []byte(v)
		}
		if err == nil && len(b) == 0 {
			err = errors.New("empty key ID")
		}
		if err == nil {
			id = &wire.Identification{IDType: wire.IDKeyID, Data: b}
		}
	default:
		return nil, nil, false
	}
	return id, err, true
}

// IdentitiesEqual compares two identities the way a human would: names
// case-insensitively (an FQDN's trailing dot ignored), DNs attribute by
// attribute regardless of the ASN.1 string type each side chose, anything
// else byte for byte. Gateways use it to find the client an IDi names.
func IdentitiesEqual(a, b *wire.Identification) bool { return identitiesEqual(a, b) }

func identitiesEqual(a, b *wire.Identification) bool {
	if a.IDType != b.IDType {
		return false
	}
	switch a.IDType {
	case wire.IDFQDN:
		return strings.EqualFold(strings.TrimSuffix(string(a.Data), "."), strings.TrimSuffix(string(b.Data), "."))
	case wire.IDRFC822Addr:
		return strings.EqualFold(string(a.Data), string(b.Data))
	case wire.IDDERASN1DN:
		return dnEqual(a.Data, b.Data)
	}
	return bytes.Equal(a.Data, b.Data)
}

// FormatIdentity renders an identity for logs, status and errors, in the
// syntax ParseIdentity reads back (with a type prefix where the bare value
// would be read as another type). Peer-controlled control characters are
// escaped so they cannot forge log lines; such strings do not parse back.
func FormatIdentity(id *wire.Identification) string { return formatIdentity(id) }

func formatIdentity(id *wire.Identification) string {
	s, _ := formatIdentityExact(id)
	return s
}

// formatIdentityExact also tells whether ParseIdentity reads the string
// back as id (false for escaped or unknown identities).
func formatIdentityExact(id *wire.Identification) (string, bool) {
	if id == nil {
		return "(none)", false
	}
	var s, prefix string
	switch id.IDType {
	case wire.IDIPv4Addr, wire.IDIPv6Addr:
		if a, ok := netip.AddrFromSlice(id.Data); ok && (a.Is4() == (id.IDType == wire.IDIPv4Addr)) {
			return a.String(), true
		}
	case wire.IDFQDN:
		s, prefix = string(id.Data), "fqdn:"
	case wire.IDRFC822Addr:
		s, prefix = string(id.Data), "email:"
	case wire.IDDERASN1DN:
		if dn, err := dnString(id.Data); err == nil {
			s, prefix = dn, "dn:"
		}
	case wire.IDKeyID:
		s := "keyid:#" + hex.EncodeToString(id.Data)
		// A peer may send a key ID whose hex form is longer than any
		// identity a profile may hold: it is shown, but not as one to
		// copy into remote_id.
		return s, len(id.Data) > 0 && len(s) <= maxIdentityText
	}
	if prefix == "" {
		return fmt.Sprintf("id-type-%d:#%s", id.IDType, hex.EncodeToString(id.Data)), false
	}
	if p := printable(s); p != s {
		return p, false
	}
	if back, err := ParseIdentity(s); err == nil && identitiesEqual(back, id) {
		return s, true
	}
	if back, err := ParseIdentity(prefix + s); err == nil && identitiesEqual(back, id) {
		return prefix + s, true
	}
	return prefix + s, false
}

func printable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s
	}
	q := fmt.Sprintf("%q", s)
	return q[1 : len(q)-1]
}

// checkRemoteID enforces the configured remote identity, if any.
func checkRemoteID(want *wire.Identification, wantText string, got *wire.Identification) error {
	if got == nil {
		return authErrorf(nil, "peer sent no identity")
	}
	if want != nil && !identitiesEqual(want, got) {
		return authErrorf(nil, "peer identity '%s' is not the expected '%s'", formatIdentity(got), wantText)
	}
	return nil
}

// parseRemoteID reads a configured remote ID; "" means any.
func parseRemoteID(remoteID string) (*wire.Identification, error) {
	if remoteID == "" {
		return nil, nil
	}
	id, err := ParseIdentity(remoteID)
	if err != nil {
		return nil, fmt.Errorf("remote ID: %w", err)
	}
	return id, nil
}
