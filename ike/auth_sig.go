package ike

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/roam-vpn/roam/ike/wire"
)

// Signature AUTH payloads: RFC 7427 Digital Signature (method 14), whose
// data is a length-prefixed ASN.1 AlgorithmIdentifier followed by the
// signature, and the older fixed methods: RSA (1, RFC 7296: PKCS#1 v1.5
// over SHA-1) and ECDSA (9/10/11, RFC 4754: raw r|s over the curve's hash).

// SignatureScheme selects how a certificate's key signs AUTH.
type SignatureScheme int

const (
	// SignatureAuto: RFC 7427 with ECDSA over the curve's hash (P-256
	// SHA-256, P-384 SHA-384, P-521 SHA-512) or RSA PKCS#1 v1.5 SHA-256,
	// which every RFC 7427 implementation verifies.
	SignatureAuto SignatureScheme = iota
	// SignatureRSAPSS: RFC 7427 with RSASSA-PSS, SHA-256, MGF1-SHA-256,
	// 32-byte salt (RSA keys only).
	SignatureRSAPSS
	// SignatureClassic: RFC 4754 methods 9/10/11 for peers without RFC
	// 7427 (ECDSA keys only; RSA would need SHA-1, which we do not sign).
	SignatureClassic
)

type sigKind int

const (
	kindECDSA sigKind = iota + 1
	kindRSA           // PKCS#1 v1.5
	kindRSAPSS
)

type sigScheme struct {
	method  wire.AuthMethod
	kind    sigKind
	hash    crypto.Hash
	saltLen int // PSS only
}

var (
	oidECDSASHA256     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSASHA512     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidECDSASHA1       = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidRSASHA1         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidRSASHA256       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidRSASHA384       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidRSASHA512       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidRSAPSS          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidSHA1            = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}
	asn1NULL           = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagNull}
	errSHA1NotAccepted = errors.New("SHA-1 signatures are not accepted in RFC 7427 AUTH payloads")
)

// plainSigOIDs names the ECDSA and PKCS#1 v1.5 schemes we sign and
// verify; encoding and decoding both read it, so they cannot drift.
var plainSigOIDs = []struct {
	kind sigKind
	hash crypto.Hash
	oid  asn1.ObjectIdentifier
}{
	{kindECDSA, crypto.SHA256, oidECDSASHA256},
	{kindECDSA, crypto.SHA384, oidECDSASHA384},
	{kindECDSA, crypto.SHA512, oidECDSASHA512},
	{kindRSA, crypto.SHA256, oidRSASHA256},
	{kindRSA, crypto.SHA384, oidRSASHA384},
	{kindRSA, crypto.SHA512, oidRSASHA512},
}

func hashOID(h crypto.Hash) asn1.ObjectIdentifier {
	switch h {
	case crypto.SHA256:
		return oidSHA256
	case crypto.SHA384:
		return oidSHA384
	case crypto.SHA512:
		return oidSHA512
	}
	return nil
}

func hashFromOID(oid asn1.ObjectIdentifier) (crypto.Hash, error) {
	switch {
	case oid.Equal(oidSHA256):
		return crypto.SHA256, nil
	case oid.Equal(oidSHA384):
		return crypto.SHA384, nil
	case oid.Equal(oidSHA512):
		return crypto.SHA512, nil
	case oid.Equal(oidSHA1):
		return 0, errSHA1NotAccepted
	}
	return 0, fmt.Errorf("unsupported hash algorithm %s", oid)
}

// pssParams is RFC 4055 RSASSA-PSS-params; absent fields take the
// RFC defaults (SHA-1, which we refuse, and salt length 20).
type pssParams struct {
	Hash         pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:0"`
	MGF          pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:1"`
	SaltLength   int                      `asn1:"optional,explicit,tag:2,default:20"`
	TrailerField int                      `asn1:"optional,explicit,tag:3,default:1"`
}

