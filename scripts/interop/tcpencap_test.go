package interop

import (
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestTCPEncapsulation: both of the client's uplinks pass no UDP, as hotel
// and guest networks may. With the default profile (transport auto) roam
// gets no answer to IKE_SA_INIT over UDP, falls back to an RFC 9329 stream
// to the roam gateway's TCP 4500 in the same connect, and the tunnel
// carries a ping and a TCP transfer; status says transport tcp. Then a
// network that passes only TCP to 443, and transport = "tls": the stream
// runs inside TLS 1.3, the gateway presenting its IKE certificate.
func TestTCPEncapsulation(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	for _, tc := range []struct {
		name      string
		auth      string
		transport string
		block     func(router string) error
		want      string
	}{
		{"udp-blocked-auto", "psk", "", l.BlockUDP, "tcp"},
		{"only-443-tls", "pubkey", "tls", func(r string) error { return l.OnlyTCPPort(r, 443) }, "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []string{lab.NATWLAN, lab.NATWWAN} {
				if err := tc.block(r); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Unfilter(r) })
			}
			g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: tc.auth, PSK: goodPSK, PKI: pki, TCP: true, TLSPort: map[bool]int{true: 443}[tc.transport == "tls"]})
			p := lab.LabProfile(tc.auth, goodPSK, pki, nil)
			p.Transport = tc.transport
			r := roamClient(t, l, bin, p)
			fail := failWith(t, gatewayOutput(gp))
			start := time.Now()
			connectRoam(t, l, r, fail)
			t.Logf("connected over %s in %v", tc.want, time.Since(start).Round(time.Millisecond))
			tcpTransfer(t, l)
			st := connected(t, r, "corp")
			if st.Transport != tc.want {
				fail("status transport = %q, want %q", st.Transport, tc.want)
			}
			if !strings.HasSuffix(st.Remote, ":4500") && tc.want == "tcp" || !strings.HasSuffix(st.Remote, ":443") && tc.want == "tls" {
				fail("status remote = %q for transport %s", st.Remote, tc.want)
			}
			if tc.want == "tcp" {
				streamBreak(t, l, r, g, st, fail)
			}
			if _, err := r.Disconnect("corp"); err != nil {
				t.Errorf("disconnect: %v", err)
			}
		})
	}
}

// streamBreak kills the tunnel's TCP connection at the gateway (a
// middlebox reset): the client opens a new stream and tells the gateway
// over it, and the same IKE SA carries traffic again, with no new
// negotiation (RFC 9329 section 6).
func streamBreak(t *testing.T, l *lab.Lab, r, g *lab.Roam, before lab.Status, fail func(string, ...any)) {
	t.Helper()
	gwBefore := connected(t, g, lab.ClientID)
	if out, err := l.Output(lab.Gateway, "ss", "-K", "-t", "state", "established", "sport", "= :4500"); err != nil {
		fail("killing the stream: %v\n%s", err, out)
	}
	start := time.Now()
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 15*time.Second); err != nil {
		fail("no ping after the stream broke: %v", err)
	}
	t.Logf("tunnel back %v after the stream was reset", time.Since(start).Round(time.Millisecond))
	st := connected(t, r, "corp")
	if st.Remote != before.Remote || st.IKESPIi != before.IKESPIi || st.State != "established" || st.Transport != "tcp" {
		fail("after the stream broke: state %s remote %s SPI %s transport %s, before %s %s", st.State, st.Remote, st.IKESPIi, st.Transport, before.Remote, before.IKESPIi)
	}
	// The gateway follows the new stream: the client's address is the
	// NAT's, with the new connection's port.
	gwAfter := connected(t, g, lab.ClientID)
	if gwAfter.Remote == gwBefore.Remote || gwAfter.IKESPIi != gwBefore.IKESPIi {
		fail("gateway's view of the client: %s (SPI %s), before %s (SPI %s)", gwAfter.Remote, gwAfter.IKESPIi, gwBefore.Remote, gwBefore.IKESPIi)
	}
	t.Logf("gateway sees the client at %s, was %s", gwAfter.Remote, gwBefore.Remote)
	tcpTransfer(t, l)
}
