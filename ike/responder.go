package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// ResponderConfig configures a Responder (the gateway role).
type ResponderConfig struct {
	LocalAuth LocalAuth
	// LocalAuthFor, when set, picks our authenticator per initiator: with
	// PSKs the key is per client, and so is the AUTH we send back.
	// LocalAuth still gives the identity used before IDi is known.
	LocalAuthFor func(peer *wire.Identification) (LocalAuth, error)
	// PeerAuth returns the authenticator for the initiator claiming id, or
	// an error when that identity is unknown.
	PeerAuth func(id *wire.Identification) (PeerAuth, error)
	CertReqs []*wire.CertReq // sent in the IKE_SA_INIT response
	IKE, ESP []Proposal
	LocalTS  []netip.Prefix // default 0.0.0.0/0 and ::/0
	Pool     *Pool
	DNS      []netip.Addr
	// DNSDomains go to clients that ask for INTERNAL_DNS_DOMAIN (RFC 8598).
	DNSDomains []string
	// PeerTS returns the prefixes an initiator may use as inner sources
	// besides the addresses it leased from Pool (the subnet behind a site).
	// A client's TSi is narrowed to those two, whatever it asks for: a
	// client claiming another's inner address, or any other, gets
	// TS_UNACCEPTABLE. The caller keeps the grants of different identities
	// apart (config refuses overlaps).
	PeerTS func(id *wire.Identification) []netip.Prefix
	// RequireCP: initiators without a CFG_REQUEST get FAILED_CP_REQUIRED.
	RequireCP bool
	MOBIKE    bool
	// Addresses are our own addresses (a gateway's listen addresses). To
	// MOBIKE peers the IKE_AUTH response announces those other than the one
	// the SA uses (RFC 4555 3.4), or NO_ADDITIONAL_ADDRESSES; nil: nothing.
	Addresses []netip.Addr
	// AcceptPeerAddress, when set, decides whether a peer may move its SA
	// to an address; a refused UPDATE_SA_ADDRESSES is answered with
	// UNACCEPTABLE_ADDRESSES and the SA stays where it is.
	AcceptPeerAddress func(netip.Addr) bool
	// NoReturnRoutability: follow UPDATE_SA_ADDRESSES from an address not
	// yet verified at once. By default ESP stays on the old path until the
	// peer has echoed a COOKIE2 sent to the new one (RFC 4555 3.7), so an
	// authenticated peer cannot point our traffic at a third party.
	NoReturnRoutability bool
	// EarlyMove sends ESP ahead to the address under that check, within
	// the dataplane's amplification limit (PathUpdated.Unproved), so a
	// client that lost its old path is answered one round trip sooner;
	// IKE waits for the proof, and a failed check brings ESP back.
	EarlyMove bool
	// RoutabilityRetransmit schedules that check (zero: MoveRetransmit).
	RoutabilityRetransmit Retransmit
	// SwitchNotify is the SWITCH_TO_IP_ADDRESS notify type (switch.go),
	// private use (40960-65535); 0 means DefaultSwitchNotify.
	SwitchNotify wire.NotifyType
	// SwitchRevision is the draft revision whose rules our switch requests
	// follow (what the answer's arrival address means); zero: SwitchRev00.
	SwitchRevision SwitchRevision
	// SwitchReturnRoutability runs the return routability check also for
	// the UPDATE_SA_ADDRESSES that follows our own RequestSwitch (the
	// draft says it is not needed: the answer at the new address proved
	// the path).
	SwitchReturnRoutability bool
	// CookieThreshold: COOKIEs are demanded while at least this many SAs
	// are half-open. 0 means DefaultCookieThreshold; negative means always.
	CookieThreshold int
	// HalfOpenLimit caps half-open SAs; further IKE_SA_INITs are dropped.
	HalfOpenLimit int
	// HalfOpenPerSource caps the half-open SAs of one source address
	// (strongSwan's block_threshold; 0 means DefaultHalfOpenPerSource), so
	// one address that answers COOKIEs cannot take every slot. A source
	// that has one half-open already must also send a COOKIE, so that
	// requests forged with a victim's address cannot fill its share.
	HalfOpenPerSource int
	// EAPServer, when set, authenticates initiators whose IKE_AUTH
	// request has no AUTH with EAP (RFC 7296 2.16), through the server it
	// returns for their IDi. EAPOnly grants RFC 5998 EAP-only
	// authentication (no signature of ours) to initiators asking for it.
	EAPServer func(idi *wire.Identification) (EAPServer, error)
	EAPOnly   bool
	// HA makes this gateway one node of an HA pair (ha.go): it answers
	// RFC 6311's _SYNC_SUPPORTED notifies in IKE_AUTH, reports StateChanged
	// for replication, and takes replicated SAs over (ImportState,
	// TakeOver).
	HA bool
	// MaxChildSAs caps the Child SAs of one IKE SA (0: DefaultMaxChildSAs):
	// a client that rekeys and never deletes what it replaced gets
	// NO_ADDITIONAL_SAS rather than ever more SAs in the dataplane.
	MaxChildSAs int
	// MaxIKESAs caps the IKE SAs of the responder, half-open or not (0:
	// DefaultMaxIKESAs); IKE_SA_INITs beyond it are dropped and counted.
	// MaxIKESAsPerIdentity caps those of one identity (0:
	// DefaultMaxIKESAsPerIdentity): a new one ends the oldest.
	MaxIKESAs, MaxIKESAsPerIdentity int
	// HalfOpenTimeout ends SAs that do not complete IKE_AUTH in time.
	HalfOpenTimeout time.Duration
	// NoFragmentation refuses RFC 7383 IKE fragmentation; FragmentMTU as
	// in InitiatorConfig.
	NoFragmentation bool
	FragmentMTU     int
	// DPDDelay enables dead peer detection per SA, counting authenticated
	// IKE messages only (a quiet client costs one exchange a delay).
	DPDDelay time.Duration
	// Child SA lifetimes, as in InitiatorConfig.
	ChildRekeyTime, ChildLifeTime, RekeyJitter time.Duration
	IKERekeyTime                               time.Duration
	IKELifeTime                                time.Duration // as in InitiatorConfig
	Retransmit                                 Retransmit
	Clock                                      Clock
	Rand                                       io.Reader
	Log                                        *slog.Logger

	// ReauthTime, when set, is announced to initiators as RFC 4478
	// AUTH_LIFETIME in the IKE_AUTH response; an SA not replaced by a new
	// authentication within it (and a grace) is deleted.
	ReauthTime time.Duration
}

