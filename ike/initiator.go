package ike

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	ikecrypto "github.com/roam-vpn/roam/ike/crypto"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/netpath"
)

// initRetries is the initiator's IKE_SA_INIT state across retries: the
// COOKIE to return and how often we were asked, how often the responder
// asked for another key exchange group, and an error a response brought,
// kept while we wait a little for a valid one.
type initRetries struct {
	cookie      []byte
	cookieTries int
	keTries     int
	err         error
	errTimer    Timer
	// natSource is the forced NAT_DETECTION_SOURCE_IP hash last sent.
	natSource []byte
}

// InitiatorConfig configures Dial.
type InitiatorConfig struct {
	// Path: Remote is the gateway (port 500 normally); Local is the address
	// and port of our single socket (the address may be unspecified, but
	// NAT detection then always reports a local NAT).
	Path netpath.Path
	// IfName names the uplink Path leaves by, for the SA's Current (status
	// shows it); "" when not known.
	IfName    string
	LocalAuth LocalAuth
	PeerAuth  PeerAuth
	RemoteID  string // sent as IDr when set
	IKE, ESP  []Proposal
	// LocalTS defaults to the full ranges of the families of RemoteTS (the
	// responder narrows them, to our virtual IPs with CP). RemoteTS defaults
	// to 0.0.0.0/0 and ::/0.
	LocalTS, RemoteTS []netip.Prefix
	// MoreChildren are Child SAs to negotiate after the first (LocalTS,
	// RemoteTS) with CREATE_CHILD_SA, before Established reports them all
	// (children.go); one the gateway refuses is in
	// Established.FailedChildren.
	MoreChildren []Selectors
	VirtualIP    bool // request inner addresses and DNS servers via CP
	MOBIKE       bool
	MOBIKEData   []byte // data of our MOBIKE_SUPPORTED notify (default: 'R' with Switch)
	// Switch advertises the responder-initiated switch (switch.go): our
	// MOBIKE_SUPPORTED carries the octet 'R', and a SWITCH_TO_IP_ADDRESS
	// from the gateway is answered per AcceptSwitch (SwitchRequested).
	Switch       bool
	AcceptSwitch SwitchPolicy
	// SwitchNotify is the SWITCH_TO_IP_ADDRESS notify type, private use
	// (40960-65535); 0 means DefaultSwitchNotify.
	SwitchNotify wire.NotifyType
	// SwitchRevision is the draft revision whose rules an accepted switch
	// follows (where the answer goes); the zero value is SwitchRev00.
	SwitchRevision SwitchRevision
	// NoForceEncap: send a truthful NAT_DETECTION_SOURCE_IP; by default it
	// is deliberately wrong so the peer uses UDP encapsulation (RFC 7296 2.23).
	NoForceEncap bool
	// NoFragmentation turns RFC 7383 IKE fragmentation off (it is offered
	// by default). FragmentMTU is the path MTU fragments are sized for;
	// 0 means unknown, and the RFC's conservative defaults apply.
	NoFragmentation bool
	FragmentMTU     int
	// DPDDelay enables dead peer detection: after this long without an
	// authenticated message or (LastInbound) ESP from the gateway, an empty
	// INFORMATIONAL tests it; no answer ends the SA with ErrDeadPeer.
	DPDDelay    time.Duration
	LastInbound func() time.Time
	// ChildRekeyTime is when a Child SA is rekeyed (less a random part of
	// RekeyJitter), ChildLifeTime when it expires if that failed; zero:
	// never.
	ChildRekeyTime, ChildLifeTime, RekeyJitter time.Duration
	// IKERekeyTime is when the IKE SA is rekeyed (less a random part of
	// RekeyJitter); zero: never.
	IKERekeyTime time.Duration
	// IKELifeTime is when an IKE SA that could not be rekeyed is deleted
	// (its keys have been in use too long); zero: never.
	IKELifeTime time.Duration
	// LocalAddresses, when set, lists our usable addresses; those other
	// than Path.Local's are announced in IKE_AUTH as ADDITIONAL_IP4/6_ADDRESS
	// (NO_ADDITIONAL_ADDRESSES when none; RFC 4555 3.4). MOBIKE only.
	LocalAddresses func() []netip.Addr
	// ForbidNAT: no NAT may sit between us and the gateway (RFC 4555 3.9).
	// NO_NATS_ALLOWED goes in IKE_SA_INIT and every UPDATE_SA_ADDRESSES; a
	// NAT on the first path fails the SA, one on a candidate path refuses
	// that path. Path.Local must then be a specific address.
	ForbidNAT bool
	// HASync offers RFC 6311 (IKEV2_MESSAGE_ID_SYNC_SUPPORTED and
	// IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED in IKE_AUTH), so an HA gateway's
	// standby node can take the SA over (hasync.go); Switch implies it. AdvanceSeq, when
	// set, is called for every Child SA when such a node asks us to skip
	// outbound ESP sequence numbers (IPSEC_REPLAY_COUNTER_SYNC); it runs
	// on the SA's goroutine before our answer goes out and must not block
	// (esp.Dataplane.AdvanceSeq fits).
	HASync     bool
	AdvanceSeq func(spiOut uint32, delta uint64)
	Retransmit Retransmit // zero: DefaultRetransmit
	Clock      Clock
	Rand       io.Reader
	Log        *slog.Logger

	// RequestVIPs are inner addresses to ask for again in the CFG_REQUEST
	// (at most one per family): those of the SA this one replaces.
	RequestVIPs []netip.Addr
	// NoInitialContact leaves INITIAL_CONTACT out of IKE_AUTH: a
	// reauthentication's new SA must not make the gateway drop the old
	// one (and its Child SAs) before the new one carries the traffic.
	NoInitialContact bool

	// First is an IKE_SA_INIT request already sent on Path (PrepareInit,
	// in the process that started this one): the SA takes it over as its
	// own, outstanding, instead of sending one. One that does not match
	// this configuration is replaced by a fresh request.
	First *FirstMessage
}

