package eap

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// EAP-TLS (RFC 5216) flags.
const (
	tlsFlagLength = 0x80 // L: TLS Message Length present
	tlsFlagMore   = 0x40 // M: more fragments follow
	tlsFlagStart  = 0x20 // S: EAP-TLS start
)

// TLS fragment and message bounds: fragments small enough for one IKE
// message, messages (a handshake flight) well above any certificate chain.
const (
	tlsFragmentSize = 1000
	maxTLSMessage   = 64 << 10
)

// tlsMSKLabel is RFC 5216 2.3: MSK = TLS-PRF(master secret, "client EAP
// encryption", client.random || server.random), the RFC 5705 exporter
// without context. TLS 1.3 exports "EXPORTER_EAP_TLS_Key_Material" with
// the Type-Code 0x0D as context (RFC 9190 2.3), 128 octets of which the
// MSK is the first 64.
const (
	tlsMSKLabel   = "client EAP encryption"
	tls13MSKLabel = "EXPORTER_EAP_TLS_Key_Material"
)

// tlsFrame is one EAP-TLS type data: flags, the total length when L is
// set, and a fragment.
type tlsFrame struct {
	flags byte
	total int
	data  []byte
}

func parseTLSFrame(b []byte) (tlsFrame, error) {
	if len(b) < 1 {
		return tlsFrame{}, errors.New("eap-tls: no flags")
	}
	f := tlsFrame{flags: b[0], data: b[1:]}
	if f.flags&tlsFlagLength != 0 {
		if len(b) < 5 {
			return tlsFrame{}, errors.New("eap-tls: L flag without a length")
		}
		f.total = int(binary.BigEndian.Uint32(b[1:5]))
		f.data = b[5:]
		if f.total > maxTLSMessage || f.total < len(f.data) {
			return tlsFrame{}, fmt.Errorf("eap-tls: TLS message length %d", f.total)
		}
	}
	return f, nil
}

// tlsChannel carries one TLS conversation over EAP-TLS frames: it
// reassembles the peer's fragments, fragments ours, and drives crypto/tls
// over an in-memory connection whose goroutine it owns.
type tlsChannel struct {
	pipe    *tlsPipe
	conn    *tls.Conn
	server  bool
	started bool
	// Reassembly of the peer's message.
	inBuf   []byte
	inTotal int
	// Our message still to send, after the first fragment.
	outBuf []byte
}

func newTLSChannel(server bool, cfg *tls.Config) *tlsChannel {
	p := newTLSPipe()
	var c *tls.Conn
	if server {
		c = tls.Server(p, cfg)
	} else {
		c = tls.Client(p, cfg)
	}
	return &tlsChannel{pipe: p, conn: c, server: server}
}

// start runs the handshake; its goroutine ends when the handshake does or
// close is called.
func (c *tlsChannel) start() {
	if c.started {
		return
	}
	c.started = true
	go func() {
		err := c.conn.Handshake()
		if err == nil && c.conn.ConnectionState().Version == tls.VersionTLS13 {
			err = c.commitment()
		}
		c.pipe.finish(err)
	}()
}

// commitment is RFC 9190 2.5: with TLS 1.3 the server ends the handshake
// with one octet 0x00 of application data, and the peer accepts no
// EAP-Success before it has seen it.
func (c *tlsChannel) commitment() error {
	if c.server {
		_, err := c.conn.Write([]byte{0})
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c.conn, b[:]); err != nil {
		return fmt.Errorf("waiting for the commitment message: %w", err)
	}
	if b[0] != 0 {
		return errors.New("commitment message is not 0x00")
	}
	return nil
}

