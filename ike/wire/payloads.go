package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Payload is one decoded payload; the concrete types below are used as
// pointers. PType is not named Type because Notify has a Type field.
type Payload interface {
	PType() PayloadType
	// encodeBody appends the payload body (without the generic header).
	encodeBody(b []byte) ([]byte, error)
}

// SA is the Security Association payload.
type SA struct{ Proposals []Proposal }

// Proposal is one proposal substructure.
type Proposal struct {
	Number     uint8
	Protocol   ProtocolID
	SPI        []byte
	Transforms []Transform
}

// Transform is one transform substructure; KeyLength 0 means no Key Length
// attribute.
type Transform struct {
	Type      TransformType
	ID        uint16
	KeyLength uint16
}

// KE is the Key Exchange payload.
type KE struct {
	Group uint16
	Data  []byte
}

// Identification is IDi, or IDr when Responder is set.
type Identification struct {
	Responder bool
	IDType    IDType
	Data      []byte
}

// Cert is a Certificate payload.
type Cert struct {
	Encoding uint8
	Data     []byte
}

// CertReq is a Certificate Request payload.
type CertReq struct {
	Encoding uint8
	Data     []byte
}

// Auth is the Authentication payload.
type Auth struct {
	Method AuthMethod
	Data   []byte
}

// Nonce is Ni or Nr.
type Nonce struct{ Data []byte }

// Notify is a Notify payload.
type Notify struct {
	Protocol ProtocolID
	SPI      []byte
	Type     NotifyType
	Data     []byte
}

// Delete is a Delete payload.
type Delete struct {
	Protocol ProtocolID
	SPISize  uint8
	SPIs     [][]byte
}

// VendorID is a Vendor ID payload.
type VendorID struct{ Data []byte }

// TrafficSelectors is TSi, or TSr when Responder is set.
type TrafficSelectors struct {
	Responder bool
	Selectors []TrafficSelector
}

// TrafficSelector is one address range; its type (7 or 8) follows from the
// address family.
type TrafficSelector struct {
	IPProtocol         uint8
	StartPort, EndPort uint16
	Start, End         netip.Addr
}

// Encrypted is the SK payload as received: Data is IV | ciphertext | ICV and
// Offset its index in the whole message, so msg[:Offset] is the AAD.
type Encrypted struct {
	FirstInner PayloadType
	Data       []byte
	Offset     int
}

// EncryptedFragment is the SKF payload (RFC 7383).
type EncryptedFragment struct {
	Number, Total uint16
	FirstInner    PayloadType
	Data          []byte
	Offset        int
}

// Config is the Configuration payload.
type Config struct {
	CfgType    uint8
	Attributes []ConfigAttribute
}

// ConfigAttribute is one CP attribute.
type ConfigAttribute struct {
	Type  uint16
	Value []byte
}

// EAP carries an EAP message.
type EAP struct{ Data []byte }

// Unknown keeps a non-critical payload this package does not know.
type Unknown struct {
	PayloadType PayloadType
	Critical    bool
	Data        []byte
}

func (*SA) PType() PayloadType       { return PayloadSA }
func (*KE) PType() PayloadType       { return PayloadKE }
func (*Cert) PType() PayloadType     { return PayloadCERT }
func (*CertReq) PType() PayloadType  { return PayloadCERTREQ }
func (*Auth) PType() PayloadType     { return PayloadAUTH }
func (*Nonce) PType() PayloadType    { return PayloadNonce }
func (*Notify) PType() PayloadType   { return PayloadNotify }
func (*Delete) PType() PayloadType   { return PayloadDelete }
func (*VendorID) PType() PayloadType { return PayloadVendorID }
func (*Encrypted) PType() PayloadType {
	return PayloadSK
}
func (*EncryptedFragment) PType() PayloadType { return PayloadSKF }
func (*Config) PType() PayloadType            { return PayloadCP }
func (*EAP) PType() PayloadType               { return PayloadEAP }
func (u *Unknown) PType() PayloadType         { return u.PayloadType }
func (id *Identification) PType() PayloadType {
	if id.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}
