package eap

import (
	"crypto/des"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/crypto/md4"
)

// MS-CHAPv2 opcodes (RFC 2759 as framed by draft-kamath-pppext-eap-mschapv2).
const (
	opChallenge = 1
	opResponse  = 2
	opSuccess   = 3
	opFailure   = 4
)

// MS-CHAPv2 error codes a server sends in E= (RFC 2759 6).
const (
	errRestrictedLogonHours = 646
	errAccountDisabled      = 647
	errPasswordExpired      = 648
	errNoDialinPermission   = 649
	errAuthenticationFail   = 691
	errChangingPassword     = 709
)

// MSKLen is the EAP-MSCHAPv2 MSK: MasterReceiveKey and MasterSendKey of
// RFC 3079 (16 octets each) and 32 zero octets, the layout strongSwan and
// Windows use for IKEv2.
const MSKLen = 64

// maxPasswordRunes is RFC 2759's limit of 256 Unicode characters.
const maxPasswordRunes = 256

// mschapv2Header is OpCode, MS-CHAPv2-ID and MS-Length.
const mschapv2Header = 4

func mschapv2ErrorText(code int) string {
	switch code {
	case errAuthenticationFail:
		return "EAP-MSCHAPv2 rejected the username or password"
	case errRestrictedLogonHours:
		return "EAP-MSCHAPv2: logon not permitted at this time (error 646)"
	case errAccountDisabled:
		return "EAP-MSCHAPv2: account disabled (error 647)"
	case errPasswordExpired:
		return "EAP-MSCHAPv2: password expired (error 648)"
	case errNoDialinPermission:
		return "EAP-MSCHAPv2: no dial-in permission (error 649)"
	case errChangingPassword:
		return "EAP-MSCHAPv2: password change failed (error 709)"
	case 0:
		return "EAP-MSCHAPv2 rejected the username or password (EAP-Failure)"
	}
	return fmt.Sprintf("EAP-MSCHAPv2 failed with error %d", code)
}

type mschapState int

const (
	mschapExpectChallenge mschapState = iota
	mschapExpectSuccess
	mschapDone
	mschapFailed
)

// MSCHAPv2 is the peer side of EAP-MSCHAPv2. It keeps the NT hash of the
// password, never the password itself.
type MSCHAPv2 struct {
	username string
	pwHash   [16]byte
	rand     io.Reader
	state    mschapState
	authResp [20]byte
	msk      []byte
	failure  *FailureError
}

// NewMSCHAPv2 returns the method for username (sent as Name; a
// "DOMAIN\user" form is hashed without its domain, as RFC 2759 asks) and
// password (UTF-8). rand supplies the Peer-Challenge. The caller may wipe
// password afterwards.
func NewMSCHAPv2(username string, password []byte, rand io.Reader) (*MSCHAPv2, error) {
	if username == "" {
		return nil, errors.New("eap-mschapv2: empty username")
	}
	if len(username) > 255 {
		return nil, errors.New("eap-mschapv2: username longer than 255 octets")
	}
	h, err := NTPasswordHash(password)
	if err != nil {
		return nil, err
	}
	return NewMSCHAPv2Hash(username, h, rand)
}

// NewMSCHAPv2Hash is NewMSCHAPv2 with the password's NT hash, which is what
// a long-lived authenticator keeps instead of the password.
func NewMSCHAPv2Hash(username string, pwHash [16]byte, rand io.Reader) (*MSCHAPv2, error) {
	if username == "" {
		return nil, errors.New("eap-mschapv2: empty username")
	}
	if len(username) > 255 {
		return nil, errors.New("eap-mschapv2: username longer than 255 octets")
	}
	return &MSCHAPv2{username: username, pwHash: pwHash, rand: rand}, nil
}

// Type is TypeMSCHAPv2.
func (m *MSCHAPv2) Type() Type { return TypeMSCHAPv2 }

// Complete reports that the server's authenticator response checked out.
func (m *MSCHAPv2) Complete() bool { return m.state == mschapDone }

// MSK returns the 64-octet MSK after Complete.
func (m *MSCHAPv2) MSK() []byte {
	if m.state != mschapDone {
		return nil
	}
	return append([]byte(nil), m.msk...)
}

// Failure returns the server's refusal, if it sent one.
func (m *MSCHAPv2) Failure() *FailureError { return m.failure }

// Process answers a Challenge with a Response, a Success with a Success
// Response (after checking the server's S= value) and a Failure with a
// Failure Response, which it returns together with the *FailureError:
// the caller sends it and gives up, as draft-kamath 2.2 has a peer that
// does not retry.
func (m *MSCHAPv2) Process(data []byte) ([]byte, error) {
	op, id, body, err := parseMSCHAPv2(data)
	if err != nil {
		return nil, err
	}
	switch {
	case m.state == mschapExpectChallenge && op == opChallenge:
		return m.challenge(id, body)
	case m.state == mschapExpectSuccess && op == opSuccess:
		return m.success(body)
	case m.state == mschapExpectSuccess && op == opFailure:
		m.state = mschapFailed
		m.failure = &FailureError{Method: TypeMSCHAPv2, Code: parseFailureCode(body)}
		return []byte{opFailure}, m.failure
	}
	return nil, fmt.Errorf("eap-mschapv2: unexpected opcode %d", op)
}

