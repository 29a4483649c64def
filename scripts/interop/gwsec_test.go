package interop

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/ike/wire"
	"github.com/roam-vpn/roam/scripts/lab"
)

// TestTSClaimRefused: alice (roam, virtual IP by CP) and two strongSwan
// clients in the inet namespace, without CP, on one roam gateway. Carol,
// granted nothing, asks for alice's inner address as her TSi: she gets
// TS_UNACCEPTABLE. Bob, granted 10.99.201.0/24 (ts in the gateway file),
// asks for alice's address and his network: he gets only his network.
// Alice's traffic keeps reaching alice throughout.
func TestTSClaimRefused(t *testing.T) {
	l, bin := setup(t)
	const bobPSK, carolPSK = "interop-bob-tree-horse", "interop-carol-river-stone"
	bobNet := netip.MustParsePrefix("10.99.201.0/24")
	ike := []string{"aes256gcm16-prfsha256-curve25519"}
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, IKE: ike,
		Clients: []lab.RoamGatewayClient{
			{ID: "bob@example.com", PSK: bobPSK, TS: []string{bobNet.String()}},
			{ID: "carol@example.com", PSK: carolPSK},
		}})
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, nil, ike))
	var sw *lab.Charon
	fail := func(format string, args ...any) {
		t.Helper()
		t.Logf("roam gateway output:\n%s", gp.Output())
		if sw != nil {
			t.Logf("strongSwan clients' log:\n%s", sw.Log())
		}
		t.Fatalf(format, args...)
	}
	connectRoam(t, l, r, fail)
	st := connected(t, r, "corp")
	alice, err := netip.ParseAddr(strings.Split(st.VirtualIP, "/")[0])
	if err != nil {
		fail("alice's virtual IP %q: %v", st.VirtualIP, err)
	}
	aliceTS := netip.PrefixFrom(alice, 32)
	claim := func(name, id, psk string, ts []netip.Prefix) lab.SwanConn {
		return lab.SwanConn{Name: name, Role: "client", Auth: "psk", PSK: psk,
			Remote: []netip.Addr{lab.GatewayAddr1.Addr()}, LocalID: id, RemoteID: lab.GatewayID,
			IKE: ike, ESP: lab.DefaultESP, RemoteTS: []netip.Prefix{lab.ProtectedNet}, LocalTS: ts}
	}
	sw, err = l.StartCharon(lab.Inet, lab.CharonOptions{Conns: []lab.SwanConn{
		claim("carol", "carol@example.com", carolPSK, []netip.Prefix{aliceTS}),
		claim("bob", "bob@example.com", bobPSK, []netip.Prefix{aliceTS, bobNet}),
	}})
	if err != nil {
		fail("strongSwan clients: %v", err)
	}
	t.Cleanup(sw.Stop)

	if err := sw.Initiate("carol", 10*time.Second); err == nil {
		fail("carol's Child SA for alice's address %v was accepted", aliceTS)
	}
	if !strings.Contains(sw.Log(), "TS_UNACCEPTABLE") {
		fail("carol was not told TS_UNACCEPTABLE")
	}
	if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 3); err != nil {
		fail("alice's traffic after carol's claim: %v", err)
	}

	// strongSwan routes the tunnel from an address of bob's network.
	if err := l.AddAddr(lab.Inet, "lo", netip.PrefixFrom(bobNet.Addr().Next(), 24)); err != nil {
		fail("bob's network: %v", err)
	}
	if err := sw.Initiate("bob", 10*time.Second); err != nil {
		fail("bob's Child SA: %v", err)
	}
	sas, err := sw.WaitSA(3*time.Second, func(sa lab.IKESA) bool {
		return sa.Conn == "bob" && lab.Established(sa) && len(sa.Children) > 0
	})
	if err != nil {
		fail("bob's SA: %v", err)
	}
	for _, sa := range sas {
		if sa.Conn != "bob" {
			continue
		}
		for _, c := range sa.Children {
			if !slices.Equal(c.LocalTS, []string{bobNet.String()}) {
				fail("bob's Child SA has local TS %v, want only %v", c.LocalTS, bobNet)
			}
		}
	}
	if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 3); err != nil {
		fail("alice's traffic after bob's claim: %v", err)
	}
}

// initFlood sends IKE_SA_INITs from one address as fast as rate allows and
// answers every COOKIE, as an attacker that owns its address does.
type initFlood struct {
	conn             *net.UDPConn
	to               *net.UDPAddr
	pub              []byte
	sent, cookies    atomic.Uint64
	answered, failed atomic.Uint64 // IKE_SA_INIT responses with our SA; send errors
}