// checkBasics checks what either role's configuration must have: both
// authenticators (auth) and proposals for IKE and ESP.
func checkBasics(role string, auth bool, ike, esp []Proposal) error {
	if !auth {
		return fmt.Errorf("ike: %s needs LocalAuth and PeerAuth", role)
	}
	if len(ike) == 0 || len(esp) == 0 {
		return fmt.Errorf("ike: %s needs IKE and ESP proposals", role)
	}
	return nil
}

type childRequest struct {
	spiIn    uint32
	tsi, tsr []wire.TrafficSelector
	cp       bool
}

// Dial starts an IKE SA as initiator and returns at once; the outcome comes
// as an *Established or *Deleted event on events (and through Wait). ctx
// bounds the SA's whole life: cancelling it drops the SA without a DELETE.
// Incoming messages for the SA must be passed to HandlePacket.
func Dial(ctx context.Context, cfg InitiatorConfig, tr Transport, events chan<- Event) (*SA, error) {
	sa, err := newInitiator(ctx, cfg, true, tr, events)
	if err != nil {
		return nil, err
	}
	go sa.run(sa.startInit)
	return sa, nil
}

// newInitiator checks cfg and makes the initiator's SA without starting
// it; auth says the authenticators are needed (Dial), as they are not to
// prepare the first message (PrepareInit).
func newInitiator(ctx context.Context, cfg InitiatorConfig, auth bool, tr Transport, events chan<- Event) (*SA, error) {
	if err := checkBasics("initiator", !auth || (cfg.LocalAuth != nil && cfg.PeerAuth != nil), cfg.IKE, cfg.ESP); err != nil {
		return nil, err
	}
	if len(dhGroups(cfg.IKE)) == 0 {
		return nil, errors.New("ike: IKE proposals lack a key exchange group")
	}
	for _, g := range append(dhGroups(cfg.IKE), append(addKEGroups(cfg.IKE), addKEGroups(cfg.ESP)...)...) {
		if !ikecrypto.SupportedGroup(g) {
			return nil, fmt.Errorf("ike: unsupported key exchange group %d", g)
		}
	}
	if !cfg.Path.Remote.IsValid() {
		return nil, errors.New("ike: initiator needs the gateway address")
	}
	if cfg.ForbidNAT && (!cfg.Path.Local.Addr().IsValid() || cfg.Path.Local.Addr().IsUnspecified()) {
		return nil, errors.New("ike: forbidding NAT needs the local address of the path")
	}
	if err := checkSwitchConfig(cfg.SwitchNotify, cfg.SwitchRevision); err != nil {
		return nil, err
	}
	mobikeData := cfg.MOBIKEData
	if cfg.Switch && mobikeData == nil {
		mobikeData = []byte{switchCapability}
	}
	c := common{localAuth: cfg.LocalAuth, ike: cfg.IKE, esp: cfg.ESP, mobike: cfg.MOBIKE, mobikeData: mobikeData,
		fragmentation: !cfg.NoFragmentation, fragmentMTU: cfg.FragmentMTU,
		dpdDelay: cfg.DPDDelay, lastInbound: cfg.LastInbound,
		childRekey: cfg.ChildRekeyTime, childLife: cfg.ChildLifeTime, rekeyJitter: cfg.RekeyJitter, ikeRekey: cfg.IKERekeyTime, ikeLife: cfg.IKELifeTime,
		retransmit: cfg.Retransmit, clock: cfg.Clock, rand: cfg.Rand, log: cfg.Log}
	c.fill()
	if len(cfg.RemoteTS) == 0 {
		cfg.RemoteTS = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	if len(cfg.LocalTS) == 0 {
		for _, p := range cfg.RemoteTS {
			full := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if p.Addr().Is6() {
				full = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			if !slices.Contains(cfg.LocalTS, full) {
				cfg.LocalTS = append(cfg.LocalTS, full)
			}
		}
	}
	sa := newSA(ctx, true, c, tr, events, cfg.Path)
	sa.cur = netpath.NewCurrent(cfg.Path, cfg.IfName)
	sa.icfg = &cfg
	if f := cfg.First; f != nil && f.SPIi != 0 {
		sa.spii.Store(f.SPIi)
	} else {
		sa.spii.Store(sa.randSPI64())
	}
	sa.log = c.log.With("role", "initiator", "spii", spiHex(sa.spii.Load()))
	return sa, nil
}

func (sa *SA) startInit() {
	if f := sa.icfg.First; f != nil {
		err := sa.adoptFirst(f)
		if err == nil {
			return
		}
		// Sent afresh under a new SPI: the gateway may hold a half-open
		// SA for the other one, and must not take ours for its
		// retransmission.
		sa.log.Warn("the first IKE_SA_INIT cannot be taken over; sending a new one", "err", err)
		sa.spii.Store(sa.randSPI64())
		sa.log = sa.cfg.log.With("role", "initiator", "spii", spiHex(sa.spii.Load()))
	}
	groups := dhGroups(sa.cfg.ike)
	if err := sa.newKE(groups[0]); err != nil {
		sa.die(err)
		return
	}
	sa.ni = sa.randBytes(32)
	sa.sendInit()
}

func (sa *SA) newKE(group uint16) error {
	ke, err := ikecrypto.NewKeyExchange(group, sa.cfg.rand)
	if err != nil {
		return fmt.Errorf("ike: key exchange group %d: %w", group, err)
	}
	sa.ke = ke
	return nil
}

func (sa *SA) sendInit() {
	pkt, err := sa.buildInit(nil)
	if err != nil {
		sa.die(err)
		return
	}
	sa.log.Info("initiating IKE_SA_INIT", "remote", sa.Path().Remote, "group", sa.ke.Group())
	sa.sendRequest(sa.initRequest(pkt))
}

// buildInit encodes IKE_SA_INIT from the SA's SPI, key exchange, nonce
// and COOKIE, and keeps it for IKE_AUTH's signed octets. natSource is the
// forced NAT_DETECTION_SOURCE_IP hash; nil draws a fresh one.
func (sa *SA) buildInit(natSource []byte) ([]byte, error) {
	spii := sa.spii.Load()
	var ps []wire.Payload
	if sa.saInit.cookie != nil {
		ps = append(ps, &wire.Notify{Type: wire.NotifyCookie, Data: sa.saInit.cookie})
	}
	srcHash := natHash(spii, 0, sa.Path().Local)
	sa.nat.forced = !sa.icfg.NoForceEncap
	if sa.nat.forced {
		if len(natSource) == len(srcHash) {
			srcHash = bytes.Clone(natSource)
		} else {
			srcHash = sa.randBytes(len(srcHash))
		}
		sa.saInit.natSource = srcHash
	}
	ps = append(ps,
		&wire.SA{Proposals: offerProposals(sa.cfg.ike, wire.ProtoIKE, nil, sa.ke.Group())},
		&wire.KE{Group: sa.ke.Group(), Data: sa.ke.PublicKey()},
		&wire.Nonce{Data: sa.ni},
		&wire.Notify{Type: wire.NotifyNATDetectionSourceIP, Data: srcHash},
		&wire.Notify{Type: wire.NotifyNATDetectionDestinationIP, Data: natHash(spii, 0, sa.Path().Remote)},
		SignatureHashNotify(),
	)
	if sa.cfg.fragmentation {
		ps = append(ps, &wire.Notify{Type: wire.NotifyIKEv2FragmentationSupported})
	}
	if offersADDKE(sa.cfg.ike) {
		ps = append(ps, &wire.Notify{Type: wire.NotifyIntermediateExchangeSupported})
	}
	if sa.icfg.ForbidNAT {
		ps = append(ps, &wire.Notify{Type: wire.NotifyNoNATsAllowed, Data: noNATsData(sa.Path())})
	}
	h := wire.Header{SPIi: spii, Version: 0x20, Exchange: wire.ExchangeIKESAInit, Flags: wire.FlagInitiator}
	pkt, err := (&wire.Message{Header: h, Payloads: ps}).Encode()
	if err != nil {
		return nil, fmt.Errorf("ike: encoding IKE_SA_INIT: %w", err)
	}
	sa.initReq = pkt
	sa.nextMsgID = 1
	sa.clearInitError()
	return pkt, nil
}

// initRequest is the outstanding IKE_SA_INIT request carrying pkt.
func (sa *SA) initRequest(pkt []byte) *request {
	return &request{exchange: wire.ExchangeIKESAInit, msgID: 0, pkt: pkt,
		onResponse: sa.handleInitResponse,
		onTimeout: func(error) {
			// No valid answer came: the error one did is the better reason.
			if sa.saInit.err != nil {
				sa.fail(sa.saInit.err)
			}
		}}
}

// initErrorGrace is how long an initiator waits for a valid IKE_SA_INIT
// response after one that brought an error: such a response is not
// authenticated, and anyone on the path can send one (RFC 7296 2.21.1).
const initErrorGrace = time.Second

// initResponseProblem returns the error an IKE_SA_INIT response brings
// (an error notify, or the payloads a valid one must have missing), nil for
// a response to go on with, COOKIE and INVALID_KE_PAYLOAD included.
func initResponseProblem(h wire.Header, ps []wire.Payload) error {
	pl := wire.Collect(ps)
	if pl.Has(wire.NotifyCookie) || pl.Has(wire.NotifyInvalidKEPayload) {
		return nil
	}
	if n := pl.FirstError(); n != nil {
		return &NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true}
	}
	if h.SPIr == 0 {
		return &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: errors.New("responder SPI is zero")}
	}
	saP := pl.SA != nil && len(pl.SA.Proposals) == 1
	nonce := pl.Nonce != nil && len(pl.Nonce.Data) >= 16 && len(pl.Nonce.Data) <= 256
	if !saP || pl.KE == nil || !nonce {
		return &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: errors.New("IKE_SA_INIT response lacks SA, KE or Nonce")}
	}
	return nil
}