// Responder defaults.
const (
	DefaultCookieThreshold = 32
	DefaultHalfOpenLimit   = 1024
	DefaultHalfOpenTimeout = 30 * time.Second
	// DefaultMaxChildSAs caps Child SAs per IKE SA: one, its successor
	// during a rekey, and room for a collision.
	DefaultMaxChildSAs = 4
	// DefaultMaxIKESAs and DefaultMaxIKESAsPerIdentity: the latter leaves
	// room for a reauthentication's overlap and a few devices sharing an
	// identity.
	DefaultMaxIKESAs            = 10000
	DefaultMaxIKESAsPerIdentity = 4
	// DefaultHalfOpenPerSource is strongSwan's block_threshold.
	DefaultHalfOpenPerSource = 5
)

// ResponderStats counts what a Responder dropped or refused.
type ResponderStats struct {
	Malformed, UnknownSPI, CookiesSent, HalfOpenDropped, NoProposal, InvalidKE uint64
	// UnexpectedNAT: IKE_SA_INITs with NO_NATS_ALLOWED that came through a NAT.
	UnexpectedNAT uint64
	// InvalidSPISent: requests for unknown IKE SPIs answered with
	// INVALID_IKE_SPI; InvalidSPILimited: those left unanswered for the
	// rate limit.
	InvalidSPISent, InvalidSPILimited uint64
	// HalfOpenBlocked: IKE_SA_INITs dropped because their source address
	// had HalfOpenPerSource SAs half-open already.
	HalfOpenBlocked uint64
	// IKESALimited: IKE_SA_INITs dropped at MaxIKESAs.
	IKESALimited uint64
	// AuthFailures: failed authentications; AuthThrottled: IKE_AUTHs
	// refused unchecked while their source or identity was in backoff.
	AuthFailures, AuthThrottled uint64
}

type halfKey struct {
	spii   uint64
	remote netip.AddrPort
}

// Responder answers IKE_SA_INIT requests and routes every other message by
// SPI to the goroutine of its IKE SA.
type Responder struct {
	cfg     ResponderConfig
	common  common
	tr      Transport
	events  chan<- Event
	ctx     context.Context
	cookies cookieSecrets
	wg      sync.WaitGroup

	mu       sync.Mutex
	bySPI    map[uint64]*SA
	halfOpen map[halfKey]*SA
	// halfOpenBySrc counts halfOpen by remote address.
	halfOpenBySrc map[netip.Addr]int

	// byIdentity: established SAs by peer identity (initial_contact.go).
	byIdentity map[string][]*SA

	malformed, unknownSPI, cookiesSent, halfOpenDropped, noProposal, invalidKE, unexpectedNAT atomic.Uint64

	invalidSPITokens                  tokenBucket
	invalidSPISent, invalidSPILimited atomic.Uint64
	halfOpenBlocked, ikeSALimited     atomic.Uint64
	authFailures, authThrottled       atomic.Uint64
	// unauthLog limits the log lines that unauthenticated requests cause.
	unauthLog logLimiter
	// guess: failed authentications by source and identity (guess.go).
	guess guessGuard
}

