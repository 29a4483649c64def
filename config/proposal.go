package config

import (
	"fmt"
	"slices"
	"strings"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
)

// Proposal is one negotiable algorithm set, parsed from a strongSwan-style
// string such as "aes256gcm16-prfsha384-ecp384". Text keeps the spelling the
// administrator wrote so status and errors can echo it back.
type Proposal struct {
	Transforms []wire.Transform
	Text       string
}

type algorithm struct {
	kind      wire.TransformType
	id        uint16
	keyLength uint16
	aead      bool
}

// Only algorithms the engine implements are listed, so a typo or an
// unsupported choice is reported when the profile is read rather than as a
// NO_PROPOSAL_CHOSEN from the gateway.
var encryptionAlgorithms = map[string]algorithm{
	"aes128":      {wire.TransformEncr, ikecrypto.EncrAESCBC, 128, false},
	"aes192":      {wire.TransformEncr, ikecrypto.EncrAESCBC, 192, false},
	"aes256":      {wire.TransformEncr, ikecrypto.EncrAESCBC, 256, false},
	"aes128gcm":   {wire.TransformEncr, ikecrypto.EncrAESGCM16, 128, true},
	"aes128gcm8":  {wire.TransformEncr, ikecrypto.EncrAESGCM8, 128, true},
	"aes128gcm12": {wire.TransformEncr, ikecrypto.EncrAESGCM12, 128, true},
	"aes128gcm16": {wire.TransformEncr, ikecrypto.EncrAESGCM16, 128, true},
	"aes192gcm16": {wire.TransformEncr, ikecrypto.EncrAESGCM16, 192, true},
	"aes256gcm":   {wire.TransformEncr, ikecrypto.EncrAESGCM16, 256, true},
	"aes256gcm8":  {wire.TransformEncr, ikecrypto.EncrAESGCM8, 256, true},
	"aes256gcm12": {wire.TransformEncr, ikecrypto.EncrAESGCM12, 256, true},
	"aes256gcm16": {wire.TransformEncr, ikecrypto.EncrAESGCM16, 256, true},
	// RFC 7634: no Key Length attribute.
	"chacha20poly1305": {wire.TransformEncr, ikecrypto.EncrChaCha20Poly1305, 0, true},
}

var integrityAlgorithms = map[string]algorithm{
	"sha256":   {kind: wire.TransformInteg, id: ikecrypto.IntegHMACSHA2_256_128},
	"sha2_256": {kind: wire.TransformInteg, id: ikecrypto.IntegHMACSHA2_256_128},
	"sha384":   {kind: wire.TransformInteg, id: ikecrypto.IntegHMACSHA2_384_192},
	"sha2_384": {kind: wire.TransformInteg, id: ikecrypto.IntegHMACSHA2_384_192},
	"sha512":   {kind: wire.TransformInteg, id: ikecrypto.IntegHMACSHA2_512_256},
	"sha2_512": {kind: wire.TransformInteg, id: ikecrypto.IntegHMACSHA2_512_256},
}

// prfFollowing maps an integrity algorithm to the PRF strongSwan derives from
// it when a proposal names no PRF explicitly.
var prfFollowing = map[uint16]uint16{
	ikecrypto.IntegHMACSHA2_256_128: ikecrypto.PRFHMACSHA2_256,
	ikecrypto.IntegHMACSHA2_384_192: ikecrypto.PRFHMACSHA2_384,
	ikecrypto.IntegHMACSHA2_512_256: ikecrypto.PRFHMACSHA2_512,
}

var prfAlgorithms = map[string]uint16{
	"prfsha256": ikecrypto.PRFHMACSHA2_256,
	"prfsha384": ikecrypto.PRFHMACSHA2_384,
	"prfsha512": ikecrypto.PRFHMACSHA2_512,
}

