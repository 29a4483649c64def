// Package wire encodes and decodes IKEv2 messages (RFC 7296) and holds the
// protocol's numbers. It knows nothing of keys or sockets: an SK payload is
// decoded as its ciphertext, for the engine to open.
package wire

import "fmt"

// ExchangeType is the IKE header's exchange type.
type ExchangeType uint8

const (
	ExchangeIKESAInit     ExchangeType = 34
	ExchangeIKEAuth       ExchangeType = 35
	ExchangeCreateChildSA ExchangeType = 36
	ExchangeInformational ExchangeType = 37
	// RFC 9242: exchanges between IKE_SA_INIT and IKE_AUTH, protected
	// with the keys IKE_SA_INIT (or the one before) made.
	ExchangeIKEIntermediate ExchangeType = 43
	// RFC 9370 2.2.4: the additional key exchanges of a CREATE_CHILD_SA.
	ExchangeIKEFollowupKE ExchangeType = 44
)

func (e ExchangeType) String() string {
	switch e {
	case ExchangeIKESAInit:
		return "IKE_SA_INIT"
	case ExchangeIKEAuth:
		return "IKE_AUTH"
	case ExchangeCreateChildSA:
		return "CREATE_CHILD_SA"
	case ExchangeInformational:
		return "INFORMATIONAL"
	case ExchangeIKEIntermediate:
		return "IKE_INTERMEDIATE"
	case ExchangeIKEFollowupKE:
		return "IKE_FOLLOWUP_KE"
	}
	return fmt.Sprintf("EXCHANGE_%d", uint8(e))
}

// PayloadType is a payload's "Next Payload" number.
type PayloadType uint8

const (
	PayloadNone     PayloadType = 0
	PayloadSA       PayloadType = 33
	PayloadKE       PayloadType = 34
	PayloadIDi      PayloadType = 35
	PayloadIDr      PayloadType = 36
	PayloadCERT     PayloadType = 37
	PayloadCERTREQ  PayloadType = 38
	PayloadAUTH     PayloadType = 39
	PayloadNonce    PayloadType = 40
	PayloadNotify   PayloadType = 41
	PayloadDelete   PayloadType = 42
	PayloadVendorID PayloadType = 43
	PayloadTSi      PayloadType = 44
	PayloadTSr      PayloadType = 45
	PayloadSK       PayloadType = 46
	PayloadCP       PayloadType = 47
	PayloadEAP      PayloadType = 48
	PayloadSKF      PayloadType = 53
)

var payloadNames = map[PayloadType]string{
	PayloadNone: "NONE", PayloadSA: "SA", PayloadKE: "KE", PayloadIDi: "IDi", PayloadIDr: "IDr",
	PayloadCERT: "CERT", PayloadCERTREQ: "CERTREQ", PayloadAUTH: "AUTH", PayloadNonce: "N(once)",
	PayloadNotify: "N", PayloadDelete: "D", PayloadVendorID: "V", PayloadTSi: "TSi", PayloadTSr: "TSr",
	PayloadSK: "SK", PayloadCP: "CP", PayloadEAP: "EAP", PayloadSKF: "SKF",
}

func (p PayloadType) String() string {
	if s, ok := payloadNames[p]; ok {
		return s
	}
	return fmt.Sprintf("PAYLOAD_%d", uint8(p))
}

// ProtocolID names the SA a proposal, notify or delete is about.
type ProtocolID uint8

const (
	ProtoIKE ProtocolID = 1
	ProtoAH  ProtocolID = 2
	ProtoESP ProtocolID = 3
)

func (p ProtocolID) String() string {
	switch p {
	case 0:
		return "NONE"
	case ProtoIKE:
		return "IKE"
	case ProtoAH:
		return "AH"
	case ProtoESP:
		return "ESP"
	}
	return fmt.Sprintf("PROTO_%d", uint8(p))
}

// TransformType is the kind of a transform in a proposal.
type TransformType uint8

const (
	TransformEncr  TransformType = 1
	TransformPRF   TransformType = 2
	TransformInteg TransformType = 3
	TransformDH    TransformType = 4 // "Key Exchange Method" since RFC 9370
	TransformESN   TransformType = 5
	// RFC 9370: Additional Key Exchange 1 to 7, each run after the
	// previous one (transform ID 0 is NONE: that exchange is skipped).
	TransformADDKE1 TransformType = 6
	TransformADDKE7 TransformType = 12
)

// IsADDKE reports whether t is one of RFC 9370's additional key exchange
// transform types.
func (t TransformType) IsADDKE() bool { return t >= TransformADDKE1 && t <= TransformADDKE7 }