// receive takes one frame from the peer. It returns complete when a whole
// TLS message has arrived and was fed to TLS (out then holds our answer,
// possibly empty), or an acknowledgement to send for a fragment.
func (c *tlsChannel) receive(f tlsFrame) (complete bool, err error) {
	if f.flags&tlsFlagLength != 0 && c.inBuf == nil {
		c.inTotal = f.total
	}
	if len(c.inBuf)+len(f.data) > maxTLSMessage {
		return false, errors.New("eap-tls: TLS message too long")
	}
	c.inBuf = append(c.inBuf, f.data...)
	if f.flags&tlsFlagMore != 0 {
		if c.inBuf == nil {
			c.inBuf = []byte{}
		}
		return false, nil
	}
	if c.inTotal != 0 && len(c.inBuf) != c.inTotal {
		return false, fmt.Errorf("eap-tls: TLS message of %d octets announced, %d arrived", c.inTotal, len(c.inBuf))
	}
	msg := c.inBuf
	c.inBuf, c.inTotal = nil, 0
	c.start()
	c.outBuf = c.pipe.exchange(msg)
	return true, nil
}

// nextFragment returns the frame carrying the next piece of our message
// (flags only, no data, when there is nothing to send: an acknowledgement).
func (c *tlsChannel) nextFragment(first bool) []byte {
	if len(c.outBuf) == 0 {
		return []byte{0}
	}
	n := min(len(c.outBuf), tlsFragmentSize)
	var b []byte
	flags := byte(0)
	if n < len(c.outBuf) {
		flags |= tlsFlagMore
	}
	if first && flags&tlsFlagMore != 0 {
		flags |= tlsFlagLength
		b = binary.BigEndian.AppendUint32([]byte{flags}, uint32(len(c.outBuf)))
	} else {
		b = []byte{flags}
	}
	b = append(b, c.outBuf[:n]...)
	c.outBuf = c.outBuf[n:]
	return b
}

func (c *tlsChannel) sending() bool { return len(c.outBuf) > 0 }

// handshakeDone reports the handshake's end and its error.
func (c *tlsChannel) handshakeDone() (bool, error) { return c.pipe.result() }

func (c *tlsChannel) msk() ([]byte, error) {
	st := c.conn.ConnectionState()
	if !st.HandshakeComplete {
		return nil, errors.New("eap-tls: handshake not complete")
	}
	switch st.Version {
	case tls.VersionTLS12:
		msk, err := st.ExportKeyingMaterial(tlsMSKLabel, nil, 64)
		if err != nil {
			return nil, fmt.Errorf("eap-tls: MSK: %w", err)
		}
		return msk, nil
	case tls.VersionTLS13:
		km, err := st.ExportKeyingMaterial(tls13MSKLabel, []byte{byte(TypeTLS)}, 128)
		if err != nil {
			return nil, fmt.Errorf("eap-tls: MSK: %w", err)
		}
		return km[:64], nil
	}
	return nil, fmt.Errorf("eap-tls: TLS version %x is not supported", st.Version)
}

func (c *tlsChannel) close() { c.pipe.Close() }

// tlsPipe is the in-memory net.Conn under crypto/tls: Write collects what
// TLS sends, Read hands it what the peer sent and tells exchange when TLS
// waits for more.
type tlsPipe struct {
	mu      sync.Mutex
	cond    *sync.Cond
	in, out []byte
	waiting bool // TLS blocks in Read with nothing to read
	closed  bool
	done    bool
	err     error
}

func newTLSPipe() *tlsPipe {
	p := &tlsPipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// exchange gives TLS msg and waits until it needs more input or has
// finished, returning what it wrote meanwhile.
func (p *tlsPipe) exchange(msg []byte) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.in = append(p.in, msg...)
	p.waiting = false
	p.cond.Broadcast()
	for !p.done && !p.closed && !(p.waiting && len(p.in) == 0) {
		p.cond.Wait()
	}
	out := p.out
	p.out = nil
	return out
}

func (p *tlsPipe) finish(err error) {
	p.mu.Lock()
	p.done, p.err = true, err
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *tlsPipe) result() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done, p.err
}