func (ts *TrafficSelectors) PType() PayloadType {
	if ts.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

// Errors returned by Decode; the engine counts them as malformed input.
var (
	ErrTruncated = errors.New("ike: truncated")
	ErrMalformed = errors.New("ike: malformed")
)

// UnsupportedCriticalPayloadError is returned for an unknown payload with
// the critical bit set; the engine answers UNSUPPORTED_CRITICAL_PAYLOAD.
type UnsupportedCriticalPayloadError struct{ Type PayloadType }

func (e *UnsupportedCriticalPayloadError) Error() string {
	return fmt.Sprintf("ike: unsupported critical payload %d", uint8(e.Type))
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// clone copies b out of the packet buffer; empty becomes nil so decoded and
// constructed payloads compare equal.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte{}, b...)
}

// --- SA ---

func (p *SA) encodeBody(b []byte) ([]byte, error) {
	if len(p.Proposals) == 0 {
		return nil, errors.New("ike: SA payload without proposals")
	}
	for i, pr := range p.Proposals {
		if len(pr.SPI) > 255 || len(pr.Transforms) > 255 {
			return nil, errors.New("ike: proposal too large")
		}
		start := len(b)
		last := uint8(2)
		if i == len(p.Proposals)-1 {
			last = 0
		}
		num := pr.Number
		if num == 0 {
			num = uint8(i + 1)
		}
		b = append(b, last, 0, 0, 0, num, uint8(pr.Protocol), uint8(len(pr.SPI)), uint8(len(pr.Transforms)))
		b = append(b, pr.SPI...)
		for j, t := range pr.Transforms {
			tstart := len(b)
			tl := uint8(3)
			if j == len(pr.Transforms)-1 {
				tl = 0
			}
			b = append(b, tl, 0, 0, 0, uint8(t.Type), 0, 0, 0)
			binary.BigEndian.PutUint16(b[tstart+6:], t.ID)
			if t.KeyLength != 0 {
				b = append(b, 0x80|(attrKeyLength>>8), attrKeyLength&0xff, 0, 0)
				binary.BigEndian.PutUint16(b[len(b)-2:], t.KeyLength)
			}
			binary.BigEndian.PutUint16(b[tstart+2:], uint16(len(b)-tstart))
		}
		if len(b)-start > 0xffff {
			return nil, errors.New("ike: proposal too large")
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b, nil
}

func decodeSA(body []byte) (*SA, error) {
	sa := &SA{}
	for len(body) > 0 {
		if len(body) < 8 {
			return nil, malformed("proposal header")
		}
		last, plen := body[0], int(be16(body[2:]))
		if plen < 8 || plen > len(body) || (last != 0 && last != 2) {
			return nil, malformed("proposal length %d", plen)
		}
		pb := body[:plen]
		body = body[plen:]
		pr := Proposal{Number: pb[4], Protocol: ProtocolID(pb[5])}
		spiSize, ntrans := int(pb[6]), int(pb[7])
		if 8+spiSize > len(pb) {
			return nil, malformed("proposal SPI size %d", spiSize)
		}
		pr.SPI = clone(pb[8 : 8+spiSize])
		tb := pb[8+spiSize:]
		for len(tb) > 0 {
			if len(tb) < 8 {
				return nil, malformed("transform header")
			}
			tlast, tlen := tb[0], int(be16(tb[2:]))
			if tlen < 8 || tlen > len(tb) || (tlast != 0 && tlast != 3) {
				return nil, malformed("transform length %d", tlen)
			}
			t := Transform{Type: TransformType(tb[4]), ID: be16(tb[6:])}
			attrs := tb[8:tlen]
			for len(attrs) > 0 {
				if len(attrs) < 4 {
					return nil, malformed("transform attribute")
				}
				typ := be16(attrs)
				if typ&0x8000 != 0 { // TV
					if typ&0x7fff == attrKeyLength {
						t.KeyLength = be16(attrs[2:])
					}
					attrs = attrs[4:]
					continue
				}
				alen := int(be16(attrs[2:]))
				if 4+alen > len(attrs) {
					return nil, malformed("transform attribute length")
				}
				attrs = attrs[4+alen:]
			}
			pr.Transforms = append(pr.Transforms, t)
			tb = tb[tlen:]
			if tlast == 0 && len(tb) > 0 {
				return nil, malformed("data after last transform")
			}
		}
		if len(pr.Transforms) != ntrans {
			return nil, malformed("proposal claims %d transforms, has %d", ntrans, len(pr.Transforms))
		}
		sa.Proposals = append(sa.Proposals, pr)
		if last == 0 && len(body) > 0 {
			return nil, malformed("data after last proposal")
		}
	}
	if len(sa.Proposals) == 0 {
		return nil, malformed("SA without proposals")
	}
	return sa, nil
}

// --- simple payloads ---

func (p *KE) encodeBody(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, p.Group)
	b = append(b, 0, 0)
	return append(b, p.Data...), nil
}

func (p *Identification) encodeBody(b []byte) ([]byte, error) {
	b = append(b, uint8(p.IDType), 0, 0, 0)
	return append(b, p.Data...), nil
}

func (p *Cert) encodeBody(b []byte) ([]byte, error) {
	return append(append(b, p.Encoding), p.Data...), nil
}

func (p *CertReq) encodeBody(b []byte) ([]byte, error) {
	return append(append(b, p.Encoding), p.Data...), nil
}

func (p *Auth) encodeBody(b []byte) ([]byte, error) {
	b = append(b, uint8(p.Method), 0, 0, 0)
	return append(b, p.Data...), nil
}

func (p *Nonce) encodeBody(b []byte) ([]byte, error) { return append(b, p.Data...), nil }

func (p *Notify) encodeBody(b []byte) ([]byte, error) {
	if len(p.SPI) > 255 {
		return nil, errors.New("ike: notify SPI too long")
	}
	b = append(b, uint8(p.Protocol), uint8(len(p.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(p.Type))
	b = append(b, p.SPI...)
	return append(b, p.Data...), nil
}

func (p *Delete) encodeBody(b []byte) ([]byte, error) {
	if len(p.SPIs) > 0xffff {
		return nil, errors.New("ike: too many SPIs")
	}
	b = append(b, uint8(p.Protocol), p.SPISize)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.SPIs)))
	for _, s := range p.SPIs {
		if len(s) != int(p.SPISize) {
			return nil, errors.New("ike: delete SPI of wrong size")
		}
		b = append(b, s...)
	}
	return b, nil
}

func (p *VendorID) encodeBody(b []byte) ([]byte, error) { return append(b, p.Data...), nil }
func (p *EAP) encodeBody(b []byte) ([]byte, error)      { return append(b, p.Data...), nil }
func (p *Unknown) encodeBody(b []byte) ([]byte, error)  { return append(b, p.Data...), nil }

func (p *Encrypted) encodeBody(b []byte) ([]byte, error) { return append(b, p.Data...), nil }

func (p *EncryptedFragment) encodeBody(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, p.Number)
	b = binary.BigEndian.AppendUint16(b, p.Total)
	return append(b, p.Data...), nil
}

