package ha

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// headerOnly yields a record header and then fails the test if anything
// reads on: the body of an oversized record must never be read (nor its
// buffer made).
type headerOnly struct {
	t   *testing.T
	hdr []byte
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if len(h.hdr) == 0 {
		h.t.Error("read past the header of a record over the limit")
		return 0, io.EOF
	}
	n := copy(p, h.hdr)
	h.hdr = h.hdr[n:]
	return n, nil
}

// TestFirstRecordLimit: before the peer has authenticated, a connection's
// first record may be only as large as an auth message; a header that
// announces megabytes is refused at once.
func TestFirstRecordLimit(t *testing.T) {
	_, _, _, lo, derr, lerr := pair(t, testKey(t, 1), testKey(t, 1))
	if derr != nil || lerr != nil {
		t.Fatal(derr, lerr)
	}
	for _, n := range []uint32{maxAuthRecord + tagSize + 1, 1 << 20, maxRecord + tagSize} {
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], n)
		if _, err := lo.readFirst(&headerOnly{t: t, hdr: hdr[:]}); !errors.Is(err, ErrBadRecord) {
			t.Errorf("first record of %d bytes: err %v, want ErrBadRecord", n, err)
		}
	}
}
