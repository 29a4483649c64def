package ikeesp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/report"
)

// CloseTimeout bounds the DELETE exchange when an SA is closed: a peer
// that does not answer must not hold a disconnect or a stop hostage.
const CloseTimeout = 3 * time.Second

// ChildConfig makes the dataplane's SA pair from a negotiated Child SA.
func ChildConfig(ch ike.ChildSA, remote []netip.Prefix, pending bool) (esp.ChildConfig, error) {
	cipher, err := ESPCipher(ch.Transforms)
	if err != nil {
		return esp.ChildConfig{}, fmt.Errorf("child SA %08x: %w", ch.SPIIn, err)
	}
	in, err := esp.NewInboundSAWith(cipher, ch.SPIIn, ch.KeyIn, ch.ESN)
	if err != nil {
		return esp.ChildConfig{}, fmt.Errorf("child SA %08x: %w", ch.SPIIn, err)
	}
	out, err := esp.NewOutboundSAWith(cipher, ch.SPIOut, ch.KeyOut, ch.ESN)
	if err != nil {
		return esp.ChildConfig{}, fmt.Errorf("child SA %08x: %w", ch.SPIOut, err)
	}
	// Our own selectors bound what the peer may send us (RFC 4301 5.2);
	// the dataplane drops inbound packets addressed outside them.
	local := SelectorsToPrefixes(ch.LocalTS)
	return esp.ChildConfig{In: in, Out: out, Remote: remote, Local: local, Proposal: ch.Proposal, OutboundPending: pending}, nil
}

// ESPCipher maps a Child SA's negotiated encryption transform to the
// dataplane's cipher; the dataplane has AEAD ciphers with 16-octet ICVs only.
func ESPCipher(ts []wire.Transform) (esp.Cipher, error) {
	for _, t := range ts {
		if t.Type != wire.TransformEncr {
			continue
		}
		switch t.ID {
		case ikecrypto.EncrAESGCM16:
			return esp.AESGCM16, nil
		case ikecrypto.EncrChaCha20Poly1305:
			return esp.ChaCha20Poly1305, nil
		}
		return 0, fmt.Errorf("ESP encryption transform %d is not supported by the dataplane", t.ID)
	}
	return 0, errors.New("no ESP encryption transform negotiated")
}

// ChildStatus is one Child SA of the dataplane in status form.
func ChildStatus(cs esp.ChildStats) report.ChildStatus {
	return report.ChildStatus{
		SPIIn: fmt.Sprintf("%08x", cs.SPIIn), SPIOut: fmt.Sprintf("%08x", cs.SPIOut),
		BytesIn: cs.BytesIn, BytesOut: cs.BytesOut, PacketsIn: cs.PacketsIn, PacketsOut: cs.PacketsOut,
		Proposal: cs.Proposal, RemoteTS: PrefixStrings(cs.Remote), LocalTS: PrefixStrings(cs.Local),
	}
}

// ChildStatuses lists a peer's Child SAs in a stable order: by remote
// selectors, then inbound SPI.
func ChildStatuses(stats []esp.ChildStats) []report.ChildStatus {
	out := make([]report.ChildStatus, 0, len(stats))
	for _, cs := range stats {
		out = append(out, ChildStatus(cs))
	}
	slices.SortFunc(out, func(a, b report.ChildStatus) int {
		if c := strings.Compare(strings.Join(a.RemoteTS, ","), strings.Join(b.RemoteTS, ",")); c != 0 {
			return c
		}
		return strings.Compare(a.SPIIn, b.SPIIn)
	})
	return out
}

// PrefixList is ps as one comma-separated line.
func PrefixList(ps []netip.Prefix) string { return strings.Join(PrefixStrings(ps), ",") }

// PrefixStrings is ps in their text form.
func PrefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// Proposals maps the configured proposals to the engine's.
func Proposals(ps []config.Proposal) []ike.Proposal {
	out := make([]ike.Proposal, len(ps))
	for i, p := range ps {
		out[i] = ike.Proposal(p)
	}
	return out
}

// SelectorsToPrefixes is ts as the prefixes the dataplane matches packets against.
func SelectorsToPrefixes(ts []wire.TrafficSelector) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range ts {
		out = append(out, wire.RangePrefixes(t.Start, t.End)...)
	}
	return out
}

// SwitchRevision is a switch_revision value as the engine's rules.
func SwitchRevision(v string) ike.SwitchRevision {
	if v == config.SwitchRevision03 {
		return ike.SwitchRev03
	}
	return ike.SwitchRev00
}

// SHA1RSA is the certificate peer option for allow_sha1_rsa.
func SHA1RSA(allow bool) []ike.CertPeerOption {
	if allow {
		return []ike.CertPeerOption{ike.AllowSHA1RSA()}
	}
	return nil
}
