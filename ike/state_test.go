package ike

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// haStandby is a second responder with the same configuration, for imports.
func (e *testEnv) haStandby(addr netip.Addr) (*Responder, chan Event) {
	e.t.Helper()
	h := e.net.AddHost("standby-"+addr.String(), addr)
	ev := make(chan Event, 64)
	r, err := NewResponder(e.ctx, e.rcfg, h, ev)
	if err != nil {
		e.t.Fatal(err)
	}
	h.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) { r.HandlePacket(pkt, netpath.Path{Local: dst, Remote: src}) })
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r, ev
}

func haConfig(c *ResponderConfig) { c.HA = true }

func TestExportImportRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		ike, esp []Proposal
		hasync   bool
	}{
		{"gcm", []Proposal{ikeECP384}, []Proposal{esp256}, true},
		{"cbc ike, esn child", []Proposal{ikeCBC}, []Proposal{esp256ESN}, true},
		{"x25519 no sync", []Proposal{ikeX25519}, []Proposal{esp128}, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, int64(i), haConfig)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			cfg.IKE, cfg.ESP, cfg.HASync = tc.ike, tc.esp, tc.hasync
			c, est := e.dialEstablished(t, cfg)
			sc := nextEvent[*StateChanged](t, e.respEvents, 5*time.Second)
			gw := sc.SA
			if ids, replay := gw.HASync(); ids != tc.hasync || replay != tc.hasync {
				t.Fatalf("gateway negotiated sync %v/%v, want %v", ids, replay, tc.hasync)
			}
			if ids, _ := c.sa.HASync(); ids != tc.hasync {
				t.Fatalf("client negotiated sync %v, want %v", ids, tc.hasync)
			}
			blob, err := gw.ExportState()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := e.haStandby(netip.MustParseAddr("198.51.100.9"))
			copySA, err := b.ImportState(blob)
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			if !copySA.Parked() || gw.Parked() {
				t.Fatal("parked flags wrong")
			}
			// A parked copy takes nothing, even a valid request of its SA
			// (the active node answers it): a message under its SPIs.
			b.HandlePacket(sealedLookalike(t, est), gw.Path())
			waitCounter(t, copySA, "ParkedDrops", func(c Counters) uint64 { return c.ParkedDrops }, 1)
			again, err := copySA.ExportState()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(withoutAges(t, blob), withoutAges(t, again)) {
				t.Fatal("export of the imported copy differs from the original export")
			}
			// The Child SA's age travels: the copy's is at least the original's.
			orig, _ := decodeState(blob)
			cp, _ := decodeState(again)
			if orig.childAges[0] <= 0 || cp.childAges[0] < orig.childAges[0] {
				t.Fatalf("child ages %v, then %v on the copy", orig.childAges, cp.childAges)
			}
			if i, r := copySA.SPIs(); i != est.SPIi || r != est.SPIr {
				t.Fatalf("SPIs %x/%x, want %x/%x", i, r, est.SPIi, est.SPIr)
			}
			if copySA.LocalSPI() != est.SPIr {
				t.Fatal("LocalSPI is not SPIr")
			}
			got, want := copySA.Children(), gw.Children()
			if len(got) != 1 || len(want) != 1 || got[0].SPIIn != want[0].SPIIn || !bytes.Equal(got[0].KeyOut, want[0].KeyOut) ||
				got[0].ESN != want[0].ESN || got[0].Proposal != want[0].Proposal {
				t.Fatalf("children %+v, want %+v", got, want)
			}
			if copySA.Path() != gw.Path() {
				t.Fatalf("path %v, want %v", copySA.Path(), gw.Path())
			}
			// Importing again replaces the parked copy.
			second, err := b.ImportState(blob)
			if err != nil {
				t.Fatalf("second import: %v", err)
			}
			select {
			case <-copySA.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("replaced copy still running")
			}
			if n := len(b.SAs()); n != 1 {
				t.Fatalf("%d SAs on the standby after a re-import", n)
			}
			// The active node refuses an import over its own SA.
			if _, err := e.resp.ImportState(blob); err == nil {
				t.Fatal("import over an active SA accepted")
			}
			b.DropState(second.LocalSPI())
			select {
			case <-second.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("dropped copy still running")
			}
			if n := len(b.SAs()); n != 0 {
				t.Fatalf("%d SAs after DropState", n)
			}
		})
	}
}