// NewResponder creates a responder whose SAs live until ctx ends (or they
// are deleted). Events of all its SAs go to events.
func NewResponder(ctx context.Context, cfg ResponderConfig, tr Transport, events chan<- Event) (*Responder, error) {
	if err := checkBasics("responder", cfg.LocalAuth != nil && cfg.PeerAuth != nil, cfg.IKE, cfg.ESP); err != nil {
		return nil, err
	}
	if len(cfg.LocalTS) == 0 {
		cfg.LocalTS = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	if err := checkSwitchConfig(cfg.SwitchNotify, cfg.SwitchRevision); err != nil {
		return nil, err
	}
	if cfg.CookieThreshold == 0 {
		cfg.CookieThreshold = DefaultCookieThreshold
	}
	if cfg.HalfOpenLimit <= 0 {
		cfg.HalfOpenLimit = DefaultHalfOpenLimit
	}
	if cfg.MaxIKESAs <= 0 {
		cfg.MaxIKESAs = DefaultMaxIKESAs
	}
	if cfg.MaxIKESAsPerIdentity <= 0 {
		cfg.MaxIKESAsPerIdentity = DefaultMaxIKESAsPerIdentity
	}
	if cfg.HalfOpenPerSource <= 0 {
		cfg.HalfOpenPerSource = DefaultHalfOpenPerSource
	}
	if cfg.HalfOpenTimeout <= 0 {
		cfg.HalfOpenTimeout = DefaultHalfOpenTimeout
	}
	c := common{localAuth: cfg.LocalAuth, ike: cfg.IKE, esp: cfg.ESP, mobike: cfg.MOBIKE,
		fragmentation: !cfg.NoFragmentation, fragmentMTU: cfg.FragmentMTU, dpdDelay: cfg.DPDDelay,
		childRekey: cfg.ChildRekeyTime, childLife: cfg.ChildLifeTime, rekeyJitter: cfg.RekeyJitter, ikeRekey: cfg.IKERekeyTime, ikeLife: cfg.IKELifeTime,
		retransmit: cfg.Retransmit, clock: cfg.Clock, rand: cfg.Rand, log: cfg.Log, maxChildren: cfg.MaxChildSAs}
	c.fill()
	r := &Responder{cfg: cfg, common: c, tr: tr, events: events, ctx: ctx,
		bySPI: make(map[uint64]*SA), halfOpen: make(map[halfKey]*SA), halfOpenBySrc: make(map[netip.Addr]int)}
	r.invalidSPITokens = tokenBucket{burst: invalidSPIBurst, every: invalidSPIEvery}
	r.unauthLog = logLimiter{bucket: tokenBucket{burst: unauthLogBurst, every: unauthLogEvery}}
	if err := r.cookies.init(c.rand); err != nil {
		return nil, err
	}
	return r, nil
}

// Stats returns the responder's drop counters.
func (r *Responder) Stats() ResponderStats {
	return ResponderStats{r.malformed.Load(), r.unknownSPI.Load(), r.cookiesSent.Load(),
		r.halfOpenDropped.Load(), r.noProposal.Load(), r.invalidKE.Load(), r.unexpectedNAT.Load(),
		r.invalidSPISent.Load(), r.invalidSPILimited.Load(), r.halfOpenBlocked.Load(), r.ikeSALimited.Load(),
		r.authFailures.Load(), r.authThrottled.Load()}
}

// SAs returns the live IKE SAs.
func (r *Responder) SAs() []*SA {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*SA, 0, len(r.bySPI))
	for _, sa := range r.bySPI {
		// During an IKE rekey an SA is known under two SPIs.
		if !slices.Contains(out, sa) {
			out = append(out, sa)
		}
	}
	return out
}

// HalfOpen returns the number of SAs that have not completed IKE_AUTH.
func (r *Responder) HalfOpen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.halfOpen)
}

