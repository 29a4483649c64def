package ike

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// Transport sends IKE messages. The implementation adds the non-ESP marker
// when neither port is 500 (docs/ARCHITECTURE.md); it must not retain pkt.
type Transport interface {
	SendIKE(pkt []byte, path netpath.Path) error
}

type saState int

const (
	stateInit        saState = iota // IKE_SA_INIT in progress
	stateAuth                       // IKE_AUTH in progress
	stateEstablished                // usable
	stateDeleting                   // our DELETE sent
	stateDead
)

func (s saState) String() string {
	return [...]string{"init", "auth", "established", "deleting", "dead"}[s]
}

// Counters are an SA's drop and retransmission counts.
type Counters struct {
	Malformed, WrongSPI, Undecryptable, Unexpected, InboxFull, Retransmits, DuplicateRequests uint64
	// FragmentsSent counts RFC 7383 fragments we sent; FragmentsDropped
	// those refused for the reassembly limits or a stale total.
	FragmentsSent, FragmentsDropped uint64
	// MOBIKE: notifies with data that is not what their type says
	// (dropped); UPDATE_SA_ADDRESSES refused by policy; return routability
	// checks started and failed (RFC 4555 3.7).
	BadNotifies, RefusedUpdates, RoutabilityChecks, RoutabilityFailures uint64
	// HA (ha.go, hasync.go): messages a parked standby SA dropped, and
	// RFC 6311 synchronisation requests dropped (not negotiated,
	// malformed, or stale).
	ParkedDrops, SyncDropped uint64
	// DuplicatesUnanswered: duplicate requests that got no resend (the
	// rate limit, or the cached response was dropped).
	DuplicatesUnanswered uint64
}

type counters struct {
	malformed, wrongSPI, undecryptable, unexpected, inboxFull, retransmits, dupRequests atomic.Uint64
	dupUnanswered                                                                       atomic.Uint64
	fragmentsSent, fragmentsDropped                                                     atomic.Uint64
	badNotifies, refusedUpdates, rrChecks, rrFailures                                   atomic.Uint64
	parkedDrops, syncDropped                                                            atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{c.malformed.Load(), c.wrongSPI.Load(), c.undecryptable.Load(), c.unexpected.Load(),
		c.inboxFull.Load(), c.retransmits.Load(), c.dupRequests.Load(), c.fragmentsSent.Load(), c.fragmentsDropped.Load(),
		c.badNotifies.Load(), c.refusedUpdates.Load(), c.rrChecks.Load(), c.rrFailures.Load(),
		c.parkedDrops.Load(), c.syncDropped.Load(), c.dupUnanswered.Load()}
}

type inPacket struct {
	pkt  []byte
	path netpath.Path
	// payloads, when set, are the reassembled contents of a fragmented
	// message (pkt is then its last fragment); plain and first are their
	// encoding.
	payloads []wire.Payload
	plain    []byte
	first    wire.PayloadType
}

// request is an outstanding exchange we initiated (window size 1).
type request struct {
	exchange wire.ExchangeType
	msgID    uint32
	pkt      []byte
	frags    [][]byte // pkt as RFC 7383 fragments, when it is sent so
	sends    int
	timer    Timer
	// onResponse gets the decrypted payloads (plain ones for IKE_SA_INIT).
	onResponse func(h wire.Header, ps []wire.Payload, raw []byte)
	onTimeout  func(err error)
	// MOBIKE requests (RFC 4555 3.5) travel over a path of their own and
	// may change it, and their content, on every retransmission: paths
	// gives the path of transmission n (nil: the SA's path), rebuild the
	// packet for it. They have their own schedule, and running out of
	// retransmissions fails the request without killing the SA.
	paths   func(n int) (netpath.Path, bool)
	rebuild func(path netpath.Path) ([]byte, error)
	// copies are the packets rebuild made, one per path (see transmit).
	copies []sentCopy
	sched  *Retransmit
	keepSA bool
	sentOn netpath.Path
	sentAt time.Time // the last transmission (RTT, rtt.go)
	// build made the payloads (startRequest), so a request caught by an
	// IKE SA rekey can be sent again on the new SA; ikeRekeySPI, when
	// set, marks our CREATE_CHILD_SA that rekeys the IKE SA (it is our
	// SPI for the new SA), which such a switch ends.
	build       func() []wire.Payload
	ikeRekeySPI uint64
}

// Cached responses are resent to at most cachedRespBurst duplicates in a
// row, then one per cachedRespEvery, so replays cannot make us send an
// IKE_AUTH response (certificates, fragments) to anyone at line rate; and
// they are dropped cachedRespKeep after they were made, longer than any
// initiator retransmits.
const (
	cachedRespBurst = 3
	cachedRespEvery = time.Second
	cachedRespKeep  = 3 * time.Minute
)

