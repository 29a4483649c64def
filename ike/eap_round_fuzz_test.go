package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// eapFuzzPair is a gateway SA in the middle of an EAP-MSCHAPv2 round (it
// sent its first EAP request) and the client SA whose keys seal requests.
type eapFuzzPair struct {
	cancel     context.CancelFunc
	client, gw *SA
}

func newEAPFuzzPair(tb testing.TB, gwAuth LocalAuth, ca testCert) *eapFuzzPair {
	ctx, cancel := context.WithCancel(context.Background())
	var resp *Responder
	var client *SA
	var hold atomic.Bool // drop the client's own EAP answers: the fuzzer sends them
	cliPath := netpath.Path{Local: netip.MustParseAddrPort("192.0.2.1:40000"), Remote: netip.MustParseAddrPort("198.51.100.1:500")}
	toGW := funcTransport(func(pkt []byte, p netpath.Path) {
		if len(pkt) >= wire.HeaderLen && wire.ExchangeType(pkt[18]) == wire.ExchangeIKEAuth && binary.BigEndian.Uint32(pkt[20:24]) >= 2 {
			hold.Store(true)
			return
		}
		resp.HandlePacket(pkt, netpath.Path{Local: p.Remote, Remote: p.Local})
	})
	// The gateway may answer before Dial has returned the client.
	toClient := newLateSA()
	rcfg := defaultResponderConfig(tb)
	rcfg.LocalAuth = gwAuth
	rcfg.PeerAuth = func(*wire.Identification) (PeerAuth, error) { return nil, errors.New("EAP clients only") }
	rcfg.EAPServer = func(*wire.Identification) (EAPServer, error) {
		return eap.NewMSCHAPv2Server(func(string) ([]byte, bool) { return []byte("pw"), true }, seqReader()), nil
	}
	var err error
	if resp, err = NewResponder(ctx, rcfg, toClient, make(chan Event, 16)); err != nil {
		tb.Fatal(err)
	}
	cfg := defaultInitiatorConfig(tb, "alice@example.com")
	cfg.Path = cliPath
	if cfg.LocalAuth, err = NewEAPMSCHAPv2Auth("alice@example.com", "alice", []byte("pw"), false); err != nil {
		tb.Fatal(err)
	}
	if cfg.PeerAuth, err = NewCertPeer("vpn.example.com", ca.pem()); err != nil {
		tb.Fatal(err)
	}
	if client, err = Dial(ctx, cfg, toGW, make(chan Event, 16)); err != nil {
		tb.Fatal(err)
	}
	toClient.set(client)
	deadline := time.Now().Add(5 * time.Second)
	for !hold.Load() {
		if time.Now().After(deadline) {
			tb.Fatal("the client never answered the first EAP request")
		}
		time.Sleep(time.Millisecond)
	}
	sas := resp.SAs()
	if len(sas) != 1 {
		tb.Fatalf("%d gateway SAs", len(sas))
	}
	var inEAP bool
	call(sas[0], func() { inEAP = sas[0].eap.server != nil })
	if !inEAP {
		tb.Fatal("the gateway SA is not in an EAP round")
	}
	return &eapFuzzPair{cancel: cancel, client: client, gw: sas[0]}
}

// FuzzResponderEAPRound seals arbitrary IKE_AUTH payloads with the
// client's keys and the expected Message ID and hands them to a gateway SA
// waiting for the client's EAP response, so the fuzzer reaches the EAP
// round (eapServerStep and the EAP-MSCHAPv2 server) behind decryption.
func FuzzResponderEAPRound(f *testing.F) {
	keys := getTestKeys(f)
	ca := newCA(f, "Example Root CA", keys.p256, nil)
	gwAuth := gatewayCertAuth(f, keys.p256, ca)
	// Seeds: an EAP payload with an MSCHAPv2 response header, an empty
	// EAP payload, an AUTH instead, a notify.
	f.Add(byte(48), []byte{0, 0, 0, 14, 2, 1, 0, 10, 26, 2, 1, 0, 4, 0})
	f.Add(byte(48), []byte{0, 0, 0, 4})
	f.Add(byte(39), []byte{0, 0, 0, 12, 2, 0, 0, 0, 1, 2, 3, 4})
	f.Add(byte(41), []byte{0, 0, 0, 8, 0, 0, 0, 24})
	var pair *eapFuzzPair
	f.Cleanup(func() {
		if pair != nil {
			pair.cancel()
		}
	})
	f.Fuzz(func(t *testing.T, first byte, body []byte) {
		if pair != nil {
			pair.cancel()
		}
		pair = newEAPFuzzPair(t, gwAuth, ca)
		gw, client := pair.gw, pair.client
		var msgID uint32
		if !call(gw, func() { msgID = gw.peerNextMsgID }) {
			return
		}
		deliverSealed(gw, client, body, func(sealedLen int) []byte {
			return wire.EncryptedHeader(client.header(wire.ExchangeIKEAuth, msgID, false), wire.PayloadType(first), sealedLen)
		})
	})
}
