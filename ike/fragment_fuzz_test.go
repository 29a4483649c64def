package ike

import (
	"testing"

	"github.com/roam-vpn/roam/ike/wire"
)

// FuzzSAHandleFragment seals arbitrary SKF fragments (any number, total,
// first payload type, Message ID near the expected one, contents) with
// valid keys and hands them to an established responder SA, so the
// fuzzer reaches reassembly behind the ICV check. Fragments of one run
// accumulate in the SA, as a peer's would.
func FuzzSAHandleFragment(f *testing.F) {
	f.Add(uint16(1), uint16(2), byte(43), byte(0), []byte{0, 0, 0, 8, 1, 2, 3, 4})
	f.Add(uint16(2), uint16(2), byte(0), byte(0), []byte{5, 6})
	f.Add(uint16(1), uint16(1), byte(41), byte(0), []byte{0, 0, 0, 8, 0, 0, 0x40, 0x0c})
	f.Add(uint16(3), uint16(65), byte(0), byte(1), []byte{})
	f.Add(uint16(1), uint16(2), byte(43), byte(255), []byte{0, 0, 0, 4})
	var pair *fuzzPair
	f.Cleanup(func() {
		if pair != nil {
			pair.cancel()
		}
	})
	f.Fuzz(func(t *testing.T, number, total uint16, first, idDelta byte, body []byte) {
		pair = livePair(t, pair)
		gw, client := pair.gw, pair.client
		var msgID uint32
		if !call(gw, func() { msgID = gw.peerNextMsgID + uint32(int8(idDelta)%2) }) {
			return
		}
		deliverSealed(gw, client, body, func(sealedLen int) []byte {
			return wire.EncryptedFragmentHeader(client.header(wire.ExchangeInformational, msgID, false), wire.PayloadType(first), number, total, sealedLen)
		})
	})
}
