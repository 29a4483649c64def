package ike

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
)

// FirstMessage is an initiator's IKE_SA_INIT request with what it was
// made of, so that another process can take the exchange over once the
// request is out (InitiatorConfig.First). `roam connect` that has to start
// its daemon sends IKE_SA_INIT itself while the daemon starts, and hands
// this over with the socket: the daemon's start then overlaps the first
// round trip instead of preceding it.
//
// KESeed and Nonce are secrets (whoever holds them with the gateway's
// answer has the IKE SA's keys): they are never logged (String leaves them
// out), and travel only over the root-only control socket.
type FirstMessage struct {
	SPIi uint64 `json:"spii"`
	// Group is the key exchange group; KESeed the random bytes its
	// private key was drawn from, which draw it again.
	Group  uint16 `json:"group"`
	KESeed []byte `json:"ke_seed"`
	Nonce  []byte `json:"nonce"`
	// NATSource is the (forced) NAT_DETECTION_SOURCE_IP hash sent.
	NATSource []byte `json:"nat_source"`
	// Packet is the request as sent; the SA taking over builds its own
	// from the fields above and takes the exchange over only when both
	// are the same bytes.
	Packet []byte `json:"packet"`
	// SentAt is when the sender put Packet on the wire (unix ns), the
	// start of the first round trip's sample; 0: unknown, no sample.
	SentAt int64 `json:"sent_at,omitempty"`
}

// String names the message without its secrets.
func (f FirstMessage) String() string {
	return fmt.Sprintf("IKE_SA_INIT spii=%s group=%d (%d bytes)", spiHex(f.SPIi), f.Group, len(f.Packet))
}

// PrepareInit makes the IKE_SA_INIT request Dial with cfg would send
// first, for the caller to send on cfg.Path and hand to another Dial as
// cfg.First. The authenticators are not needed.
func PrepareInit(cfg InitiatorConfig) (*FirstMessage, error) {
	cfg.First = nil
	sa, err := newInitiator(context.Background(), cfg, false, nil, nil)
	if err != nil {
		return nil, err
	}
	defer sa.stop()
	group := dhGroups(sa.cfg.ike)[0]
	// What the draw read is the seed that draws the same key again.
	rec := &recordingReader{r: sa.cfg.rand}
	ke, err := ikecrypto.NewKeyExchange(group, rec)
	if err != nil {
		return nil, fmt.Errorf("ike: key exchange group %d: %w", group, err)
	}
	sa.ke = ke
	sa.ni = sa.randBytes(32)
	pkt, err := sa.buildInit(nil)
	if err != nil {
		return nil, err
	}
	return &FirstMessage{SPIi: sa.spii.Load(), Group: group, KESeed: rec.read, Nonce: sa.ni,
		NATSource: natSourceOf(sa), Packet: pkt}, nil
}

// natSourceOf is the forced NAT_DETECTION_SOURCE_IP hash the SA's
// IKE_SA_INIT carries, nil when it carries the true one.
func natSourceOf(sa *SA) []byte {
	if !sa.nat.forced {
		return nil
	}
	return sa.saInit.natSource
}

// adoptFirst takes f over as the outstanding IKE_SA_INIT: the key
// exchange drawn again from its seed, the same nonce and NAT hash, and the
// request, which must come out as f's very bytes, scheduled for
// retransmission as if sent now.
func (sa *SA) adoptFirst(f *FirstMessage) error {
	if f.SPIi != sa.spii.Load() {
		return errors.New("its SPI is not this SA's")
	}
	if groups := dhGroups(sa.cfg.ike); len(groups) == 0 || groups[0] != f.Group {
		return fmt.Errorf("group %d is not the first proposed", f.Group)
	}
	ke, err := ikecrypto.NewKeyExchange(f.Group, bytes.NewReader(f.KESeed))
	if err != nil {
		return fmt.Errorf("its key exchange: %w", err)
	}
	sa.ke, sa.ni = ke, slices.Clone(f.Nonce)
	pkt, err := sa.buildInit(f.NATSource)
	if err != nil {
		return err
	}
	if !bytes.Equal(pkt, f.Packet) {
		sa.ke, sa.ni = nil, nil
		return errors.New("it differs from the request this configuration makes")
	}
	sa.log.Info("taking over IKE_SA_INIT", "remote", sa.Path().Remote, "group", f.Group)
	r := sa.initRequest(pkt)
	sa.out = r
	r.sentOn = sa.Path()
	now := sa.cfg.clock.Now()
	sa.times.requestedAt.Store(now.UnixNano())
	// The round trip began when the other process sent it, often before
	// this process existed: timed from now, the answer already waiting
	// would make a sample of a few milliseconds, and the dead-path window
	// its floor from the first second. A zero sentAt gives none.
	if sent := time.Unix(0, f.SentAt); f.SentAt > 0 && !sent.After(now) {
		r.sentAt = sent
	}
	sa.armRetransmit(r)
	return nil
}

// recordingReader passes reads through and keeps what they returned.
type recordingReader struct {
	r    io.Reader
	read []byte
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	rr.read = append(rr.read, p[:n]...)
	return n, err
}
