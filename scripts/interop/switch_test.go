package interop

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// Issue 5: the gateway moves a client behind a restricted NAT from its
// address R1 to R2 (SWITCH_TO_IP_ADDRESS, draft-smyslov-ipsecme-ikev2-r-mobike).
var (
	gwR1 = lab.GatewayAddr1.Addr()
	gwR2 = lab.GatewayAddr2.Addr()
)

// switchEnv is a roam client on wlan (behind nat-wlan's masquerade)
// connected to roam gateway at R1.
type switchEnv struct {
	l      *lab.Lab
	r, g   *lab.Roam
	gp     *lab.Proc
	gwEvts *lab.Proc
	clEvts *lab.Proc
}

func startSwitchEnv(t *testing.T) *switchEnv { return startSwitchEnvRevision(t, "") }

// startSwitchEnvRevision is startSwitchEnv with switch_revision rev on
// both ends ("": the default).
func startSwitchEnvRevision(t *testing.T, rev string) *switchEnv {
	t.Helper()
	l, bin := setup(t)
	pki := newPKI(t, l)
	g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, SwitchRevision: rev})
	prof := lab.LabProfile("psk", goodPSK, pki, nil)
	prof.SwitchRevision = rev
	r := roamClient(t, l, bin, prof)
	e := &switchEnv{l: l, r: r, g: g, gp: gp}
	connectRoam(t, l, r, func(format string, args ...any) { t.Helper(); e.fail(t, format, args...) })
	var err error
	if e.gwEvts, err = g.StartEvents(); err != nil {
		e.fail(t, "gateway events: %v", err)
	}
	t.Cleanup(e.gwEvts.Stop)
	if e.clEvts, err = r.StartEvents(); err != nil {
		e.fail(t, "client events: %v", err)
	}
	t.Cleanup(e.clEvts.Stop)
	return e
}

func (e *switchEnv) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("roam gateway output:\n%s", e.gp.Output())
	if _, raw, err := e.g.Status(); err == nil {
		t.Logf("gateway status:\n%s", raw)
	}
	if _, raw, err := e.r.Status(); err == nil {
		t.Logf("client status:\n%s", raw)
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(e.r.Socket), "roam.log")); err == nil {
		t.Logf("roam client log:\n%s", b)
	}
	if e.gwEvts != nil {
		t.Logf("gateway events:\n%s", e.gwEvts.Output())
	}
	if e.clEvts != nil {
		t.Logf("client events:\n%s", e.clEvts.Output())
	}
	t.Fatalf(format, args...)
}

// gatewaySide is alice's SA as roam gateway's status shows it.
func (e *switchEnv) gatewaySide(t *testing.T) lab.Status {
	t.Helper()
	st, raw, err := e.g.Status()
	if err != nil {
		e.fail(t, "gateway status: %v", err)
	}
	for _, s := range st {
		if s.Name == lab.ClientID {
			return s
		}
	}
	e.fail(t, "gateway status has no %s:\n%s", lab.ClientID, raw)
	return lab.Status{}
}

// traffic starts the 10 ms pinger and a rate-capped TCP connection that
// must live through what follows.
func (e *switchEnv) traffic(t *testing.T, d time.Duration) (*pinger, <-chan error) {
	tcp := tcpInBackground(e.l.TCPTransferRate, d+time.Second, "20M")
	return startPinger(t, e.l, d), tcp
}