// unauthenticatedInitError keeps the first error an IKE_SA_INIT response
// brought and waits initErrorGrace (and the retransmissions) for a valid
// response before failing with it.
func (sa *SA) unauthenticatedInitError(err error) {
	sa.stats.unexpected.Add(1)
	if sa.saInit.err != nil {
		return
	}
	sa.saInit.err = err
	sa.log.Info("IKE_SA_INIT answered with an error; waiting for a valid answer", "err", err)
	r := sa.out
	sa.saInit.errTimer = sa.cfg.clock.AfterFunc(initErrorGrace, func() {
		sa.post(func() {
			if sa.out == r && r != nil && sa.saInit.err != nil && sa.state != stateDead {
				sa.completeRequestKeepQueue()
				sa.fail(sa.saInit.err)
			}
		})
	})
}

func (sa *SA) clearInitError() {
	sa.saInit.err = nil
	if sa.saInit.errTimer != nil {
		sa.saInit.errTimer.Stop()
		sa.saInit.errTimer = nil
	}
}

func (sa *SA) fail(err error) {
	sa.log.Warn("IKE SA failed", "err", err)
	sa.die(err)
}

func (sa *SA) handleInitResponse(h wire.Header, ps []wire.Payload, raw []byte) {
	sa.clearInitError()
	pl := wire.Collect(ps)
	if n := pl.Notify(wire.NotifyCookie); n != nil {
		if sa.saInit.cookieTries >= 3 || len(n.Data) < 1 || len(n.Data) > 64 {
			sa.fail(&NotifyError{Type: wire.NotifyCookie, Exchange: h.Exchange, Remote: true, Err: errors.New("cookie loop")})
			return
		}
		sa.saInit.cookieTries++
		sa.saInit.cookie = slices.Clone(n.Data)
		sa.log.Info("responder requested a cookie")
		sa.sendInit()
		return
	}
	if n := pl.Notify(wire.NotifyInvalidKEPayload); n != nil {
		if len(n.Data) == 2 {
			g := binary.BigEndian.Uint16(n.Data)
			if sa.saInit.keTries < 2 && g != sa.ke.Group() && slices.Contains(dhGroups(sa.cfg.ike), g) {
				sa.saInit.keTries++
				sa.log.Info("responder requested another key exchange group", "group", g)
				if err := sa.newKE(g); err != nil {
					sa.fail(err)
					return
				}
				sa.sendInit()
				return
			}
		}
		sa.fail(&NotifyError{Type: wire.NotifyInvalidKEPayload, Exchange: h.Exchange, Remote: true, Err: ErrNoProposalChosen})
		return
	}
	if n := pl.FirstError(); n != nil {
		sa.fail(&NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true})
		return
	}
	if h.SPIr == 0 {
		sa.stats.malformed.Add(1)
		sa.fail(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: errors.New("responder SPI is zero")})
		return
	}
	saP, ke, nonce := pl.SA, pl.KE, pl.Nonce
	if saP == nil || ke == nil || nonce == nil || len(saP.Proposals) != 1 || len(nonce.Data) < 16 || len(nonce.Data) > 256 {
		sa.fail(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: errors.New("IKE_SA_INIT response lacks SA, KE or Nonce")})
		return
	}
	chosen, ok := selectProposal(sa.cfg.ike, saP.Proposals, wire.ProtoIKE, sa.ke.Group())
	if !ok || !sameTransforms(chosen.Transforms, saP.Proposals[0].Transforms) {
		sa.fail(&NotifyError{Type: wire.NotifyNoProposalChosen, Exchange: h.Exchange, Err: errors.New("responder chose a proposal we did not offer")})
		return
	}
	if dh, _ := transformOf(chosen.Transforms, wire.TransformDH); dh.ID != sa.ke.Group() || ke.Group != sa.ke.Group() {
		sa.fail(&NotifyError{Type: wire.NotifyInvalidKEPayload, Exchange: h.Exchange, Err: errors.New("responder's key exchange group differs from its proposal")})
		return
	}
	shared, err := sa.ke.SharedSecret(ke.Data)
	if err != nil {
		sa.fail(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: fmt.Errorf("responder's KE: %w", err)})
		return
	}
	sa.spir.Store(h.SPIr)
	sa.nr = slices.Clone(nonce.Data)
	sa.initResp = slices.Clone(raw)
	sa.ikeProp = chosen
	if err := sa.deriveIKEKeys(shared); err != nil {
		sa.fail(err)
		return
	}
	spii, spir := sa.spii.Load(), h.SPIr
	srcOK, srcPresent := natMatches(ps, wire.NotifyNATDetectionSourceIP, spii, spir, sa.Path().Remote)
	dstOK, dstPresent := natMatches(ps, wire.NotifyNATDetectionDestinationIP, spii, spir, sa.Path().Local)
	sa.nat.supported = srcPresent && dstPresent
	if sa.icfg.ForbidNAT && (!sa.nat.supported || !srcOK || !dstOK) {
		// Without the responder's NAT detection payloads we cannot tell,
		// and a forbidden NAT must not pass unnoticed.
		sa.fail(&NotifyError{Type: wire.NotifyUnexpectedNATDetected, Exchange: h.Exchange,
			Err: fmt.Errorf("NAT between %s and %s, and the profile forbids NAT", sa.Path().Local.Addr(), sa.Path().Remote.Addr())})
		return
	}
	sa.frag.ok = sa.cfg.fragmentation && pl.Has(wire.NotifyIKEv2FragmentationSupported)
	if sa.nat.supported {
		sa.nat.remote, sa.nat.local = !srcOK, !dstOK
		// Port float (RFC 7296 2.23): with NAT-T available we always move to
		// 4500, because ESP is always UDP-encapsulated here.
		if p := sa.Path(); p.Remote.Port() == 500 && !p.Stream {
			sa.setPath(netpath.Path{Local: p.Local, Remote: netip.AddrPortFrom(p.Remote.Addr(), 4500), IfIndex: p.IfIndex})
		}
	}
	sa.addKE.transforms = addKETransforms(chosen.Transforms)
	sa.addKE.intermediate = pl.Has(wire.NotifyIntermediateExchangeSupported)
	if len(sa.addKE.transforms) > 0 && !sa.addKE.intermediate {
		sa.fail(&NotifyError{Type: wire.NotifyNoProposalChosen, Exchange: h.Exchange, Err: errors.New("responder chose additional key exchanges but does not support IKE_INTERMEDIATE")})
		return
	}
	sa.log = sa.log.With("spir", spiHex(spir))
	sa.log.Info("IKE_SA_INIT done", "proposal", ProposalText(chosen.Transforms), "nat_local", sa.nat.local, "nat_remote", sa.nat.remote)
	sa.state = stateAuth
	sa.nextSetupStep()
}

