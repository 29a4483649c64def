package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// The HA state blob: everything a standby node needs to continue an
// established responder IKE SA and its Child SAs. It holds every secret of
// the SA and travels only over the HA pair's authenticated, encrypted
// channel; nothing here logs it. It comes from the peer node, which is
// trusted but may run another version or be broken, so decoding checks
// every length and count and never panics.
//
// Layout (big-endian): magic "roamHA", version 1, then the fields in the
// order of haState; byte strings and lists carry a 16-bit length or count.

var stateMagic = []byte("roamHA")

const (
	stateVersion = 1
	// Limits far above what an SA holds, so a broken blob cannot make us
	// allocate much.
	maxStateBytes     = 65535
	maxStateChildren  = 64
	maxStateList      = 64
	maxStateTransform = 32
	// maxChildAge bounds a replicated Child SA's age (ten years).
	maxChildAge = 10 * 365 * 24 * time.Hour
)

// ErrBadState is wrapped by every ImportState decoding error.
var ErrBadState = errors.New("ike: invalid HA state")

// haState is the exportable part of an SA.
type haState struct {
	id                                        uint64
	initiator, flagI                          bool
	natLocal, natRemote, natSupported, forced bool
	peerMOBIKE, fragOK, msgIDSync, replaySync bool
	spii, spir                                uint64
	nextMsgID, peerNextMsgID                  uint32
	prop                                      wire.Proposal
	skd, skai, skar, skei, sker, skpi, skpr   []byte
	path                                      netpath.Path
	peerMOBIKED                               []byte
	peerID, poolKey                           string
	vips, dns, peerAddrs                      []netip.Addr
	verified                                  []netip.AddrPort
	lastRespID                                uint32
	lastResp                                  [][]byte       // the cached response: one packet, or its fragments
	lastRespTo                                netip.AddrPort // where it went instead of back (an accepted switch)
	children                                  []ChildSA
	childAges                                 []time.Duration // per child: how long it has existed
}

type stateWriter struct {
	b   []byte
	err error
}

func (w *stateWriter) u8(v uint8)   { w.b = append(w.b, v) }
func (w *stateWriter) u16(v uint16) { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *stateWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *stateWriter) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }

func (w *stateWriter) count(n, limit int) {
	if n > limit && w.err == nil {
		w.err = fmt.Errorf("ike: HA state: %d items, at most %d fit", n, limit)
	}
	w.u16(uint16(min(n, limit)))
}

func (w *stateWriter) bytes(b []byte) {
	w.count(len(b), maxStateBytes)
	w.b = append(w.b, b[:min(len(b), maxStateBytes)]...)
}

func (w *stateWriter) addr(a netip.Addr) {
	if !a.IsValid() {
		w.u8(0)
		return
	}
	s := a.AsSlice()
	w.u8(uint8(len(s)))
	w.b = append(w.b, s...)
}

func (w *stateWriter) addrPort(ap netip.AddrPort) {
	w.addr(ap.Addr())
	w.u16(ap.Port())
}

func (w *stateWriter) addrs(as []netip.Addr) {
	w.count(len(as), maxStateList)
	for _, a := range as[:min(len(as), maxStateList)] {
		w.addr(a)
	}
}

func (w *stateWriter) transforms(ts []wire.Transform) {
	w.count(len(ts), maxStateTransform)
	for _, t := range ts[:min(len(ts), maxStateTransform)] {
		w.u8(uint8(t.Type))
		w.u16(t.ID)
		w.u16(t.KeyLength)
	}
}

func (w *stateWriter) selectors(ts []wire.TrafficSelector) {
	w.count(len(ts), maxStateList)
	for _, s := range ts[:min(len(ts), maxStateList)] {
		w.u8(s.IPProtocol)
		w.u16(s.StartPort)
		w.u16(s.EndPort)
		w.addr(s.Start)
		w.addr(s.End)
	}
}

func flags(bs ...bool) uint16 {
	var v uint16
	for i, b := range bs {
		if b {
			v |= 1 << i
		}
	}
	return v
}