// algorithmIdentifier encodes the RFC 7427 AlgorithmIdentifier for s.
func (s sigScheme) algorithmIdentifier() ([]byte, error) {
	var ai pkix.AlgorithmIdentifier
	switch s.kind {
	case kindECDSA, kindRSA:
		for _, p := range plainSigOIDs {
			if p.kind == s.kind && p.hash == s.hash {
				ai.Algorithm = p.oid
			}
		}
		if s.kind == kindRSA {
			ai.Parameters = asn1NULL
		}
	case kindRSAPSS:
		h := hashOID(s.hash)
		if h == nil {
			break
		}
		hashAI := pkix.AlgorithmIdentifier{Algorithm: h, Parameters: asn1NULL}
		hashDER, err := asn1.Marshal(hashAI)
		if err != nil {
			return nil, err
		}
		params, err := asn1.Marshal(pssParams{
			Hash:         hashAI,
			MGF:          pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: hashDER}},
			SaltLength:   s.saltLen,
			TrailerField: 1,
		})
		if err != nil {
			return nil, err
		}
		ai.Algorithm = oidRSAPSS
		ai.Parameters = asn1.RawValue{FullBytes: params}
	}
	if ai.Algorithm == nil {
		return nil, fmt.Errorf("no algorithm identifier for signature kind %d with %v", s.kind, s.hash)
	}
	return asn1.Marshal(ai)
}

func absentOrNULL(p asn1.RawValue) bool {
	if len(p.FullBytes) == 0 {
		return true
	}
	return p.Class == asn1.ClassUniversal && p.Tag == asn1.TagNull && len(p.Bytes) == 0
}

// parseAlgorithmIdentifier decodes an RFC 7427 AlgorithmIdentifier into a
// scheme we can verify.
func parseAlgorithmIdentifier(der []byte) (sigScheme, error) {
	var ai pkix.AlgorithmIdentifier
	rest, err := asn1.Unmarshal(der, &ai)
	if err != nil {
		return sigScheme{}, fmt.Errorf("malformed signature algorithm identifier: %w", err)
	}
	if len(rest) != 0 {
		return sigScheme{}, errors.New("trailing data after signature algorithm identifier")
	}
	s := sigScheme{method: wire.AuthDigitalSignature}
	oid := ai.Algorithm
	for _, p := range plainSigOIDs {
		if oid.Equal(p.oid) {
			s.kind, s.hash = p.kind, p.hash
		}
	}
	switch {
	case s.kind != 0: // a plain scheme; its parameters are checked below
	case oid.Equal(oidRSAPSS):
		s.kind = kindRSAPSS
		if err := s.parsePSS(ai.Parameters); err != nil {
			return sigScheme{}, err
		}
		return s, nil
	case oid.Equal(oidRSASHA1), oid.Equal(oidECDSASHA1):
		return sigScheme{}, errSHA1NotAccepted
	case oid.Equal(oidEd25519):
		return sigScheme{}, errors.New("Ed25519 signatures are not supported")
	default:
		return sigScheme{}, fmt.Errorf("unsupported signature algorithm %s", oid)
	}
	if !absentOrNULL(ai.Parameters) {
		return sigScheme{}, fmt.Errorf("unexpected parameters for signature algorithm %s", oid)
	}
	return s, nil
}

func (s *sigScheme) parsePSS(raw asn1.RawValue) error {
	if len(raw.FullBytes) == 0 {
		return errSHA1NotAccepted // every field at its SHA-1 default
	}
	var p pssParams
	rest, err := asn1.Unmarshal(raw.FullBytes, &p)
	if err != nil {
		return fmt.Errorf("malformed RSASSA-PSS parameters: %w", err)
	}
	if len(rest) != 0 {
		return errors.New("trailing data after RSASSA-PSS parameters")
	}
	if p.Hash.Algorithm == nil {
		return errSHA1NotAccepted
	}
	if s.hash, err = hashFromOID(p.Hash.Algorithm); err != nil {
		return err
	}
	if !absentOrNULL(p.Hash.Parameters) {
		return errors.New("unexpected RSASSA-PSS hash parameters")
	}
	// Go's PSS uses the message hash for MGF1 too, so only that is accepted.
	if !p.MGF.Algorithm.Equal(oidMGF1) {
		return fmt.Errorf("unsupported RSASSA-PSS mask generation %s", p.MGF.Algorithm)
	}
	var mgfHash pkix.AlgorithmIdentifier
	rest, err = asn1.Unmarshal(p.MGF.Parameters.FullBytes, &mgfHash)
	if err != nil || len(rest) != 0 {
		return errors.New("malformed RSASSA-PSS MGF1 parameters")
	}
	if !mgfHash.Algorithm.Equal(p.Hash.Algorithm) {
		return errors.New("RSASSA-PSS with an MGF1 hash other than the message hash is not supported")
	}
	if p.TrailerField != 1 {
		return fmt.Errorf("unsupported RSASSA-PSS trailer field %d", p.TrailerField)
	}
	// Go reads salt length 0 as "auto", which also accepts an empty salt.
	if p.SaltLength < 0 || p.SaltLength > 1024 {
		return fmt.Errorf("bad RSASSA-PSS salt length %d", p.SaltLength)
	}
	s.saltLen = p.SaltLength
	return nil
}