// sampleState is a synthetic, valid state for the decoding tests.
func sampleState() *haState {
	key := func(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }
	return &haState{
		id: 7, natRemote: true, natSupported: true, peerMOBIKE: true, msgIDSync: true, replaySync: true,
		spii: 0x1111, spir: 0x2222, nextMsgID: 5, peerNextMsgID: 9,
		prop: wire.Proposal{Number: 1, Protocol: wire.ProtoIKE, Transforms: ikeECP384.Transforms},
		skd:  key(48, 1), skai: nil, skar: nil, skei: key(36, 2), sker: key(36, 3), skpi: key(48, 4), skpr: key(48, 5),
		path:        netpath.Path{Local: netip.MustParseAddrPort("198.51.100.1:4500"), Remote: netip.MustParseAddrPort("203.0.113.77:1024")},
		peerMOBIKED: []byte{'R'}, peerID: "alice@example.com", poolKey: "alice@example.com",
		vips: []netip.Addr{netip.MustParseAddr("10.99.200.1")}, peerAddrs: []netip.Addr{netip.MustParseAddr("203.0.113.77")},
		verified:   []netip.AddrPort{netip.MustParseAddrPort("203.0.113.77:1024")},
		lastRespID: 8, lastResp: [][]byte{key(80, 9)},
		children: []ChildSA{{SPIIn: 0xc0000001, SPIOut: 0xc0000002, KeyIn: key(36, 6), KeyOut: key(36, 7), Proposal: "aes256gcm16",
			Transforms: esp256.Transforms,
			LocalTS:    []wire.TrafficSelector{{StartPort: 0, EndPort: 65535, Start: netip.MustParseAddr("10.99.0.0"), End: netip.MustParseAddr("10.99.0.255")}},
			RemoteTS:   []wire.TrafficSelector{{StartPort: 0, EndPort: 65535, Start: netip.MustParseAddr("10.99.200.1"), End: netip.MustParseAddr("10.99.200.1")}}}},
	}
}

func TestDecodeStateRejects(t *testing.T) {
	good, err := encodeState(sampleState())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeState(good); err != nil {
		t.Fatalf("sample does not decode: %v", err)
	}
	for n := 0; n < len(good); n++ {
		if _, err := decodeState(good[:n]); !errors.Is(err, ErrBadState) {
			t.Fatalf("truncated to %d of %d octets: err %v", n, len(good), err)
		}
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		blob []byte
	}{
		{"trailing", append(bytes.Clone(good), 0)},
		{"magic", mutate(func(b []byte) []byte { b[0] ^= 1; return b })},
		{"version", mutate(func(b []byte) []byte { b[len(stateMagic)] = 9; return b })},
		{"zero spi", func() []byte { s := sampleState(); s.spii = 0; b, _ := encodeState(s); return b }()},
		{"no HA id", func() []byte { s := sampleState(); s.id = 0; b, _ := encodeState(s); return b }()},
		{"ancient child", func() []byte {
			s := sampleState()
			s.childAges = []time.Duration{maxChildAge + 1}
			b, _ := encodeState(s)
			return b
		}()},
		{"no path", func() []byte { s := sampleState(); s.path = netpath.Path{}; b, _ := encodeState(s); return b }()},
		{"child without keys", func() []byte { s := sampleState(); s.children[0].KeyIn = nil; b, _ := encodeState(s); return b }()},
		{"mixed-family selector", func() []byte {
			s := sampleState()
			s.children[0].LocalTS[0].End = netip.MustParseAddr("fd00::1")
			b, _ := encodeState(s)
			return b
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeState(tc.blob); !errors.Is(err, ErrBadState) {
				t.Fatalf("err = %v, want ErrBadState", err)
			}
		})
	}
}