func encodeState(st *haState) ([]byte, error) {
	w := &stateWriter{b: append([]byte(nil), stateMagic...)}
	w.u8(stateVersion)
	w.u64(st.id)
	w.u16(flags(st.initiator, st.flagI, st.natLocal, st.natRemote, st.natSupported, st.forced,
		st.peerMOBIKE, st.fragOK, st.msgIDSync, st.replaySync))
	w.u64(st.spii)
	w.u64(st.spir)
	w.u32(st.nextMsgID)
	w.u32(st.peerNextMsgID)
	w.u8(st.prop.Number)
	w.transforms(st.prop.Transforms)
	for _, k := range [][]byte{st.skd, st.skai, st.skar, st.skei, st.sker, st.skpi, st.skpr} {
		w.bytes(k)
	}
	w.addrPort(st.path.Local)
	w.addrPort(st.path.Remote)
	w.u32(uint32(int32(st.path.IfIndex)))
	w.bytes(st.peerMOBIKED)
	w.bytes([]byte(st.peerID))
	w.bytes([]byte(st.poolKey))
	w.addrs(st.vips)
	w.addrs(st.dns)
	w.addrs(st.peerAddrs)
	w.count(len(st.verified), maxStateList)
	for _, ap := range st.verified[:min(len(st.verified), maxStateList)] {
		w.addrPort(ap)
	}
	w.u32(st.lastRespID)
	w.count(len(st.lastResp), maxStateList)
	for _, p := range st.lastResp[:min(len(st.lastResp), maxStateList)] {
		w.bytes(p)
	}
	w.addrPort(st.lastRespTo)
	w.count(len(st.children), maxStateChildren)
	for i, c := range st.children[:min(len(st.children), maxStateChildren)] {
		w.u32(c.SPIIn)
		w.u32(c.SPIOut)
		w.bytes(c.KeyIn)
		w.bytes(c.KeyOut)
		w.u16(flags(c.ESN))
		w.bytes([]byte(c.Proposal))
		w.transforms(c.Transforms)
		w.selectors(c.LocalTS)
		w.selectors(c.RemoteTS)
		var age time.Duration
		if i < len(st.childAges) {
			age = max(st.childAges[i], 0)
		}
		w.u64(uint64(age))
	}
	return w.b, w.err
}

type stateReader struct {
	b   []byte
	err error
}

func (r *stateReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrBadState}, a...)...)
	}
}

func (r *stateReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail("truncated (%d more octets wanted, %d left)", n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *stateReader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *stateReader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *stateReader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *stateReader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *stateReader) count(limit int, what string) int {
	n := int(r.u16())
	if n > limit {
		r.fail("%d %s, at most %d allowed", n, what, limit)
		return 0
	}
	return n
}

func (r *stateReader) bytes() []byte {
	n := int(r.u16())
	return append([]byte(nil), r.take(n)...)
}

func (r *stateReader) addr() netip.Addr {
	switch n := r.u8(); n {
	case 0:
		return netip.Addr{}
	case 4, 16:
		a, _ := netip.AddrFromSlice(r.take(int(n)))
		return a
	default:
		r.fail("address of %d octets", n)
		return netip.Addr{}
	}
}

func (r *stateReader) addrPort() netip.AddrPort {
	a := r.addr()
	p := r.u16()
	if !a.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, p)
}

func (r *stateReader) addrs() []netip.Addr {
	n := r.count(maxStateList, "addresses")
	var out []netip.Addr
	for range n {
		if a := r.addr(); a.IsValid() {
			out = append(out, a)
		} else {
			r.fail("empty address in a list")
		}
	}
	return out
}

func (r *stateReader) transforms() []wire.Transform {
	n := r.count(maxStateTransform, "transforms")
	out := make([]wire.Transform, 0, n)
	for range n {
		out = append(out, wire.Transform{Type: wire.TransformType(r.u8()), ID: r.u16(), KeyLength: r.u16()})
	}
	return out
}

