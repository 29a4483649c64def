package eap

import (
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Result is where a server's conversation stands after a response.
type Result int

// Server results.
const (
	Continue  Result = iota // send the returned request
	Succeeded               // send the returned EAP-Success; MSK is valid
	Failed                  // send the returned EAP-Failure
)

type serverState int

const (
	srvIdentity serverState = iota
	srvResponse
	srvSuccessAck
	srvFailureAck
	srvDone
)

// serverName is the Name our Challenges carry (RFC 2759 4).
const serverName = "roam"

// Server is the authenticator side of EAP-MSCHAPv2, for roam's gateway and
// for tests. Passwords come from Lookup, keyed by the MSCHAPv2 Name the
// peer sends.
type Server struct {
	lookup   func(user string) (password []byte, ok bool)
	rand     io.Reader
	id       uint8
	state    serverState
	identity string
	authChal [16]byte
	authResp [20]byte
	msk      []byte
	user     string
}

// NewMSCHAPv2Server returns a server that starts with an EAP-Identity
// request and then runs MSCHAPv2 against the passwords lookup knows.
func NewMSCHAPv2Server(lookup func(user string) ([]byte, bool), rand io.Reader) *Server {
	return &Server{lookup: lookup, rand: rand}
}

// Start returns the first request.
func (s *Server) Start() ([]byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		return nil, fmt.Errorf("eap: identifier: %w", err)
	}
	s.id = b[0]
	s.state = srvIdentity
	return (&Packet{Code: CodeRequest, Identifier: s.id, Type: TypeIdentity}).Encode(), nil
}

// parseResponse parses msg, which must be the peer's Response to our
// request id.
func parseResponse(msg []byte, id uint8) (*Packet, error) {
	pkt, err := Parse(msg)
	if err != nil {
		return nil, err
	}
	if pkt.Code != CodeResponse || pkt.Identifier != id {
		return nil, fmt.Errorf("eap: unexpected %s with identifier %d", pkt.Code, pkt.Identifier)
	}
	return pkt, nil
}

// Identity is what the peer answered to EAP-Identity.
func (s *Server) Identity() string { return s.identity }

// User is the MSCHAPv2 Name the peer authenticated as, once Succeeded.
func (s *Server) User() string { return s.user }

// MSK is the MSK once Handle returned Succeeded.
func (s *Server) MSK() []byte {
	if s.state != srvDone || s.msk == nil {
		return nil
	}
	return append([]byte(nil), s.msk...)
}

// Handle processes a response and returns the next packet to send.
func (s *Server) Handle(msg []byte) ([]byte, Result, error) {
	pkt, err := parseResponse(msg, s.id)
	if err != nil {
		return nil, Failed, err
	}
	fail := func() ([]byte, Result, error) {
		s.state, s.msk = srvDone, nil
		return (&Packet{Code: CodeFailure, Identifier: s.id}).Encode(), Failed, nil
	}
	switch {
	case s.state == srvIdentity && pkt.Type == TypeIdentity:
		s.identity = string(pkt.Data)
		return s.challenge()
	case pkt.Type == TypeNak:
		return fail()
	case pkt.Type != TypeMSCHAPv2:
		return nil, Failed, fmt.Errorf("eap: unexpected %s response", pkt.Type)
	}
	if len(pkt.Data) == 0 {
		return nil, Failed, errors.New("eap-mschapv2: response without an opcode")
	}
	// Success and Failure Responses are the OpCode alone (draft-kamath 2.2).
	switch op := pkt.Data[0]; {
	case s.state == srvResponse && op == opResponse:
		_, _, body, err := parseMSCHAPv2(pkt.Data)
		if err != nil {
			return nil, Failed, err
		}
		return s.response(body)
	case s.state == srvSuccessAck && op == opSuccess:
		s.state = srvDone
		return (&Packet{Code: CodeSuccess, Identifier: s.id}).Encode(), Succeeded, nil
	case s.state == srvFailureAck && op == opFailure:
		return fail()
	}
	return nil, Failed, fmt.Errorf("eap-mschapv2: unexpected opcode %d", pkt.Data[0])
}

func (s *Server) request(data []byte) []byte {
	s.id++
	binary.BigEndian.PutUint16(data[2:4], uint16(len(data)))
	return (&Packet{Code: CodeRequest, Identifier: s.id, Type: TypeMSCHAPv2, Data: data}).Encode()
}

func (s *Server) challenge() ([]byte, Result, error) {
	if _, err := io.ReadFull(s.rand, s.authChal[:]); err != nil {
		return nil, Failed, fmt.Errorf("eap-mschapv2: challenge: %w", err)
	}
	data := []byte{opChallenge, s.id + 1, 0, 0, 16}
	data = append(data, s.authChal[:]...)
	data = append(data, serverName...)
	s.state = srvResponse
	return s.request(data), Continue, nil
}

func (s *Server) response(body []byte) ([]byte, Result, error) {
	// Value-Size 49, Peer-Challenge, Reserved, NT-Response, Flags, Name.
	if len(body) < 50 || body[0] != 49 {
		return nil, Failed, errors.New("eap-mschapv2: malformed Response")
	}
	var peerChal [16]byte
	copy(peerChal[:], body[1:17])
	got := body[25:49]
	name := string(body[50:])
	ok := false
	var nt [24]byte
	var pwHash [16]byte
	if pw, known := s.lookup(name); known {
		if h, err := NTPasswordHash(pw); err == nil {
			pwHash = h
			user := hashUsername(name)
			nt = GenerateNTResponse(s.authChal, peerChal, user, pwHash)
			ok = subtle.ConstantTimeCompare(nt[:], got) == 1
			if ok {
				s.authResp = AuthenticatorResponse(pwHash, nt, peerChal, s.authChal, user)
			}
		}
	}
	mid := s.id + 1
	if !ok {
		// R=0: no retries; the peer answers with a Failure Response.
		msg := fmt.Sprintf("E=%d R=0 C=%s V=3 M=Authentication failed", errAuthenticationFail,
			strings.ToUpper(hex.EncodeToString(s.authChal[:])))
		s.state = srvFailureAck
		return s.request(append([]byte{opFailure, mid, 0, 0}, msg...)), Continue, nil
	}
	s.user = name
	s.msk = GenerateMSK(pwHash, nt)
	msg := "S=" + strings.ToUpper(hex.EncodeToString(s.authResp[:])) + " M=Welcome"
	s.state = srvSuccessAck
	return s.request(append([]byte{opSuccess, mid, 0, 0}, msg...)), Continue, nil
}