// Close deletes every SA (INFORMATIONAL DELETE where established) and waits
// for their goroutines, at most until ctx ends.
func (r *Responder) Close(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, sa := range r.SAs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = sa.Close(ctx)
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HandlePacket processes one IKE message (without non-ESP marker) that
// arrived on path. It never blocks on an SA and never retains pkt.
func (r *Responder) HandlePacket(pkt []byte, path netpath.Path) {
	msg, err := wire.Decode(pkt)
	if err != nil {
		r.malformed.Add(1)
		return
	}
	h := msg.Header
	if h.Exchange == wire.ExchangeIKESAInit && h.SPIr == 0 {
		if h.Flags&(wire.FlagResponse|wire.FlagInitiator) != wire.FlagInitiator || h.MessageID != 0 || h.SPIi == 0 {
			r.malformed.Add(1)
			return
		}
		r.handleInit(pkt, msg, path)
		return
	}
	// Our SPI is the responder's unless a rekey we started made us the
	// initiator of this IKE SA (the sender then clears the I flag).
	ours := h.SPIr
	if h.Flags&wire.FlagInitiator == 0 {
		ours = h.SPIi
	}
	r.mu.Lock()
	sa := r.bySPI[ours]
	r.mu.Unlock()
	if sa == nil {
		r.unknownSPI.Add(1)
		r.answerUnknownSPI(h, path)
		return
	}
	sa.HandlePacket(pkt, path)
}

// Unknown-SPI answers (RFC 7296 2.21.4) are limited to a burst of
// invalidSPIBurst, refilled at one per invalidSPIEvery: a restarted
// gateway tells its clients at once, a flood of forged requests gets
// little out of us.
const (
	invalidSPIBurst = 16
	invalidSPIEvery = 50 * time.Millisecond
)

// answerUnknownSPI tells the sender of a request under an IKE SPI we do not
// know (we restarted, say) with an unprotected INVALID_IKE_SPI, so its
// client reconnects without waiting for dead peer detection. Responses
// are never answered, and the reply copies the request's SPIs and
// Message ID.
func (r *Responder) answerUnknownSPI(req wire.Header, path netpath.Path) {
	if req.Flags&wire.FlagResponse != 0 || req.Exchange == wire.ExchangeIKESAInit {
		return
	}
	if !r.invalidSPITokens.take(r.common.clock.Now()) {
		r.invalidSPILimited.Add(1)
		return
	}
	h := wire.Header{SPIi: req.SPIi, SPIr: req.SPIr, Version: 0x20, Exchange: req.Exchange, Flags: wire.FlagResponse, MessageID: req.MessageID}
	if req.Flags&wire.FlagInitiator == 0 {
		// The request came from the SA's responder, so we answer as its
		// initiator.
		h.Flags |= wire.FlagInitiator
	}
	pkt, err := (&wire.Message{Header: h, Payloads: []wire.Payload{&wire.Notify{Type: wire.NotifyInvalidIKESPI}}}).Encode()
	if err != nil {
		r.common.log.Error("encoding INVALID_IKE_SPI", "err", err)
		return
	}
	r.invalidSPISent.Add(1)
	if err := r.tr.SendIKE(pkt, path); err != nil {
		r.common.log.Debug("send failed", "err", err)
	}
}

// tokenBucket is a small rate limiter: burst tokens, one more per every.
type tokenBucket struct {
	mu     sync.Mutex
	burst  int
	every  time.Duration
	tokens int
	last   time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens, b.last = b.burst, now
	}
	if n := int(now.Sub(b.last) / b.every); n > 0 {
		b.tokens = min(b.burst, b.tokens+n)
		b.last = b.last.Add(time.Duration(n) * b.every)
	}
	if b.tokens == 0 {
		return false
	}
	b.tokens--
	return true
}

// Log lines about unauthenticated requests (a refused proposal, a source
// over its half-open share) are limited to a burst of unauthLogBurst,
// refilled at one per unauthLogEvery; the next line says how many were
// left out. A flood then costs the journal a line every few seconds.
const (
	unauthLogBurst = 5
	unauthLogEvery = 2 * time.Second
)

// logLimiter rate-limits one kind of log line and counts what it drops.
type logLimiter struct {
	bucket     tokenBucket
	suppressed atomic.Uint64
}

func (l *logLimiter) log(now time.Time, log *slog.Logger, level slog.Level, msg string, args ...any) {
	if !l.bucket.take(now) {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(context.Background(), level, msg, args...)
}

// reserveSPI picks a fresh SPI for sa's end of a rekeyed IKE SA and routes
// messages under it to sa; it is released when sa dies.
func (r *Responder) reserveSPI(sa *SA) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	spi := sa.randSPI64()
	for r.bySPI[spi] != nil || spi == 0 {
		spi = sa.randSPI64()
	}
	r.bySPI[spi] = sa
	sa.onDead = append(sa.onDead, func() { r.releaseSPI(spi, sa) })
	return spi
}

// releaseSPI forgets spi if it still names sa.
func (r *Responder) releaseSPI(spi uint64, sa *SA) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bySPI[spi] == sa {
		delete(r.bySPI, spi)
	}
}

func (r *Responder) needCookie(halfOpen int) bool {
	return r.cfg.CookieThreshold < 0 || halfOpen >= r.cfg.CookieThreshold
}