func (r *stateReader) selectors() []wire.TrafficSelector {
	n := r.count(maxStateList, "traffic selectors")
	out := make([]wire.TrafficSelector, 0, n)
	for range n {
		s := wire.TrafficSelector{IPProtocol: r.u8(), StartPort: r.u16(), EndPort: r.u16(), Start: r.addr(), End: r.addr()}
		if r.err == nil && (!s.Start.IsValid() || !s.End.IsValid() || s.Start.Is4() != s.End.Is4()) {
			r.fail("traffic selector %v-%v", s.Start, s.End)
		}
		out = append(out, s)
	}
	return out
}

func decodeState(b []byte) (*haState, error) {
	r := &stateReader{b: b}
	if m := r.take(len(stateMagic)); r.err != nil || string(m) != string(stateMagic) {
		return nil, fmt.Errorf("%w: not an HA state blob", ErrBadState)
	}
	if v := r.u8(); r.err == nil && v != stateVersion {
		return nil, fmt.Errorf("%w: version %d, we read %d", ErrBadState, v, stateVersion)
	}
	st := &haState{id: r.u64()}
	f := r.u16()
	bit := func(i int) bool { return f&(1<<i) != 0 }
	st.initiator, st.flagI, st.natLocal, st.natRemote, st.natSupported, st.forced = bit(0), bit(1), bit(2), bit(3), bit(4), bit(5)
	st.peerMOBIKE, st.fragOK, st.msgIDSync, st.replaySync = bit(6), bit(7), bit(8), bit(9)
	st.spii, st.spir = r.u64(), r.u64()
	st.nextMsgID, st.peerNextMsgID = r.u32(), r.u32()
	st.prop.Number = r.u8()
	st.prop.Protocol = wire.ProtoIKE
	st.prop.Transforms = r.transforms()
	for _, k := range []*[]byte{&st.skd, &st.skai, &st.skar, &st.skei, &st.sker, &st.skpi, &st.skpr} {
		*k = r.bytes()
	}
	st.path.Local = r.addrPort()
	st.path.Remote = r.addrPort()
	st.path.IfIndex = int(int32(r.u32()))
	st.peerMOBIKED = r.bytes()
	st.peerID = string(r.bytes())
	st.poolKey = string(r.bytes())
	st.vips, st.dns, st.peerAddrs = r.addrs(), r.addrs(), r.addrs()
	for range r.count(maxStateList, "verified endpoints") {
		if ap := r.addrPort(); ap.IsValid() {
			st.verified = append(st.verified, ap)
		} else {
			r.fail("empty verified endpoint")
		}
	}
	st.lastRespID = r.u32()
	for range r.count(maxStateList, "response fragments") {
		st.lastResp = append(st.lastResp, r.bytes())
	}
	st.lastRespTo = r.addrPort()
	for range r.count(maxStateChildren, "Child SAs") {
		c := ChildSA{SPIIn: r.u32(), SPIOut: r.u32(), KeyIn: r.bytes(), KeyOut: r.bytes()}
		c.ESN = r.u16()&1 != 0
		c.Proposal = string(r.bytes())
		c.Transforms = r.transforms()
		c.LocalTS = r.selectors()
		c.RemoteTS = r.selectors()
		age := r.u64()
		if age > uint64(maxChildAge) {
			r.fail("Child SA %08x is %d ns old", c.SPIIn, age)
		}
		st.childAges = append(st.childAges, time.Duration(age))
		if r.err == nil && (c.SPIIn == 0 || c.SPIOut == 0 || len(c.KeyIn) == 0 || len(c.KeyIn) != len(c.KeyOut)) {
			r.fail("Child SA %08x/%08x without SPIs or keys", c.SPIIn, c.SPIOut)
		}
		st.children = append(st.children, c)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d octets after the end", ErrBadState, len(r.b))
	}
	if st.spii == 0 || st.spir == 0 {
		return nil, fmt.Errorf("%w: zero IKE SPI", ErrBadState)
	}
	if st.id == 0 {
		// The exporter always names the SA; zero would match other copies.
		return nil, fmt.Errorf("%w: no HA identity", ErrBadState)
	}
	if !st.path.Local.IsValid() || !st.path.Remote.IsValid() {
		return nil, fmt.Errorf("%w: no path", ErrBadState)
	}
	return st, nil
}
