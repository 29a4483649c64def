package crypto

import (
	"crypto/sha1"
	"encoding/binary"
	"net/netip"
)

// SignedOctets builds the octets an AUTH payload covers (RFC 7296 2.15):
// the sender's whole first message (IKE_SA_INIT request for the initiator,
// response for the responder), the peer's nonce data, and prf(SK_px,
// RestOfIDPayload), where idBody is the sender's ID payload after its
// generic header (ID Type, three reserved octets, identification data) and
// skp is SK_pi for the initiator, SK_pr for the responder.
func SignedOctets(prf *PRF, firstMessage, peerNonce, skp, idBody []byte) []byte {
	maced := prf.Sum(skp, idBody)
	out := make([]byte, 0, len(firstMessage)+len(peerNonce)+len(maced))
	out = append(append(append(out, firstMessage...), peerNonce...), maced...)
	return out
}

// NATDetectionHash returns the data of a NAT_DETECTION_SOURCE_IP or
// NAT_DETECTION_DESTINATION_IP notification (RFC 7296 2.23):
// SHA-1(SPIi | SPIr | IP | Port). IPv4-mapped IPv6 addresses count as IPv4,
// since that is what goes on the wire.
func NATDetectionHash(spii, spir uint64, addr netip.AddrPort) []byte {
	h := sha1.New()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], spii)
	binary.BigEndian.PutUint64(b[8:], spir)
	h.Write(b[:])
	h.Write(addr.Addr().Unmap().AsSlice())
	binary.BigEndian.PutUint16(b[:2], addr.Port())
	h.Write(b[:2])
	return h.Sum(nil)
}