func sameTransforms(a, b []wire.Transform) bool {
	if len(a) != len(b) {
		// A responder may leave out ESN=0; compare without it.
		strip := func(ts []wire.Transform) []wire.Transform {
			return slices.DeleteFunc(slices.Clone(ts), func(t wire.Transform) bool {
				return (t.Type == wire.TransformESN || t.Type.IsADDKE()) && t.ID == 0
			})
		}
		a, b = strip(a), strip(b)
		if len(a) != len(b) {
			return false
		}
	}
	for _, t := range b {
		if !slices.Contains(a, t) {
			return false
		}
	}
	return true
}

func (sa *SA) deriveIKEKeys(shared []byte) error {
	prfT, ok := transformOf(sa.ikeProp.Transforms, wire.TransformPRF)
	if !ok {
		return errors.New("ike: IKE proposal without PRF")
	}
	prf, err := ikecrypto.NewPRF(prfT.ID)
	if err != nil {
		return err
	}
	integ, integLen, encLen, err := sa.ikeKeyLens()
	if err != nil {
		return err
	}
	sa.prf = prf
	return sa.installIKEKeys(ikecrypto.DeriveIKEKeys(prf, sa.ni, sa.nr, shared, sa.spii.Load(), sa.spir.Load(), integLen, encLen), integ)
}