func (p *tlsPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.in) == 0 && !p.closed {
		p.waiting = true
		p.cond.Broadcast()
		p.cond.Wait()
	}
	// Busy again: exchange must not take the output until TLS is back
	// here with nothing left to read.
	p.waiting = false
	if len(p.in) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.in)
	p.in = p.in[n:]
	return n, nil
}

func (p *tlsPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, net.ErrClosed
	}
	p.out = append(p.out, b...)
	return len(b), nil
}

func (p *tlsPipe) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	return nil
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "eap" }
func (pipeAddr) String() string  { return "eap-tls" }

func (p *tlsPipe) LocalAddr() net.Addr              { return pipeAddr{} }
func (p *tlsPipe) RemoteAddr() net.Addr             { return pipeAddr{} }
func (p *tlsPipe) SetDeadline(time.Time) error      { return nil }
func (p *tlsPipe) SetReadDeadline(time.Time) error  { return nil }
func (p *tlsPipe) SetWriteDeadline(time.Time) error { return nil }

// TLS is the peer side of EAP-TLS: RFC 5216 with TLS 1.2, the version
// strongSwan's eap-tls plugin speaks by default, and RFC 9190 with TLS 1.3
// when cfg allows it. The client certificate and the server's
// verification are in cfg.
type TLS struct {
	ch       *tlsChannel
	complete bool
	msk      []byte
	failed   error
}

// NewTLS returns the EAP-TLS method; cfg must hold our certificate and
// verify the server's. MaxVersion 0 means TLS 1.2; MinVersion is 1.2.
func NewTLS(cfg *tls.Config) *TLS {
	cfg = tlsVersions(cfg)
	return &TLS{ch: newTLSChannel(false, cfg)}
}

// Type is TypeTLS.
func (m *TLS) Type() Type { return TypeTLS }

// Complete: the handshake finished, the server verified.
func (m *TLS) Complete() bool { return m.complete }

// MSK is the RFC 5216 MSK once Complete.
func (m *TLS) MSK() []byte {
	if !m.complete {
		return nil
	}
	return append([]byte(nil), m.msk...)
}

// Close ends the TLS goroutine of an unfinished conversation.
func (m *TLS) Close() { m.ch.close() }

// Process answers one EAP-TLS request.
func (m *TLS) Process(data []byte) ([]byte, error) {
	if m.failed != nil {
		return nil, m.failed
	}
	f, err := parseTLSFrame(data)
	if err != nil {
		return nil, err
	}
	switch {
	case f.flags&tlsFlagStart != 0:
		if m.ch.started {
			return nil, errors.New("eap-tls: second Start")
		}
		// The ClientHello: TLS writes it before its first Read.
		m.ch.start()
		m.ch.outBuf = m.ch.pipe.exchange(nil)
		return m.ch.nextFragment(true), nil
	case !m.ch.started:
		return nil, errors.New("eap-tls: data before Start")
	case m.ch.sending():
		// The server acknowledged a fragment of ours.
		if len(f.data) != 0 || f.flags != 0 {
			return nil, errors.New("eap-tls: data while our fragments are pending")
		}
		return m.ch.nextFragment(false), nil
	}
	complete, err := m.ch.receive(f)
	if err != nil {
		return nil, err
	}
	if !complete {
		return []byte{0}, nil
	}
	if done, herr := m.ch.handshakeDone(); done {
		if herr != nil {
			m.failed = tlsFailure(herr)
			return nil, m.failed
		}
		if m.msk, err = m.ch.msk(); err != nil {
			return nil, err
		}
		m.complete = true
	}
	return m.ch.nextFragment(true), nil
}

// tlsVersions: TLS 1.2 unless 1.3 is allowed explicitly, nothing older;
// no session tickets (EAP-TLS resumption is not implemented, and a ticket
// would delay RFC 9190's commitment message).
func tlsVersions(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	cfg.MinVersion = tls.VersionTLS12
	if cfg.MaxVersion == 0 || cfg.MaxVersion < tls.VersionTLS12 {
		cfg.MaxVersion = tls.VersionTLS12
	}
	cfg.SessionTicketsDisabled = true
	return cfg
}