type cachedResponse struct {
	msgID uint32
	pkt   []byte
	frags [][]byte
	// redirect, when valid, is where the answer went instead of back to
	// the request's source (an accepted switch, switch.go).
	redirect netip.AddrPort
}

// common holds what both roles configure.
type common struct {
	localAuth  LocalAuth
	ike, esp   []Proposal
	mobike     bool
	mobikeData []byte
	// fragmentation: offer or accept RFC 7383; fragmentMTU sizes the
	// fragments (0: the RFC's defaults for an unknown path MTU).
	fragmentation bool
	fragmentMTU   int
	// dpdDelay enables dead peer detection (dpd.go); lastInbound reports
	// when ESP last arrived from the peer (may be nil).
	dpdDelay    time.Duration
	lastInbound func() time.Time
	// Child SA lifetimes (rekey.go): soft (rekey, less up to rekeyJitter)
	// and hard; zero means never.
	childRekey, childLife, rekeyJitter time.Duration
	// ikeRekey is the IKE SA's soft lifetime (rekey_ike.go); zero: never.
	ikeRekey time.Duration
	// ikeLife is its hard lifetime: not rekeyed by then, it is deleted.
	ikeLife    time.Duration
	retransmit Retransmit
	clock      Clock
	rand       io.Reader
	log        *slog.Logger
	// maxChildren caps the Child SAs of one IKE SA that the peer's
	// rekeys may create (0: DefaultMaxChildSAs).
	maxChildren int
}

