package ike

import (
	"net/netip"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// Event is something an IKE SA reports to its owner: *Established,
// *ChildCreated, *ChildRekeyed, *ChildDeleted, *Deleted and others.
type Event interface{ event() }

// Established reports a usable IKE SA with its first Child SAs.
type Established struct {
	SA         *SA
	Initiator  bool
	SPIi, SPIr uint64
	Path       netpath.Path
	// NATLocal: a NAT is in front of us; NATRemote: in front of the peer (or
	// the initiator forced UDP encapsulation by pretending so).
	NATLocal, NATRemote bool
	// UDPEncap: ESP goes in UDP to the peer's port 4500 path.
	UDPEncap   bool
	PeerMOBIKE bool
	// PeerMOBIKEData is the data of the peer's MOBIKE_SUPPORTED notify.
	PeerMOBIKEData []byte
	PeerID         string
	Proposal       string // IKE SA proposal, e.g. "aes256gcm16-prfsha384-ecp384"
	Children       []ChildSA
	// VirtualIPs: initiator: the inner addresses assigned to us;
	// responder: the addresses assigned to the peer.
	VirtualIPs []netip.Addr
	DNS        []netip.Addr
	// DNSDomains (initiator): the gateway's RFC 8598 INTERNAL_DNS_DOMAIN
	// values, lower case without the trailing dot.
	DNSDomains []string
	// AuthLifetime (initiator): the gateway's RFC 4478 AUTH_LIFETIME,
	// within which we must authenticate again (reauth.go); 0: none sent.
	// Responder: the lifetime we announced.
	AuthLifetime time.Duration
	// FailedChildren (initiator): InitiatorConfig.MoreChildren that were
	// not negotiated; Children holds the others.
	FailedChildren []FailedChild
	// InitialContact (responder): the initiator sent INITIAL_CONTACT, so
	// its other IKE SAs were ended; without it, a new SA of a peer that
	// has one is typically its reauthentication.
	InitialContact bool
}

// ChildSA is one negotiated ESP SA pair with its keys. KeyIn and KeyOut are
// the key material per direction in RFC 7296 2.17 order (encryption key,
// including the 4-byte salt for AES-GCM, then any integrity key).
type ChildSA struct {
	SPIIn, SPIOut     uint32
	KeyIn, KeyOut     []byte
	ESN               bool
	LocalTS, RemoteTS []wire.TrafficSelector
	Proposal          string // e.g. "aes256gcm16"
	Transforms        []wire.Transform
}

// ChildDeleted reports Child SAs removed from a live IKE SA.
type ChildDeleted struct {
	SA            *SA
	SPIIn, SPIOut uint32
}

// Deleted reports the end of an IKE SA and all its Child SAs. Reason says
// why: ErrClosed after Close, ErrPeerDeleted, an *UnreachableError, a
// *NotifyError, a context error, ...
type Deleted struct {
	SA             *SA
	Reason         error
	WasEstablished bool
	Children       []ChildSA
}

func (*Established) event()  {}
func (*ChildDeleted) event() {}
func (*Deleted) event()      {}
