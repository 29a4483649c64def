package ike

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Distinguished names for ID_DER_ASN1_DN. The string form is strongSwan's:
// "C=CH, O=Example, CN=vpn.example.com", attributes encoded in the order
// written (unlike RFC 4514, which reverses it).

type dnAttr struct {
	name string
	oid  asn1.ObjectIdentifier
	tag  int // 0: PrintableString when possible, else UTF8String
}

func dnAttrs() []dnAttr {
	return []dnAttr{
		{"CN", asn1.ObjectIdentifier{2, 5, 4, 3}, 0},
		{"SN", asn1.ObjectIdentifier{2, 5, 4, 4}, 0},
		{"serialNumber", asn1.ObjectIdentifier{2, 5, 4, 5}, asn1.TagPrintableString},
		{"C", asn1.ObjectIdentifier{2, 5, 4, 6}, asn1.TagPrintableString},
		{"L", asn1.ObjectIdentifier{2, 5, 4, 7}, 0},
		{"ST", asn1.ObjectIdentifier{2, 5, 4, 8}, 0},
		{"S", asn1.ObjectIdentifier{2, 5, 4, 8}, 0},
		{"street", asn1.ObjectIdentifier{2, 5, 4, 9}, 0},
		{"O", asn1.ObjectIdentifier{2, 5, 4, 10}, 0},
		{"OU", asn1.ObjectIdentifier{2, 5, 4, 11}, 0},
		{"title", asn1.ObjectIdentifier{2, 5, 4, 12}, 0},
		{"postalCode", asn1.ObjectIdentifier{2, 5, 4, 17}, 0},
		{"GN", asn1.ObjectIdentifier{2, 5, 4, 42}, 0},
		{"initials", asn1.ObjectIdentifier{2, 5, 4, 43}, 0},
		{"pseudonym", asn1.ObjectIdentifier{2, 5, 4, 65}, 0},
		{"E", asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, asn1.TagIA5String},
		{"emailAddress", asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, asn1.TagIA5String},
		{"UID", asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, 0},
		{"DC", asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, asn1.TagIA5String},
	}
}

func lookupDNAttr(name string) (dnAttr, bool) {
	for _, a := range dnAttrs() {
		if strings.EqualFold(a.name, name) {
			return a, true
		}
	}
	if oid, ok := parseOID(name); ok {
		return dnAttr{name: name, oid: oid}, true
	}
	return dnAttr{}, false
}

func dnAttrName(oid asn1.ObjectIdentifier) string {
	for _, a := range dnAttrs() {
		if a.oid.Equal(oid) {
			return a.name
		}
	}
	return oid.String()
}

func parseOID(s string) (asn1.ObjectIdentifier, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, false
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		if p == "" || len(p) > 9 {
			return nil, false
		}
		n := 0
		for _, c := range p {
			if c < '0' || c > '9' {
				return nil, false
			}
			n = n*10 + int(c-'0')
		}
		oid[i] = n
	}
	return oid, true
}

// looksLikeDN is true when s starts with a known attribute keyword or a
// dotted OID followed by '='.
func looksLikeDN(s string) bool {
	key, _, ok := strings.Cut(s, "=")
	if !ok {
		return false
	}
	_, known := lookupDNAttr(strings.TrimSpace(key))
	return known
}

// splitDN splits "A=1, B=x\,y, C=\"q,r\"" into attribute=value pairs,
// honouring backslash escapes and double quotes.
func splitDN(s string) ([][2]string, error) {
	var out [][2]string
	var key, val strings.Builder
	inKey, quoted, escaped, sawQuote := true, false, false, false
	flush := func() error {
		k := strings.TrimSpace(key.String())
		v := val.String()
		if !sawQuote {
			v = strings.TrimSpace(v)
		}
		if inKey {
			if k == "" && len(out) > 0 {
				return errors.New("empty attribute")
			}
			if k == "" {
				return nil
			}
			return fmt.Errorf("attribute %q has no value", k)
		}
		out = append(out, [2]string{k, v})
		key.Reset()
		val.Reset()
		inKey, sawQuote = true, false
		return nil
	}
	for _, c := range s {
		switch {
		case escaped:
			escaped = false
			if inKey {
				key.WriteRune(c)
			} else {
				val.WriteRune(c)
			}
		case c == '\\':
			escaped = true
		case c == '"' && !inKey:
			quoted = !quoted
			sawQuote = true
		case quoted:
			val.WriteRune(c)
		case c == '=' && inKey:
			inKey = false
		case c == ',':
			if err := flush(); err != nil {
				return nil, err
			}
		case inKey:
			key.WriteRune(c)
		default:
			val.WriteRune(c)
		}
	}
	if escaped || quoted {
		return nil, errors.New("unterminated escape or quote")
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no attributes")
	}
	return out, nil
}