func (t TransformType) String() string {
	switch t {
	case TransformEncr:
		return "ENCR"
	case TransformPRF:
		return "PRF"
	case TransformInteg:
		return "INTEG"
	case TransformDH:
		return "KE"
	case TransformESN:
		return "ESN"
	}
	if t.IsADDKE() {
		return fmt.Sprintf("ADDKE%d", uint8(t-TransformADDKE1)+1)
	}
	return fmt.Sprintf("TRANSFORM_%d", uint8(t))
}

// Transform IDs (IANA "IKEv2 Transform Attribute" registries).
const (
	EncrAESCBC           uint16 = 12
	EncrAESGCM8          uint16 = 18
	EncrAESGCM12         uint16 = 19
	EncrAESGCM16         uint16 = 20
	EncrChaCha20Poly1305 uint16 = 28

	PRFHMACSHA2_256 uint16 = 5
	PRFHMACSHA2_384 uint16 = 6
	PRFHMACSHA2_512 uint16 = 7

	IntegNone             uint16 = 0
	IntegHMACSHA2_256_128 uint16 = 12
	IntegHMACSHA2_384_192 uint16 = 13
	IntegHMACSHA2_512_256 uint16 = 14

	GroupMODP2048   uint16 = 14
	GroupMODP3072   uint16 = 15
	GroupMODP4096   uint16 = 16
	GroupECP256     uint16 = 19
	GroupECP384     uint16 = 20
	GroupECP521     uint16 = 21
	GroupCurve25519 uint16 = 31
	GroupMLKEM512   uint16 = 35
	GroupMLKEM768   uint16 = 36
	GroupMLKEM1024  uint16 = 37

	ESNNo  uint16 = 0
	ESNYes uint16 = 1
)

// attrKeyLength is the only transform attribute RFC 7296 defines (TV form).
const attrKeyLength = 14

// AuthMethod is the AUTH payload's method.
type AuthMethod uint8

const (
	AuthRSASig           AuthMethod = 1
	AuthPSK              AuthMethod = 2
	AuthDSS              AuthMethod = 3
	AuthECDSA256         AuthMethod = 9
	AuthECDSA384         AuthMethod = 10
	AuthECDSA521         AuthMethod = 11
	AuthNull             AuthMethod = 13
	AuthDigitalSignature AuthMethod = 14
)

func (m AuthMethod) String() string {
	switch m {
	case AuthRSASig:
		return "RSA_SIG"
	case AuthPSK:
		return "PSK"
	case AuthDSS:
		return "DSS"
	case AuthECDSA256:
		return "ECDSA_SHA256_P256"
	case AuthECDSA384:
		return "ECDSA_SHA384_P384"
	case AuthECDSA521:
		return "ECDSA_SHA512_P521"
	case AuthNull:
		return "NULL"
	case AuthDigitalSignature:
		return "DIGITAL_SIGNATURE"
	}
	return fmt.Sprintf("AUTH_%d", uint8(m))
}

// IDType is an identification payload's type.
type IDType uint8

const (
	IDIPv4Addr   IDType = 1
	IDFQDN       IDType = 2
	IDRFC822Addr IDType = 3
	IDIPv6Addr   IDType = 5
	IDDERASN1DN  IDType = 9
	IDDERASN1GN  IDType = 10
	IDKeyID      IDType = 11
)

// Certificate encodings.
const (
	CertX509Signature uint8 = 4
)

// Configuration payload types and attributes (RFC 7296 3.15).
const (
	CfgRequest uint8 = 1
	CfgReply   uint8 = 2
	CfgSet     uint8 = 3
	CfgAck     uint8 = 4

	AttrInternalIP4Address  uint16 = 1
	AttrInternalIP4Netmask  uint16 = 2
	AttrInternalIP4DNS      uint16 = 3
	AttrInternalIP4NBNS     uint16 = 4
	AttrInternalIP4DHCP     uint16 = 6
	AttrApplicationVersion  uint16 = 7
	AttrInternalIP6Address  uint16 = 8
	AttrInternalIP6DNS      uint16 = 10
	AttrInternalIP6DHCP     uint16 = 12
	AttrInternalIP4Subnet   uint16 = 13
	AttrSupportedAttributes uint16 = 14
	AttrInternalIP6Subnet   uint16 = 15
)

// Header flags.
const (
	FlagInitiator = 0x08
	FlagVersion   = 0x10
	FlagResponse  = 0x20
)

// Version is IKEv2's major/minor version octet.
const Version = 0x20

// HeaderLen is the fixed IKE header; genericHeaderLen every payload's header.
const (
	HeaderLen        = 28
	genericHeaderLen = 4
)
