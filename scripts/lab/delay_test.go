package lab

import (
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"
)

func TestParseTunnelLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		in   bool
		n    int
	}{
		{"esp in 1000 11000 120", true, true, 120},
		{"esp in 1000 11000 120 203.0.113.26", true, true, 120},
		{"esp out 1000 11000 120 -", true, false, 120},
		{"esp out 1000 11000 120 gw", false, false, 0},
		{"esp out 5 5 0", true, false, 0},
		{"esp sideways 1 2 3", false, false, 0},
		{"esp in 2 1 3", false, false, 0}, // released before it entered
		{"esp in 1 2", false, false, 0},
		{"esp in x 2 3", false, false, 0},
		{"ready", false, false, 0},
		{"", false, false, 0},
	} {
		p, ok := ParseTunnelLine(tc.line)
		if ok != tc.ok || (ok && (p.In != tc.in || p.Len != tc.n)) {
			t.Errorf("ParseTunnelLine(%q) = %+v, %v", tc.line, p, ok)
		}
	}
}

func TestTunnelLogSplitWrites(t *testing.T) {
	tl := &tunnelLog{ready: make(chan struct{})}
	for _, chunk := range []string{"rea", "dy\nesp in 10 20", " 30\nesp out 40 50 60\ngarbage\n", "esp in 70 80 90"} {
		tl.Write([]byte(chunk))
	}
	select {
	case <-tl.ready:
	default:
		t.Error("ready line not seen")
	}
	got := tl.packets()
	if len(got) != 2 || !got[0].In || got[0].Len != 30 || got[1].In || got[1].Release.UnixNano() != 50 {
		t.Errorf("packets = %+v", got)
	}
	if tl.bad != 1 {
		t.Errorf("bad lines = %d, want 1", tl.bad)
	}
	// The unterminated last line arrives with its newline.
	tl.Write([]byte("\n"))
	p, ok := tl.first(func(p TunnelPacket) bool { return p.In && p.Enter.UnixNano() >= 50 })
	if !ok || p.Len != 90 {
		t.Errorf("first in after 50 = %+v, %v", p, ok)
	}
	tl.Write([]byte("esp in 100 110 120 203.0.113.26\n"))
	if p, ok := (&Delay{log: tl}).FirstInFrom(time.Unix(0, 0), netip.MustParseAddr("203.0.113.26")); !ok || p.Len != 120 {
		t.Errorf("first in from 203.0.113.26 = %+v, %v", p, ok)
	}
	for _, tt := range []struct {
		from int64
		ok   bool
		len  int
	}{{0, true, 60}, {40, true, 60}, {41, false, 0}} {
		p, ok := (&Delay{log: tl}).FirstOut(time.Unix(0, tt.from))
		if ok != tt.ok || p.Len != tt.len {
			t.Errorf("first out from %d = %+v, %v; want length %d, %v", tt.from, p, ok, tt.len, tt.ok)
		}
	}
}

var reRTTMin = regexp.MustCompile(`rtt min/avg/max/mdev = ([\d.]+)/`)

// TestDelayLine puts a 10 ms delay line on both uplinks' NAT routers and
// checks that a round trip through each takes at least twice that, that
// ESP in UDP 4500 is logged both ways (and IKE is not), and that the delay
// lines end with the lab.
func TestDelayLine(t *testing.T) {
	if !Root() {
		t.Skip("needs root")
	}
	bin, err := BuildDelay(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const d = 10 * time.Millisecond
	delays := Delays{}
	l := NewT(t, Options{OnUplink: DelayUplinks(bin, d, delays)})
	if len(delays) != 2 {
		t.Fatalf("delay lines: %v", delays)
	}
	for _, u := range l.Uplinks {
		out, err := l.Output(Client, "ping", "-n", "-q", "-c", "5", "-i", "0.05", "-W", "2", "-I", u.Name, GatewayAddr1.Addr().String())
		if err != nil {
			t.Fatalf("ping via %s: %v", u.Name, err)
		}
		m := reRTTMin.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no rtt in ping output:\n%s", out)
		}
		ms, _ := strconv.ParseFloat(m[1], 64)
		rtt := time.Duration(ms * float64(time.Millisecond))
		t.Logf("%s: minimum RTT to the gateway %v with %v each way", u.Name, rtt, d)
		if rtt < 2*d {
			t.Errorf("%s: minimum RTT %v, want at least %v", u.Name, rtt, 2*d)
		}
	}

	// An echo on the gateway's UDP 4500.
	var srv *net.UDPConn
	if err := l.InNS(Gateway, func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 4500})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:n], from)
		}
	}()
	var cli *net.UDPConn
	if err := l.InNS(Client, func() (err error) {
		cli, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(GatewayAddr1.Addr(), 4500)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	echo := func(payload []byte) {
		t.Helper()
		if _, err := cli.Write(payload); err != nil {
			t.Fatal(err)
		}
		cli.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		if _, err := cli.Read(buf); err != nil {
			t.Fatalf("echo through the delay line: %v", err)
		}
	}
	echo([]byte{0, 0, 0, 0, 'i', 'k', 'e'}) // non-ESP marker: IKE
	start := time.Now()
	echo([]byte{0, 0, 0, 7, 0, 0, 0, 1, 'e', 's', 'p'}) // SPI 7
	// The delay line logs a packet after its verdict, through a pipe: the
	// echo can be back before its line is.
	pkts := delays[NATWLAN].Tunnel()
	for deadline := time.Now().Add(5 * time.Second); len(pkts) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		pkts = delays[NATWLAN].Tunnel()
	}
	if len(pkts) != 2 || pkts[0].In || !pkts[1].In {
		t.Fatalf("tunnel packets on wlan = %+v, want one out and one in", pkts)
	}
	for _, p := range pkts {
		if p.Release.Sub(p.Enter) < d || p.Enter.Before(start) {
			t.Errorf("tunnel packet %+v held less than %v or logged before it was sent", p, d)
		}
		if p.Len != 20+8+11 {
			t.Errorf("tunnel packet length %d, want %d", p.Len, 20+8+11)
		}
	}
	if got, ok := delays[NATWLAN].FirstIn(start); !ok || got != pkts[1] {
		t.Errorf("FirstIn = %+v, %v", got, ok)
	}
	if pk := delays[NATWWAN].Tunnel(); len(pk) != 0 {
		t.Errorf("wwan saw tunnel packets: %+v", pk)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for r, dl := range delays {
		if dl.Running() {
			t.Errorf("delay line of %s (pid %d) still running after Close", r, dl.PID())
		}
	}
}