func (r *Responder) handleInit(pkt []byte, msg *wire.Message, path netpath.Path) {
	h := msg.Header
	key := halfKey{h.SPIi, path.Remote}
	src := path.Remote.Addr()
	r.mu.Lock()
	existing := r.halfOpen[key]
	n, fromSrc := len(r.halfOpen), r.halfOpenBySrc[src]
	r.mu.Unlock()
	if existing != nil {
		existing.HandlePacket(pkt, path)
		return
	}
	if fromSrc >= r.cfg.HalfOpenPerSource {
		r.halfOpenBlocked.Add(1)
		r.unauthLog.log(r.common.clock.Now(), r.common.log, slog.LevelWarn, "IKE_SA_INIT dropped: source has too many half-open SAs",
			"remote", src, "half_open", fromSrc)
		return
	}
	pl := wire.Collect(msg.Payloads)
	saP, ke, nonce := pl.SA, pl.KE, pl.Nonce
	if saP == nil || ke == nil || nonce == nil || len(nonce.Data) < 16 || len(nonce.Data) > 256 {
		r.malformed.Add(1)
		return
	}
	if nn := pl.Notify(wire.NotifyNoNATsAllowed); nn != nil {
		switch checkNoNATs(nn.Data, path) {
		case wire.NotifyInvalidSyntax:
			r.malformed.Add(1)
			return
		case wire.NotifyUnexpectedNATDetected:
			r.unexpectedNAT.Add(1)
			r.unauthLog.log(r.common.clock.Now(), r.common.log, slog.LevelInfo, "initiator forbids NAT, and there is one", "remote", path.Remote)
			r.sendInitNotify(h, path, wire.NotifyUnexpectedNATDetected, nil)
			return
		}
	}
	if r.needCookie(n) || fromSrc > 0 {
		now := r.common.clock.Now()
		var got []byte
		if c, ok := msg.Payloads[0].(*wire.Notify); ok && c.Type == wire.NotifyCookie {
			got = c.Data
		}
		if !r.cookies.valid(now, got, nonce.Data, path.Remote, h.SPIi) {
			r.cookiesSent.Add(1)
			r.sendInitNotify(h, path, wire.NotifyCookie, r.cookies.issue(now, nonce.Data, path.Remote, h.SPIi))
			return
		}
	}
	offered := saP.Proposals
	if !pl.Has(wire.NotifyIntermediateExchangeSupported) {
		offered = withoutADDKE(offered)
	}
	chosen, ok := selectProposal(r.cfg.IKE, offered, wire.ProtoIKE, ke.Group)
	if !ok {
		r.noProposal.Add(1)
		r.unauthLog.log(r.common.clock.Now(), r.common.log, slog.LevelInfo, "no acceptable IKE proposal", "remote", path.Remote)
		r.sendInitNotify(h, path, wire.NotifyNoProposalChosen, nil)
		return
	}
	if dh, _ := transformOf(chosen.Transforms, wire.TransformDH); dh.ID != ke.Group {
		r.invalidKE.Add(1)
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], dh.ID)
		r.sendInitNotify(h, path, wire.NotifyInvalidKEPayload, b[:])
		return
	}
	// A KE we cannot use is refused before we make a key of our own.
	if err := ikecrypto.CheckPublicKey(ke.Group, ke.Data); err != nil {
		r.malformed.Add(1)
		r.sendInitNotify(h, path, wire.NotifyInvalidSyntax, nil)
		return
	}
	if n >= r.cfg.HalfOpenLimit {
		r.halfOpenDropped.Add(1)
		return
	}
	r.mu.Lock()
	// bySPI counts an SA twice while its IKE rekey runs: a bound, not a census.
	full := len(r.bySPI) >= r.cfg.MaxIKESAs
	r.mu.Unlock()
	if full {
		r.ikeSALimited.Add(1)
		r.unauthLog.log(r.common.clock.Now(), r.common.log, slog.LevelWarn, "IKE_SA_INIT dropped: the gateway has max_ike_sas IKE SAs", "remote", src)
		return
	}
	sa := newSA(r.ctx, false, r.common, r.tr, r.events, path)
	sa.resp = r
	sa.spii.Store(h.SPIi)
	r.mu.Lock()
	if existing := r.halfOpen[key]; existing != nil {
		r.mu.Unlock()
		existing.HandlePacket(pkt, path)
		return
	}
	if r.halfOpenBySrc[src] >= r.cfg.HalfOpenPerSource {
		// Others from this source got in since we looked.
		r.mu.Unlock()
		r.halfOpenBlocked.Add(1)
		return
	}
	spir := sa.randSPI64()
	for r.bySPI[spir] != nil {
		spir = sa.randSPI64()
	}
	sa.spir.Store(spir)
	r.bySPI[spir] = sa
	r.halfOpen[key] = sa
	r.halfOpenBySrc[src]++
	r.mu.Unlock()
	sa.log = r.common.log.With("role", "responder", "spii", spiHex(h.SPIi), "spir", spiHex(spir))
	sa.onDead = append(sa.onDead, func() {
		r.mu.Lock()
		delete(r.bySPI, spir)
		r.dropHalfOpen(key, sa)
		r.mu.Unlock()
	})
	pktCopy := slices.Clone(pkt)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		sa.run(func() { sa.handleInitRequest(pktCopy, msg, path, chosen, ke, nonce, key) })
	}()
}

