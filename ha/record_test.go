package ha

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
)

func testKey(t testing.TB, b byte) []byte {
	t.Helper()
	return bytes.Repeat([]byte{b}, KeySize)
}

// pair runs the handshake over an in-memory connection and returns both
// ends' record layers.
func pair(t *testing.T, kd, kl []byte) (ds *sealer, do *opener, ls *sealer, lo *opener, derr, lerr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan struct{})
	go func() {
		ls, lo, lerr = handshake(b, kl, false)
		close(done)
	}()
	ds, do, derr = handshake(a, kd, true)
	<-done
	return
}

func TestHandshakeKeys(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kd, kl []byte
		opens  bool
	}{
		{"same key", testKey(t, 1), testKey(t, 1), true},
		{"wrong key", testKey(t, 1), testKey(t, 2), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds, do, ls, lo, derr, lerr := pair(t, tc.kd, tc.kl)
			if derr != nil || lerr != nil {
				t.Fatalf("handshake: %v / %v", derr, lerr)
			}
			for _, dir := range []struct {
				s *sealer
				o *opener
			}{{ds, lo}, {ls, do}} {
				rec, err := dir.s.seal(nil, encodeAuth(Active))
				if err != nil {
					t.Fatal(err)
				}
				p, err := dir.o.read(bytes.NewReader(rec))
				if tc.opens && (err != nil || !bytes.Equal(p, encodeAuth(Active))) {
					t.Fatalf("record did not open: %v", err)
				}
				if !tc.opens && !errors.Is(err, ErrBadRecord) {
					t.Fatalf("record under the wrong key: err %v, want ErrBadRecord", err)
				}
			}
		})
	}
}

// A record of one direction never opens in the other (a reflected record).
func TestReflectedRecordRefused(t *testing.T) {
	ds, do, _, _, derr, lerr := pair(t, testKey(t, 1), testKey(t, 1))
	if derr != nil || lerr != nil {
		t.Fatal(derr, lerr)
	}
	rec, _ := ds.seal(nil, encodeHeartbeat())
	if _, err := do.read(bytes.NewReader(rec)); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("own record reflected: err %v", err)
	}
}

func TestRecordStream(t *testing.T) {
	ds, _, _, lo, derr, lerr := pair(t, testKey(t, 3), testKey(t, 3))
	if derr != nil || lerr != nil {
		t.Fatal(derr, lerr)
	}
	var recs [][]byte
	for i := 0; i < 3; i++ {
		r, err := ds.seal(nil, []byte{msgHeartbeat})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	tampered := append([]byte(nil), recs[0]...)
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		name   string
		stream [][]byte
		good   int // records that open before the failure
		err    error
	}{
		{"in order", [][]byte{recs[0], recs[1], recs[2]}, 3, io.EOF},
		{"replayed", [][]byte{recs[0], recs[0]}, 1, ErrBadRecord},
		{"reordered", [][]byte{recs[1], recs[0]}, 0, ErrBadRecord},
		{"dropped", [][]byte{recs[0], recs[2]}, 1, ErrBadRecord},
		{"altered", [][]byte{tampered}, 0, ErrBadRecord},
		{"truncated", [][]byte{recs[0], recs[1][:len(recs[1])-3]}, 1, ErrBadRecord},
		{"truncated header", [][]byte{recs[0][:2]}, 0, io.ErrUnexpectedEOF},
		{"short length", [][]byte{{0, 0, 0, 5, 1, 2, 3, 4, 5}}, 0, ErrBadRecord},
		{"huge length", [][]byte{{0xff, 0xff, 0xff, 0xff}}, 0, ErrBadRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &opener{aead: lo.aead} // a fresh sequence each case
			r := bytes.NewReader(bytes.Join(tc.stream, nil))
			good := 0
			var err error
			for {
				if _, err = o.read(r); err != nil {
					break
				}
				good++
			}
			if good != tc.good || !errors.Is(err, tc.err) {
				t.Fatalf("opened %d, err %v; want %d then %v", good, err, tc.good, tc.err)
			}
		})
	}
}

func TestBadHello(t *testing.T) {
	good, err := newHello(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func([]byte) []byte
	}{
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"version", func(b []byte) []byte { b[4] = 9; return b }},
		{"short", func(b []byte) []byte { return b[:10] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.mod(append([]byte(nil), good...))
			if _, err := parseHello(h); !errors.Is(err, ErrBadHello) {
				t.Fatalf("err %v", err)
			}
		})
	}
	if _, err := parseHello(good); err != nil {
		t.Fatal(err)
	}
}

// The peer echoing our own hello (nonce) is refused.
func TestHelloReflected(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		h := make([]byte, helloSize)
		io.ReadFull(b, h)
		b.Write(h)
	}()
	if _, _, err := handshake(a, testKey(t, 1), true); !errors.Is(err, ErrBadHello) {
		t.Fatalf("reflected hello: err %v", err)
	}
}

func TestParseKey(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, KeySize)
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"hex", "abababababababababababababababababababababababababababababababab\n", true},
		{"base64", "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n", true},
		{"base64 raw", "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s", true},
		{"short base64", "q6urq6ur", false},
		{"not a key", "hunter2 hunter2", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKey([]byte(tc.text))
			if tc.ok != (err == nil) {
				t.Fatalf("err %v, want ok=%t", err, tc.ok)
			}
			if tc.ok && !bytes.Equal(k, raw) {
				t.Fatalf("key %x", k)
			}
		})
	}
}

func FuzzRecordRead(f *testing.F) {
	s, err := newAEAD(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		f.Fatal(err)
	}
	se := &sealer{aead: s}
	rec, _ := se.seal(nil, encodeHeartbeat())
	f.Add(rec)
	f.Add([]byte{0, 0, 0, 16})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		o := &opener{aead: s}
		r := bytes.NewReader(b)
		for i := 0; i < 64; i++ {
			p, err := o.read(r)
			if err != nil {
				return
			}
			decodeMessage(p)
		}
	})
}