func isPrintableString(s string) bool {
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.ContainsRune(" '()+,-./:=?", c):
		default:
			return false
		}
	}
	return true
}

func isIA5String(s string) bool {
	for _, c := range s {
		if c > 0x7f {
			return false
		}
	}
	return true
}

// encodeDN DER-encodes a DN string as an RDNSequence, one attribute per RDN.
func encodeDN(s string) ([]byte, error) {
	pairs, err := splitDN(s)
	if err != nil {
		return nil, fmt.Errorf("distinguished name: %w", err)
	}
	var seq pkix.RDNSequence
	for _, p := range pairs {
		a, ok := lookupDNAttr(p[0])
		if !ok {
			return nil, fmt.Errorf("distinguished name: unknown attribute %q", p[0])
		}
		if p[1] == "" {
			return nil, fmt.Errorf("distinguished name: attribute %s has an empty value", p[0])
		}
		tag := a.tag
		switch {
		case tag == asn1.TagPrintableString && !isPrintableString(p[1]):
			return nil, fmt.Errorf("distinguished name: %s value %q must be a PrintableString", a.name, p[1])
		case tag == asn1.TagIA5String && !isIA5String(p[1]):
			return nil, fmt.Errorf("distinguished name: %s value %q must be ASCII", a.name, p[1])
		case tag == 0 && isPrintableString(p[1]):
			tag = asn1.TagPrintableString
		case tag == 0:
			tag = asn1.TagUTF8String
		}
		seq = append(seq, []pkix.AttributeTypeAndValue{{
			Type:  a.oid,
			Value: asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: []byte(p[1])},
		}})
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		return nil, fmt.Errorf("distinguished name: %w", err)
	}
	return der, nil
}

// parseDN decodes an RDNSequence; encoding/asn1 hands string-typed
// attribute values back as Go strings.
func parseDN(der []byte) (pkix.RDNSequence, error) {
	var seq pkix.RDNSequence
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing data after distinguished name")
	}
	return seq, nil
}

func dnString(der []byte) (string, error) {
	seq, err := parseDN(der)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, rdn := range seq {
		for _, atv := range rdn {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(dnAttrName(atv.Type))
			b.WriteByte('=')
			if v, ok := asn1ValueString(atv.Value); ok {
				b.WriteString(strings.NewReplacer(`\`, `\\`, `,`, `\,`, `"`, `\"`).Replace(v))
			} else {
				raw, _ := asn1.Marshal(atv.Value)
				b.WriteString("#" + hex.EncodeToString(raw))
			}
		}
	}
	return b.String(), nil
}

// dnEqual compares DNs attribute by attribute; values compare
// case-insensitively whatever ASN.1 string type carries them, because
// certificate tools and strongSwan pick different ones for the same name.
func dnEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	sa, err := parseDN(a)
	if err != nil {
		return false
	}
	sb, err := parseDN(b)
	if err != nil || len(sa) != len(sb) {
		return false
	}
	for i := range sa {
		if len(sa[i]) != len(sb[i]) {
			return false
		}
		for j := range sa[i] {
			x, y := sa[i][j], sb[i][j]
			if !x.Type.Equal(y.Type) {
				return false
			}
			xs, ok1 := asn1ValueString(x.Value)
			ys, ok2 := asn1ValueString(y.Value)
			if !ok1 || !ok2 || !strings.EqualFold(strings.TrimSpace(xs), strings.TrimSpace(ys)) {
				return false
			}
		}
	}
	return true
}

func asn1ValueString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}