func (sa *SA) sendAuth() {
	cfg := sa.icfg
	idiV := *cfg.LocalAuth.Identity()
	idiV.Responder = false
	idi := &idiV
	var ps []wire.Payload
	ps = append(ps, idi)
	for _, c := range cfg.LocalAuth.Certs() {
		ps = append(ps, c)
	}
	if !cfg.NoInitialContact {
		ps = append(ps, &wire.Notify{Type: wire.NotifyInitialContact})
	}
	for _, c := range cfg.PeerAuth.CertReqs() {
		ps = append(ps, c)
	}
	if cfg.RemoteID != "" {
		idr, err := ParseIdentity(cfg.RemoteID)
		if err != nil {
			sa.fail(fmt.Errorf("ike: remote identity: %w", err))
			return
		}
		idr.Responder = true
		ps = append(ps, idr)
	}
	onResponse := sa.handleAuthResponse
	if ea, ok := cfg.LocalAuth.(*EAPAuth); ok {
		// RFC 7296 2.16: no AUTH; EAP follows (initiator_eap.go).
		extra, err := sa.startEAP(ea, idi)
		if err != nil {
			sa.fail(fmt.Errorf("ike: starting EAP: %w", err))
			return
		}
		ps = append(ps, extra...)
		onResponse = sa.handleEAPResponse
	} else {
		auth, err := cfg.LocalAuth.Sign(sa.prf, sa.signedOctets(sa.initReq, sa.nr, sa.keys.SKpi, idi))
		if err != nil {
			sa.fail(fmt.Errorf("ike: signing AUTH: %w", err))
			return
		}
		ps = append(ps, auth)
	}
	child := &childRequest{spiIn: sa.randSPI32(), tsi: PrefixesTS(cfg.LocalTS), tsr: PrefixesTS(cfg.RemoteTS), cp: cfg.VirtualIP}
	sa.pendingChild = child
	if child.cp {
		ps = append(ps, cpRequest(cfg.RequestVIPs))
	}
	ps = append(ps, sa.haSupportNotifies()...)
	if sa.cfg.mobike {
		ps = append(ps, &wire.Notify{Type: wire.NotifyMOBIKESupported, Data: sa.cfg.mobikeData})
		if cfg.LocalAddresses != nil {
			ps = append(ps, addressNotifies(cfg.LocalAddresses(), sa.Path().Local.Addr())...)
		}
	}
	var spi [4]byte
	binary.BigEndian.PutUint32(spi[:], child.spiIn)
	ps = append(ps,
		&wire.SA{Proposals: offerProposals(stripADDKE(sa.cfg.esp), wire.ProtoESP, spi[:], 0)},
		&wire.TrafficSelectors{Responder: false, Selectors: child.tsi},
		&wire.TrafficSelectors{Responder: true, Selectors: child.tsr},
	)
	sa.startRequest(wire.ExchangeIKEAuth, func() []wire.Payload { return ps }, onResponse, nil)
}