// sendInitNotify answers an IKE_SA_INIT statelessly with a single notify.
func (r *Responder) sendInitNotify(req wire.Header, path netpath.Path, t wire.NotifyType, data []byte) {
	h := wire.Header{SPIi: req.SPIi, Version: 0x20, Exchange: wire.ExchangeIKESAInit, Flags: wire.FlagResponse}
	pkt, err := (&wire.Message{Header: h, Payloads: []wire.Payload{&wire.Notify{Type: t, Data: data}}}).Encode()
	if err != nil {
		r.common.log.Error("encoding notify", "type", t, "err", err)
		return
	}
	if err := r.tr.SendIKE(pkt, path); err != nil {
		r.common.log.Debug("send failed", "err", err)
	}
}

func (r *Responder) markEstablished(key halfKey, sa *SA) {
	r.mu.Lock()
	r.dropHalfOpen(key, sa)
	r.mu.Unlock()
}

// dropHalfOpen forgets sa as half-open under key; r.mu is held.
func (r *Responder) dropHalfOpen(key halfKey, sa *SA) {
	if r.halfOpen[key] != sa {
		return
	}
	delete(r.halfOpen, key)
	src := key.remote.Addr()
	if r.halfOpenBySrc[src] <= 1 {
		delete(r.halfOpenBySrc, src)
	} else {
		r.halfOpenBySrc[src]--
	}
}

// handleInitRequest runs on the new SA's goroutine.
func (sa *SA) handleInitRequest(raw []byte, msg *wire.Message, path netpath.Path, chosen wire.Proposal, ke *wire.KE, nonce *wire.Nonce, key halfKey) {
	r := sa.resp
	var err error
	reply, shared, err := ikecrypto.Respond(ke.Group, ke.Data, sa.cfg.rand)
	if err != nil {
		r.sendInitNotify(msg.Header, path, wire.NotifyInvalidSyntax, nil)
		sa.die(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeIKESAInit, Err: fmt.Errorf("initiator's KE: %w", err)})
		return
	}
	chosen.SPI = nil
	sa.ikeProp = chosen
	sa.ni = slices.Clone(nonce.Data)
	sa.nr = sa.randBytes(32)
	if err := sa.deriveIKEKeys(shared); err != nil {
		sa.die(err)
		return
	}
	spii, spir := sa.spii.Load(), sa.spir.Load()
	srcOK, srcPresent := natMatches(msg.Payloads, wire.NotifyNATDetectionSourceIP, spii, 0, path.Remote)
	dstOK, dstPresent := natMatches(msg.Payloads, wire.NotifyNATDetectionDestinationIP, spii, 0, path.Local)
	sa.nat.supported = srcPresent && dstPresent
	sa.nat.remote, sa.nat.local = sa.nat.supported && !srcOK, sa.nat.supported && !dstOK
	ps := []wire.Payload{
		&wire.SA{Proposals: []wire.Proposal{chosen}},
		&wire.KE{Group: ke.Group, Data: reply},
		&wire.Nonce{Data: sa.nr},
	}
	if sa.nat.supported {
		ps = append(ps,
			&wire.Notify{Type: wire.NotifyNATDetectionSourceIP, Data: natHash(spii, spir, path.Local)},
			&wire.Notify{Type: wire.NotifyNATDetectionDestinationIP, Data: natHash(spii, spir, path.Remote)})
	}
	for _, c := range r.cfg.CertReqs {
		ps = append(ps, c)
	}
	if wire.FindNotify(msg.Payloads, wire.NotifySignatureHashAlgorithms) != nil {
		ps = append(ps, SignatureHashNotify())
	}
	if sa.cfg.fragmentation && wire.FindNotify(msg.Payloads, wire.NotifyIKEv2FragmentationSupported) != nil {
		sa.frag.ok = true
		ps = append(ps, &wire.Notify{Type: wire.NotifyIKEv2FragmentationSupported})
	}
	// selectProposal saw ADDKE transforms only with the notify.
	if sa.addKE.transforms = addKETransforms(chosen.Transforms); len(sa.addKE.transforms) > 0 {
		sa.addKE.intermediate = true
		ps = append(ps, &wire.Notify{Type: wire.NotifyIntermediateExchangeSupported})
	}
	pkt, err := (&wire.Message{Header: sa.header(wire.ExchangeIKESAInit, 0, true), Payloads: ps}).Encode()
	if err != nil {
		sa.die(fmt.Errorf("ike: encoding IKE_SA_INIT response: %w", err))
		return
	}
	sa.initReq, sa.initResp = raw, pkt
	sa.lastResp = &cachedResponse{msgID: 0, pkt: pkt}
	sa.peerNextMsgID = 1
	sa.state = stateAuth
	// Debug: anyone can make us answer one, so a flood must not reach
	// the journal.
	sa.log.Debug("IKE_SA_INIT answered", "remote", path.Remote, "proposal", ProposalText(chosen.Transforms),
		"nat_local", sa.nat.local, "nat_remote", sa.nat.remote)
	if err := sa.tr.SendIKE(pkt, path); err != nil {
		sa.log.Debug("send failed", "err", err)
	}
	sa.cfg.clock.AfterFunc(r.cfg.HalfOpenTimeout, func() {
		sa.post(func() {
			if sa.state < stateEstablished {
				sa.die(errors.New("ike: IKE_AUTH not completed in time"))
			}
		})
	})
	sa.onDead = append(sa.onDead, func() { r.markEstablished(key, sa) })
	sa.halfKey = key
}