// parseMSCHAPv2 splits type data into OpCode, MS-CHAPv2-ID and the rest.
// MS-Length is checked against what arrived but a shorter one is honoured
// (the remainder is padding).
func parseMSCHAPv2(data []byte) (op, id byte, body []byte, err error) {
	if len(data) < mschapv2Header {
		return 0, 0, nil, errors.New("eap-mschapv2: message shorter than its header")
	}
	n := int(binary.BigEndian.Uint16(data[2:4]))
	if n < mschapv2Header || n > len(data) {
		return 0, 0, nil, fmt.Errorf("eap-mschapv2: MS-Length %d for %d octets", n, len(data))
	}
	return data[0], data[1], data[mschapv2Header:n], nil
}

func (m *MSCHAPv2) challenge(id byte, body []byte) ([]byte, error) {
	// Value-Size, Challenge (16), Name.
	if len(body) < 17 || body[0] != 16 {
		return nil, errors.New("eap-mschapv2: malformed Challenge")
	}
	var authChal, peerChal [16]byte
	copy(authChal[:], body[1:17])
	if _, err := io.ReadFull(m.rand, peerChal[:]); err != nil {
		return nil, fmt.Errorf("eap-mschapv2: peer challenge: %w", err)
	}
	user := hashUsername(m.username)
	nt := GenerateNTResponse(authChal, peerChal, user, m.pwHash)
	m.authResp = AuthenticatorResponse(m.pwHash, nt, peerChal, authChal, user)
	m.msk = GenerateMSK(m.pwHash, nt)
	m.state = mschapExpectSuccess
	// Value-Size 49: Peer-Challenge, 8 reserved, NT-Response, Flags.
	out := make([]byte, mschapv2Header, mschapv2Header+1+49+len(m.username))
	out[0], out[1] = opResponse, id
	out = append(out, 49)
	out = append(out, peerChal[:]...)
	out = append(out, make([]byte, 8)...)
	out = append(out, nt[:]...)
	out = append(out, 0)
	out = append(out, m.username...)
	binary.BigEndian.PutUint16(out[2:4], uint16(len(out)))
	return out, nil
}

func (m *MSCHAPv2) success(body []byte) ([]byte, error) {
	got, ok := parseAuthenticatorResponse(body)
	if !ok || subtle.ConstantTimeCompare(got, m.authResp[:]) != 1 {
		// The server does not know our password (or is not the server
		// we talked to): RFC 2759 8 makes the peer end the session.
		m.state = mschapFailed
		return nil, errors.New("eap-mschapv2: gateway's authenticator response is wrong: it does not know the password")
	}
	m.state = mschapDone
	// The Success Response is the OpCode alone (draft-kamath 2.2).
	return []byte{opSuccess}, nil
}

// parseAuthenticatorResponse finds "S=<40 hex digits>" in a Success
// message ("S=... M=...").
func parseAuthenticatorResponse(body []byte) ([]byte, bool) {
	for _, tok := range strings.Fields(strings.TrimRight(string(body), "\x00")) {
		if v, ok := strings.CutPrefix(tok, "S="); ok {
			if len(v) != 40 {
				return nil, false
			}
			b, err := hex.DecodeString(v)
			return b, err == nil
		}
	}
	return nil, false
}

// parseFailureCode reads E= from "E=eeeeeeeeee R=r C=... V=v M=...".
func parseFailureCode(body []byte) int {
	for _, tok := range strings.Fields(strings.TrimRight(string(body), "\x00")) {
		if v, ok := strings.CutPrefix(tok, "E="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 1<<31 {
				return n
			}
		}
	}
	return 0
}

