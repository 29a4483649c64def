package ike

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

// TestRTTSmoothing follows RFC 6298's estimator over sample sequences.
func TestRTTSmoothing(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		samples []time.Duration
		srtt    time.Duration
		rttvar  time.Duration
	}{
		{"first sample", []time.Duration{40 * ms}, 40 * ms, 20 * ms},
		{"steady", []time.Duration{40 * ms, 40 * ms}, 40 * ms, 15 * ms},
		{"spike moves an eighth", []time.Duration{40 * ms, 120 * ms}, 50 * ms, 35 * ms},
		{"negative ignored", []time.Duration{40 * ms, -5 * ms}, 40 * ms, 20 * ms},
	}
	p := netpath.Path{Local: netip.MustParseAddrPort("10.0.0.2:4500"), Remote: netip.MustParseAddrPort("192.0.2.1:4500")}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tab rttTable
			now := time.Unix(1000, 0)
			for _, s := range tt.samples {
				tab.add(p, s, false, now)
			}
			got, ok := tab.get(p)
			if !ok || got.SRTT != tt.srtt || got.RTTVar != tt.rttvar {
				t.Fatalf("got %+v ok=%v, want srtt %v rttvar %v", got, ok, tt.srtt, tt.rttvar)
			}
			other := p
			other.Local = netip.MustParseAddrPort("10.0.1.2:4500")
			if _, ok := tab.get(other); ok {
				t.Fatal("another path has an RTT it never measured")
			}
		})
	}
}

// TestRTTProvisional: an IKE_AUTH sample is a first estimate only; further
// ones are ignored and the first real sample replaces it.
func TestRTTProvisional(t *testing.T) {
	ms := time.Millisecond
	p := netpath.Path{Local: netip.MustParseAddrPort("10.0.0.2:4500"), Remote: netip.MustParseAddrPort("192.0.2.1:4500")}
	now := time.Unix(1000, 0)
	var tab rttTable
	tab.add(p, 90*ms, true, now)
	tab.add(p, 200*ms, true, now)
	if got, _ := tab.get(p); got.SRTT != 90*ms || got.Samples != 1 {
		t.Fatalf("provisional: %+v, want the first estimate alone", got)
	}
	tab.add(p, 30*ms, false, now)
	if got, _ := tab.get(p); got.SRTT != 30*ms || got.Samples != 1 {
		t.Fatalf("after a real sample: %+v, want it alone", got)
	}
	tab.add(p, 300*ms, true, now)
	if got, _ := tab.get(p); got.SRTT != 30*ms {
		t.Fatalf("a provisional sample moved a real estimate: %+v", got)
	}
}

// TestRTTTableBounded drops the path used longest ago when full.
func TestRTTTableBounded(t *testing.T) {
	var tab rttTable
	base := time.Unix(1000, 0)
	path := func(i int) netpath.Path {
		return netpath.Path{Local: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 2}), 4500),
			Remote: netip.MustParseAddrPort("192.0.2.1:4500")}
	}
	for i := 0; i <= maxRTTPaths; i++ {
		tab.add(path(i), time.Millisecond, false, base.Add(time.Duration(i)*time.Second))
	}
	if _, ok := tab.get(path(0)); ok {
		t.Fatal("the oldest path was kept")
	}
	for i := 1; i <= maxRTTPaths; i++ {
		if _, ok := tab.get(path(i)); !ok {
			t.Fatalf("path %d dropped", i)
		}
	}
}

