package interop

import (
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// tcpMove is one move of a TCPEncapsulationMOBIKE scenario and where the
// tunnel must end up after it.
type tcpMove struct {
	name      string
	move      func(l *lab.Lab) error
	transport string
	iface     string
}

// TestTCPEncapsulationMOBIKE moves a tunnel between an uplink that passes
// no UDP and one that does, with the IKE SA kept throughout and a 10 ms
// pinger across each move reporting the loss.
//   - tcp-start: wlan passes no UDP, wwan does. roam starts on wlan over
//     TCP, moves to wwan over UDP when wlan goes down, and back to wlan over
//     a new stream when it returns (UDP there still gets no answer).
//   - udp-start: wlan passes UDP, wwan does not. roam starts on wlan over
//     UDP; wlan goes down and the path test over UDP on wwan gets no answer,
//     so the update goes over a new stream on wwan; wlan returns and its UDP
//     path test passes, so the tunnel goes back to UDP.
func TestTCPEncapsulationMOBIKE(t *testing.T) {
	down := func(l *lab.Lab) error { return l.LinkDown(lab.Client, lab.WLAN) }
	for _, sc := range []struct {
		name      string
		blocked   string // the NAT router that drops UDP
		transport string // at the start, on wlan
		moves     []tcpMove
	}{
		{"tcp-start", lab.NATWLAN, "tcp", []tcpMove{
			{"tcp-to-udp", down, "udp", lab.WWAN},
			{"udp-to-tcp", wlanBack, "tcp", lab.WLAN},
		}},
		{"udp-start", lab.NATWWAN, "udp", []tcpMove{
			{"udp-to-tcp", down, "tcp", lab.WWAN},
			{"tcp-to-udp", wlanBack, "udp", lab.WLAN},
		}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			l, bin := setup(t)
			if err := l.BlockUDP(sc.blocked); err != nil {
				t.Fatal(err)
			}
			_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, TCP: true})
			r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, nil, nil))
			fail := failWith(t, gatewayOutput(gp))
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
			if first.Transport != sc.transport || first.Interface != lab.WLAN {
				fail("before the moves: transport %q on %q, want %s on wlan", first.Transport, first.Interface, sc.transport)
			}
			for _, mv := range sc.moves {
				p := startPinger(t, l, 6*time.Second)
				time.Sleep(time.Second)
				start := time.Now()
				if err := mv.move(l); err != nil {
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
		})
	}
}