// TestSwitchRoamGateway: roam gateway asks a roam client behind nat-wlan to
// move from R1 to R2, on command and when R1 is removed from its
// interface, under a 10 ms pinger and a long TCP connection. The NAT is
// restricted (conntrack masquerade): the gateway's packets from R2 reach
// the client only after the client itself sent to R2.
func TestSwitchRoamGateway(t *testing.T) {
	t.Run("command", func(t *testing.T) {
		e := startSwitchEnv(t)
		before := e.gatewaySide(t)
		if before.Gateway != netip.AddrPortFrom(gwR1, 4500).String() {
			e.fail(t, "gateway side starts on %s, want %s:4500", before.Gateway, gwR1)
		}
		mapping, err := netip.ParseAddrPort(before.Remote)
		if err != nil || mapping.Addr() != lab.PublicWLAN.Addr() {
			e.fail(t, "client seen at %q, want nat-wlan's public address", before.Remote)
		}
		if err := e.l.CountFromGateway(lab.NATWLAN, "r2", gwR2); err != nil {
			t.Fatal(err)
		}
		// The plain RFC 4555 way: the gateway sends from R2 by itself (an
		// UPDATE_SA_ADDRESSES of its own, say) to the client's mapping.
		// The NAT has no mapping for R2, so the packet ends at the router.
		stray := append([]byte{0, 0, 0, 0}, make([]byte, 28)...)
		if err := e.l.SendUDPFrom(lab.Gateway, netip.AddrPortFrom(gwR2, 4500), mapping, stray); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		local, err1 := e.l.Counter(lab.NATWLAN, "r2_local")
		fwd, err2 := e.l.Counter(lab.NATWLAN, "r2_fwd")
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if local != 1 || fwd != 0 {
			e.fail(t, "a packet from R2 to the client's mapping: %d at the router, %d forwarded; want 1 and 0 (a restricted NAT)", local, fwd)
		}
		t.Logf("plain RFC 4555 from R2: the NAT dropped it (no mapping for %s -> %s)", gwR2, mapping)

		p, tcp := e.traffic(t, 6*time.Second)
		time.Sleep(1500 * time.Millisecond)
		out, err := e.g.GatewaySwitch(lab.ClientID, gwR2, 20*time.Second)
		if err != nil {
			e.fail(t, "roam gateway switch: %v", err)
		}
		t.Logf("roam gateway switch: %s", strings.TrimSpace(out))
		if !strings.HasPrefix(out, "switched "+lab.ClientID+" to "+gwR2.String()+" in ") {
			e.fail(t, "switch output %q", out)
		}
		sent, recv := p.result(t, 20*time.Second)
		t.Logf("switch: %d echoes sent, %d answered, %d lost", sent, recv, sent-recv)
		if err := <-tcp; err != nil {
			e.fail(t, "TCP connection through the tunnel broke: %v", err)
		}
		after := e.gatewaySide(t)
		moved, err := netip.ParseAddrPort(after.Remote)
		if after.Gateway != netip.AddrPortFrom(gwR2, 4500).String() || err != nil || moved.Addr() != mapping.Addr() {
			e.fail(t, "gateway side after the switch: %s <-> %s, want %s:4500 <-> %s", after.Gateway, after.Remote, gwR2, mapping.Addr())
		}
		// Our stray packet left an inbound conntrack entry for R2 on the
		// client's public port, so the client's own flow to R2 usually
		// gets another one (lab.md: nf_nat picks a new port on a
		// collision); the gateway learns it from the UPDATE_SA_ADDRESSES.
		if moved != mapping {
			t.Logf("the NAT mapped the client's flow to R2 to port %d (was %d toward R1)", moved.Port(), mapping.Port())
		}
		cl := connected(t, e.r, "corp")
		if !strings.HasPrefix(cl.Remote, gwR2.String()+":") && !strings.HasPrefix(cl.Gateway, gwR2.String()) {
			e.fail(t, "client after the switch: gateway %q remote %q, want %s", cl.Gateway, cl.Remote, gwR2)
		}
		if fwd, _ := e.l.Counter(lab.NATWLAN, "r2_fwd"); fwd == 0 {
			e.fail(t, "no ESP from R2 reached the client through the NAT")
		}
		if err := e.l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			e.fail(t, "tunnel after the switch: %v", err)
		}
		gev := lab.ParseEvents(e.gwEvts.Output())
		if !hasEvent(gev, "switch-sent") || !hasEvent(gev, "switch-done") {
			e.fail(t, "gateway events lack switch-sent/switch-done")
		}
		if cev := lab.ParseEvents(e.clEvts.Output()); !hasEvent(cev, "switch-requested") {
			e.fail(t, "client events lack switch-requested")
		}
		// Near-zero: make-before-break; an echo in flight when the
		// machine stalls is tolerated.
		if sent-recv > 3 {
			e.fail(t, "the switch lost %d echoes", sent-recv)
		}
	})

	// R1 goes away under the SA: removed from eth0, or eth0 down (the
	// slides' "one of its interfaces shuts down").
	for _, gone := range []struct {
		name string
		do   func(l *lab.Lab) error
	}{
		{"address-removed", func(l *lab.Lab) error { return l.DelAddr(lab.Gateway, "eth0", lab.GatewayAddr1) }},
		{"link-down", func(l *lab.Lab) error { return l.LinkDown(lab.Gateway, "eth0") }},
	} {
		t.Run(gone.name, func(t *testing.T) { switchOffVanished(t, gone.do) })
	}
}

// switchOffVanished: when R1 goes away, the gateway moves the client to R2
// by itself.
func switchOffVanished(t *testing.T, remove func(l *lab.Lab) error) {
	switchOffVanishedRevision(t, "", remove)
}