// classicECDSA maps RFC 4754 methods to curve, hash and coordinate size.
func classicECDSA(m wire.AuthMethod) (elliptic.Curve, crypto.Hash, int) {
	switch m {
	case wire.AuthECDSA256:
		return elliptic.P256(), crypto.SHA256, 32
	case wire.AuthECDSA384:
		return elliptic.P384(), crypto.SHA384, 48
	case wire.AuthECDSA521:
		return elliptic.P521(), crypto.SHA512, 66
	}
	return nil, 0, 0
}

// chooseScheme picks how signer's key signs AUTH.
func chooseScheme(pub crypto.PublicKey, pref SignatureScheme) (sigScheme, error) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		var s sigScheme
		switch pub.Curve {
		case elliptic.P256():
			s = sigScheme{method: wire.AuthECDSA256, kind: kindECDSA, hash: crypto.SHA256}
		case elliptic.P384():
			s = sigScheme{method: wire.AuthECDSA384, kind: kindECDSA, hash: crypto.SHA384}
		case elliptic.P521():
			s = sigScheme{method: wire.AuthECDSA521, kind: kindECDSA, hash: crypto.SHA512}
		default:
			return sigScheme{}, fmt.Errorf("unsupported ECDSA curve %s", pub.Curve.Params().Name)
		}
		switch pref {
		case SignatureAuto:
			s.method = wire.AuthDigitalSignature
		case SignatureClassic:
		default:
			return sigScheme{}, errors.New("RSASSA-PSS needs an RSA key")
		}
		return s, nil
	case *rsa.PublicKey:
		switch pref {
		case SignatureAuto:
			return sigScheme{method: wire.AuthDigitalSignature, kind: kindRSA, hash: crypto.SHA256}, nil
		case SignatureRSAPSS:
			return sigScheme{method: wire.AuthDigitalSignature, kind: kindRSAPSS, hash: crypto.SHA256, saltLen: crypto.SHA256.Size()}, nil
		default:
			return sigScheme{}, errors.New("classic RSA authentication signs SHA-1, which is not offered; use RFC 7427 signatures")
		}
	}
	return sigScheme{}, fmt.Errorf("unsupported key type %T", pub)
}

func digest(h crypto.Hash, octets []byte) []byte {
	w := h.New()
	w.Write(octets)
	return w.Sum(nil)
}

// sign produces the AUTH payload over octets.
func (s sigScheme) sign(signer crypto.Signer, octets []byte) (*wire.Auth, error) {
	d := digest(s.hash, octets)
	var opts crypto.SignerOpts = s.hash
	if s.kind == kindRSAPSS {
		opts = &rsa.PSSOptions{SaltLength: s.saltLen, Hash: s.hash}
	}
	sig, err := signer.Sign(rand.Reader, d, opts)
	if err != nil {
		return nil, fmt.Errorf("signing AUTH: %w", err)
	}
	if s.method != wire.AuthDigitalSignature {
		_, _, size := classicECDSA(s.method)
		raw, err := ecdsaDERToRaw(sig, size)
		if err != nil {
			return nil, err
		}
		return &wire.Auth{Method: s.method, Data: raw}, nil
	}
	ai, err := s.algorithmIdentifier()
	if err != nil {
		return nil, err
	}
	data := make([]byte, 0, 1+len(ai)+len(sig))
	data = append(append(append(data, byte(len(ai))), ai...), sig...)
	return &wire.Auth{Method: wire.AuthDigitalSignature, Data: data}, nil
}

