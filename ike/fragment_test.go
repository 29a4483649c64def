package ike

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
)

// mtuDrop drops every datagram whose IPv4 packet would exceed mtu, the way
// a path that discards IP fragments behaves.
func mtuDrop(mtu int) netsim.Impairment {
	return netsim.Impairment{Drop: func(_ int, d netsim.Datagram) bool { return len(d.Payload)+28 > mtu }}
}

// TestFragmentation runs IKE_AUTH with RSA certificates over a path that
// drops anything larger than its MTU: it succeeds only when both sides
// negotiate RFC 7383 and fragment their IKE_AUTH messages.
func TestFragmentation(t *testing.T) {
	keys := getTestKeys(t)
	ca := newCA(t, "Example Root CA", keys.rsa, nil)
	tests := []struct {
		name        string
		mtu         int
		initNoFrag  bool
		respNoFrag  bool
		fragmentMTU int
		wantErr     bool
	}{
		{"576-safe default", 1280, false, false, 0, false},
		{"sized for a known MTU", 1280, false, false, 1280, false},
		{"initiator without fragmentation", 1280, true, false, 0, true},
		{"responder refuses fragmentation", 1280, false, true, 0, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gwAuth := gatewayCertAuth(t, keys.rsa, ca)
			e := newEnv(t, int64(700+i), func(r *ResponderConfig) {
				r.LocalAuth = gwAuth
				r.PeerAuth = func(id *wire.Identification) (PeerAuth, error) {
					return NewCertPeer(identityString(id), ca.pem())
				}
				r.NoFragmentation = tc.respNoFrag
			})
			e.net.SetDefault(mtuDrop(tc.mtu))
			client := issue(t, &x509.Certificate{
				Subject:        pkix.Name{CommonName: "alice"},
				EmailAddresses: []string{"alice@example.com"},
				KeyUsage:       x509.KeyUsageDigitalSignature,
			}, keys.rsa, &ca)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			var err error
			if cfg.LocalAuth, err = NewCertAuth("alice@example.com", client.pem(), keyPEM(t, keys.rsa, "PRIVATE KEY")); err != nil {
				t.Fatal(err)
			}
			if cfg.PeerAuth, err = NewCertPeer("vpn.example.com", ca.pem()); err != nil {
				t.Fatal(err)
			}
			cfg.NoFragmentation, cfg.FragmentMTU = tc.initNoFrag, tc.fragmentMTU
			c := e.dial(cfg)
			est, err := c.wait(t, 10*time.Second)
			if tc.wantErr {
				if err == nil {
					t.Fatal("IKE_AUTH got through a path that drops its unfragmented messages")
				}
				if !errors.Is(err, ErrUnreachable) {
					t.Fatalf("error %v, want the gateway unreachable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
			if n := est.SA.Counters().FragmentsSent; n < 2 {
				t.Errorf("client sent %d fragments", n)
			}
			if n := gw.SA.Counters().FragmentsSent; n < 2 {
				t.Errorf("gateway sent %d fragments", n)
			}
		})
	}
}

// fragmentRig delivers hand-made fragments of requests from the client SA
// to the gateway SA of an established pair; the gateway's answers reach the
// client as responses it did not ask for, which it counts as unexpected.
type fragmentRig struct {
	t      *testing.T
	client *SA
	gw     *SA
	msgID  uint32
}

func newFragmentRig(t *testing.T) *fragmentRig {
	e := newEnv(t, 800, nil)
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	// The tests count the gateway's answers as responses the client did
	// not expect: a retransmitted IKE_AUTH, which a loaded machine makes
	// with the fast test schedule, would be answered twice and miscount.
	cfg.Retransmit = DefaultRetransmit
	_, est := e.dialEstablished(t, cfg)
	gw := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	r := &fragmentRig{t: t, client: est.SA, gw: gw.SA}
	r.onClient(func(sa *SA) { r.msgID = sa.nextMsgID })
	return r
}

// onClient runs f in the client SA's goroutine and waits for it.
func (r *fragmentRig) onClient(f func(sa *SA)) {
	done := make(chan struct{})
	if !r.client.post(func() { f(r.client); close(done) }) {
		r.t.Fatal("client SA gone")
	}
	<-done
}

// request builds an INFORMATIONAL request with msgID split in pieces of
// chunk bytes.
func (r *fragmentRig) request(msgID uint32, chunk int) [][]byte {
	r.t.Helper()
	var frags [][]byte
	r.onClient(func(sa *SA) {
		first, body, err := wire.EncodePayloads([]wire.Payload{&wire.VendorID{Data: bytes.Repeat([]byte{0x5a}, 900)}})
		if err != nil {
			r.t.Error(err)
			return
		}
		if frags, err = sa.fragments(sa.header(wire.ExchangeInformational, msgID, false), first, body, chunk); err != nil {
			r.t.Error(err)
		}
	})
	return frags
}

func (r *fragmentRig) deliver(frags ...[]byte) {
	for _, f := range frags {
		r.gw.HandlePacket(f, r.gw.Path())
	}
}

// waitAtLeast polls f until it reaches want.
func waitAtLeast(t *testing.T, what string, f func() uint64, want uint64) {
	t.Helper()
	deadline := time.Now().Add(mobikeWait)
	for f() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, f(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReassembly checks the receiver's rules: any order, duplicates
// ignored, each fragment authenticated, a larger Total restarts the
// message and a smaller one is a stale copy, the fragment count is capped,
// and the first fragment of a retransmitted request brings the cached
// response back.
func TestReassembly(t *testing.T) {
	r := newFragmentRig(t)
	answers := func() uint64 { return r.client.Counters().Unexpected }
	gwStats := r.gw.Counters

	// Out of order, with a duplicate: one answer.
	f := r.request(r.msgID, 300)
	if len(f) != 4 {
		t.Fatalf("%d fragments, want 4", len(f))
	}
	r.deliver(f[2], f[0], f[2], f[3])
	time.Sleep(50 * time.Millisecond)
	if answers() != 0 {
		t.Fatal("answered before the last fragment arrived")
	}
	r.deliver(f[1])
	waitAtLeast(t, "answers", answers, 1)

	// The first fragment of the same request again: the response is sent
	// again from the cache; other fragments of it are ignored.
	r.deliver(f[3], f[0])
	waitAtLeast(t, "answers after a retransmission", answers, 2)
	waitAtLeast(t, "duplicate requests", func() uint64 { return gwStats().DuplicateRequests }, 1)

	// A tampered fragment fails its own ICV check and is not kept.
	r.msgID++
	f = r.request(r.msgID, 300)
	bad := bytes.Clone(f[1])
	bad[len(bad)-1] ^= 1
	undecryptable := gwStats().Undecryptable
	r.deliver(f[0], bad, f[2], f[3])
	waitAtLeast(t, "undecryptable", func() uint64 { return gwStats().Undecryptable }, undecryptable+1)
	r.deliver(f[1])
	waitAtLeast(t, "answers after the good fragment", answers, 3)

	// Refragmented for a smaller MTU: the pieces of the first attempt are
	// dropped when a larger Total appears; one of them arriving late is
	// refused.
	r.msgID++
	big := r.request(r.msgID, 450) // 2 fragments
	small := r.request(r.msgID, 200)
	if len(big) >= len(small) {
		t.Fatalf("fragment counts %d and %d", len(big), len(small))
	}
	dropped := gwStats().FragmentsDropped
	r.deliver(big[0])
	r.deliver(small[:len(small)-1]...)
	r.deliver(big[1])
	waitAtLeast(t, "stale fragments dropped", func() uint64 { return gwStats().FragmentsDropped }, dropped+1)
	if answers() != 3 {
		t.Fatal("answered a mix of two fragmentations")
	}
	r.deliver(small[len(small)-1])
	waitAtLeast(t, "answers after refragmentation", answers, 4)

	// More fragments than the limit: refused without being kept.
	r.msgID++
	r.onClient(func(sa *SA) {
		h := sa.header(wire.ExchangeInformational, r.msgID, false)
		if f, err := sa.fragments(h, wire.PayloadVendorID, make([]byte, 904), 13); err == nil {
			t.Errorf("sealed %d fragments, over the limit of %d", len(f), maxFragments)
		}
	})
	var over []byte
	r.onClient(func(sa *SA) {
		h := sa.header(wire.ExchangeInformational, r.msgID, false)
		aad := wire.EncryptedFragmentHeader(h, wire.PayloadVendorID, 1, maxFragments+1, sa.skOut.SealedLen(8))
		data, err := sa.skOut.Seal(aad, make([]byte, 8))
		if err != nil {
			t.Error(err)
		}
		over = append(aad, data...)
	})
	dropped = gwStats().FragmentsDropped
	r.deliver(over)
	waitAtLeast(t, "over-limit fragments dropped", func() uint64 { return gwStats().FragmentsDropped }, dropped+1)

	// A message that would reassemble to more than the size limit.
	var huge [][]byte
	r.onClient(func(sa *SA) {
		var err error
		h := sa.header(wire.ExchangeInformational, r.msgID, false)
		if huge, err = sa.fragments(h, wire.PayloadVendorID, make([]byte, 3*maxReassembled/2), maxReassembled/2); err != nil {
			t.Error(err)
		}
	})
	dropped = gwStats().FragmentsDropped
	r.deliver(huge...)
	waitAtLeast(t, "oversized message dropped", func() uint64 { return gwStats().FragmentsDropped }, dropped+1)
	if answers() != 4 {
		t.Fatal("answered an oversized message")
	}
}

// TestFragmentsInFlight makes sure a fragmented exchange survives loss of
// a fragment: the retransmission resends every fragment.
func TestFragmentsInFlight(t *testing.T) {
	keys := getTestKeys(t)
	ca := newCA(t, "Example Root CA", keys.rsa, nil)
	gwAuth := gatewayCertAuth(t, keys.rsa, ca)
	e := newEnv(t, 900, func(r *ResponderConfig) { r.LocalAuth = gwAuth })
	// Drop the second fragment of the gateway's first IKE_AUTH response
	// (its RSA certificate makes it large; the client's PSK request is not).
	var skf atomic.Int32
	e.net.SetDefault(netsim.Impairment{Drop: func(_ int, d netsim.Datagram) bool {
		m, err := wire.Decode(trimMarker(d.Payload))
		if err != nil || len(m.Payloads) != 1 {
			return false
		}
		if _, ok := m.Payloads[0].(*wire.EncryptedFragment); ok && m.Header.Flags&wire.FlagResponse != 0 {
			return skf.Add(1) == 2
		}
		return false
	}})
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	var err error
	if cfg.PeerAuth, err = NewCertPeer("vpn.example.com", ca.pem()); err != nil {
		t.Fatal(err)
	}
	est, err := e.dial(cfg).wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if est.SA.Counters().Retransmits == 0 {
		t.Fatal("established without retransmitting the lost fragment")
	}
	if n := skf.Load(); n <= 2 {
		t.Fatalf("%d response fragments seen: the response was not resent whole", n)
	}
}

func trimMarker(b []byte) []byte {
	if len(b) >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return b[4:]
	}
	return b
}