func (sa *SA) handleAuthResponse(h wire.Header, ps []wire.Payload, _ []byte) {
	pl := wire.Collect(ps)
	if n := pl.Notify(wire.NotifyAuthenticationFailed); n != nil {
		// RFC 7296 2.21.2: the responder has already deleted the IKE SA.
		sa.fail(&NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true})
		return
	}
	idr, auth, certs := pl.IDr, pl.Auth, pl.Certs
	if idr == nil || auth == nil {
		if n := pl.FirstError(); n != nil {
			sa.fail(&NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true})
			return
		}
		sa.failAfterAuth(&NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: h.Exchange, Err: errors.New("IKE_AUTH response lacks IDr or AUTH")}, false)
		return
	}
	octets := sa.signedOctets(sa.initResp, sa.ni, sa.keys.SKpr, idr)
	if err := sa.responderAuth().Verify(sa.prf, octets, idr, auth, certs); err != nil {
		sa.failAfterAuth(&NotifyError{Type: wire.NotifyAuthenticationFailed, Exchange: h.Exchange,
			Err: fmt.Errorf("gateway's authentication did not verify: %w", err)}, false)
		return
	}
	sa.peerID = identityString(idr)
	sa.state = stateEstablished
	sa.established = true
	sa.dpd.lastIn = sa.cfg.clock.Now()
	sa.armDPD(sa.cfg.dpdDelay)
	sa.scheduleIKERekey()
	sa.noteAuthLifetime(ps)
	if n := pl.Notify(wire.NotifyMOBIKESupported); n != nil {
		sa.mobike.peer = true
		sa.mobike.peerData = slices.Clone(n.Data)
		sa.learnAddresses(ps, sa.respPath.Remote.Addr())
	}
	sa.noteHASupport(ps)
	if n := pl.FirstError(); n != nil {
		// The IKE SA exists, but without a Child SA the client has no use
		// for it (RFC 7296 2.21.2 lets us delete it).
		sa.failAfterAuth(&NotifyError{Type: n.Type, Exchange: h.Exchange, Remote: true}, true)
		return
	}
	child, err := sa.acceptChild(ps)
	if err != nil {
		sa.failAfterAuth(err, true)
		return
	}
	sa.children = append(sa.children, child)
	sa.scheduleChild(child)
	report := func(failed []FailedChild) {
		ev := sa.establishedEvent()
		ev.FailedChildren = failed
		sa.log.Info("IKE SA established", "peer", sa.peerID, "child_spi_in", fmt.Sprintf("%08x", child.SPIIn),
			"child_spi_out", fmt.Sprintf("%08x", child.SPIOut), "esp", child.Proposal, "children", len(sa.children), "vips", sa.vips)
		sa.finish(ev, nil)
		sa.emit(ev)
	}
	if len(sa.icfg.MoreChildren) > 0 {
		sa.createMoreChildren(sa.icfg.MoreChildren, report)
		return
	}
	report(nil)
}