func TestImportRejectsBadKeys(t *testing.T) {
	e := newEnv(t, 1, haConfig)
	tests := []struct {
		name string
		mod  func(*haState)
	}{
		{"initiator", func(s *haState) { s.initiator = true }},
		{"short SK_e", func(s *haState) { s.skei = s.skei[:10] }},
		{"short SK_d", func(s *haState) { s.skd = s.skd[:4] }},
		{"no PRF", func(s *haState) { s.prop.Transforms = esp256.Transforms }},
		{"unknown PRF", func(s *haState) {
			s.prop.Transforms = []wire.Transform{tr(wire.TransformEncr, 20, 256), tr(wire.TransformPRF, 99, 0)}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := sampleState()
			tc.mod(s)
			b, err := encodeState(s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.resp.ImportState(b); !errors.Is(err, ErrBadState) {
				t.Fatalf("err = %v, want ErrBadState", err)
			}
		})
	}
	if n := len(e.resp.SAs()); n != 0 {
		t.Fatalf("%d SAs after refused imports", n)
	}
}

// FuzzDecodeState: whatever the HA peer sends, decoding fails cleanly or
// yields a state that encodes back to the same octets.
func FuzzDecodeState(f *testing.F) {
	good, err := encodeState(sampleState())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("roamHA\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error not wrapping ErrBadState: %v", err)
			}
			return
		}
		again, err := encodeState(st)
		if err != nil {
			t.Fatalf("decoded state does not encode: %v", err)
		}
		if _, err := decodeState(again); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
	})
}

// FuzzSyncNotifies: the RFC 6311 decoders take any notify data.
func FuzzSyncNotifies(f *testing.F) {
	f.Add(uint8(0), []byte{}, []byte{1, 2, 3, 4, 0, 0, 0, 5, 0, 0, 0, 9})
	f.Add(uint8(0), []byte{}, []byte{0, 0, 1, 0})
	f.Add(uint8(3), []byte{1, 2, 3, 4}, []byte{198, 51, 100, 2})
	f.Add(uint8(0), []byte{}, bytes.Repeat([]byte{0xfd}, 16))
	f.Fuzz(func(t *testing.T, proto uint8, spi, data []byte) {
		n := &wire.Notify{Protocol: wire.ProtocolID(proto), SPI: spi, Data: data}
		if m, err := decodeMessageIDSync(n); err == nil {
			if got := m.notify(); !bytes.Equal(got.Data, data) {
				t.Fatalf("MESSAGE_ID_SYNC round trip %x -> %x", data, got.Data)
			}
		}
		if d, err := decodeReplaySync(n); err == nil {
			if back, _ := decodeReplaySync(replaySyncNotify(d)); back != d {
				t.Fatalf("REPLAY_COUNTER_SYNC round trip %d -> %d", d, back)
			}
		}
	})
}

// sealedLookalike is a message under the SA's SPIs, as the standby would
// see one the client sent to the active node.
func sealedLookalike(t *testing.T, est *Established) []byte {
	t.Helper()
	m := &wire.Message{Header: wire.Header{SPIi: est.SPIi, SPIr: est.SPIr, Version: 0x20, Exchange: wire.ExchangeInformational,
		Flags: wire.FlagInitiator, MessageID: 5}, Payloads: []wire.Payload{&wire.Encrypted{FirstInner: wire.PayloadNone, Data: make([]byte, 40)}}}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withoutAges re-encodes a blob with the Child SAs' ages zeroed: they grow
// between two exports.
func withoutAges(t *testing.T, b []byte) []byte {
	t.Helper()
	st, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	st.childAges = nil
	out, err := encodeState(st)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestChildAged(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name               string
		born               *time.Time // nil: first arming
		soft, hard         time.Duration
		wantSoft, wantHard time.Duration
	}{
		{"first arming", nil, time.Hour, 2 * time.Hour, time.Hour, 2 * time.Hour},
		{"taken over after 10 min", ptr(t0.Add(-10 * time.Minute)), time.Hour, 2 * time.Hour, 50 * time.Minute, 110 * time.Minute},
		{"soft lifetime passed", ptr(t0.Add(-90 * time.Minute)), time.Hour, 2 * time.Hour, time.Millisecond, 30 * time.Minute},
		{"never", ptr(t0.Add(-10 * time.Minute)), 0, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h haSA
			if tc.born != nil {
				h.childBorn = map[uint32]time.Time{7: *tc.born}
			}
			soft, hard := h.aged(7, t0, tc.soft, tc.hard)
			if soft != tc.wantSoft || hard != tc.wantHard {
				t.Fatalf("got %v/%v, want %v/%v", soft, hard, tc.wantSoft, tc.wantHard)
			}
			if b, ok := h.childBorn[7]; !ok || (tc.born == nil && !b.Equal(t0)) {
				t.Fatalf("birth %v, %v", b, ok)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