// handleAuthRequest authenticates the initiator and sets up the first Child SA.
func (sa *SA) handleAuthRequest(ps []wire.Payload) (resp []wire.Payload, after func()) {
	r := sa.resp
	if sa.eap.server == nil {
		if d := r.guess.wait(sa.cfg.clock.Now(), sa.guessKeys(findIDi(ps))...); d > 0 {
			return sa.authThrottled(findIDi(ps), d)
		}
	}
	if sa.wantsEAP(ps) {
		var done bool
		if ps, resp, after, done = sa.eapServerStep(ps); !done {
			return resp, after
		}
	}
	pl := wire.Collect(ps)
	idi, auth, certs := pl.IDi, pl.Auth, pl.Certs
	authFailed := func(err error) ([]wire.Payload, func()) {
		sa.authFailed(idi, err)
		e := &NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: wire.ExchangeIKEAuth, Err: err}
		return []wire.Payload{&wire.Notify{Type: wire.NotifyAuthenticationFailed}}, func() { sa.die(e) }
	}
	if idi == nil || auth == nil {
		return authFailed(errors.New("IKE_AUTH request lacks IDi or AUTH"))
	}
	peerID := identityString(idi)
	pa, err := sa.initiatorAuth(idi)
	if err != nil {
		return authFailed(fmt.Errorf("identity %q: %w", peerID, err))
	}
	if err := pa.Verify(sa.prf, sa.signedOctets(sa.initReq, sa.nr, sa.keys.SKpi, idi), idi, auth, certs); err != nil {
		return authFailed(fmt.Errorf("identity %q: %w", peerID, err))
	}
	r.guess.succeed(sa.guessKeys(idi)...)
	local := r.cfg.LocalAuth
	if r.cfg.LocalAuthFor != nil {
		if local, err = r.cfg.LocalAuthFor(idi); err != nil {
			return authFailed(fmt.Errorf("identity %q: %w", peerID, err))
		}
	}
	local = sa.eapLocalAuth(local)
	idr := *local.Identity()
	idr.Responder = true
	myAuth, err := local.Sign(sa.prf, sa.signedOctets(sa.initResp, sa.ni, sa.keys.SKpr, &idr))
	if err != nil {
		return authFailed(fmt.Errorf("signing our AUTH: %w", err))
	}
	resp = append(resp, &idr)
	for _, c := range local.Certs() {
		resp = append(resp, c)
	}
	resp = append(resp, myAuth)
	if r.cfg.ReauthTime > 0 {
		resp = append(resp, authLifetimeNotify(r.cfg.ReauthTime))
		sa.reauth.lifetime = r.cfg.ReauthTime
		sa.armReauthDeadline(r.cfg.ReauthTime)
	}
	sa.peerID = peerID
	sa.poolKey = poolKey(idi)
	if r.cfg.PeerTS != nil {
		sa.peerTS = r.cfg.PeerTS(idi)
	}
	r.registerIdentity(sa, sa.poolKey, ps)
	sa.state = stateEstablished
	sa.established = true
	sa.dpd.lastIn = sa.cfg.clock.Now()
	sa.armDPD(sa.cfg.dpdDelay)
	sa.scheduleIKERekey()
	r.markEstablished(sa.halfKey, sa)
	resp = append(resp, sa.answerHASupport(ps)...)
	if n := pl.Notify(wire.NotifyMOBIKESupported); n != nil && r.cfg.MOBIKE {
		sa.mobike.peer = true
		sa.mobike.peerData = slices.Clone(n.Data)
		resp = append(resp, &wire.Notify{Type: wire.NotifyMOBIKESupported})
		if r.cfg.Addresses != nil {
			resp = append(resp, addressNotifies(r.cfg.Addresses, sa.Path().Local.Addr())...)
		}
		sa.learnAddresses(ps, sa.Path().Remote.Addr())
		// The peer answered from here during IKE_SA_INIT and IKE_AUTH.
		sa.addVerified(sa.Path().Remote)
	}
	childResp, nerr := sa.negotiateChild(ps)
	if nerr != 0 {
		sa.log.Info("Child SA refused", "peer", peerID, "notify", nerr)
		resp = append(resp, &wire.Notify{Type: nerr})
	} else {
		resp = append(resp, childResp...)
	}
	ev := sa.establishedEvent()
	sa.log.Info("IKE SA established", "peer", peerID, "children", len(sa.children), "vips", sa.vips)
	sa.finish(ev, nil)
	return resp, func() { sa.emit(ev) }
}