func (p *Config) encodeBody(b []byte) ([]byte, error) {
	b = append(b, p.CfgType, 0, 0, 0)
	for _, a := range p.Attributes {
		if a.Type&0x8000 != 0 || len(a.Value) > 0xffff {
			return nil, errors.New("ike: bad configuration attribute")
		}
		b = binary.BigEndian.AppendUint16(b, a.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.Value)))
		b = append(b, a.Value...)
	}
	return b, nil
}

func (p *TrafficSelectors) encodeBody(b []byte) ([]byte, error) {
	if len(p.Selectors) > 255 {
		return nil, errors.New("ike: too many traffic selectors")
	}
	b = append(b, uint8(len(p.Selectors)), 0, 0, 0)
	for _, ts := range p.Selectors {
		if !ts.Start.IsValid() || !ts.End.IsValid() || ts.Start.Is4() != ts.End.Is4() {
			return nil, errors.New("ike: traffic selector with bad addresses")
		}
		typ, n := uint8(7), 16
		if !ts.Start.Is4() {
			typ, n = 8, 40
		}
		b = append(b, typ, ts.IPProtocol)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = binary.BigEndian.AppendUint16(b, ts.StartPort)
		b = binary.BigEndian.AppendUint16(b, ts.EndPort)
		b = append(b, ts.Start.AsSlice()...)
		b = append(b, ts.End.AsSlice()...)
	}
	return b, nil
}