// failAfterAuth ends an SA whose keys the peer holds: we tell the peer with
// a DELETE (not waiting long for its answer), then report err.
func (sa *SA) failAfterAuth(err error, established bool) {
	sa.log.Warn("IKE SA failed", "err", err)
	sa.finish(nil, err)
	sa.established = established
	sa.state = stateDeleting
	sa.queue = nil
	// One transmission is enough: the peer times the SA out otherwise.
	sa.sendLastWord(wire.ExchangeInformational, &wire.Delete{Protocol: wire.ProtoIKE}, err)
}

// sendLastWord sends p, the SA's last request, once, and ends the SA with
// err when the answer comes or after one retransmission timeout.
func (sa *SA) sendLastWord(exchange wire.ExchangeType, p wire.Payload, err error) {
	sa.startRequest(exchange, func() []wire.Payload { return []wire.Payload{p} },
		func(wire.Header, []wire.Payload, []byte) { sa.die(err) },
		func(error) { sa.die(err) })
	if sa.out != nil {
		r := sa.out
		r.timer.Stop()
		r.timer = sa.cfg.clock.AfterFunc(sa.cfg.retransmit.Timeout(0), func() { sa.post(func() { sa.die(err) }) })
	}
}

func (sa *SA) establishedEvent() *Established {
	return &Established{
		SA: sa, Initiator: sa.initiator, SPIi: sa.spii.Load(), SPIr: sa.spir.Load(), Path: sa.Path(),
		NATLocal: sa.nat.local, NATRemote: sa.nat.remote, UDPEncap: sa.nat.supported && (sa.nat.local || sa.nat.remote || sa.nat.forced),
		PeerMOBIKE: sa.mobike.peer, PeerMOBIKEData: sa.mobike.peerData, PeerID: sa.peerID,
		Proposal: ProposalText(sa.ikeProp.Transforms), Children: slices.Clone(sa.children),
		VirtualIPs: slices.Clone(sa.vips), DNS: slices.Clone(sa.dns), DNSDomains: slices.Clone(sa.dnsDomains), AuthLifetime: sa.reauth.lifetime,
		InitialContact: sa.initialContact,
	}
}

