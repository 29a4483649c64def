// Package tcpencap carries IKE and ESP over a TCP stream as RFC 9329
// defines it: the initiator opens the stream with the "IKETCP" prefix, and
// each message follows as a record with a 16-bit length in front that
// counts itself. IKE messages travel behind the 4-byte non-ESP marker, as
// on UDP port 4500; anything else is an ESP packet. The same stream may run
// inside TLS (RFC 9329 appendix A).
package tcpencap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Prefix opens every stream, sent by the initiator before its first record
// (RFC 9329 section 4).
const Prefix = "IKETCP"

const (
	lengthSize = 2
	// MaxRecord is the largest record body: the length field counts itself.
	MaxRecord = 0xffff - lengthSize
	// minLength is the smallest valid length field: a one-byte body (a NAT
	// keepalive, which receivers ignore) after the length itself.
	minLength = lengthSize + 1
)

// ErrBadPrefix: the stream did not start with Prefix.
var ErrBadPrefix = errors.New("tcpencap: stream does not start with IKETCP")

// AppendRecord appends rec framed as one record to dst.
func AppendRecord(dst, rec []byte) ([]byte, error) {
	if len(rec) == 0 || len(rec) > MaxRecord {
		return dst, fmt.Errorf("tcpencap: record of %d bytes does not fit a record", len(rec))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(rec)+lengthSize))
	return append(dst, rec...), nil
}

// Decoder splits stream bytes into records. It holds no more than one
// partial record beyond what it was given, so a peer cannot make it buffer
// without bound.
type Decoder struct {
	buf        []byte
	start, end int
	// wantPrefix: the stream's first bytes must be Prefix (a responder's
	// view); prefixSeen counts how many of them have matched.
	wantPrefix bool
	prefixSeen int
}

// NewDecoder returns a decoder; a responder sets wantPrefix, since the
// initiator opens each stream with Prefix.
func NewDecoder(wantPrefix bool) *Decoder {
	return &Decoder{buf: make([]byte, 2*(MaxRecord+lengthSize)), wantPrefix: wantPrefix}
}

// Space returns where the next read should go; at least one byte, as the
// decoder moves an unfinished record to the front when it must.
func (d *Decoder) Space() []byte {
	if d.start == d.end {
		d.start, d.end = 0, 0
	}
	if len(d.buf)-d.end < MaxRecord+lengthSize && d.start > 0 {
		n := copy(d.buf, d.buf[d.start:d.end])
		d.start, d.end = 0, n
	}
	return d.buf[d.end:]
}

// Filled records that n bytes were read into Space.
func (d *Decoder) Filled(n int) { d.end += n }

// Next returns the next complete record, or nil when more bytes are
// needed. The record stays valid until the next call to Space. An error
// means the stream is garbage and must be closed.
func (d *Decoder) Next() ([]byte, error) {
	if d.wantPrefix && d.prefixSeen < len(Prefix) {
		for d.prefixSeen < len(Prefix) {
			if d.start == d.end {
				return nil, nil
			}
			if d.buf[d.start] != Prefix[d.prefixSeen] {
				return nil, ErrBadPrefix
			}
			d.start++
			d.prefixSeen++
		}
	}
	if d.end-d.start < lengthSize {
		return nil, nil
	}
	l := int(binary.BigEndian.Uint16(d.buf[d.start:]))
	if l < minLength {
		return nil, fmt.Errorf("tcpencap: record length %d is below %d", l, minLength)
	}
	if d.end-d.start < l {
		return nil, nil
	}
	rec := d.buf[d.start+lengthSize : d.start+l]
	d.start += l
	return rec, nil
}

// Buffered is how many bytes the decoder holds that no record returned yet.
func (d *Decoder) Buffered() int { return d.end - d.start }
