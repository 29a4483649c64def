// Package eap implements the Extensible Authentication Protocol (RFC 3748)
// as IKEv2 carries it in IKE_AUTH (RFC 7296 2.16): the packet format, the
// peer's state machine (Identity, Notification, Nak, Success, Failure) and
// the methods roam speaks, EAP-MSCHAPv2 for now. A small server side exists
// for roam's own gateway and for tests.
//
// The package knows nothing of IKE: it turns EAP packets into EAP packets
// and, when a key-generating method succeeds, yields its MSK.
package eap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Code is an EAP packet's code (RFC 3748 4).
type Code uint8

// EAP codes.
const (
	CodeRequest  Code = 1
	CodeResponse Code = 2
	CodeSuccess  Code = 3
	CodeFailure  Code = 4
)

func (c Code) String() string {
	switch c {
	case CodeRequest:
		return "Request"
	case CodeResponse:
		return "Response"
	case CodeSuccess:
		return "Success"
	case CodeFailure:
		return "Failure"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// Type is the method type of a Request or Response (RFC 3748 5, IANA "EAP
// Method Types").
type Type uint8

// EAP method types roam knows.
const (
	TypeIdentity     Type = 1
	TypeNotification Type = 2
	TypeNak          Type = 3 // legacy Nak, in Responses only
	TypeMD5Challenge Type = 4
	TypeTLS          Type = 13
	TypeMSCHAPv2     Type = 26
	TypeExpanded     Type = 254
)

func (t Type) String() string {
	switch t {
	case TypeIdentity:
		return "Identity"
	case TypeNotification:
		return "Notification"
	case TypeNak:
		return "Nak"
	case TypeMD5Challenge:
		return "MD5-Challenge"
	case TypeTLS:
		return "EAP-TLS"
	case TypeMSCHAPv2:
		return "EAP-MSCHAPv2"
	case TypeExpanded:
		return "expanded type"
	}
	return fmt.Sprintf("EAP type %d", uint8(t))
}

// HeaderLen is Code, Identifier and Length; requests and responses add the
// Type octet.
const HeaderLen = 4

// MaxLen bounds the packets we accept; IKE_AUTH messages carrying EAP stay
// far below it (RFC 3748 3.1 only promises 1020 octets).
const MaxLen = 16384

// Packet is one EAP packet. Type and Data are set for Requests and
// Responses only; Data is the type data after the Type octet.
type Packet struct {
	Code       Code
	Identifier uint8
	Type       Type
	Data       []byte
}

// Parse decodes an EAP packet. Octets beyond the Length field are ignored,
// as RFC 3748 4 asks (they are link-layer padding); a Length larger than
// the input, or a Request/Response without a Type, is an error.
func Parse(b []byte) (*Packet, error) {
	if len(b) < HeaderLen {
		return nil, errors.New("eap: packet shorter than its header")
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n < HeaderLen || n > len(b) || n > MaxLen {
		return nil, fmt.Errorf("eap: bad length %d for a %d-octet packet", n, len(b))
	}
	p := &Packet{Code: Code(b[0]), Identifier: b[1]}
	switch p.Code {
	case CodeRequest, CodeResponse:
		if n < HeaderLen+1 {
			return nil, fmt.Errorf("eap: %s without a type", p.Code)
		}
		p.Type = Type(b[4])
		p.Data = append([]byte(nil), b[5:n]...)
	case CodeSuccess, CodeFailure:
		// RFC 3748 4.2: no data; extra octets up to Length are ignored.
	default:
		return nil, fmt.Errorf("eap: unknown %s", p.Code)
	}
	return p, nil
}

// Encode returns the packet's wire form.
func (p *Packet) Encode() []byte {
	n := HeaderLen
	if p.Code == CodeRequest || p.Code == CodeResponse {
		n += 1 + len(p.Data)
	}
	b := make([]byte, HeaderLen, n)
	b[0], b[1] = byte(p.Code), p.Identifier
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	if n > HeaderLen {
		b = append(b, byte(p.Type))
		b = append(b, p.Data...)
	}
	return b
}

// Method is the peer side of one conversation of an EAP method.
type Method interface {
	Type() Type
	// Process answers a Request's type data with a Response's type data.
	// An error ends the conversation; a *FailureError says the server
	// refused our credentials.
	Process(data []byte) ([]byte, error)
	// Complete reports that the method finished on our side, the server
	// proven where the method does that: an EAP-Success is acceptable.
	Complete() bool
	// MSK is the Master Session Key (RFC 5247), nil until Complete.
	MSK() []byte
}

// FailureError is a refusal by the EAP server. Its text never holds the
// server's free-form message (which it controls) or our credentials.
type FailureError struct {
	Method Type
	// Code is the method's error code when it sent one (MSCHAPv2's E=),
	// else 0.
	Code int
}

func (e *FailureError) Error() string {
	if e.Method == TypeMSCHAPv2 {
		return mschapv2ErrorText(e.Code)
	}
	if e.Method == 0 {
		return "gateway sent EAP-Failure"
	}
	if e.Method == TypeTLS {
		return "EAP-TLS: the gateway refused our certificate (EAP-Failure)"
	}
	return fmt.Sprintf("%s: gateway sent EAP-Failure", e.Method)
}

// Peer runs the client side of EAP over one IKE SA: it answers Identity
// and Notification itself, Naks methods other than its own and hands the
// method's requests to the Method.
type Peer struct {
	identity []byte
	method   Method
	started  bool // the method has seen a request
	done     bool
	lastReq  []byte
	lastResp []byte
	haveLast bool
}

// NewPeer returns a peer that answers EAP-Identity with identity and
// authenticates with m.
func NewPeer(identity []byte, m Method) *Peer {
	return &Peer{identity: append([]byte(nil), identity...), method: m}
}

// Handle processes one EAP packet from the server. It returns the response
// to send, or done when an EAP-Success ended the conversation (then MSK is
// valid). An error ends the conversation: a *FailureError when the server
// refused us, else a protocol violation. A *FailureError may come with a
// response (the method's acknowledgement of the refusal): send it as the
// last word, then give up.
func (p *Peer) Handle(msg []byte) (resp []byte, done bool, err error) {
	if p.done {
		return nil, false, errors.New("eap: packet after EAP-Success")
	}
	pkt, err := Parse(msg)
	if err != nil {
		return nil, false, err
	}
	switch pkt.Code {
	case CodeSuccess:
		if !p.method.Complete() {
			// RFC 3748 4.2: a Success before the method has finished
			// (here: before the server proved itself) must not be
			// accepted.
			return nil, false, fmt.Errorf("eap: EAP-Success before %s completed", p.method.Type())
		}
		p.done = true
		return nil, true, nil
	case CodeFailure:
		if f, ok := p.method.(interface{ Failure() *FailureError }); ok {
			if fe := f.Failure(); fe != nil {
				return nil, false, fe
			}
		}
		return nil, false, &FailureError{Method: p.failedMethod()}
	case CodeResponse:
		return nil, false, errors.New("eap: server sent an EAP-Response")
	}
	// A Request. A retransmitted one gets the same answer (RFC 3748 4.1).
	// The Identifier alone does not tell: strongSwan's methods choose
	// theirs at random, so its EAP-Identity and MSCHAPv2 Challenge share
	// one now and then. Only an identical request is a retransmission.
	if p.haveLast && bytes.Equal(msg, p.lastReq) {
		return p.lastResp, false, nil
	}
	var data []byte
	typ := pkt.Type
	switch pkt.Type {
	case TypeIdentity:
		data = p.identity
	case TypeNotification:
		data = nil // RFC 3748 5.2: the response has no data
	case p.method.Type():
		p.started = true
		data, err = p.method.Process(pkt.Data)
		var fe *FailureError
		if err != nil && (data == nil || !errors.As(err, &fe)) {
			return nil, false, err
		}
	default:
		if p.started || pkt.Type == TypeNak {
			return nil, false, fmt.Errorf("eap: server switched to %s", pkt.Type)
		}
		// RFC 3748 5.3.1: propose the one method we have.
		typ, data = TypeNak, []byte{byte(p.method.Type())}
	}
	out := (&Packet{Code: CodeResponse, Identifier: pkt.Identifier, Type: typ, Data: data}).Encode()
	p.lastReq, p.lastResp, p.haveLast = append([]byte(nil), msg...), out, true
	return out, false, err
}

func (p *Peer) failedMethod() Type {
	if p.started {
		return p.method.Type()
	}
	return 0
}

// MSK returns the method's Master Session Key once Handle reported done.
func (p *Peer) MSK() []byte {
	if !p.done {
		return nil
	}
	return p.method.MSK()
}

// Method returns the peer's method type.
func (p *Peer) Method() Type { return p.method.Type() }

// Close releases what the method holds (EAP-TLS: its TLS goroutine) when
// the conversation ends before it is complete; safe to call any time.
func (p *Peer) Close() {
	if c, ok := p.method.(interface{ Close() }); ok {
		c.Close()
	}
}
