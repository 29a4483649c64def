package ike

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/eap"
	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/internal/netsim"
)

// recordingEAPServer wraps an eap.Server and remembers whether an
// MSCHAPv2 Response (which is derived from the password) ever reached it.
type recordingEAPServer struct {
	*eap.Server
	mu          sync.Mutex
	sawResponse bool
	roundTrips  int
}

func (s *recordingEAPServer) Handle(resp []byte) ([]byte, eap.Result, error) {
	s.mu.Lock()
	s.roundTrips++
	if p, err := eap.Parse(resp); err == nil && p.Type == eap.TypeMSCHAPv2 && len(p.Data) > 0 && p.Data[0] == 2 {
		s.sawResponse = true
	}
	s.mu.Unlock()
	return s.Server.Handle(resp)
}

func (s *recordingEAPServer) responded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sawResponse
}

// TestEstablishEAPMSCHAPv2 runs IKE_AUTH with a certificate gateway and an
// EAP-MSCHAPv2 client (RFC 7296 2.16), with and without RFC 5998 EAP-only
// authentication, a wrong password and an untrusted gateway.
func TestEstablishEAPMSCHAPv2(t *testing.T) {
	keys := getTestKeys(t)
	ca := newCA(t, "Example Root CA", keys.p256, nil)
	otherCA := newCA(t, "Other CA", keys.p384, nil)
	gwAuth := gatewayCertAuth(t, keys.p256, ca)
	users := map[string]string{"alice": "pässwörd 1", `CORP\bob`: "hunter2"}
	tests := []struct {
		name           string
		user, password string
		clientTrusts   testCert
		clientEAPOnly  bool
		gwEAPOnly      bool
		loss           float64
		want           error
		wantText       string
		wantResponse   bool // the server got an MSCHAPv2 Response
	}{
		{name: "cert gateway", user: "alice", password: "pässwörd 1", clientTrusts: ca, wantResponse: true},
		{name: "domain user over lossy link", user: `CORP\bob`, password: "hunter2", clientTrusts: ca, loss: 0.2, wantResponse: true},
		{name: "eap-only granted", user: "alice", password: "pässwörd 1", clientTrusts: otherCA, clientEAPOnly: true, gwEAPOnly: true, wantResponse: true},
		{name: "eap-only asked, not granted", user: "alice", password: "pässwörd 1", clientTrusts: ca, clientEAPOnly: true, wantResponse: true},
		{name: "wrong password", user: "alice", password: "password 1", clientTrusts: ca, want: ErrAuthenticationFailed,
			wantText: "EAP-MSCHAPv2 rejected the username or password", wantResponse: true},
		{name: "unknown user", user: "mallory", password: "x", clientTrusts: ca, want: ErrAuthenticationFailed,
			wantText: "EAP-MSCHAPv2 rejected the username or password", wantResponse: true},
		{name: "untrusted gateway", user: "alice", password: "pässwörd 1", clientTrusts: otherCA, want: ErrAuthenticationFailed,
			wantText: "gateway's authentication did not verify"},
		{name: "eap-only granted only on request", user: "alice", password: "pässwörd 1", clientTrusts: ca, gwEAPOnly: true, clientEAPOnly: false, wantResponse: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var srvMu sync.Mutex
			var srv *recordingEAPServer
			e := newEnv(t, int64(500+i), func(r *ResponderConfig) {
				r.LocalAuth = gwAuth
				r.PeerAuth = func(*wire.Identification) (PeerAuth, error) {
					return nil, errors.New("EAP clients only")
				}
				r.EAPOnly = tc.gwEAPOnly
				r.EAPServer = func(idi *wire.Identification) (EAPServer, error) {
					s := &recordingEAPServer{Server: eap.NewMSCHAPv2Server(func(u string) ([]byte, bool) {
						p, ok := users[u]
						return []byte(p), ok
					}, seqReader())}
					srvMu.Lock()
					srv = s
					srvMu.Unlock()
					return s, nil
				}
			})
			if tc.loss > 0 {
				e.net.SetDefault(netsim.Impairment{Loss: tc.loss})
			}
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			var err error
			if cfg.LocalAuth, err = NewEAPMSCHAPv2Auth("alice@example.com", tc.user, []byte(tc.password), tc.clientEAPOnly); err != nil {
				t.Fatal(err)
			}
			if cfg.PeerAuth, err = NewCertPeer("vpn.example.com", tc.clientTrusts.pem()); err != nil {
				t.Fatal(err)
			}
			c := e.dial(cfg)
			est, err := c.wait(t, 20*time.Second)
			srvMu.Lock()
			s := srv
			srvMu.Unlock()
			if s == nil {
				t.Fatal("the gateway never started EAP")
			}
			if got := s.responded(); got != tc.wantResponse {
				t.Errorf("gateway received an MSCHAPv2 Response: %v, want %v", got, tc.wantResponse)
			}
			if tc.want != nil {
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantText) {
					t.Fatalf("error %v, want %v containing %q", err, tc.want, tc.wantText)
				}
				if tc.wantText == "EAP-MSCHAPv2 rejected the username or password" {
					var fe *eap.FailureError
					if !errors.As(err, &fe) || fe.Code != 691 {
						t.Fatalf("error %v is no MSCHAPv2 failure 691", err)
					}
				}
				if strings.Contains(err.Error(), tc.password) {
					t.Fatal("the password is in the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if est.PeerID != "vpn.example.com" || len(est.Children) != 1 || len(est.VirtualIPs) == 0 || !est.PeerMOBIKE {
				t.Fatalf("established %+v", est)
			}
			gw := nextEvent[*Established](t, e.respEvents, 5*time.Second)
			if gw.PeerID != "alice@example.com" || len(gw.Children) != 1 {
				t.Fatalf("gateway established %+v", gw)
			}
			cc, gc := est.Children[0], gw.Children[0]
			if cc.SPIIn != gc.SPIOut || !bytes.Equal(cc.KeyOut, gc.KeyIn) || !bytes.Equal(cc.KeyIn, gc.KeyOut) {
				t.Fatal("Child SA keys differ between the ends")
			}
			if s.User() != tc.user {
				t.Errorf("gateway authenticated %q", s.User())
			}
		})
	}
}

// seqReader is a deterministic random source for EAP challenges.
func seqReader() *seqRand { return &seqRand{} }

type seqRand struct {
	mu sync.Mutex
	b  byte
}

func (r *seqRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range p {
		r.b = r.b*31 + 7
		p[i] = r.b
	}
	return len(p), nil
}
