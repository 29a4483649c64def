package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Header is the IKE header (RFC 7296 3.1).
type Header struct {
	SPIi, SPIr  uint64
	NextPayload PayloadType
	Version     uint8
	Exchange    ExchangeType
	Flags       uint8
	MessageID   uint32
	Length      uint32
}

// IsResponse reports the R flag.
func (h Header) IsResponse() bool { return h.Flags&FlagResponse != 0 }

// IsInitiator reports the I flag: the sender is the original initiator.
func (h Header) IsInitiator() bool { return h.Flags&FlagInitiator != 0 }

// Append appends the 28-byte header.
func (h Header) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, h.SPIi)
	b = binary.BigEndian.AppendUint64(b, h.SPIr)
	v := h.Version
	if v == 0 {
		v = Version
	}
	b = append(b, uint8(h.NextPayload), v, uint8(h.Exchange), h.Flags)
	b = binary.BigEndian.AppendUint32(b, h.MessageID)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// DecodeHeader reads the IKE header only, for cheap demultiplexing by SPI.
// It checks the major version and that Length fits the buffer.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrTruncated, len(b), HeaderLen)
	}
	h := Header{
		SPIi:        binary.BigEndian.Uint64(b),
		SPIr:        binary.BigEndian.Uint64(b[8:]),
		NextPayload: PayloadType(b[16]),
		Version:     b[17],
		Exchange:    ExchangeType(b[18]),
		Flags:       b[19],
		MessageID:   be32(b[20:]),
		Length:      be32(b[24:]),
	}
	if h.Version>>4 != 2 {
		return h, malformed("IKE major version %d", h.Version>>4)
	}
	if h.Length < HeaderLen || int64(h.Length) > int64(len(b)) {
		return h, fmt.Errorf("%w: header length %d, have %d bytes", ErrTruncated, h.Length, len(b))
	}
	return h, nil
}

// Message is a decoded IKE message.
type Message struct {
	Header   Header
	Payloads []Payload
}

// Encode serialises a message, setting the Next Payload chain and Length.
// An *Encrypted or *EncryptedFragment, if present, must be last.
func (m *Message) Encode() ([]byte, error) {
	first, body, err := EncodePayloads(m.Payloads)
	if err != nil {
		return nil, err
	}
	h := m.Header
	h.NextPayload = first
	if HeaderLen+len(body) > 0xffffffff {
		return nil, errors.New("ike: message too large")
	}
	h.Length = uint32(HeaderLen + len(body))
	return append(h.Append(make([]byte, 0, int(h.Length))), body...), nil
}

// EncodePayloads serialises a payload chain and returns the type of its
// first payload (for the preceding header's Next Payload).
func EncodePayloads(ps []Payload) (PayloadType, []byte, error) {
	if len(ps) == 0 {
		return PayloadNone, nil, nil
	}
	var b []byte
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].PType()
		}
		switch e := p.(type) {
		case *Encrypted:
			if i != len(ps)-1 {
				return 0, nil, errors.New("ike: SK payload must be last")
			}
			next = e.FirstInner
		case *EncryptedFragment:
			if i != len(ps)-1 {
				return 0, nil, errors.New("ike: SKF payload must be last")
			}
			next = e.FirstInner
		}
		start := len(b)
		crit := uint8(0)
		if u, ok := p.(*Unknown); ok && u.Critical {
			crit = 0x80
		}
		b = append(b, uint8(next), crit, 0, 0)
		var err error
		b, err = p.encodeBody(b)
		if err != nil {
			return 0, nil, fmt.Errorf("encode %s: %w", p.PType(), err)
		}
		if len(b)-start > 0xffff {
			return 0, nil, fmt.Errorf("ike: %s payload too large", p.PType())
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return ps[0].PType(), b, nil
}

// Decode parses a whole message. An SK or SKF payload ends the chain and is
// returned undecrypted.
func Decode(b []byte) (*Message, error) {
	h, err := DecodeHeader(b)
	if err != nil {
		return nil, err
	}
	b = b[:h.Length]
	ps, err := decodeChain(h.NextPayload, b, HeaderLen)
	if err != nil {
		return nil, err
	}
	return &Message{Header: h, Payloads: ps}, nil
}

// DecodePayloads parses a payload chain, such as the decrypted contents of
// an SK payload.
func DecodePayloads(first PayloadType, body []byte) ([]Payload, error) {
	return decodeChain(first, body, 0)
}

// maxPayloads bounds the work one message can cause.
const maxPayloads = 256