var dhGroups = map[string]uint16{
	"modp2048":   wire.GroupMODP2048,
	"modp3072":   wire.GroupMODP3072,
	"modp4096":   wire.GroupMODP4096,
	"ecp256":     wire.GroupECP256,
	"ecp384":     wire.GroupECP384,
	"ecp521":     wire.GroupECP521,
	"curve25519": wire.GroupCurve25519,
	"x25519":     wire.GroupCurve25519,
	"mlkem768":   wire.GroupMLKEM768,
	"mlkem1024":  wire.GroupMLKEM1024,
}

// parseAdditionalKE reads strongSwan 6's "ke<n>_<method>" (RFC 9370
// additional key exchange n, 1-7; "none" makes it optional).
func parseAdditionalKE(tok string) (wire.Transform, bool, error) {
	if len(tok) < 5 || tok[:2] != "ke" || tok[3] != '_' || tok[2] < '1' || tok[2] > '7' {
		return wire.Transform{}, false, nil
	}
	typ := wire.TransformADDKE1 + wire.TransformType(tok[2]-'1')
	name := tok[4:]
	if name == "none" {
		return wire.Transform{Type: typ, ID: 0}, true, nil
	}
	if why, ok := refusedAlgorithms[name]; ok {
		return wire.Transform{}, true, fmt.Errorf("%s is refused: %s", name, why)
	}
	id, ok := dhGroups[name]
	if !ok {
		return wire.Transform{}, true, fmt.Errorf("unknown key exchange method %q in %q", name, tok)
	}
	return wire.Transform{Type: typ, ID: id}, true, nil
}

// refusedAlgorithms are legacy algorithms that strongSwan still accepts
// but roam does not implement, with the reason a user reads.
var refusedAlgorithms = map[string]string{
	"modp768":  "MODP groups below 2048 bits are breakable by precomputation (RFC 8247); use modp2048 or larger, ecp256 or x25519",
	"modp1024": "MODP groups below 2048 bits are breakable by precomputation (RFC 8247); use modp2048 or larger, ecp256 or x25519",
	"modp1536": "MODP groups below 2048 bits are breakable by precomputation (RFC 8247); use modp2048 or larger, ecp256 or x25519",
	"sha1":     "SHA-1 is deprecated for IKEv2 (RFC 8247); use sha256",
	"sha":      "SHA-1 is deprecated for IKEv2 (RFC 8247); use sha256",
	"prfsha1":  "SHA-1 is deprecated for IKEv2 (RFC 8247); use prfsha256",
	"md5":      "MD5 is broken (RFC 8247 says MUST NOT); use sha256",
	"prfmd5":   "MD5 is broken (RFC 8247 says MUST NOT); use prfsha256",
	"3des":     "64-bit block ciphers leak plaintext on long-lived tunnels (Sweet32); use aes128gcm16 or aes256gcm16",
	"des":      "56-bit keys are brute-forced (RFC 8247 says MUST NOT); use aes128gcm16 or aes256gcm16",
	"blowfish": "64-bit block ciphers leak plaintext on long-lived tunnels (Sweet32); use aes128gcm16 or aes256gcm16",
	"cast128":  "64-bit block ciphers leak plaintext on long-lived tunnels (Sweet32); use aes128gcm16 or aes256gcm16",
	"null":     "it does not encrypt; use aes128gcm16 or aes256gcm16",
	"mlkem512": "Go's crypto/mlkem implements ML-KEM-768 and ML-KEM-1024 only; use mlkem768",
}

// ParseIKEProposal parses an IKE proposal in strongSwan's spelling. It needs
// at least one encryption algorithm, a PRF (explicit, or following the
// integrity algorithm), integrity unless the encryption is AEAD, and a group.
func ParseIKEProposal(s string) (Proposal, error) {
	return parseProposal(s, true)
}

// ParseESPProposal parses an ESP proposal: encryption, integrity for non-AEAD
// ciphers, an optional group for PFS and esn/noesn (default noesn, as in
// strongSwan).
func ParseESPProposal(s string) (Proposal, error) {
	return parseProposal(s, false)
}

