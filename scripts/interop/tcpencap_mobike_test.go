package interop

import (
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestTCPEncapsulationMOBIKE: wlan passes no UDP, wwan does. roam starts
// on wlan over TCP; wlan goes down and the tunnel moves to wwan over UDP;
// wlan comes back, UDP there still gets no answer, and the tunnel moves
// back to wlan over a new stream. The IKE SA stays throughout, and a 10 ms
// pinger across each move reports the loss.
func TestTCPEncapsulationMOBIKE(t *testing.T) {
	l, bin := setup(t)
	if err := l.BlockUDP(lab.NATWLAN); err != nil {
		t.Fatal(err)
	}
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, TCP: true})
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, nil, nil))
	fail := func(format string, args ...any) {
		t.Helper()
		t.Logf("roam gateway output:\n%s", gp.Output())
		t.Fatalf(format, args...)
	}
	var err error
	for i := 0; i < 3; i++ {
		if _, err = r.Connect("corp", 20*time.Second); err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		fail("connect: %v", err)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("ping: %v", err)
	}
	first := connected(t, r, "corp")
	if first.Transport != "tcp" || first.Interface != lab.WLAN {
		fail("before the moves: transport %q on %q, want tcp on wlan", first.Transport, first.Interface)
	}
	for _, mv := range []struct {
		name      string
		move      func() error
		transport string
		iface     string
	}{
		{"tcp-to-udp", func() error { return l.LinkDown(lab.Client, lab.WLAN) }, "udp", lab.WWAN},
		{"udp-to-tcp", func() error { return wlanBack(l) }, "tcp", lab.WLAN},
	} {
		p := startPinger(t, l, 6*time.Second)
		time.Sleep(time.Second)
		start := time.Now()
		if err := mv.move(); err != nil {
			fail("%s: %v", mv.name, err)
		}
		var st lab.Status
		deadline := time.Now().Add(15 * time.Second)
		for {
			st = connected(t, r, "corp")
			if st.Transport == mv.transport && st.Interface == mv.iface && st.State == "established" {
				break
			}
			if time.Now().After(deadline) {
				fail("%s: transport %q on %q state %s, want %s on %s", mv.name, st.Transport, st.Interface, st.State, mv.transport, mv.iface)
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(start)
		sent, recv := p.result(t, 20*time.Second)
		t.Logf("%s: on %s over %s after %v; pinger lost %d of %d (%.0f ms at 10 ms each)", mv.name, mv.iface, mv.transport, took.Round(time.Millisecond), sent-recv, sent, float64(sent-recv)*10)
		if st.IKESPIi != first.IKESPIi {
			fail("%s: IKE SA replaced (%s, was %s)", mv.name, st.IKESPIi, first.IKESPIi)
		}
		if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
			fail("%s: no ping after the move: %v", mv.name, err)
		}
	}
}