func (c *common) fill() {
	if c.clock == nil {
		c.clock = SystemClock
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.retransmit = c.retransmit.normalized()
	if c.maxChildren <= 0 {
		c.maxChildren = DefaultMaxChildSAs
	}
}

// SA is one IKE SA. A single goroutine owns its state; other goroutines talk
// to it through HandlePacket and the methods below.
type SA struct {
	initiator bool
	cfg       common
	icfg      *InitiatorConfig
	resp      *Responder
	tr        Transport
	events    chan<- Event
	log       *slog.Logger

	inbox chan inPacket
	ctl   chan func()
	done  chan struct{}
	ctx   context.Context
	stop  context.CancelFunc
	stats counters
	times exchangeTimes // round-trip times and the last exchange, for status (rtt.go)
	// heard closes when the peer is first heard (heardOnce; rtt.go).
	heard     chan struct{}
	heardOnce sync.Once

	outcome outcome // what Wait returns

	spii, spir atomic.Uint64
	// cur is the SA's path (its State.Path), shared with whoever moves
	// or follows it: the initiator's Mover and dataplane peer (Current).
	// The SA goroutine writes it only where the protocol moves the SA.
	cur *netpath.Current

	// Owned by the SA goroutine.
	state         saState
	ikeProp       wire.Proposal
	prf           *ikecrypto.PRF
	keys          ikecrypto.IKEKeys
	skOut, skIn   *ikecrypto.SKCipher
	ni, nr        []byte
	ke            ikecrypto.KeyExchange
	initReq       []byte // IKE_SA_INIT request as sent (AUTH input)
	initResp      []byte // IKE_SA_INIT response as sent
	nextMsgID     uint32
	out           *request
	queue         []func()
	peerNextMsgID uint32
	lastResp      *cachedResponse
	// resendTokens limits the resends of cached responses.
	resendTokens tokenBucket
	// flagI is whether we are the IKE SA's initiator for the I flag and
	// key directions: the initiator at first, then whoever started the
	// last rekey of the IKE SA (rekey_ike.go).
	flagI bool
	// Each concern's state, in the file that implements it.
	nat      natState      // NAT detection and encapsulation (natd.go)
	frag     fragState     // RFC 7383 fragmentation (fragment.go)
	dpd      dpdState      // liveness checks (dpd.go)
	rekey    childRekeys   // Child SA rekeys (rekey.go)
	ikeRekey ikeRekeyState // IKE SA rekeys and their collisions (rekey_ike.go)
	saInit   initRetries   // initiator: IKE_SA_INIT retries (initiator.go)
	reauth   reauthState   // RFC 4478 reauthentication (reauth.go)
	addKE    addKEState    // RFC 9242 / RFC 9370 key exchanges (intermediate.go, followup.go)
	hint     hintState     // unprotected notifications (hint.go)
	mobike   mobikeState   // RFC 4555 MOBIKE: addresses, updates, return routability (mobike.go)
	peerID   string
	poolKey  string
	// peerTS: prefixes the gateway file grants this initiator besides its
	// leases (ResponderConfig.PeerTS).
	peerTS       []netip.Prefix
	children     []ChildSA
	vips         []netip.Addr
	dns          []netip.Addr
	dnsDomains   []string // RFC 8598 domains from the gateway's CP reply
	established  bool
	onDead       []func()
	closeWaiters []chan struct{}
	deadReason   error

	pendingChild *childRequest
	halfKey      halfKey   // responder
	eap          eapRounds // EAP in IKE_AUTH (initiator_eap.go, responder_eap.go)

	// respPath is where the last response arrived (MOBIKE's updates and
	// checks, and a switch, judge paths by it).
	respPath netpath.Path
	// Responder: the SWITCH_TO_IP_ADDRESS in progress (switch.go).
	sw *pendingSwitch

	ha haSA // HA: RFC 6311 state, parking, StateChanged (ha.go)

	// initialContact: the initiator sent INITIAL_CONTACT (responder).
	initialContact bool
}

func newSA(ctx context.Context, initiator bool, cfg common, tr Transport, events chan<- Event, path netpath.Path) *SA {
	sa := &SA{
		initiator: initiator,
		cfg:       cfg,
		tr:        tr,
		events:    events,
		inbox:     make(chan inPacket, 64),
		ctl:       make(chan func(), 16),
		done:      make(chan struct{}),
		heard:     make(chan struct{}),
		outcome:   outcome{ready: make(chan struct{})},
		cur:       netpath.NewCurrent(path, ""),
		flagI:     initiator,
	}
	sa.ctx, sa.stop = context.WithCancel(ctx)
	sa.log = cfg.log
	return sa
}

// SPIs returns the IKE SPIs (SPIr is zero until IKE_SA_INIT completes).
func (sa *SA) SPIs() (spii, spir uint64) { return sa.spii.Load(), sa.spir.Load() }

// Path returns the path the SA currently uses for IKE (and its peer's
// ESP): its Current's confirmed path.
func (sa *SA) Path() netpath.Path { return sa.cur.Load().Path }

// Current returns the owner of the SA's path. The connection hands it to
// whoever decides moves (the initiator's mobility.Mover, which Sets it
// after an update and Tries ESP ahead of one) and to its followers (the
// dataplane's peer, the interface monitor); the SA reads it for every
// message it sends, and Confirms it where the protocol moves the SA.
func (sa *SA) Current() *netpath.Current { return sa.cur }

// setPath moves the SA to p, as the protocol does (see Current); only the
// SA goroutine calls it.
func (sa *SA) setPath(p netpath.Path) {
	if p != sa.Path() {
		sa.cur.Confirm(p)
	}
}

// Counters returns the SA's drop counters.
func (sa *SA) Counters() Counters { return sa.stats.snapshot() }

// Done is closed when the SA's goroutine has ended.
func (sa *SA) Done() <-chan struct{} { return sa.done }

// HandlePacket queues an IKE message (without non-ESP marker) received on
// path. It never blocks; pkt is copied.
func (sa *SA) HandlePacket(pkt []byte, path netpath.Path) {
	p := inPacket{pkt: append([]byte(nil), pkt...), path: path}
	select {
	case sa.inbox <- p:
	case <-sa.done:
	default:
		sa.stats.inboxFull.Add(1)
	}
}

// Wait blocks until the SA is established (and returns its Established
// event) or has failed.
func (sa *SA) Wait(ctx context.Context) (*Established, error) {
	select {
	case <-sa.outcome.ready:
		return sa.outcome.est, sa.outcome.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close deletes the IKE SA: an INFORMATIONAL DELETE when established, waited
// for at most until ctx ends (then the SA is dropped locally anyway).
func (sa *SA) Close(ctx context.Context) error {
	wait := make(chan struct{})
	if !sa.post(func() { sa.startClose(wait) }) {
		return nil
	}
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		sa.stop()
		<-sa.done
		return ctx.Err()
	}
}

// post runs f on the SA goroutine; false if the SA is gone.
func (sa *SA) post(f func()) bool {
	select {
	case sa.ctl <- f:
		return true
	case <-sa.done:
		return false
	}
}

func (sa *SA) run(start func()) {
	defer close(sa.done)
	if start != nil {
		start()
	}
	for sa.state != stateDead {
		select {
		case <-sa.ctx.Done():
			sa.die(fmt.Errorf("ike: SA stopped: %w", sa.ctx.Err()))
		case p := <-sa.inbox:
			sa.handlePacket(p)
		case f := <-sa.ctl:
			f()
		}
		sa.noteStateChange()
	}
}

func (sa *SA) emit(ev Event) {
	if sa.events == nil {
		return
	}
	select {
	case sa.events <- ev:
	case <-sa.ctx.Done():
		// The owner has gone away; still try briefly to tell it we're dead
		// without blocking forever.
		select {
		case sa.events <- ev:
		default:
		}
	}
}

func (sa *SA) randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(sa.cfg.rand, b); err != nil {
		// An injected source ran dry; the system one never fails.
		rand.Read(b)
	}
	return b
}

func (sa *SA) randSPI64() uint64 {
	for {
		if v := binary.BigEndian.Uint64(sa.randBytes(8)); v != 0 {
			return v
		}
	}
}

func (sa *SA) randSPI32() uint32 {
	for {
		// SPIs 1-255 are reserved by IANA.
		if v := binary.BigEndian.Uint32(sa.randBytes(4)); v > 255 {
			return v
		}
	}
}

// die ends the SA: timers stopped, owner told, goroutine exits.
func (sa *SA) die(reason error) {
	if sa.state == stateDead {
		return
	}
	if sa.out != nil && sa.out.timer != nil {
		sa.out.timer.Stop()
	}
	if sa.dpd.timer != nil {
		sa.dpd.timer.Stop()
	}
	sa.stopChildTimers()
	if sa.ikeRekey.timer != nil {
		sa.ikeRekey.timer.Stop()
	}
	if sa.ikeRekey.lifeTimer != nil {
		sa.ikeRekey.lifeTimer.Stop()
	}
	if sa.reauth.timer != nil {
		sa.reauth.timer.Stop()
	}
	if sa.ikeRekey.holdTimer != nil {
		sa.ikeRekey.holdTimer.Stop()
	}
	for _, s := range sa.ikeRekey.sides {
		if s.timer != nil {
			s.timer.Stop()
		}
	}
	sa.state = stateDead
	sa.deadReason = reason
	level := slog.LevelInfo
	if sa.resp != nil && !sa.established {
		// A half-open SA of ours: anyone can make one.
		level = slog.LevelDebug
	}
	sa.log.Log(context.Background(), level, "IKE SA deleted", "spii", spiHex(sa.spii.Load()), "spir", spiHex(sa.spir.Load()), "reason", reason)
	sa.finish(nil, reason)
	for _, f := range sa.onDead {
		f()
	}
	if sa.ha.parked.Load() {
		// A standby copy ends silently: the active node owns the SA.
		for _, w := range sa.closeWaiters {
			close(w)
		}
		sa.stop()
		return
	}
	sa.emit(&Deleted{SA: sa, Reason: reason, WasEstablished: sa.established, Children: sa.children})
	for _, w := range sa.closeWaiters {
		close(w)
	}
	sa.stop()
}

// outcome is how the SA's negotiation ended, for Wait: est or err, set
// once, before ready is closed.
type outcome struct {
	once  sync.Once
	ready chan struct{}
	est   *Established
	err   error
}

// finish records the outcome for Wait (once).
func (sa *SA) finish(est *Established, err error) {
	o := &sa.outcome
	o.once.Do(func() {
		o.est, o.err = est, err
		close(o.ready)
	})
}

func spiHex(v uint64) string { return fmt.Sprintf("%016x", v) }

func (sa *SA) header(exchange wire.ExchangeType, msgID uint32, response bool) wire.Header {
	h := wire.Header{SPIi: sa.spii.Load(), SPIr: sa.spir.Load(), Version: 0x20, Exchange: exchange, MessageID: msgID}
	if sa.flagI {
		h.Flags |= wire.FlagInitiator
	}
	if response {
		h.Flags |= wire.FlagResponse
	}
	return h
}

// seal builds an encrypted message.
func (sa *SA) seal(h wire.Header, ps []wire.Payload) ([]byte, error) {
	return sealWith(sa.skOut, h, ps)
}

// sealWith builds a message encrypted with sk (an IKE SA's outbound keys).
func sealWith(sk *ikecrypto.SKCipher, h wire.Header, ps []wire.Payload) ([]byte, error) {
	first, body, err := wire.EncodePayloads(ps)
	if err != nil {
		return nil, fmt.Errorf("ike: encoding %s payloads: %w", h.Exchange, err)
	}
	aad := wire.EncryptedHeader(h, first, sk.SealedLen(len(body)))
	data, err := sk.Seal(aad, body)
	if err != nil {
		return nil, fmt.Errorf("ike: encrypting %s: %w", h.Exchange, err)
	}
	return append(aad[:len(aad):len(aad)], data...), nil
}

// openPacket returns the payloads of an encrypted message: reassembled
// already for a fragmented one, else decrypted from its SK payload.
func (sa *SA) openPacket(p inPacket, msg *wire.Message) ([]wire.Payload, error) {
	if p.payloads != nil {
		sa.noteHeard(sa.cfg.clock.Now())
		sa.addKE.inPlain, sa.addKE.inFirst = p.plain, p.first
		return p.payloads, nil
	}
	ps, first, plain, err := openPlain(sa.skIn, p.pkt, msg)
	if err == nil {
		sa.noteHeard(sa.cfg.clock.Now())
		sa.addKE.inPlain, sa.addKE.inFirst = plain, first
	}
	return ps, err
}

// open decrypts the SK payload of msg.
func (sa *SA) open(raw []byte, msg *wire.Message) ([]wire.Payload, error) {
	return openWith(sa.skIn, raw, msg)
}

// openWith decrypts the SK payload of msg with sk (an IKE SA's inbound keys).
func openWith(sk *ikecrypto.SKCipher, raw []byte, msg *wire.Message) ([]wire.Payload, error) {
	ps, _, _, err := openPlain(sk, raw, msg)
	return ps, err
}

// openPlain is openWith that also returns the decrypted inner payloads'
// bytes and the type of the first.
func openPlain(sk *ikecrypto.SKCipher, raw []byte, msg *wire.Message) ([]wire.Payload, wire.PayloadType, []byte, error) {
	if sk == nil {
		return nil, 0, nil, errors.New("no keys yet")
	}
	if len(msg.Payloads) != 1 {
		return nil, 0, nil, errors.New("expected exactly one Encrypted payload")
	}
	e, ok := msg.Payloads[0].(*wire.Encrypted)
	if !ok {
		return nil, 0, nil, fmt.Errorf("expected Encrypted payload, got %T", msg.Payloads[0])
	}
	if e.Offset < wire.HeaderLen || e.Offset > len(raw) {
		return nil, 0, nil, errors.New("bad Encrypted payload offset")
	}
	plain, err := sk.Open(raw[:e.Offset], e.Data)
	if err != nil {
		return nil, 0, nil, err
	}
	ps, err := wire.DecodePayloads(e.FirstInner, plain)
	return ps, e.FirstInner, plain, err
}

// startRequest queues an exchange; it is sent when the window is free.
// build returns the payloads when the request is sent (so it sees the newest
// state).
func (sa *SA) startRequest(exchange wire.ExchangeType, build func() []wire.Payload,
	onResponse func(h wire.Header, ps []wire.Payload, raw []byte), onTimeout func(error)) {
	send := func() {
		id := sa.nextMsgID
		pkt, frags, err := sa.sealOut(sa.header(exchange, id, false), build())
		if err != nil {
			sa.log.Error("cannot build request", "exchange", exchange, "err", err)
			sa.die(err)
			return
		}
		sa.nextMsgID++
		sa.sendRequest(&request{exchange: exchange, msgID: id, pkt: pkt, frags: frags, onResponse: onResponse, onTimeout: onTimeout, build: build})
	}
	sa.enqueue(send)
}

// busy reports whether a request must wait: one is outstanding (window
// size 1), or the queue is held while a lost IKE rekey collision waits
// for the peer's DELETE of the old IKE SA (rekey_ike.go).
func (sa *SA) busy() bool { return sa.out != nil || sa.ikeRekey.queueHeld }

// enqueue runs send now when the window is free, else after the requests
// before it.
func (sa *SA) enqueue(send func()) {
	if sa.busy() {
		sa.queue = append(sa.queue, send)
		return
	}
	send()
}

// drainQueue starts queued work until a request occupies the window.
// Queued work may also decide not to send anything.
func (sa *SA) drainQueue() {
	for !sa.busy() && len(sa.queue) > 0 && sa.state != stateDead {
		next := sa.queue[0]
		sa.queue = sa.queue[1:]
		next()
	}
}

// sendRequest transmits r as the outstanding request and arms its timer.
func (sa *SA) sendRequest(r *request) {
	if sa.out != nil && sa.out != r && sa.out.timer != nil {
		sa.out.timer.Stop()
	}
	sa.out = r
	sa.transmit(r)
}

// sentCopy is a rebuilt request as it went out over path.
type sentCopy struct {
	path netpath.Path
	pkt  []byte
}

// maxCopies bounds the copies a request keeps: the first (the one most
// likely to have reached the peer) and the latest others.
const maxCopies = 4

// transmit sends r, and for a request rebuilt per path (MOBIKE) the
// copies made for the other paths too. A responder may count only a
// bitwise identical message as a retransmission (strongSwan ignores any
// other with "received message ID N, expected N+1"): when it took an
// earlier copy and its answer was lost (on an uplink that went down
// meanwhile), only that copy, sent again, brings the answer back. So a
// path keeps the bytes it was first sent, and every transmission carries
// the other paths' copies after its own.
func (sa *SA) transmit(r *request) {
	path := sa.Path()
	if r.paths != nil {
		p, ok := r.paths(r.sends)
		if ok {
			path = p
		}
		if r.rebuild != nil {
			if pkt := r.copyFor(path); pkt != nil {
				r.pkt, r.frags = pkt, nil
			} else if pkt, err := r.rebuild(path); err == nil {
				r.pkt, r.frags = pkt, nil
				r.keepCopy(path, pkt)
			}
		}
	}
	r.sentOn = path
	r.sentAt = sa.cfg.clock.Now()
	sa.times.requestedAt.Store(r.sentAt.UnixNano())
	sa.send(r.pkt, r.frags, path)
	if r.rebuild != nil {
		for _, c := range r.copies {
			if c.path != path {
				sa.send(c.pkt, nil, path)
			}
		}
	}
	sa.armRetransmit(r)
}

// armRetransmit counts a transmission of r and schedules the next.
func (sa *SA) armRetransmit(r *request) {
	n := r.sends
	r.sends++
	sched := sa.cfg.retransmit
	if r.sched != nil {
		sched = *r.sched
	}
	r.timer = sa.cfg.clock.AfterFunc(sched.Timeout(n), func() {
		sa.post(func() { sa.onTimer(r, n) })
	})
}

// copyFor returns the packet r was built into for path, nil if none.
func (r *request) copyFor(path netpath.Path) []byte {
	for _, c := range r.copies {
		if c.path == path {
			return c.pkt
		}
	}
	return nil
}

// keepCopy records pkt as r's copy for path, keeping the first copy and
// the latest others.
func (r *request) keepCopy(path netpath.Path, pkt []byte) {
	if len(r.copies) >= maxCopies {
		r.copies = append(r.copies[:1], r.copies[2:]...)
	}
	r.copies = append(r.copies, sentCopy{path: path, pkt: pkt})
}

func (sa *SA) onTimer(r *request, n int) {
	if sa.out != r || r.sends != n+1 || sa.state == stateDead {
		return
	}
	retries := sa.cfg.retransmit.Retries
	if r.sched != nil {
		retries = r.sched.Retries
	}
	if n >= retries {
		err := &UnreachableError{Exchange: r.exchange, Retransmissions: n}
		if r.keepSA {
			// The handler may switch the IKE SA (a rekey's lost DELETE):
			// queued requests go out after it, under the keys it leaves.
			sa.completeRequestKeepQueue()
			if r.onTimeout != nil {
				r.onTimeout(err)
			}
			sa.drainQueue()
			return
		}
		sa.out = nil
		if r.onTimeout != nil {
			r.onTimeout(err)
		}
		if sa.state != stateDead {
			sa.die(err)
		}
		return
	}
	sa.stats.retransmits.Add(1)
	sa.log.Debug("retransmitting", "exchange", r.exchange, "msgid", r.msgID, "try", n+1)
	sa.transmit(r)
}

// completeRequest frees the window and starts the next queued request.
func (sa *SA) completeRequest() {
	if sa.out != nil && sa.out.timer != nil {
		sa.out.timer.Stop()
	}
	sa.out = nil
	sa.drainQueue()
}

func (sa *SA) handlePacket(p inPacket) {
	if sa.ha.parked.Load() {
		// The active node still serves this SA.
		sa.stats.parkedDrops.Add(1)
		return
	}
	msg, err := wire.Decode(p.pkt)
	if err != nil {
		sa.stats.malformed.Add(1)
		return
	}
	if sa.unprotectedHint(p, msg) {
		return
	}
	h := msg.Header
	if sa.sideIKE(p, msg) {
		return
	}
	isInit := h.Exchange == wire.ExchangeIKESAInit
	if spir := sa.spir.Load(); h.SPIi != sa.spii.Load() || (h.SPIr != spir && !(isInit && (spir == 0 || h.SPIr == 0))) {
		// The peer may already talk on the IKE SA its rekey made.
		if !sa.takePendingIKE(h) {
			sa.stats.wrongSPI.Add(1)
			return
		}
	}
	// The initiator flag must name the IKE SA's initiator (RFC 7296 3.1).
	if (h.Flags&wire.FlagInitiator != 0) == sa.flagI {
		sa.stats.unexpected.Add(1)
		return
	}
	if len(msg.Payloads) == 1 {
		if f, ok := msg.Payloads[0].(*wire.EncryptedFragment); ok {
			sa.handleFragment(p, msg, f)
			return
		}
	}
	if h.Flags&wire.FlagResponse != 0 {
		sa.handleResponse(p, msg)
		return
	}
	sa.handleRequest(p, msg)
}

func (sa *SA) handleResponse(p inPacket, msg *wire.Message) {
	h := msg.Header
	r := sa.out
	if r == nil || h.MessageID != r.msgID || h.Exchange != r.exchange {
		sa.stats.unexpected.Add(1)
		return
	}
	var ps []wire.Payload
	if h.Exchange == wire.ExchangeIKESAInit {
		ps = msg.Payloads
		if err := initResponseProblem(h, ps); err != nil && sa.initiator {
			sa.unauthenticatedInitError(err)
			return
		}
	} else {
		var err error
		if ps, err = sa.openPacket(p, msg); err != nil {
			sa.stats.undecryptable.Add(1)
			return
		}
	}
	if h.Exchange == wire.ExchangeIKESAInit {
		sa.noteHeard(sa.cfg.clock.Now())
	}
	sa.noteAnswer(r, p.path)
	sa.completeRequestKeepQueue()
	sa.respPath = p.path
	r.onResponse(h, ps, p.pkt)
	sa.drainQueue()
}

// completeRequestKeepQueue frees the window without starting queued work, so
// a response handler may itself send the next request first.
func (sa *SA) completeRequestKeepQueue() {
	if sa.out != nil && sa.out.timer != nil {
		sa.out.timer.Stop()
	}
	sa.out = nil
}

func (sa *SA) handleRequest(p inPacket, msg *wire.Message) {
	h := msg.Header
	if h.MessageID == 0 && h.Exchange == wire.ExchangeInformational && sa.handleSyncRequest(p, msg) {
		return // RFC 6311 Message ID synchronisation (hasync.go)
	}
	if sa.lastResp != nil && h.MessageID == sa.lastResp.msgID {
		// A retransmitted request: resend the cached response where the
		// duplicate came from (RFC 7296 2.1, 2.11).
		sa.stats.dupRequests.Add(1)
		if sa.mobike.lastRespMoved {
			// The initiator retransmitted its UPDATE_SA_ADDRESSES, maybe
			// over another path (RFC 4555 3.5): the newest one counts, if
			// it is authentic and passes our policy.
			ps, err := sa.open(p.pkt, msg)
			if err != nil {
				sa.stats.undecryptable.Add(1)
				return
			}
			if sa.refuseUpdate(ps, p.path) == 0 {
				sa.peerMoved(p.path, true, len(p.pkt))
			}
		}
		sa.resendCached(sa.lastResp, sa.lastResp.dest(p.path))
		return
	}
	if h.MessageID != sa.peerNextMsgID || h.Exchange == wire.ExchangeIKESAInit {
		sa.stats.unexpected.Add(1)
		return
	}
	if sa.state == stateInit && !sa.initiator && h.Exchange != wire.ExchangeIKEAuth {
		sa.stats.unexpected.Add(1)
		return
	}
	ps, err := sa.openPacket(p, msg)
	if err != nil {
		sa.stats.undecryptable.Add(1)
		return
	}
	if !sa.initiator && (sa.state < stateEstablished || (sa.nat.remote && !sa.mobike.peer)) {
		// NAT traversal (RFC 7296 2.23): follow the peer's address as seen
		// in authenticated messages. With MOBIKE only UPDATE_SA_ADDRESSES
		// moves the SA (RFC 4555 3.5). A fresh request (duplicates never
		// get here) proves the new mapping, and ESP follows too.
		moved := sa.state >= stateEstablished && !samePath(p.path, sa.Path())
		sa.setPath(p.path)
		if moved {
			sa.log.Info("peer's NAT mapping changed", "to", p.path.Remote.String())
			sa.emit(&PathUpdated{SA: sa, Path: p.path, NATRemote: sa.nat.remote})
		}
	}
	var resp []wire.Payload
	var after func()
	answer := p.path
	sa.mobike.lastRespMoved = false
	switch h.Exchange {
	case wire.ExchangeIKEAuth:
		if sa.initiator || sa.state != stateAuth || sa.addKE.intDone < len(sa.addKE.transforms) {
			// IKE_AUTH before every additional key exchange ran would
			// authenticate keys without their post-quantum part.
			sa.stats.unexpected.Add(1)
			return
		}
		resp, after = sa.handleAuthRequest(ps)
	case wire.ExchangeInformational:
		var moved bool
		resp, moved = sa.handleMOBIKERequest(ps, p.path, len(p.pkt))
		var more []wire.Payload
		more, after = sa.handleInformationalRequest(ps)
		resp = append(resp, more...)
		var switched func()
		answer, switched = sa.handleSwitchRequest(ps, p.path, false)
		after = chain(after, switched)
		if report := sa.handleAuthLifetimeRequest(ps); report != nil {
			after = chain(after, report)
		}
		defer func() { sa.mobike.lastRespMoved = moved }()
	case wire.ExchangeCreateChildSA:
		resp, after = sa.handleCreateChildRequest(ps)
	case wire.ExchangeIKEFollowupKE:
		if sa.state != stateEstablished {
			sa.stats.unexpected.Add(1)
			return
		}
		resp, after = sa.handleFollowupRequest(ps)
	case wire.ExchangeIKEIntermediate:
		if sa.initiator || sa.state != stateAuth || !sa.addKE.intermediate {
			sa.stats.unexpected.Add(1)
			return
		}
		resp, after = sa.handleIntermediateRequest(h, ps)
	default:
		sa.stats.unexpected.Add(1)
		return
	}
	sa.respond(h, resp, answer)
	if answer.Remote != p.path.Remote && sa.lastResp != nil && sa.lastResp.msgID == h.MessageID {
		sa.lastResp.redirect = answer.Remote
	}
	if after != nil {
		after()
	}
}

// respond encrypts, sends and caches the response to request header h.
func (sa *SA) respond(h wire.Header, ps []wire.Payload, path netpath.Path) {
	pkt, frags, err := sa.sealOut(sa.header(h.Exchange, h.MessageID, true), ps)
	if err != nil {
		sa.log.Error("cannot build response", "exchange", h.Exchange, "err", err)
		return
	}
	sa.peerNextMsgID = h.MessageID + 1
	sa.lastResp = sa.cacheResponse(h.MessageID, pkt, frags)
	sa.send(pkt, frags, path)
}

// cacheResponse keeps a response for duplicates of its request, until
// cachedRespKeep has passed.
func (sa *SA) cacheResponse(msgID uint32, pkt []byte, frags [][]byte) *cachedResponse {
	cr := &cachedResponse{msgID: msgID, pkt: pkt, frags: frags}
	sa.cfg.clock.AfterFunc(cachedRespKeep, func() {
		sa.post(func() { cr.pkt, cr.frags = nil, nil })
	})
	return cr
}

// resendCached answers a duplicate request with cr, within the rate limit
// and while cr is kept.
func (sa *SA) resendCached(cr *cachedResponse, path netpath.Path) {
	if sa.resendTokens.every == 0 {
		sa.resendTokens = tokenBucket{burst: cachedRespBurst, every: cachedRespEvery}
	}
	if (cr.pkt == nil && cr.frags == nil) || !sa.resendTokens.take(sa.cfg.clock.Now()) {
		sa.stats.dupUnanswered.Add(1)
		return
	}
	sa.send(cr.pkt, cr.frags, path)
}

// startClose sends DELETE for the IKE SA and dies when answered (or after the
// retransmissions); wait is closed when the SA is dead.
func (sa *SA) startClose(wait chan struct{}) {
	sa.closeWaiters = append(sa.closeWaiters, wait)
	if sa.state == stateDeleting {
		return
	}
	if sa.state != stateEstablished || sa.ha.parked.Load() {
		sa.die(ErrClosed)
		return
	}
	sa.deleteIKE(ErrClosed)
}

// deleteIKE sends DELETE for the IKE SA, which dies with reason when it is
// answered or its retransmissions run out.
func (sa *SA) deleteIKE(reason error) {
	sa.state = stateDeleting
	// Pending work is moot; DELETE goes next (after an outstanding request),
	// also while a lost rekey collision holds requests back.
	sa.queue, sa.ikeRekey.queueHeld = nil, false
	sa.startRequest(wire.ExchangeInformational,
		func() []wire.Payload { return []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}} },
		func(wire.Header, []wire.Payload, []byte) { sa.die(reason) },
		func(error) { sa.die(reason) })
}