// negotiateChild picks the ESP proposal, assigns inner addresses and narrows
// the traffic selectors; it returns the response payloads or an error notify.
func (sa *SA) negotiateChild(ps []wire.Payload) ([]wire.Payload, wire.NotifyType) {
	r := sa.resp
	pl := wire.Collect(ps)
	saP, tsi, tsr, cp := pl.SA, pl.TSi, pl.TSr, pl.Config(wire.CfgRequest)
	if saP == nil || tsi == nil || tsr == nil {
		return nil, wire.NotifyNoProposalChosen
	}
	var props []wire.Proposal
	for _, p := range saP.Proposals {
		if len(p.SPI) == 4 {
			props = append(props, p)
		}
	}
	chosen, ok := selectProposal(stripADDKE(r.cfg.ESP), stripWireADDKE(props), wire.ProtoESP, 0)
	if !ok {
		return nil, wire.NotifyNoProposalChosen
	}
	var vips []netip.Addr
	var d4, d6, dd bool
	if cp != nil {
		var v4, v6 bool
		v4, v6, d4, d6, dd = cpRequested(cp)
		for _, fam := range []struct{ want, v6 bool }{{v4, false}, {v6, true}} {
			if !fam.want || !r.cfg.Pool.Has(fam.v6) {
				continue
			}
			a, err := r.cfg.Pool.Acquire(sa.poolKey, fam.v6)
			if err != nil {
				sa.log.Warn("no inner address", "peer", sa.peerID, "err", err)
				continue
			}
			vips = append(vips, a)
		}
		if (v4 || v6) && len(vips) == 0 {
			return nil, wire.NotifyInternalAddressFailure
		}
	} else if r.cfg.RequireCP {
		return nil, wire.NotifyFailedCPRequired
	}
	release := func() {
		for _, a := range vips {
			r.cfg.Pool.Release(sa.poolKey, a)
		}
	}
	// The initiator's side is only what we granted it: what it asks for
	// would otherwise let it take another client's inner address (the
	// newest route wins) or send from any source.
	var allowedI []wire.TrafficSelector
	for _, a := range vips {
		allowedI = append(allowedI, AddrTS(a))
	}
	allowedI = append(allowedI, PrefixesTS(sa.peerTS)...)
	nTSi := NarrowTS(tsi.Selectors, allowedI)
	nTSr := NarrowTS(tsr.Selectors, PrefixesTS(r.cfg.LocalTS))
	if len(nTSi) == 0 || len(nTSr) == 0 {
		release()
		return nil, wire.NotifyTSUnacceptable
	}
	spiIn := sa.randSPI32()
	child, err := sa.makeChild(chosen.Transforms, spiIn, binary.BigEndian.Uint32(chosen.SPI), nTSi, nTSr)
	if err != nil {
		release()
		sa.log.Error("deriving Child SA keys", "err", err)
		return nil, wire.NotifyNoProposalChosen
	}
	sa.children = append(sa.children, child)
	sa.scheduleChild(child)
	sa.vips = vips
	sa.onDead = append(sa.onDead, release)
	var out []wire.Payload
	if cp != nil {
		out = append(out, cpReply(vips, r.cfg.DNS, r.cfg.DNSDomains, d4, d6, dd))
	}
	var spi [4]byte
	binary.BigEndian.PutUint32(spi[:], spiIn)
	out = append(out,
		&wire.SA{Proposals: []wire.Proposal{{Number: chosen.Number, Protocol: wire.ProtoESP, SPI: spi[:], Transforms: chosen.Transforms}}},
		&wire.TrafficSelectors{Responder: false, Selectors: nTSi},
		&wire.TrafficSelectors{Responder: true, Selectors: nTSr})
	return out, 0
}
