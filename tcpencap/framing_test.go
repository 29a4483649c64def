package tcpencap

import (
	"bytes"
	"errors"
	"testing"
)

func TestAppendRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  []byte
		want []byte
		err  bool
	}{
		{"keepalive", []byte{0xff}, []byte{0, 3, 0xff}, false},
		{"ike marker", []byte{0, 0, 0, 0, 1}, []byte{0, 7, 0, 0, 0, 0, 1}, false},
		{"empty", nil, nil, true},
		{"too long", make([]byte, MaxRecord+1), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendRecord(nil, tc.rec)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && !bytes.Equal(got, tc.want) {
				t.Fatalf("got % x, want % x", got, tc.want)
			}
		})
	}
	if b, err := AppendRecord(nil, make([]byte, MaxRecord)); err != nil || len(b) != 0xffff {
		t.Fatalf("largest record: %d bytes, %v", len(b), err)
	}
}

// feed gives the decoder stream in pieces of step bytes and collects the
// records it returns.
func feed(d *Decoder, stream []byte, step int) ([][]byte, error) {
	var out [][]byte
	for len(stream) > 0 {
		sp := d.Space()
		n := copy(sp[:min(len(sp), step)], stream)
		stream = stream[n:]
		d.Filled(n)
		for {
			rec, err := d.Next()
			if err != nil {
				return out, err
			}
			if rec == nil {
				break
			}
			out = append(out, append([]byte(nil), rec...))
		}
	}
	return out, nil
}

func TestDecoder(t *testing.T) {
	var good []byte
	good, _ = AppendRecord(good, []byte{0, 0, 0, 0, 0x11, 0x22})
	good, _ = AppendRecord(good, []byte{0xff})
	good, _ = AppendRecord(good, bytes.Repeat([]byte{0xab}, MaxRecord))
	good, _ = AppendRecord(good, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	for _, tc := range []struct {
		name       string
		stream     []byte
		wantPrefix bool
		records    int
		err        error
		anyErr     bool
	}{
		{"records", good, false, 4, nil, false},
		{"prefix then records", append([]byte(Prefix), good...), true, 4, nil, false},
		{"wrong prefix", append([]byte("IKETCQ"), good...), true, 0, ErrBadPrefix, true},
		{"HTTP instead", []byte("GET / HTTP/1.1\r\n\r\n"), true, 0, ErrBadPrefix, true},
		{"length zero", []byte{0, 0, 1, 2}, false, 0, nil, true},
		{"length two", []byte{0, 2, 0, 5, 1, 2, 3}, false, 0, nil, true},
		{"garbage after a record", append(append([]byte(nil), good[:9]...), 0, 1), false, 1, nil, true},
		{"partial record waits", good[:20], false, 2, nil, false},
	} {
		for _, step := range []int{1, 7, 1 << 20} {
			d := NewDecoder(tc.wantPrefix)
			recs, err := feed(d, tc.stream, step)
			if tc.anyErr != (err != nil) || (tc.err != nil && !errors.Is(err, tc.err)) {
				t.Errorf("%s/step %d: err = %v, want %v (any: %v)", tc.name, step, err, tc.err, tc.anyErr)
			}
			if len(recs) != tc.records {
				t.Errorf("%s/step %d: %d records, want %d", tc.name, step, len(recs), tc.records)
			}
		}
	}
}

func FuzzDecoder(f *testing.F) {
	good, _ := AppendRecord([]byte(Prefix), []byte{0, 0, 0, 0, 1, 2})
	good, _ = AppendRecord(good, []byte{0xff})
	f.Add(good, true, 3)
	f.Add([]byte{0, 2, 0, 0}, false, 1)
	f.Add([]byte{0xff, 0xff, 1}, false, 100)
	f.Fuzz(func(t *testing.T, stream []byte, wantPrefix bool, step int) {
		if step <= 0 {
			step = 1
		}
		d := NewDecoder(wantPrefix)
		recs, err := feed(d, stream, step)
		total := 0
		for _, r := range recs {
			if len(r) == 0 || len(r) > MaxRecord {
				t.Fatalf("record of %d bytes", len(r))
			}
			total += len(r) + lengthSize
		}
		if err == nil && total+d.Buffered() > len(stream) {
			t.Fatalf("decoded %d bytes and holds %d from a stream of %d", total, d.Buffered(), len(stream))
		}
	})
}