type ecdsaSig struct{ R, S *big.Int }

func ecdsaDERToRaw(der []byte, size int) ([]byte, error) {
	var sig ecdsaSig
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 ||
		sig.R.BitLen() > 8*size || sig.S.BitLen() > 8*size {
		return nil, errors.New("malformed ECDSA signature from signer")
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, nil
}

func ecdsaRawToDER(raw []byte, size int) ([]byte, error) {
	if len(raw) != 2*size {
		return nil, fmt.Errorf("ECDSA signature is %d bytes, want %d", len(raw), 2*size)
	}
	return asn1.Marshal(ecdsaSig{R: new(big.Int).SetBytes(raw[:size]), S: new(big.Int).SetBytes(raw[size:])})
}

// parseSignatureAuth reads the scheme and signature from a signature AUTH
// payload. It touches only auth's bytes, never a key, so it is what the
// fuzz target exercises.
func parseSignatureAuth(auth *wire.Auth) (sigScheme, []byte, error) {
	switch auth.Method {
	case wire.AuthDigitalSignature:
		if len(auth.Data) < 1 {
			return sigScheme{}, nil, errors.New("empty digital signature AUTH data")
		}
		n := int(auth.Data[0])
		if n == 0 || 1+n >= len(auth.Data) {
			return sigScheme{}, nil, fmt.Errorf("digital signature AUTH data of %d bytes cannot hold a %d-byte algorithm identifier and a signature", len(auth.Data), n)
		}
		s, err := parseAlgorithmIdentifier(auth.Data[1 : 1+n])
		if err != nil {
			return sigScheme{}, nil, err
		}
		return s, auth.Data[1+n:], nil
	case wire.AuthRSASig:
		if len(auth.Data) == 0 {
			return sigScheme{}, nil, errors.New("empty RSA signature")
		}
		return sigScheme{method: wire.AuthRSASig, kind: kindRSA, hash: crypto.SHA1}, auth.Data, nil
	case wire.AuthECDSA256, wire.AuthECDSA384, wire.AuthECDSA521:
		_, h, size := classicECDSA(auth.Method)
		if len(auth.Data) != 2*size {
			return sigScheme{}, nil, fmt.Errorf("ECDSA signature is %d bytes, want %d", len(auth.Data), 2*size)
		}
		return sigScheme{method: auth.Method, kind: kindECDSA, hash: h}, auth.Data, nil
	}
	return sigScheme{}, nil, fmt.Errorf("%s is not supported with certificates", authMethodName(auth.Method))
}

// verifySignatureAuth checks a signature AUTH payload over octets with pub.
func verifySignatureAuth(pub crypto.PublicKey, auth *wire.Auth, octets []byte) error {
	s, sig, err := parseSignatureAuth(auth)
	if err != nil {
		return err
	}
	d := digest(s.hash, octets)
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		if s.kind != kindECDSA {
			return errors.New("RSA signature, but the certificate holds an ECDSA key")
		}
		if s.method != wire.AuthDigitalSignature {
			curve, _, size := classicECDSA(s.method)
			if pub.Curve != curve {
				return fmt.Errorf("method %d needs a %s key, the certificate holds %s", s.method, curve.Params().Name, pub.Curve.Params().Name)
			}
			if sig, err = ecdsaRawToDER(sig, size); err != nil {
				return err
			}
		}
		if !ecdsa.VerifyASN1(pub, d, sig) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		switch s.kind {
		case kindRSA:
			if err := rsa.VerifyPKCS1v15(pub, s.hash, d, sig); err != nil {
				return fmt.Errorf("RSA signature does not verify: %w", err)
			}
			return nil
		case kindRSAPSS:
			if err := rsa.VerifyPSS(pub, s.hash, d, sig, &rsa.PSSOptions{SaltLength: s.saltLen, Hash: s.hash}); err != nil {
				return fmt.Errorf("RSASSA-PSS signature does not verify: %w", err)
			}
			return nil
		}
		return errors.New("ECDSA signature, but the certificate holds an RSA key")
	}
	return fmt.Errorf("unsupported public key type %T", pub)
}
