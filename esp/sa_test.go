package esp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

func ipv4Packet(payload int) []byte {
	p := make([]byte, 20+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[9] = 17
	copy(p[12:], []byte{10, 99, 200, 7})
	copy(p[16:], []byte{10, 99, 0, 10})
	for i := 20; i < len(p); i++ {
		p[i] = byte(i)
	}
	return p
}

func ipv6Packet(payload int) []byte {
	p := make([]byte, 40+payload)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(payload))
	p[6] = 17
	p[8], p[24] = 0xfd, 0xfd
	return p
}

func keyMat(n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = byte(i * 7)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		cipher Cipher
		key    int
		esn    bool
		inner  []byte
	}{
		{"aes128 ipv4", AESGCM16, 20, false, ipv4Packet(100)},
		{"aes256 ipv4", AESGCM16, 36, false, ipv4Packet(1380)},
		{"aes128 ipv6 esn", AESGCM16, 20, true, ipv6Packet(1)},
		{"aes256 ipv6 esn", AESGCM16, 36, true, ipv6Packet(1000)},
		{"aes256 ipv4 pad 0", AESGCM16, 36, false, ipv4Packet(2)},
		{"chacha ipv4", ChaCha20Poly1305, 36, false, ipv4Packet(1380)},
		{"chacha ipv6 esn", ChaCha20Poly1305, 36, true, ipv6Packet(7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := NewOutboundSAWith(tt.cipher, 0x1234, keyMat(tt.key), tt.esn)
			if err != nil {
				t.Fatal(err)
			}
			in, err := NewInboundSAWith(tt.cipher, 0x1234, keyMat(tt.key), tt.esn)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				pkt, err := out.Seal(nil, tt.inner)
				if err != nil {
					t.Fatal(err)
				}
				if (len(pkt)-headerLen-ivLen-icvLen)%4 != 0 {
					t.Fatalf("ciphertext not 4-aligned: %d", len(pkt))
				}
				if binary.BigEndian.Uint32(pkt) != 0x1234 || binary.BigEndian.Uint32(pkt[4:]) != uint32(i+1) {
					t.Fatalf("header % x", pkt[:8])
				}
				got, err := in.Open(nil, pkt)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tt.inner) {
					t.Fatalf("inner mismatch")
				}
				if _, err := in.Open(nil, pkt); !errors.Is(err, ErrReplayed) {
					t.Fatalf("replay accepted: %v", err)
				}
			}
		})
	}
}

// TestKnownAnswer builds the expected packet with the standard library's
// GCM from the RFC 4106 construction (nonce = salt | IV, AAD = SPI | seq)
// using the key of McGrew/Viega GCM test case 3, so the framing (header,
// IV, padding, trailer, ICV placement) is checked independently of Seal.
func TestKnownAnswer(t *testing.T) {
	key, _ := hex.DecodeString("feffe9928665731c6d6a8f9467308308")
	salt := []byte{0xca, 0xfe, 0xba, 0xbe}
	out, err := NewOutboundSA(0xdeadbeef, append(append([]byte{}, key...), salt...), false)
	if err != nil {
		t.Fatal(err)
	}
	inner := ipv4Packet(10) // 30 bytes: 30+2 = 32, no padding
	got, err := out.Seal(nil, inner)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	hdr := []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}
	iv := []byte{0, 0, 0, 0, 0, 0, 0, 1}
	nonce := append(append([]byte{}, salt...), iv...)
	plain := append(append([]byte{}, inner...), 0, 4)
	want := append(append(append([]byte{}, hdr...), iv...), gcm.Seal(nil, nonce, plain, hdr)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %x\nwant %x", got, want)
	}
}