// TestRTTFromExchanges measures the path's RTT from real exchanges over a
// network that delays every datagram: the estimate can never be below the
// delay, and a rekey adds a sample; the last heard and requested times
// follow the exchanges.
func TestRTTFromExchanges(t *testing.T) {
	e := newEnv(t, 960, nil)
	delay := 15 * time.Millisecond
	e.net.SetDefault(netsim.Impairment{Delay: delay})
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	// No retransmission before the answer: a retransmitted request gives
	// no sample.
	cfg.Retransmit = Retransmit{Initial: 5 * time.Second, Factor: 1, Retries: 1}
	c := e.dial(cfg)
	est, err := c.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sa := est.SA
	r, ok := sa.RTT(sa.Path())
	if !ok || r.Samples != 1 {
		t.Fatalf("after the handshake: %+v ok=%v, want one sample (IKE_SA_INIT; IKE_AUTH's is provisional)", r, ok)
	}
	if r.SRTT < 2*delay {
		t.Fatalf("srtt %v below the network's round trip of %v", r.SRTT, 2*delay)
	}
	req0, heard0 := sa.Activity()
	if req0.IsZero() || heard0.IsZero() || heard0.Before(req0) || sa.LastHeard().Before(req0) {
		t.Fatalf("activity after the handshake: requested %v answered %v heard %v", req0, heard0, sa.LastHeard())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sa.RekeyChild(ctx, est.Children[0].SPIIn); err != nil {
		t.Fatal(err)
	}
	r, _ = sa.RTT(sa.Path())
	if r.Samples != 2 || r.SRTT < 2*delay {
		t.Fatalf("after a rekey: %+v, want two samples of at least %v", r, 2*delay)
	}
	req1, heard1 := sa.Activity()
	if !req1.After(req0) || !heard1.After(heard0) {
		t.Fatalf("a rekey did not advance activity: requested %v→%v heard %v→%v", req0, req1, heard0, heard1)
	}
	// A round trip the tunnel's traffic measured joins the estimate.
	sa.NoteRTT(sa.Path(), 2*delay)
	if r, _ := sa.RTT(sa.Path()); r.Samples != 3 {
		t.Fatalf("after a sample from the tunnel's traffic: %+v, want three samples", r)
	}

	// The gateway's own request is heard, but answers nothing of ours.
	gwEst := nextEvent[*Established](t, e.respEvents, 2*time.Second)
	child := settledPair(t, sa, gwEst.SA)
	// Our DELETE of the old Child SA is answered.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
		var busy bool
		if !call(sa, func() { busy = sa.out != nil || len(sa.queue) > 0 }) {
			t.Fatal("SA died")
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("exchange still outstanding")
		}
	}
	req1, heard1 = sa.Activity()
	lastHeard := sa.LastHeard()
	if err := gwEst.SA.RekeyChild(ctx, child.SPIOut); err != nil {
		t.Fatal(err)
	}
	settledPair(t, sa, gwEst.SA)
	req2, heard2 := sa.Activity()
	if !sa.LastHeard().After(lastHeard) {
		t.Fatal("the gateway's rekey was not heard")
	}
	if !req2.Equal(req1) || !heard2.Equal(heard1) {
		t.Fatalf("the gateway's requests counted as answers: requested %v→%v answered %v→%v", req1, req2, heard1, heard2)
	}
}

// TestRTTAfterRetransmittedInit: a handshake whose IKE_SA_INIT was
// retransmitted still gets an estimate, IKE_AUTH's, and it is at least the
// network's round trip.
func TestRTTAfterRetransmittedInit(t *testing.T) {
	e := newEnv(t, 961, nil)
	delay := 10 * time.Millisecond
	e.net.SetDefault(netsim.Impairment{Delay: delay, Drop: func(i int, _ netsim.Datagram) bool { return i == 0 }})
	cfg := defaultInitiatorConfig(t, "alice@example.com")
	cfg.Retransmit = Retransmit{Initial: time.Second, Factor: 1, Retries: 5}
	c := e.dial(cfg)
	est, err := c.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := est.SA.RTT(est.SA.Path())
	if !ok || r.Samples != 1 || r.SRTT < 2*delay {
		t.Fatalf("%+v ok=%v, want IKE_AUTH's estimate of at least %v", r, ok, 2*delay)
	}
}

// TestHeard: Heard closes with the peer's first authenticated message,
// and never for an SA that hears nothing before it dies.
func TestHeard(t *testing.T) {
	tests := []struct {
		name      string
		reachable bool
	}{
		{"answered", true},
		{"unanswered", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, int64(970+i), nil)
			cfg := defaultInitiatorConfig(t, "alice@example.com")
			if !tt.reachable {
				cfg.Path.Remote = netip.MustParseAddrPort("192.0.2.99:500")
				cfg.Retransmit = Retransmit{Initial: 10 * time.Millisecond, Factor: 1, Retries: 1}
			}
			c := e.dial(cfg)
			select {
			case <-c.sa.Heard():
				if !tt.reachable {
					t.Fatal("Heard closed for an SA that heard nothing")
				}
				if c.sa.LastHeard().IsZero() {
					t.Fatal("Heard closed while LastHeard is zero")
				}
			case <-c.sa.Done():
				if tt.reachable {
					t.Fatal("the SA died unheard")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("neither heard nor done within 10 s")
			}
		})
	}
}