func decodeTS(body []byte, responder bool) (*TrafficSelectors, error) {
	if len(body) < 4 {
		return nil, malformed("TS header")
	}
	n := int(body[0])
	p := &TrafficSelectors{Responder: responder}
	rest := body[4:]
	for i := 0; i < n; i++ {
		if len(rest) < 8 {
			return nil, malformed("traffic selector header")
		}
		typ, l := rest[0], int(be16(rest[2:]))
		var alen int
		switch typ {
		case 7:
			alen = 4
		case 8:
			alen = 16
		default:
			return nil, malformed("traffic selector type %d", typ)
		}
		if l != 8+2*alen || l > len(rest) {
			return nil, malformed("traffic selector length %d", l)
		}
		start, _ := netip.AddrFromSlice(rest[8 : 8+alen])
		end, _ := netip.AddrFromSlice(rest[8+alen : 8+2*alen])
		p.Selectors = append(p.Selectors, TrafficSelector{
			IPProtocol: rest[1], StartPort: be16(rest[4:]), EndPort: be16(rest[6:]), Start: start, End: end,
		})
		rest = rest[l:]
	}
	if len(rest) != 0 {
		return nil, malformed("data after traffic selectors")
	}
	return p, nil
}

func decodeConfig(body []byte) (*Config, error) {
	if len(body) < 4 {
		return nil, malformed("CP header")
	}
	c := &Config{CfgType: body[0]}
	rest := body[4:]
	for len(rest) > 0 {
		if len(rest) < 4 {
			return nil, malformed("CP attribute header")
		}
		typ, l := be16(rest)&0x7fff, int(be16(rest[2:]))
		if 4+l > len(rest) {
			return nil, malformed("CP attribute length %d", l)
		}
		c.Attributes = append(c.Attributes, ConfigAttribute{Type: typ, Value: clone(rest[4 : 4+l])})
		rest = rest[4+l:]
	}
	return c, nil
}

func decodeBody(t PayloadType, critical bool, body []byte) (Payload, error) {
	switch t {
	case PayloadSA:
		return decodeSA(body)
	case PayloadKE:
		if len(body) < 4 {
			return nil, malformed("KE")
		}
		return &KE{Group: be16(body), Data: clone(body[4:])}, nil
	case PayloadIDi, PayloadIDr:
		if len(body) < 4 {
			return nil, malformed("ID")
		}
		return &Identification{Responder: t == PayloadIDr, IDType: IDType(body[0]), Data: clone(body[4:])}, nil
	case PayloadCERT:
		if len(body) < 1 {
			return nil, malformed("CERT")
		}
		return &Cert{Encoding: body[0], Data: clone(body[1:])}, nil
	case PayloadCERTREQ:
		if len(body) < 1 {
			return nil, malformed("CERTREQ")
		}
		return &CertReq{Encoding: body[0], Data: clone(body[1:])}, nil
	case PayloadAUTH:
		if len(body) < 4 {
			return nil, malformed("AUTH")
		}
		return &Auth{Method: AuthMethod(body[0]), Data: clone(body[4:])}, nil
	case PayloadNonce:
		return &Nonce{Data: clone(body)}, nil
	case PayloadNotify:
		if len(body) < 4 {
			return nil, malformed("notify")
		}
		spiSize := int(body[1])
		if 4+spiSize > len(body) {
			return nil, malformed("notify SPI size %d", spiSize)
		}
		return &Notify{Protocol: ProtocolID(body[0]), Type: NotifyType(be16(body[2:])),
			SPI: clone(body[4 : 4+spiSize]), Data: clone(body[4+spiSize:])}, nil
	case PayloadDelete:
		if len(body) < 4 {
			return nil, malformed("delete")
		}
		d := &Delete{Protocol: ProtocolID(body[0]), SPISize: body[1]}
		n, size := int(be16(body[2:])), int(body[1])
		if len(body)-4 != n*size || (size == 0 && n != 0) {
			return nil, malformed("delete of %d SPIs of %d bytes in %d", n, size, len(body)-4)
		}
		for i := 0; i < n; i++ {
			d.SPIs = append(d.SPIs, clone(body[4+i*size:4+(i+1)*size]))
		}
		return d, nil
	case PayloadVendorID:
		return &VendorID{Data: clone(body)}, nil
	case PayloadTSi, PayloadTSr:
		return decodeTS(body, t == PayloadTSr)
	case PayloadCP:
		return decodeConfig(body)
	case PayloadEAP:
		return &EAP{Data: clone(body)}, nil
	}
	if critical {
		return nil, &UnsupportedCriticalPayloadError{Type: t}
	}
	return &Unknown{PayloadType: t, Data: clone(body)}, nil
}