// TestKnownAnswerChaCha20Poly1305 checks the RFC 7634 framing the same way:
// the expected packet comes from x/crypto's AEAD with nonce = salt | IV and
// AAD = SPI | high and low ESN halves, built here by hand.
func TestKnownAnswerChaCha20Poly1305(t *testing.T) {
	key := keyMat(32)
	salt := []byte{0xa0, 0xa1, 0xa2, 0xa3}
	out, err := NewOutboundSAWith(ChaCha20Poly1305, 0x01020304, append(append([]byte{}, key...), salt...), true)
	if err != nil {
		t.Fatal(err)
	}
	inner := ipv4Packet(11) // 31 bytes: 31+2 = 33, 3 bytes of padding
	got, err := out.Seal(nil, inner)
	if err != nil {
		t.Fatal(err)
	}
	aead, _ := chacha20poly1305.New(key)
	hdr := []byte{1, 2, 3, 4, 0, 0, 0, 1}
	iv := []byte{0, 0, 0, 0, 0, 0, 0, 1}
	aad := []byte{1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 1} // ESN: SPI | seq high | seq low
	nonce := append(append([]byte{}, salt...), iv...)
	plain := append(append([]byte{}, inner...), 1, 2, 3, 3, 4)
	want := append(append(append([]byte{}, hdr...), iv...), aead.Seal(nil, nonce, plain, aad)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %x\nwant %x", got, want)
	}
	// An AES-GCM SA with key material of the same length must not open it.
	in, _ := NewInboundSA(0x01020304, append(append([]byte{}, key...), salt...), true)
	if _, err := in.Open(nil, got); !errors.Is(err, ErrBadICV) {
		t.Fatalf("AES-GCM opened a ChaCha20-Poly1305 packet: %v", err)
	}
	if _, err := NewOutboundSAWith(ChaCha20Poly1305, 1, keyMat(20), false); err == nil {
		t.Fatal("20 bytes of ChaCha20-Poly1305 key material accepted")
	}
}

func TestOpenRejects(t *testing.T) {
	out, _ := NewOutboundSA(7, keyMat(20), false)
	in, _ := NewInboundSA(7, keyMat(20), false)
	good, _ := out.Seal(nil, ipv4Packet(50))
	flip := func(i int) []byte { b := append([]byte{}, good...); b[i] ^= 1; return b }
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"short", good[:20], ErrMalformed},
		{"unaligned", good[:len(good)-1], ErrMalformed},
		{"other SPI", flip(3), ErrUnknownSPI},
		{"seq zero", func() []byte { b := append([]byte{}, good...); binary.BigEndian.PutUint32(b[4:], 0); return b }(), ErrReplayed},
		{"changed seq", flip(6), ErrBadICV},
		{"changed iv", flip(9), ErrBadICV},
		{"changed ciphertext", flip(30), ErrBadICV},
		{"changed icv", flip(len(good) - 1), ErrBadICV},
	}
	for _, tt := range tests {
		if _, err := in.Open(nil, tt.pkt); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// Forged packets must not have moved the window.
	if _, err := in.Open(nil, good); err != nil {
		t.Errorf("good packet after forgeries: %v", err)
	}
}

func TestSeqExhausted(t *testing.T) {
	out, _ := NewOutboundSA(7, keyMat(20), false)
	out.seq.Store(1<<32 - 2)
	if _, err := out.Seal(nil, ipv4Packet(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Seal(nil, ipv4Packet(1)); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("wrapped: %v", err)
	}
}

func TestReplayWindow(t *testing.T) {
	type step struct {
		seq  uint64
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{1, true}, {2, true}, {3, true}}},
		{"duplicate", []step{{1, true}, {1, false}}},
		{"reorder within window", []step{{10, true}, {5, true}, {9, true}, {5, false}}},
		{"too old", []step{{30000, true}, {30000 - ReplayWindow, false}, {30000 - ReplayWindow + 1, true}}},
		{"big jump clears bits", []step{{1, true}, {100000, true}, {100000 - 64, true}, {100000 - 64, false}}},
		{"block boundary", []step{{63, true}, {64, true}, {65, true}, {64, false}, {128, true}, {127, true}}},
		{"zero", []step{{0, false}}},
	}
	for _, tt := range tests {
		var w replayWindow
		for i, s := range tt.steps {
			_, ok := w.check(uint32(s.seq), false)
			if ok {
				ok = w.update(s.seq)
			}
			if ok != s.want {
				t.Errorf("%s step %d (seq %d): accepted=%v want %v", tt.name, i, s.seq, ok, s.want)
			}
		}
	}
}