// acceptChild checks the responder's Child SA and derives its keys.
func (sa *SA) acceptChild(ps []wire.Payload) (ChildSA, error) {
	req := sa.pendingChild
	pl := wire.Collect(ps)
	saP, tsi, tsr := pl.SA, pl.TSi, pl.TSr
	if cp := pl.Config(wire.CfgReply); cp != nil {
		sa.vips, sa.dns, sa.dnsDomains = parseCPReply(cp)
	}
	if saP == nil || tsi == nil || tsr == nil || len(saP.Proposals) != 1 {
		return ChildSA{}, &NotifyError{Type: wire.NotifyInvalidSyntax, Exchange: wire.ExchangeIKEAuth, Err: errors.New("response lacks SA, TSi or TSr")}
	}
	p := saP.Proposals[0]
	chosen, ok := selectProposal(stripADDKE(sa.cfg.esp), stripWireADDKE([]wire.Proposal{p}), wire.ProtoESP, 0)
	if !ok || len(p.SPI) != 4 {
		return ChildSA{}, &NotifyError{Type: wire.NotifyNoProposalChosen, Exchange: wire.ExchangeIKEAuth, Err: errors.New("responder chose an ESP proposal we did not offer")}
	}
	if len(tsi.Selectors) == 0 || len(tsr.Selectors) == 0 || !subsetTS(tsi.Selectors, req.tsi) || !subsetTS(tsr.Selectors, req.tsr) {
		return ChildSA{}, &NotifyError{Type: wire.NotifyTSUnacceptable, Exchange: wire.ExchangeIKEAuth, Err: errors.New("responder widened the traffic selectors")}
	}
	if req.cp && len(sa.vips) == 0 {
		return ChildSA{}, &NotifyError{Type: wire.NotifyInternalAddressFailure, Exchange: wire.ExchangeIKEAuth, Remote: true, Err: errors.New("no inner address in CFG_REPLY")}
	}
	return sa.makeChild(chosen.Transforms, req.spiIn, binary.BigEndian.Uint32(p.SPI), tsi.Selectors, tsr.Selectors)
}

// makeChild derives the Child SA keys (RFC 7296 2.17; no PFS in IKE_AUTH).
func (sa *SA) makeChild(ts []wire.Transform, spiIn, spiOut uint32, tsi, tsr []wire.TrafficSelector) (ChildSA, error) {
	c, err := sa.deriveChild(ts, spiIn, spiOut, nil, sa.ni, sa.nr, sa.initiator)
	if err != nil {
		return ChildSA{}, err
	}
	if sa.initiator {
		c.LocalTS, c.RemoteTS = tsi, tsr
	} else {
		c.LocalTS, c.RemoteTS = tsr, tsi
	}
	return c, nil
}

// deriveChild computes KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr) for an exchange
// whose initiator was us when weInitiated; the initiator-to-responder keys
// come first (RFC 7296 2.17).
func (sa *SA) deriveChild(ts []wire.Transform, spiIn, spiOut uint32, shared, ni, nr []byte, weInitiated bool) (ChildSA, error) {
	encr, _ := transformOf(ts, wire.TransformEncr)
	encLen, err := ikecrypto.EncrKeySize(encr.ID, int(encr.KeyLength))
	if err != nil {
		return ChildSA{}, err
	}
	integLen := 0
	if it, ok := transformOf(ts, wire.TransformInteg); ok && it.ID != 0 {
		integ, err := ikecrypto.NewIntegrity(it.ID)
		if err != nil {
			return ChildSA{}, err
		}
		integLen = integ.KeySize()
	}
	n := encLen + integLen
	km := ikecrypto.ChildKeyMat(sa.prf, sa.keys.SKd, shared, ni, nr, 2*n)
	i2r, r2i := km[:n:n], km[n:]
	esn := false
	if e, ok := transformOf(ts, wire.TransformESN); ok && e.ID == 1 {
		esn = true
	}
	c := ChildSA{SPIIn: spiIn, SPIOut: spiOut, ESN: esn, Transforms: ts,
		Proposal: ProposalText(slices.DeleteFunc(slices.Clone(ts), func(t wire.Transform) bool { return t.Type == wire.TransformESN }))}
	if weInitiated {
		c.KeyOut, c.KeyIn = i2r, r2i
	} else {
		c.KeyIn, c.KeyOut = i2r, r2i
	}
	return c, nil
}
