package ike

import (
	"encoding/binary"

	"github.com/roam-vpn/roam/ike/wire"
)

// handleInformationalRequest answers an INFORMATIONAL request: empty ones
// are liveness checks; DELETE of the IKE SA ends it after the answer; DELETE
// of Child SAs is answered with the DELETE of our inbound halves.
func (sa *SA) handleInformationalRequest(ps []wire.Payload) (resp []wire.Payload, after func()) {
	var ourSPIs [][]byte
	for _, p := range ps {
		d, ok := p.(*wire.Delete)
		if !ok {
			continue
		}
		switch d.Protocol {
		case wire.ProtoIKE:
			if c := sa.ikeRekey.pending; c != nil {
				// The end of the old IKE SA after the peer's rekey: the
				// answer goes out under the old keys, then the new SA
				// takes over.
				return nil, func() { sa.switchIKE(c, false) }
			}
			sa.log.Info("peer deleted the IKE SA")
			return nil, func() { sa.die(ErrPeerDeleted) }
		case wire.ProtoESP:
			for _, spi := range d.SPIs {
				if len(spi) != 4 {
					continue
				}
				out := binary.BigEndian.Uint32(spi)
				for i, c := range sa.children {
					if c.SPIOut != out {
						continue
					}
					var b [4]byte
					binary.BigEndian.PutUint32(b[:], c.SPIIn)
					ourSPIs = append(ourSPIs, b[:])
					sa.children = append(sa.children[:i], sa.children[i+1:]...)
					sa.childGone(c.SPIIn)
					ev := &ChildDeleted{SA: sa, SPIIn: c.SPIIn, SPIOut: c.SPIOut}
					after = chain(after, func() { sa.emit(ev) })
					break
				}
			}
		}
	}
	if len(ourSPIs) > 0 {
		resp = append(resp, &wire.Delete{Protocol: wire.ProtoESP, SPISize: 4, SPIs: ourSPIs})
	}
	return resp, after
}

func chain(a, b func()) func() {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return func() { a(); b() }
}