// hashUsername is the UserName the challenge hash covers: without a
// "DOMAIN\" prefix (RFC 2759 8.2, as Windows and strongSwan do).
func hashUsername(u string) string {
	if _, user, ok := strings.Cut(u, `\`); ok {
		return user
	}
	return u
}

// NTPasswordHash is MD4 over the password in UTF-16LE (RFC 2759 8.3).
func NTPasswordHash(password []byte) ([16]byte, error) {
	var h [16]byte
	if !utf8.Valid(password) {
		return h, errors.New("eap-mschapv2: password is not valid UTF-8")
	}
	runes := []rune(string(password))
	if len(runes) > maxPasswordRunes {
		return h, fmt.Errorf("eap-mschapv2: password longer than %d characters", maxPasswordRunes)
	}
	u := utf16.Encode(runes)
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	d := md4.New()
	d.Write(b)
	copy(h[:], d.Sum(nil))
	clear(b)
	return h, nil
}

func hashNTPasswordHash(h [16]byte) [16]byte {
	var out [16]byte
	d := md4.New()
	d.Write(h[:])
	copy(out[:], d.Sum(nil))
	return out
}

// ChallengeHash is RFC 2759 8.2.
func ChallengeHash(peerChal, authChal [16]byte, username string) [8]byte {
	d := sha1.New()
	d.Write(peerChal[:])
	d.Write(authChal[:])
	d.Write([]byte(username))
	var out [8]byte
	copy(out[:], d.Sum(nil))
	return out
}

// ChallengeResponse is RFC 2759 8.5: the challenge DES-encrypted under the
// three 7-octet thirds of the zero-padded password hash.
func ChallengeResponse(challenge [8]byte, pwHash [16]byte) [24]byte {
	var z [21]byte
	copy(z[:], pwHash[:])
	var out [24]byte
	for i := range 3 {
		c, err := des.NewCipher(desKey(z[7*i : 7*i+7]))
		if err != nil {
			panic("eap: DES rejected an 8-octet key") // des.NewCipher fails only on length
		}
		c.Encrypt(out[8*i:], challenge[:])
	}
	return out
}

// desKey spreads 56 key bits over 8 octets (RFC 2759 8.6); the parity bits
// are left zero, which crypto/des ignores.
func desKey(k []byte) []byte {
	v := uint64(0)
	for _, b := range k {
		v = v<<8 | uint64(b)
	}
	out := make([]byte, 8)
	for i := range 8 {
		out[i] = byte(v>>(56-7*(i+1))) << 1
	}
	return out
}

// GenerateNTResponse is RFC 2759 8.1.
func GenerateNTResponse(authChal, peerChal [16]byte, username string, pwHash [16]byte) [24]byte {
	return ChallengeResponse(ChallengeHash(peerChal, authChal, username), pwHash)
}

var (
	authMagic1 = []byte("Magic server to client signing constant")
	authMagic2 = []byte("Pad to make it do more than one iteration")
	keyMagic1  = []byte("This is the MPPE Master Key")
	// keyMagic2 gives the client's send key, keyMagic3 its receive key
	// (RFC 3079 3.4).
	keyMagic2 = []byte("On the client side, this is the send key; on the server side, it is the receive key.")
	keyMagic3 = []byte("On the client side, this is the receive key; on the server side, it is the send key.")
)

// AuthenticatorResponse is RFC 2759 8.7 without the "S=" and hex encoding.
func AuthenticatorResponse(pwHash [16]byte, nt [24]byte, peerChal, authChal [16]byte, username string) [20]byte {
	hh := hashNTPasswordHash(pwHash)
	d := sha1.New()
	d.Write(hh[:])
	d.Write(nt[:])
	d.Write(authMagic1)
	digest := d.Sum(nil)
	ch := ChallengeHash(peerChal, authChal, username)
	d.Reset()
	d.Write(digest)
	d.Write(ch[:])
	d.Write(authMagic2)
	var out [20]byte
	copy(out[:], d.Sum(nil))
	return out
}

// MasterKey is RFC 3079 3.4 GetMasterKey.
func MasterKey(pwHash [16]byte, nt [24]byte) [16]byte {
	hh := hashNTPasswordHash(pwHash)
	d := sha1.New()
	d.Write(hh[:])
	d.Write(nt[:])
	d.Write(keyMagic1)
	var out [16]byte
	copy(out[:], d.Sum(nil))
	return out
}

// asymmetricStartKey is RFC 3079 3.4 GetAsymmetricStartKey for 128-bit
// keys with the given magic.
func asymmetricStartKey(master [16]byte, magic []byte) []byte {
	var pad1 [40]byte
	pad2 := [40]byte{}
	for i := range pad2 {
		pad2[i] = 0xf2
	}
	d := sha1.New()
	d.Write(master[:])
	d.Write(pad1[:])
	d.Write(magic)
	d.Write(pad2[:])
	return d.Sum(nil)[:16]
}

// GenerateMSK returns the EAP-MSCHAPv2 MSK: the server's receive key, its
// send key (that is, the client's send key, then the client's receive key)
// and 32 zero octets, as strongSwan's eap-mschapv2 plugin and Windows lay
// it out.
func GenerateMSK(pwHash [16]byte, nt [24]byte) []byte {
	mk := MasterKey(pwHash, nt)
	msk := make([]byte, 0, MSKLen)
	msk = append(msk, asymmetricStartKey(mk, keyMagic2)...)
	msk = append(msk, asymmetricStartKey(mk, keyMagic3)...)
	return append(msk, make([]byte, 32)...)
}
