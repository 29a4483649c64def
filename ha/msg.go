package ha

import (
	"encoding/binary"
	"fmt"
)

// Role is a node's current part in the pair.
type Role uint8

const (
	Standby Role = 1
	Active  Role = 2
)

func (r Role) String() string {
	switch r {
	case Standby:
		return "standby"
	case Active:
		return "active"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// SAKey names one IKE SA by its SPIs.
type SAKey struct{ SPIi, SPIr uint64 }

func (k SAKey) String() string { return fmt.Sprintf("%016x_i %016x_r", k.SPIi, k.SPIr) }

// ChildSeq is a Child SA's ESP sequence numbers at export time: the last
// one sent on the outbound SA and the highest one accepted inbound.
type ChildSeq struct {
	SPIOut uint32
	Seq    uint64
	InSeq  uint64
}

// State is one IKE SA as the active node exports it. Blob holds secrets:
// it travels only inside the encrypted channel and is never logged. Meta is
// the owner's own record of the SA (peer identity, inner addresses: what
// its status shows), opaque here too.
type State struct {
	SA   SAKey
	Seqs []ChildSeq
	Meta []byte
	Blob []byte
}

// Message types inside records.
const (
	msgAuth      = 1 // role: the first record each way
	msgHeartbeat = 2
	msgState     = 3 // SA key, child sequence numbers, meta, blob
	msgDelete    = 4 // SA key
	msgInventory = 5 // every SA key the active holds after a full push
)

// message is one decoded record.
type message struct {
	typ   uint8
	role  Role
	state State   // msgState
	key   SAKey   // msgDelete
	keys  []SAKey // msgInventory
}

const (
	keyLen = 16
	seqLen = 20
	// maxChildren bounds a state message's sequence list (an IKE SA with
	// more Child SAs than this is not something a gateway makes).
	maxChildren = 1024
)

func putKey(b []byte, k SAKey) []byte {
	b = binary.BigEndian.AppendUint64(b, k.SPIi)
	return binary.BigEndian.AppendUint64(b, k.SPIr)
}

func getKey(b []byte) SAKey {
	return SAKey{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}
}

func encodeAuth(r Role) []byte { return []byte{msgAuth, byte(r)} }

func encodeHeartbeat() []byte { return []byte{msgHeartbeat} }

func encodeState(s State) ([]byte, error) {
	if len(s.Seqs) > maxChildren {
		return nil, fmt.Errorf("ha: %d child SAs in one state message", len(s.Seqs))
	}
	if len(s.Meta) > 0xffff {
		return nil, fmt.Errorf("ha: meta of %v is %d bytes", s.SA, len(s.Meta))
	}
	if len(s.Blob) == 0 {
		return nil, fmt.Errorf("ha: state of %v without a blob", s.SA)
	}
	b := make([]byte, 0, 1+keyLen+2+seqLen*len(s.Seqs)+2+len(s.Meta)+len(s.Blob))
	b = append(b, msgState)
	b = putKey(b, s.SA)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Seqs)))
	for _, c := range s.Seqs {
		b = binary.BigEndian.AppendUint32(b, c.SPIOut)
		b = binary.BigEndian.AppendUint64(b, c.Seq)
		b = binary.BigEndian.AppendUint64(b, c.InSeq)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Meta)))
	b = append(b, s.Meta...)
	return append(b, s.Blob...), nil
}

func encodeDelete(k SAKey) []byte { return putKey([]byte{msgDelete}, k) }

func encodeInventory(keys []SAKey) []byte {
	b := make([]byte, 0, 5+keyLen*len(keys))
	b = append(b, msgInventory)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = putKey(b, k)
	}
	return b
}

// decodeMessage parses one record's plaintext. The blob of a state message
// is copied, so b may be reused.
func decodeMessage(b []byte) (message, error) {
	var m message
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", ErrBadRecord)
	}
	m.typ, b = b[0], b[1:]
	switch m.typ {
	case msgAuth:
		if len(b) != 1 || (Role(b[0]) != Active && Role(b[0]) != Standby) {
			return m, fmt.Errorf("%w: auth message", ErrBadRecord)
		}
		m.role = Role(b[0])
	case msgHeartbeat:
		if len(b) != 0 {
			return m, fmt.Errorf("%w: heartbeat with %d bytes", ErrBadRecord, len(b))
		}
	case msgState:
		if len(b) < keyLen+2 {
			return m, fmt.Errorf("%w: short state message", ErrBadRecord)
		}
		m.state.SA = getKey(b)
		n := int(binary.BigEndian.Uint16(b[keyLen:]))
		b = b[keyLen+2:]
		if n > maxChildren || len(b) < n*seqLen {
			return m, fmt.Errorf("%w: state message lists %d child SAs", ErrBadRecord, n)
		}
		for i := 0; i < n; i++ {
			m.state.Seqs = append(m.state.Seqs, ChildSeq{binary.BigEndian.Uint32(b), binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint64(b[12:])})
			b = b[seqLen:]
		}
		if len(b) < 2 || len(b)-2 < int(binary.BigEndian.Uint16(b)) {
			return m, fmt.Errorf("%w: state message meta overruns", ErrBadRecord)
		}
		if ml := int(binary.BigEndian.Uint16(b)); ml > 0 {
			m.state.Meta = append([]byte(nil), b[2:2+ml]...)
			b = b[2+ml:]
		} else {
			b = b[2:]
		}
		if len(b) == 0 {
			return m, fmt.Errorf("%w: state message without a blob", ErrBadRecord)
		}
		m.state.Blob = append([]byte(nil), b...)
	case msgDelete:
		if len(b) != keyLen {
			return m, fmt.Errorf("%w: delete message of %d bytes", ErrBadRecord, len(b))
		}
		m.key = getKey(b)
	case msgInventory:
		if len(b) < 4 {
			return m, fmt.Errorf("%w: short inventory", ErrBadRecord)
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(len(b)) != uint64(n)*keyLen {
			return m, fmt.Errorf("%w: inventory of %d keys in %d bytes", ErrBadRecord, n, len(b))
		}
		m.keys = make([]SAKey, 0, n)
		for ; len(b) > 0; b = b[keyLen:] {
			m.keys = append(m.keys, getKey(b))
		}
	default:
		return m, fmt.Errorf("%w: message type %d", ErrBadRecord, m.typ)
	}
	return m, nil
}