func (f *initFlood) request(spii uint64, cookie []byte) []byte {
	nonce := make([]byte, 32) // the same for a resend: the cookie covers it
	binary.BigEndian.PutUint64(nonce, spii)
	var ps []wire.Payload
	if cookie != nil {
		ps = append(ps, &wire.Notify{Type: wire.NotifyCookie, Data: cookie})
	}
	ps = append(ps,
		&wire.SA{Proposals: []wire.Proposal{{Number: 1, Protocol: wire.ProtoIKE, Transforms: []wire.Transform{
			{Type: wire.TransformEncr, ID: 20, KeyLength: 256}, {Type: wire.TransformPRF, ID: 5}, {Type: wire.TransformDH, ID: 31}}}}},
		&wire.KE{Group: 31, Data: f.pub},
		&wire.Nonce{Data: nonce})
	b, _ := (&wire.Message{Header: wire.Header{SPIi: spii, Version: 0x20, Exchange: wire.ExchangeIKESAInit, Flags: wire.FlagInitiator}, Payloads: ps}).Encode()
	return b
}

func (f *initFlood) send(b []byte) {
	if _, err := f.conn.WriteToUDP(b, f.to); err != nil {
		f.failed.Add(1)
		return
	}
	f.sent.Add(1)
}

// answer reads the gateway's responses and sends each COOKIE back once.
func (f *initFlood) answer() {
	buf := make([]byte, 2048)
	seen := map[uint64]bool{}
	for {
		n, _, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := wire.Decode(buf[:n])
		if err != nil || len(m.Payloads) == 0 {
			continue
		}
		if c, ok := m.Payloads[0].(*wire.Notify); ok && c.Type == wire.NotifyCookie {
			if !seen[m.Header.SPIi] {
				seen[m.Header.SPIi] = true
				f.cookies.Add(1)
				f.send(f.request(m.Header.SPIi, c.Data))
			}
			continue
		}
		if m.Header.SPIr != 0 {
			f.answered.Add(1)
		}
	}
}

// TestInitFloodFromOneAddress: the inet namespace floods the roam gateway
// with IKE_SA_INITs from one address and answers every COOKIE. Alice, from
// another address, still connects within a few seconds, and the gateway's
// log stays small.
func TestInitFloodFromOneAddress(t *testing.T) {
	l, bin := setup(t)
	ike := []string{"aes256gcm16-prfsha256-curve25519"}
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, IKE: ike})
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, nil, ike))
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &initFlood{to: net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.GatewayAddr1.Addr(), 500)), pub: priv.PublicKey().Bytes()}
	if err := l.InNS(lab.Inet, func() (err error) {
		f.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: lab.InetGW1.Addr().AsSlice()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer f.conn.Close()
	go f.answer()
	stop := make(chan struct{})
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for spii := uint64(1); ; spii++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// Two a tick: about 2000 a second, what a small host sends.
			f.send(f.request(spii<<1, nil))
			f.send(f.request(spii<<1|1, nil))
		}
	}()
	stopFlood := sync.OnceFunc(func() { close(stop); <-flooding })
	defer stopFlood()
	logBefore := 0
	fail := func(format string, args ...any) {
		t.Helper()
		stopFlood()
		out := gp.Output()
		if len(out) > 20000 {
			out = out[:20000] + "\n[...]"
		}
		t.Logf("roam gateway output:\n%s", out)
		t.Fatalf(format, args...)
	}
	// Let the flood take what it can first (the old gateway's 1024 slots
	// were gone in well under this).
	deadline := time.Now().Add(10 * time.Second)
	for (f.sent.Load() < 3000 || f.cookies.Load() == 0) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if f.cookies.Load() == 0 {
		fail("the gateway demanded no COOKIE during the flood (%d sent)", f.sent.Load())
	}
	logBefore = strings.Count(gp.Output(), "\n")
	start := time.Now()
	if _, err := r.Connect("corp", 20*time.Second); err != nil {
		fail("alice connect during the flood: %v", err)
	}
	took := time.Since(start)
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("alice's ping during the flood: %v", err)
	}
	time.Sleep(2 * time.Second) // more flood, to see what it logs
	stopFlood()
	lines := strings.Count(gp.Output(), "\n")
	t.Logf("flood: %d IKE_SA_INITs sent, %d COOKIEs answered, %d answered with an SA; alice connected in %v; gateway log %d lines (%d before alice), %d bytes",
		f.sent.Load(), f.cookies.Load(), f.answered.Load(), took.Round(time.Millisecond), lines, logBefore, len(gp.Output()))
	if took > 5*time.Second {
		fail("alice took %v to connect during the flood", took)
	}
	// A few lines per second of flood at most (rate-limited summaries),
	// plus alice's own.
	if lines > 60 {
		fail("the gateway logged %d lines during a flood of %d requests", lines, f.sent.Load())
	}
}