func switchOffVanishedRevision(t *testing.T, rev string, remove func(l *lab.Lab) error) {
	{
		e := startSwitchEnvRevision(t, rev)
		if got := e.gatewaySide(t).Gateway; got != netip.AddrPortFrom(gwR1, 4500).String() {
			e.fail(t, "gateway side starts on %s", got)
		}
		p, tcp := e.traffic(t, 6*time.Second)
		time.Sleep(1500 * time.Millisecond)
		removed := time.Now()
		if err := remove(e.l); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for e.gatewaySide(t).Gateway != netip.AddrPortFrom(gwR2, 4500).String() {
			if time.Now().After(deadline) {
				e.fail(t, "the gateway did not move the client to R2 within 10 s of R1 going away")
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("on R2 %v after R1 went away", time.Since(removed).Round(time.Millisecond))
		sent, recv := p.result(t, 20*time.Second)
		t.Logf("R1 gone: %d echoes sent, %d answered, %d lost", sent, recv, sent-recv)
		if err := <-tcp; err != nil {
			e.fail(t, "TCP connection through the tunnel broke: %v", err)
		}
		if err := e.l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			e.fail(t, "tunnel after the automatic switch: %v", err)
		}
		gev := lab.ParseEvents(e.gwEvts.Output())
		if !hasEvent(gev, "switch-done") {
			e.fail(t, "gateway events lack switch-done")
		}
		for _, ev := range gev {
			t.Logf("gateway event: %s from=%s to=%s took=%dms %s", ev.Event, ev.From, ev.To, ev.TookMS, ev.Reason)
		}
		// The client's packets to R1 are lost from the removal until it
		// moves: netmon's report plus a round trip, well under a second.
		if sent-recv > 100 {
			e.fail(t, "the automatic switch lost %d echoes", sent-recv)
		}
	}
}

// TestSwitchStrongSwanClient: a strongSwan client (no 'R' in its
// MOBIKE_SUPPORTED) through roam gateway is never asked to switch.
func TestSwitchStrongSwanClient(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki})
	cl, fail := swanClientUp(t, l, pki, gp, "psk", gwR1)
	evs, err := g.StartEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer evs.Stop()
	out, err := g.GatewaySwitch(lab.ClientID, gwR2, 20*time.Second)
	if err == nil || !strings.Contains(out, "did not advertise the switch extension") {
		fail("roam gateway switch against strongSwan: %v, output %q; want the did-not-advertise error", err, out)
	}
	if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
		t.Errorf("the error is %d lines: %q", n+1, out)
	}
	t.Logf("roam gateway switch: %s", strings.TrimSpace(out))
	// Also by address, as `roam status` shows the client.
	out, err = g.GatewaySwitch(lab.PublicWLAN.Addr().String(), gwR2, 20*time.Second)
	if err == nil || !strings.Contains(out, "did not advertise") {
		fail("switch by address: %v, %q", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	if ev := lab.ParseEvents(evs.Output()); hasEvent(ev, "switch-sent") {
		fail("the gateway sent a switch request to a client without 'R':\n%s", evs.Output())
	}
	if strings.Contains(cl.Log(), "N(UNKNOWN") || strings.Contains(cl.Log(), "41042") {
		fail("strongSwan received an unknown notify:\n%s", cl.Log())
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("tunnel after the refused command: %v", err)
	}
}

// TestSwitchRevision03: both ends on the r-mobike -03 rules
// (docs/r-mobike.md): the client answers at R1 and its UPDATE_SA_ADDRESSES
// opens the restricted NAT for R2. On command, and with R1 removed, where
// the answer to R1 cannot arrive and the update completes the switch.
func TestSwitchRevision03(t *testing.T) {
	t.Run("command", func(t *testing.T) {
		e := startSwitchEnvRevision(t, "03")
		p := startPinger(t, e.l, 4*time.Second)
		time.Sleep(time.Second)
		out, err := e.g.GatewaySwitch(lab.ClientID, gwR2, 20*time.Second)
		if err != nil {
			e.fail(t, "roam gateway switch: %v\n%s", err, out)
		}
		t.Logf("roam gateway switch: %s", strings.TrimSpace(out))
		if !strings.HasPrefix(out, "switched "+lab.ClientID+" to "+gwR2.String()+" in ") {
			e.fail(t, "switch output %q", out)
		}
		sent, recv := p.result(t, 20*time.Second)
		t.Logf("switch: %d echoes sent, %d answered", sent, recv)
		if got := e.gatewaySide(t).Gateway; got != netip.AddrPortFrom(gwR2, 4500).String() {
			e.fail(t, "gateway side after the switch on %s", got)
		}
		if err := e.l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			e.fail(t, "tunnel after the switch: %v", err)
		}
		if gev := lab.ParseEvents(e.gwEvts.Output()); !hasEvent(gev, "switch-done") {
			e.fail(t, "gateway events lack switch-done")
		}
		if sent-recv > 10 {
			e.fail(t, "the switch lost %d echoes", sent-recv)
		}
	})
	t.Run("address-removed", func(t *testing.T) {
		switchOffVanishedRevision(t, "03", func(l *lab.Lab) error { return l.DelAddr(lab.Gateway, "eth0", lab.GatewayAddr1) })
	})
}