func parseProposal(s string, ike bool) (Proposal, error) {
	text := strings.ToLower(strings.TrimSpace(s))
	if text == "" {
		return Proposal{}, fmt.Errorf("empty proposal")
	}
	var encr, integ, prf, dh, esn, addke []wire.Transform
	aead, classic := false, false
	for _, tok := range strings.Split(text, "-") {
		if a, ok := encryptionAlgorithms[tok]; ok {
			encr = append(encr, wire.Transform{Type: a.kind, ID: a.id, KeyLength: a.keyLength})
			if a.aead {
				aead = true
			} else {
				classic = true
			}
			continue
		}
		if a, ok := integrityAlgorithms[tok]; ok {
			integ = append(integ, wire.Transform{Type: wire.TransformInteg, ID: a.id})
			continue
		}
		if id, ok := prfAlgorithms[tok]; ok && ike {
			prf = append(prf, wire.Transform{Type: wire.TransformPRF, ID: id})
			continue
		}
		if id, ok := dhGroups[tok]; ok {
			if ike && ikecrypto.IsKEM(id) {
				// IKE_SA_INIT cannot be fragmented (RFC 7383), and an
				// encapsulation key alone fills most of an MTU.
				return Proposal{}, fmt.Errorf("proposal %q: %s goes in an additional key exchange (ke1_%s) after a classical group, e.g. x25519-ke1_%s", s, tok, tok, tok)
			}
			dh = append(dh, wire.Transform{Type: wire.TransformDH, ID: id})
			continue
		}
		if t, ok, err := parseAdditionalKE(tok); ok {
			if err != nil {
				return Proposal{}, fmt.Errorf("proposal %q: %w", s, err)
			}
			addke = append(addke, t)
			continue
		}
		if !ike && (tok == "esn" || tok == "noesn") {
			id := uint16(0)
			if tok == "esn" {
				id = 1
			}
			esn = append(esn, wire.Transform{Type: wire.TransformESN, ID: id})
			continue
		}
		if tok == "" {
			return Proposal{}, fmt.Errorf("proposal %q: empty algorithm name", s)
		}
		if why, ok := refusedAlgorithms[tok]; ok {
			return Proposal{}, fmt.Errorf("proposal %q: %s is refused: %s", s, tok, why)
		}
		return Proposal{}, fmt.Errorf("proposal %q: unknown algorithm %q", s, tok)
	}
	switch {
	case len(encr) == 0:
		return Proposal{}, fmt.Errorf("proposal %q: no encryption algorithm", s)
	case aead && classic:
		return Proposal{}, fmt.Errorf("proposal %q: mixes AEAD and non-AEAD encryption", s)
	case aead && len(integ) > 0:
		return Proposal{}, fmt.Errorf("proposal %q: integrity algorithm given with AEAD encryption", s)
	case classic && len(integ) == 0:
		return Proposal{}, fmt.Errorf("proposal %q: non-AEAD encryption needs an integrity algorithm", s)
	}
	if ike {
		if len(prf) == 0 {
			if aead {
				return Proposal{}, fmt.Errorf("proposal %q: AEAD proposal needs a PRF (e.g. prfsha256)", s)
			}
			for _, t := range integ {
				prf = append(prf, wire.Transform{Type: wire.TransformPRF, ID: prfFollowing[t.ID]})
			}
		}
		if len(dh) == 0 {
			return Proposal{}, fmt.Errorf("proposal %q: no key exchange group", s)
		}
	} else if len(esn) == 0 {
		esn = append(esn, wire.Transform{Type: wire.TransformESN, ID: 0})
	}
	var ts []wire.Transform
	ts = append(ts, encr...)
	ts = append(ts, prf...)
	ts = append(ts, integ...)
	if len(addke) > 0 && len(dh) == 0 {
		return Proposal{}, fmt.Errorf("proposal %q: additional key exchanges need a key exchange group first (e.g. x25519)", s)
	}
	ts = append(ts, dh...)
	ts = append(ts, esn...)
	slices.SortStableFunc(addke, func(a, b wire.Transform) int { return int(a.Type) - int(b.Type) })
	ts = append(ts, addke...)
	return Proposal{Transforms: ts, Text: text}, nil
}