func decodeChain(next PayloadType, b []byte, off int) ([]Payload, error) {
	var ps []Payload
	for next != PayloadNone {
		if len(ps) >= maxPayloads {
			return nil, malformed("more than %d payloads", maxPayloads)
		}
		if len(b)-off < genericHeaderLen {
			return nil, fmt.Errorf("%w: %s payload header", ErrTruncated, next)
		}
		nextNext, critical := PayloadType(b[off]), b[off+1]&0x80 != 0
		plen := int(be16(b[off+2:]))
		if plen < genericHeaderLen || off+plen > len(b) {
			return nil, fmt.Errorf("%w: %s payload length %d", ErrTruncated, next, plen)
		}
		body := b[off+genericHeaderLen : off+plen]
		switch next {
		case PayloadSK:
			if off+plen != len(b) {
				return nil, malformed("SK payload is not last")
			}
			ps = append(ps, &Encrypted{FirstInner: nextNext, Data: body, Offset: off + genericHeaderLen})
			return ps, nil
		case PayloadSKF:
			if off+plen != len(b) {
				return nil, malformed("SKF payload is not last")
			}
			if len(body) < 4 {
				return nil, malformed("SKF header")
			}
			f := &EncryptedFragment{Number: be16(body), Total: be16(body[2:]), FirstInner: nextNext,
				Data: body[4:], Offset: off + genericHeaderLen + 4}
			if f.Number == 0 || f.Total == 0 || f.Number > f.Total {
				return nil, malformed("fragment %d of %d", f.Number, f.Total)
			}
			ps = append(ps, f)
			return ps, nil
		}
		p, err := decodeBody(next, critical, body)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
		next = nextNext
		off += plen
	}
	if off != len(b) {
		return nil, malformed("%d bytes after the last payload", len(b)-off)
	}
	return ps, nil
}

// EncryptedHeader returns the IKE header (Next Payload SK, Length for
// bodyLen bytes of SK data) followed by the SK payload's generic header:
// the AAD of an AEAD-protected message and the start of its ICV input.
func EncryptedHeader(h Header, firstInner PayloadType, bodyLen int) []byte {
	h.NextPayload = PayloadSK
	h.Length = uint32(HeaderLen + genericHeaderLen + bodyLen)
	b := h.Append(make([]byte, 0, HeaderLen+genericHeaderLen+bodyLen))
	b = append(b, uint8(firstInner), 0, 0, 0)
	binary.BigEndian.PutUint16(b[HeaderLen+2:], uint16(genericHeaderLen+bodyLen))
	return b
}

// EncryptedFragmentHeader is EncryptedHeader for an SKF payload (RFC 7383
// 2.5): the AAD covers the fragment number and total too. firstInner is
// only sent in fragment 1 (zero in others).
func EncryptedFragmentHeader(h Header, firstInner PayloadType, number, total uint16, bodyLen int) []byte {
	h.NextPayload = PayloadSKF
	h.Length = uint32(HeaderLen + genericHeaderLen + 4 + bodyLen)
	b := h.Append(make([]byte, 0, int(h.Length)))
	if number != 1 {
		firstInner = PayloadNone
	}
	b = append(b, uint8(firstInner), 0, 0, 0)
	binary.BigEndian.PutUint16(b[HeaderLen+2:], uint16(genericHeaderLen+4+bodyLen))
	b = binary.BigEndian.AppendUint16(b, number)
	return binary.BigEndian.AppendUint16(b, total)
}

// Notifies returns the message's Notify payloads.
func (m *Message) Notifies() []*Notify { return NotifiesIn(m.Payloads) }

// FindNotify returns the first notify of type t, or nil.
func (m *Message) FindNotify(t NotifyType) *Notify { return FindNotify(m.Payloads, t) }

// NotifiesIn returns the Notify payloads among ps.
func NotifiesIn(ps []Payload) []*Notify {
	var out []*Notify
	for _, p := range ps {
		if n, ok := p.(*Notify); ok {
			out = append(out, n)
		}
	}
	return out
}

// FindNotify returns the first notify of type t among ps, or nil.
func FindNotify(ps []Payload, t NotifyType) *Notify {
	for _, p := range ps {
		if n, ok := p.(*Notify); ok && n.Type == t {
			return n
		}
	}
	return nil
}

// Find returns the first payload of type t among ps, or nil.
func Find(ps []Payload, t PayloadType) Payload {
	for _, p := range ps {
		if p.PType() == t {
			return p
		}
	}
	return nil
}