// tlsFailure names a failed handshake: the gateway's alert (an unknown or
// bad certificate is ours being refused) or our own reason.
func tlsFailure(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		if strings.Contains(op.Err.Error(), "certificate") {
			return fmt.Errorf("EAP-TLS: the gateway refused our certificate (%v)", op.Err)
		}
		return fmt.Errorf("EAP-TLS: the gateway ended the handshake (%v)", op.Err)
	}
	return fmt.Errorf("eap-tls: %w", err)
}

// TLSServer is the authenticator side of EAP-TLS, for roam's gateway and
// for tests; cfg must hold the server certificate and demand and verify
// the client's.
type TLSServer struct {
	ch    *tlsChannel
	rand  io.Reader
	id    uint8
	msk   []byte
	ended bool
}

// NewTLSServer returns an EAP-TLS server; versions as in NewTLS.
func NewTLSServer(cfg *tls.Config, rand io.Reader) *TLSServer {
	cfg = tlsVersions(cfg)
	return &TLSServer{ch: newTLSChannel(true, cfg), rand: rand}
}

// Start returns the EAP-TLS Start request.
func (s *TLSServer) Start() ([]byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		return nil, fmt.Errorf("eap: identifier: %w", err)
	}
	s.id = b[0]
	return (&Packet{Code: CodeRequest, Identifier: s.id, Type: TypeTLS, Data: []byte{tlsFlagStart}}).Encode(), nil
}

// MSK is valid once Handle returned Succeeded.
func (s *TLSServer) MSK() []byte { return append([]byte(nil), s.msk...) }

// PeerCertificates are the client's, verified, once Succeeded.
func (s *TLSServer) PeerCertificates() [][]byte {
	var out [][]byte
	for _, c := range s.ch.conn.ConnectionState().PeerCertificates {
		out = append(out, c.Raw)
	}
	return out
}

// Close ends the TLS goroutine of an unfinished conversation.
func (s *TLSServer) Close() { s.ch.close() }

// Handle processes one EAP-TLS response.
func (s *TLSServer) Handle(msg []byte) ([]byte, Result, error) {
	if s.ended {
		return nil, Failed, errors.New("eap-tls: conversation over")
	}
	pkt, err := parseResponse(msg, s.id)
	if err != nil {
		return nil, Failed, err
	}
	fail := func() ([]byte, Result, error) {
		s.ended = true
		s.ch.close()
		return (&Packet{Code: CodeFailure, Identifier: s.id}).Encode(), Failed, nil
	}
	if pkt.Type != TypeTLS {
		return fail()
	}
	f, err := parseTLSFrame(pkt.Data)
	if err != nil {
		return nil, Failed, err
	}
	req := func(data []byte) ([]byte, Result, error) {
		s.id++
		return (&Packet{Code: CodeRequest, Identifier: s.id, Type: TypeTLS, Data: data}).Encode(), Continue, nil
	}
	isAck := f.flags == 0 && len(f.data) == 0
	if s.ch.sending() {
		if !isAck {
			return nil, Failed, errors.New("eap-tls: data while our fragments are pending")
		}
		return req(s.ch.nextFragment(false))
	}
	if done, herr := s.ch.handshakeDone(); done {
		if herr != nil || !isAck {
			return fail()
		}
		// The peer acknowledged our Finished.
		if s.msk, err = s.ch.msk(); err != nil {
			return fail()
		}
		s.ended = true
		return (&Packet{Code: CodeSuccess, Identifier: s.id}).Encode(), Succeeded, nil
	}
	complete, err := s.ch.receive(f)
	if err != nil {
		return nil, Failed, err
	}
	if !complete {
		return req([]byte{0})
	}
	if done, herr := s.ch.handshakeDone(); done && herr != nil {
		return fail()
	}
	return req(s.ch.nextFragment(true))
}
