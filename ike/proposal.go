package ike

import (
	"fmt"
	"slices"
	"strings"

	"github.com/roam-vpn/roam/ike/wire"
)

// Proposal is one locally configured proposal: a set of transforms, possibly
// several of one type (any of them acceptable), and the text it was parsed
// from. Its fields match config.Proposal, so a conversion suffices.
type Proposal struct {
	Transforms []wire.Transform
	Text       string
}

// IANA transform IDs used for naming proposals.
const (
	encrAESCBC   = 12
	encrAESGCM8  = 18
	encrAESGCM12 = 19
	encrAESGCM16 = 20
	// RFC 7634
	encrChaCha20Poly1305 = 28
)

// selectProposal picks the first of the peer's proposals (peer preference
// order, as RFC 7296 2.7 suggests) that one of ours accepts, reduced to a
// single transform per type. A missing ESN transform counts as "no ESN" on
// either side. preferDH, if non-zero and acceptable, is chosen for the key
// exchange so the peer's KE payload can be used as is.
func selectProposal(local []Proposal, peer []wire.Proposal, proto wire.ProtocolID, preferDH uint16) (wire.Proposal, bool) {
	for _, pp := range peer {
		if pp.Protocol != proto {
			continue
		}
		for _, lp := range local {
			if ts, ok := matchTransforms(lp.Transforms, pp.Transforms, proto, preferDH); ok {
				return wire.Proposal{Number: pp.Number, Protocol: proto, SPI: pp.SPI, Transforms: ts}, true
			}
		}
	}
	return wire.Proposal{}, false
}

func withDefaultESN(ts []wire.Transform, proto wire.ProtocolID) []wire.Transform {
	if proto != wire.ProtoESP && proto != wire.ProtoAH {
		return ts
	}
	for _, t := range ts {
		if t.Type == wire.TransformESN {
			return ts
		}
	}
	return append(slices.Clip(ts), wire.Transform{Type: wire.TransformESN, ID: 0})
}

// withDefaultADDKE adds NONE for each additional key exchange type that
// other has and ts lacks: a side that names no ADDKE of a type does
// without that exchange (RFC 9370 2.2.1).
func withDefaultADDKE(ts, other []wire.Transform) []wire.Transform {
	for _, o := range other {
		if !o.Type.IsADDKE() || slices.ContainsFunc(ts, func(t wire.Transform) bool { return t.Type == o.Type }) {
			continue
		}
		ts = append(slices.Clip(ts), wire.Transform{Type: o.Type, ID: 0})
	}
	return ts
}

func matchTransforms(local, peer []wire.Transform, proto wire.ProtocolID, preferDH uint16) ([]wire.Transform, bool) {
	offered := peer
	peerTypes := func(typ wire.TransformType) bool {
		return slices.ContainsFunc(offered, func(t wire.Transform) bool { return t.Type == typ })
	}
	local, peer = withDefaultESN(local, proto), withDefaultESN(peer, proto)
	local, peer = withDefaultADDKE(local, peer), withDefaultADDKE(peer, local)
	var types []wire.TransformType
	for _, t := range append(slices.Clip(local), peer...) {
		if !slices.Contains(types, t.Type) {
			types = append(types, t.Type)
		}
	}
	slices.Sort(types)
	var out []wire.Transform
	for _, typ := range types {
		var pick *wire.Transform
		for i := range peer {
			pt := peer[i]
			if pt.Type != typ || !slices.Contains(local, pt) {
				continue
			}
			if pick == nil || (typ == wire.TransformDH && pt.ID == preferDH && pick.ID != preferDH) {
				pick = &peer[i]
			}
		}
		if pick == nil {
			return nil, false
		}
		if typ.IsADDKE() && pick.ID == 0 && !peerTypes(typ) {
			continue // the peer named no such exchange: leave it out
		}
		out = append(out, *pick)
	}
	return out, true
}

// transformOf returns the first transform of type typ.
func transformOf(ts []wire.Transform, typ wire.TransformType) (wire.Transform, bool) {
	for _, t := range ts {
		if t.Type == typ {
			return t, true
		}
	}
	return wire.Transform{}, false
}

// groupNames spells key exchange methods as strongSwan does.
var groupNames = map[uint16]string{14: "modp2048", 15: "modp3072", 16: "modp4096", 19: "ecp256",
	20: "ecp384", 21: "ecp521", 31: "curve25519", 35: "mlkem512", 36: "mlkem768", 37: "mlkem1024"}

// ProposalText names a negotiated transform set the way strongSwan spells
// it, e.g. "aes256gcm16-prfsha384-ecp384" or "aes128gcm16-esn".
func ProposalText(ts []wire.Transform) string {
	var parts []string
	for _, t := range ts {
		var s string
		switch t.Type {
		case wire.TransformEncr:
			switch t.ID {
			case encrAESCBC:
				s = fmt.Sprintf("aes%d", t.KeyLength)
			case encrAESGCM8:
				s = fmt.Sprintf("aes%dgcm8", t.KeyLength)
			case encrAESGCM12:
				s = fmt.Sprintf("aes%dgcm12", t.KeyLength)
			case encrAESGCM16:
				s = fmt.Sprintf("aes%dgcm16", t.KeyLength)
			case encrChaCha20Poly1305:
				s = "chacha20poly1305"
			}
		case wire.TransformInteg:
			s = map[uint16]string{12: "sha256", 13: "sha384", 14: "sha512", 2: "sha1"}[t.ID]
		case wire.TransformPRF:
			s = map[uint16]string{5: "prfsha256", 6: "prfsha384", 7: "prfsha512", 2: "prfsha1"}[t.ID]
		case wire.TransformDH:
			s = groupNames[t.ID]
		case wire.TransformESN:
			if t.ID == 1 {
				s = "esn"
			}
			if t.ID == 0 {
				continue
			}
		}
		if t.Type.IsADDKE() {
			if t.ID == 0 {
				continue // NONE: the exchange did not run
			}
			if name := groupNames[t.ID]; name != "" {
				s = fmt.Sprintf("ke%d_%s", t.Type-wire.TransformADDKE1+1, name)
			}
		}
		if s == "" {
			s = fmt.Sprintf("%d:%d", t.Type, t.ID)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "-")
}

// dhGroups lists, in order, the key exchange groups our proposals offer.
func dhGroups(ps []Proposal) []uint16 {
	var out []uint16
	for _, p := range ps {
		for _, t := range p.Transforms {
			if t.Type == wire.TransformDH && !slices.Contains(out, t.ID) {
				out = append(out, t.ID)
			}
		}
	}
	return out
}

// offerProposals turns local proposals into SA payload proposals, numbered
// from 1, with group moved first among the key exchange transforms so the
// responder's choice matches our KE payload when it can.
func offerProposals(ps []Proposal, proto wire.ProtocolID, spi []byte, group uint16) []wire.Proposal {
	out := make([]wire.Proposal, 0, len(ps))
	for i, p := range ps {
		ts := slices.Clone(p.Transforms)
		slices.SortStableFunc(ts, func(a, b wire.Transform) int {
			if a.Type != b.Type {
				return int(a.Type) - int(b.Type)
			}
			if a.Type == wire.TransformDH {
				switch {
				case a.ID == group && b.ID != group:
					return -1
				case b.ID == group && a.ID != group:
					return 1
				}
			}
			return 0
		})
		out = append(out, wire.Proposal{Number: uint8(i + 1), Protocol: proto, SPI: slices.Clone(spi), Transforms: ts})
	}
	return out
}