func TestInferESN(t *testing.T) {
	tests := []struct {
		top  uint64
		low  uint32
		want uint64
	}{
		{0, 1, 1},
		{5, 3, 3},
		{1<<32 - 10, 5, 1<<32 + 5},          // crosses into the next subspace
		{1<<32 + 5, 1<<32 - 10, 1<<32 - 10}, // late packet from the previous subspace
		{3<<32 + 100000, 99000, 3<<32 + 99000},
		{3<<32 + 100000, 50, 4<<32 + 50}, // far behind the window: next subspace
	}
	for _, tt := range tests {
		if got := inferESN(tt.top, tt.low); got != tt.want {
			t.Errorf("inferESN(%#x, %#x) = %#x, want %#x", tt.top, tt.low, got, tt.want)
		}
	}
	// End to end across the 32-bit boundary with ESN.
	out, _ := NewOutboundSA(9, keyMat(36), true)
	in, _ := NewInboundSA(9, keyMat(36), true)
	out.seq.Store(1<<32 - 3)
	in.window.top = 1<<32 - 3
	for i := 0; i < 5; i++ {
		pkt, err := out.Seal(nil, ipv4Packet(10))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Open(nil, pkt); err != nil {
			t.Fatalf("packet %d across the ESN boundary: %v", i, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	out, _ := NewOutboundSA(7, keyMat(20), false)
	good, _ := out.Seal(nil, ipv4Packet(40))
	f.Add(good)
	f.Add([]byte{0, 0, 0, 7, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, esn := range []bool{false, true} {
			in, _ := NewInboundSA(7, keyMat(20), esn)
			inner, err := in.Open(make([]byte, 0, 16), pkt)
			if err == nil && len(inner) > len(pkt) {
				t.Fatalf("inner longer than packet")
			}
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	out, _ := NewOutboundSA(7, keyMat(20), false)
	inner := ipv4Packet(1380)
	dst := make([]byte, 0, 2048)
	b.SetBytes(int64(len(inner)))
	b.ReportAllocs()
	for b.Loop() {
		out.Seal(dst[:0], inner)
	}
}

func BenchmarkOpen(b *testing.B) {
	out, _ := NewOutboundSA(7, keyMat(20), false)
	in, _ := NewInboundSA(7, keyMat(20), false)
	inner := ipv4Packet(1380)
	pkts := make([][]byte, 1<<16)
	for i := range pkts {
		pkts[i], _ = out.Seal(nil, inner)
	}
	dst := make([]byte, 0, 2048)
	b.SetBytes(int64(len(inner)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		in.Open(dst[:0], pkts[i%len(pkts)])
		i++
		if i%len(pkts) == 0 {
			in.window = replayWindow{}
		}
	}
}

// TestReplayedOrTooOld tells the two kinds of replay-window refusal apart:
// a packet seen already is ErrReplayed, one left of the window ErrTooOld
// (which is an ErrReplayed too, for callers that do not care which), and
// neither moves the window.
func TestReplayedOrTooOld(t *testing.T) {
	out, _ := NewOutboundSA(7, keyMat(20), false)
	in, _ := NewInboundSA(7, keyMat(20), false)
	pkts := map[uint64][]byte{}
	for _, seq := range []uint64{1, 2, 100, ReplayWindow + 2, ReplayWindow + 3} {
		out.seq.Store(seq - 1)
		pkts[seq], _ = out.Seal(nil, ipv4Packet(20))
	}
	open := func(seq uint64) error { _, err := in.Open(nil, pkts[seq]); return err }
	for _, seq := range []uint64{1, 100, ReplayWindow + 3} {
		if err := open(seq); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
	tests := []struct {
		name    string
		seq     uint64
		tooOld  bool // else seen already
		replays bool // errors.Is(err, ErrReplayed)
	}{
		{"seen already, inside the window", 100, false, true},
		{"seen already, newest", ReplayWindow + 3, false, true},
		{"never seen, left of the window", 2, true, true},
		{"seen already, left of the window", 1, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := open(tt.seq)
			if got := errors.Is(err, ErrTooOld); got != tt.tooOld {
				t.Errorf("seq %d: %v, ErrTooOld %v, want %v", tt.seq, err, got, tt.tooOld)
			}
			if got := errors.Is(err, ErrReplayed); got != tt.replays {
				t.Errorf("seq %d: %v, ErrReplayed %v, want %v", tt.seq, err, got, tt.replays)
			}
		})
	}
	// The refusals left the window alone: a packet just inside it is new.
	if err := open(ReplayWindow + 2); err != nil {
		t.Errorf("seq %d after the refusals: %v", ReplayWindow+2, err)
	}
}

// TestCountOpenErrorReplays: the dataplane counts the two refusals under
// their own drop reasons.
func TestCountOpenErrorReplays(t *testing.T) {
	tests := []struct {
		err  error
		want DropStats
	}{
		{ErrReplayed, DropStats{Replayed: 1}},
		{ErrTooOld, DropStats{TooOld: 1}},
		{ErrBadICV, DropStats{BadICV: 1}},
	}
	for _, tt := range tests {
		d := NewDataplane(nil, ignoreIKE, nil)
		d.countOpenError(tt.err)
		if got := d.Drops(); got != tt.want {
			t.Errorf("%v: drops %+v, want %+v", tt.err, got, tt.want)
		}
	}
}