// CheckLiveness sends an empty INFORMATIONAL request and waits for the reply
// (RFC 7296 1.4); if none comes after the retransmissions the SA dies with
// an *UnreachableError.
func (sa *SA) CheckLiveness(ctx context.Context) error {
	return sa.await(ctx, func(res chan<- error) {
		if sa.state != stateEstablished {
			res <- fmt.Errorf("ike: liveness check in state %s", sa.state)
			return
		}
		sa.startRequest(wire.ExchangeInformational,
			func() []wire.Payload { return nil },
			func(wire.Header, []wire.Payload, []byte) { res <- nil },
			func(err error) { res <- err })
	})
}

// await runs start on the SA goroutine with a channel for the outcome of
// what it starts, and waits for that outcome, the end of the SA, or ctx.
func (sa *SA) await(ctx context.Context, start func(res chan<- error)) error {
	res := make(chan error, 1)
	if !sa.post(func() { start(res) }) {
		return ErrClosed
	}
	select {
	case err := <-res:
		return err
	case <-sa.done:
		select {
		case err := <-res:
			return err
		default:
			return ErrClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DeleteChild deletes the Child SA whose inbound SPI is spiIn
// (INFORMATIONAL with a Delete payload, RFC 7296 1.4.1) and reports
// ChildDeleted when the peer has answered.
func (sa *SA) DeleteChild(ctx context.Context, spiIn uint32) error {
	return sa.await(ctx, func(res chan<- error) {
		if sa.state != stateEstablished || !sa.hasChild(spiIn) {
			res <- fmt.Errorf("ike: no Child SA %08x", spiIn)
			return
		}
		sa.startDeleteChild(spiIn, res)
	})
}
