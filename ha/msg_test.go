package ha

import (
	"errors"
	"reflect"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	st := State{SA: SAKey{1, 2}, Seqs: []ChildSeq{{0xc0ffee01, 77, 3}, {0xc0ffee02, 1 << 40, 1 << 33}}, Meta: []byte(`{"peer":"alice"}`), Blob: []byte("opaque")}
	enc, err := encodeState(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want message
	}{
		{"auth", encodeAuth(Standby), message{typ: msgAuth, role: Standby}},
		{"heartbeat", encodeHeartbeat(), message{typ: msgHeartbeat}},
		{"state", enc, message{typ: msgState, state: st}},
		{"state without children", mustState(t, State{SA: SAKey{3, 4}, Blob: []byte{1}}), message{typ: msgState, state: State{SA: SAKey{3, 4}, Blob: []byte{1}}}},
		{"delete", encodeDelete(SAKey{5, 6}), message{typ: msgDelete, key: SAKey{5, 6}}},
		{"inventory", encodeInventory([]SAKey{{1, 2}, {3, 4}}), message{typ: msgInventory, keys: []SAKey{{1, 2}, {3, 4}}}},
		{"empty inventory", encodeInventory(nil), message{typ: msgInventory, keys: []SAKey{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMessage(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tc.want) {
				t.Fatalf("got %+v, want %+v", m, tc.want)
			}
		})
	}
}

func mustState(t *testing.T, s State) []byte {
	t.Helper()
	b, err := encodeState(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMessageMalformed(t *testing.T) {
	st := mustState(t, State{SA: SAKey{1, 2}, Seqs: []ChildSeq{{1, 2, 3}}, Blob: []byte("x")})
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{99}},
		{"auth bad role", []byte{msgAuth, 7}},
		{"auth long", []byte{msgAuth, byte(Active), 0}},
		{"heartbeat with data", []byte{msgHeartbeat, 1}},
		{"state short", st[:10]},
		{"state children overrun", st[:len(st)-5]},
		{"state without blob", st[:len(st)-1]},
		{"state meta overrun", append(st[:len(st)-3], 0xff, 0xff, 1)},
		{"delete short", encodeDelete(SAKey{1, 2})[:9]},
		{"inventory count mismatch", append(encodeInventory([]SAKey{{1, 2}}), 0)},
		{"inventory huge count", []byte{msgInventory, 0xff, 0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeMessage(tc.b); !errors.Is(err, ErrBadRecord) {
				t.Fatalf("err %v, want ErrBadRecord", err)
			}
		})
	}
	if _, err := encodeState(State{SA: SAKey{1, 2}}); err == nil {
		t.Fatal("state without blob encoded")
	}
}

func FuzzDecodeMessage(f *testing.F) {
	st, _ := encodeState(State{SA: SAKey{1, 2}, Seqs: []ChildSeq{{1, 2, 3}}, Blob: []byte("x")})
	for _, b := range [][]byte{st, encodeAuth(Active), encodeHeartbeat(), encodeDelete(SAKey{1, 1}), encodeInventory([]SAKey{{1, 2}})} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		var re []byte
		switch m.typ {
		case msgAuth:
			re = encodeAuth(m.role)
		case msgHeartbeat:
			re = encodeHeartbeat()
		case msgState:
			re, err = encodeState(m.state)
		case msgDelete:
			re = encodeDelete(m.key)
		case msgInventory:
			re = encodeInventory(m.keys)
		}
		if err != nil || string(re) != string(b) {
			t.Fatalf("%x decoded to %+v, re-encodes to %x (%v)", b, m, re, err)
		}
	})
}
