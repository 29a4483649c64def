package probe

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestEncodeDecode(t *testing.T) {
	p := Probe{Run: 0xdeadbeef, Seq: 12345, Sent: 1700000000123456789}
	got, err := Decode(Encode(p))
	if err != nil || got != p {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	good := Encode(p)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", good[:PacketLen-1]},
		{"long", append(append([]byte(nil), good...), 0)},
		{"wrong magic", append([]byte("roamprb2"), good[8:]...)},
	} {
		if _, err := Decode(tc.b); !errors.Is(err, ErrNotProbe) {
			t.Errorf("%s: err %v, want ErrNotProbe", tc.name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(Probe{Run: 1, Seq: 2, Sent: 3}))
	f.Add([]byte("roamprb1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		if got, _ := Decode(Encode(p)); got != p {
			t.Fatalf("re-encode %+v gives %+v", p, got)
		}
	})
}

var t0 = time.Unix(1000, 0)

func at(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }

// series builds records sent every 5 ms from 0; answer(i) gives the arrival
// in ms after t0 of probe i, or <0 for a lost one.
func series(n int, answer func(i int, sent float64) float64) []Record {
	var recs []Record
	for i := 0; i < n; i++ {
		sent := float64(i * 5)
		r := Record{Seq: uint32(i), Sent: at(sent)}
		if a := answer(i, sent); a >= 0 {
			r.Recv = at(a)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestAnalyze(t *testing.T) {
	const rtt = 21.0
	// Before 500 ms every probe is answered after 21 ms; an outage follows.
	outage := func(from, to float64) func(int, float64) float64 {
		return func(_ int, s float64) float64 {
			if s+rtt > from && s < to {
				return -1
			}
			return s + rtt
		}
	}
	for _, tc := range []struct {
		name      string
		recs      []Record
		move      Move
		recovered bool
		recovery  time.Duration
		lost      int
		sent      int
		gap       time.Duration
		sendGap   time.Duration
	}{
		{
			// Replies stop at 500 (the event); probes sent from 700 are
			// answered (the new path forwarded its first packet at 715).
			name: "break then recover",
			recs: series(200, outage(500, 700)),
			move: Move{Event: at(500), Applied: at(505), NewPath: at(715), WindowStart: at(0), Bound: 10 * time.Second},
			// probe sent at 700 answered at 721
			recovered: true, recovery: 221 * time.Millisecond,
			// probes sent 480..695 (s+21 > 500 and s < 700): 480,485,...,695 = 44
			lost: 44, sent: 200,
			// last echo before the event: probe 475 at 496; first after: 721
			gap: 225 * time.Millisecond,
		},
		{
			// Echoes in flight at the event still arrive just after it;
			// the gap is the outage that follows them.
			name:      "in-flight echoes after the event",
			recs:      series(200, outage(510, 700)),
			move:      Move{Event: at(500), Applied: at(505), NewPath: at(715), WindowStart: at(0), Bound: 10 * time.Second},
			recovered: true, recovery: 221 * time.Millisecond,
			lost: 42, sent: 200, gap: 215 * time.Millisecond,
		},
		{
			name: "window start ignores setup losses",
			recs: series(200, func(i int, s float64) float64 {
				if i < 10 {
					return -1
				}
				return s + rtt
			}),
			move:      Move{Event: at(500), Applied: at(500), NewPath: at(510), WindowStart: at(100), Bound: time.Second},
			recovered: true, recovery: 21 * time.Millisecond, lost: 0, sent: 180,
			gap: 5 * time.Millisecond,
		},
		{
			name: "no packet on the new path: not recovered even though echoes come",
			recs: series(200, func(_ int, s float64) float64 { return s + rtt }),
			move: Move{Event: at(500), Applied: at(505), WindowStart: at(0), Bound: time.Second},
			sent: 200, gap: 5 * time.Millisecond,
		},
		{
			// Old path keeps answering (make-before-break); only echoes
			// from the moment the new path carried traffic count.
			name:      "make before break",
			recs:      series(200, func(_ int, s float64) float64 { return s + rtt }),
			move:      Move{Event: at(500), Applied: at(510), NewPath: at(640), WindowStart: at(0), Bound: time.Second},
			recovered: true, recovery: 141 * time.Millisecond, // probe at 620, echo at 641
			sent: 200, gap: 5 * time.Millisecond,
		},
		{
			name: "probes sent before the change took effect do not prove recovery",
			recs: series(200, func(_ int, s float64) float64 { return s + rtt }),
			// New path from 515, but the probe sent at 500 (before Applied
			// 530) arrives at 521: the first eligible is sent at 530 -> 551.
			move:      Move{Event: at(500), Applied: at(530), NewPath: at(515), WindowStart: at(0), Bound: time.Second},
			recovered: true, recovery: 51 * time.Millisecond,
			sent: 200, gap: 5 * time.Millisecond,
		},
		{
			name: "recovery beyond the bound",
			recs: series(400, outage(500, 1800)),
			move: Move{Event: at(500), Applied: at(505), NewPath: at(1810), WindowStart: at(0), Bound: time.Second},
			lost: 264, sent: 400, gap: 1325 * time.Millisecond,
		},
		{
			name: "nothing answered after the event",
			recs: series(200, outage(500, 1e9)),
			move: Move{Event: at(500), Applied: at(505), NewPath: at(600), WindowStart: at(0), Bound: time.Second},
			// last echo: probe 475 at 496; last probe sent at 995
			lost: 104, sent: 200, gap: 499 * time.Millisecond,
		},
		{
			name: "a stalled sender shows in SendGap",
			recs: func() []Record {
				r := series(200, func(_ int, s float64) float64 { return s + rtt })
				for i := 100; i < 200; i++ { // nothing sent for 300 ms after probe 99
					r[i].Sent = r[i].Sent.Add(300 * time.Millisecond)
					r[i].Recv = r[i].Recv.Add(300 * time.Millisecond)
				}
				return r
			}(),
			move:      Move{Event: at(400), Applied: at(400), NewPath: at(400), WindowStart: at(0), Bound: time.Second},
			recovered: true, recovery: 21 * time.Millisecond,
			sent: 200, gap: 305 * time.Millisecond, sendGap: 305 * time.Millisecond,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Analyze(tc.recs, tc.move)
			if res.Recovered != tc.recovered || res.Recovery != tc.recovery {
				t.Errorf("recovered %v after %v, want %v after %v", res.Recovered, res.Recovery, tc.recovered, tc.recovery)
			}
			if res.Lost != tc.lost || res.Sent != tc.sent {
				t.Errorf("sent %d lost %d, want %d / %d", res.Sent, res.Lost, tc.sent, tc.lost)
			}
			if res.Gap != tc.gap {
				t.Errorf("gap %v, want %v", res.Gap, tc.gap)
			}
			want := tc.sendGap
			if want == 0 {
				want = 5 * time.Millisecond
			}
			if res.SendGap != want {
				t.Errorf("send gap %v, want %v", res.SendGap, want)
			}
			if res.RTT != 21*time.Millisecond {
				t.Errorf("RTT %v, want 21ms", res.RTT)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		in   []Result
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"odd", []Result{
			{Recovered: true, Recovery: 30 * ms, Lost: 4, RTT: 21 * ms},
			{Recovered: true, Recovery: 10 * ms, Lost: 2, RTT: 22 * ms},
			{Recovered: true, Recovery: 20 * ms, Lost: 9, RTT: 20 * ms},
		}, Summary{Runs: 3, Recovered: 3, Median: 20 * ms, Max: 30 * ms, LostMed: 4, LostMax: 9, RTT: 21 * ms}},
		{"a failure is not counted in the times, but in the loss", []Result{
			{Recovered: true, Recovery: 10 * ms, Lost: 1, RTT: 20 * ms},
			{Recovered: false, Lost: 2000, RTT: 22 * ms},
			{Recovered: true, Recovery: 30 * ms, Lost: 3, RTT: 24 * ms},
		}, Summary{Runs: 3, Recovered: 2, Median: 20 * ms, Max: 30 * ms, LostMed: 3, LostMax: 2000, RTT: 22 * ms}},
		{"none recovered", []Result{{Lost: 5}, {Lost: 7}}, Summary{Runs: 2, LostMed: 6, LostMax: 7}},
	} {
		if got := Summarize(tc.in); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestRatio(t *testing.T) {
	ms := time.Millisecond
	if r, ok := Ratio(Summary{Recovered: 1, Median: 50 * ms}, Summary{Recovered: 3, Median: 200 * ms}); !ok || r != 0.25 {
		t.Errorf("ratio %v %v", r, ok)
	}
	if _, ok := Ratio(Summary{Recovered: 1, Median: 50 * ms}, Summary{Runs: 3}); ok {
		t.Error("ratio against a side that never recovered")
	}
	if _, ok := Ratio(Summary{Runs: 3}, Summary{Recovered: 3, Median: 200 * ms}); ok {
		t.Error("ratio of a side that never recovered")
	}
}

// TestSenderResponder runs both ends over loopback.
func TestSenderResponder(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	resp := NewResponder(rc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdone := make(chan error, 1)
	go func() { rdone <- resp.Serve(ctx) }()
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	// Noise to the responder is dropped and counted.
	dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, err := sc.WriteToUDPAddrPort([]byte("not a probe"), dst); err != nil {
		t.Fatal(err)
	}
	s := NewSender(sc, dst, 2*time.Millisecond, 77)
	sctx, scancel := context.WithCancel(ctx)
	sdone := make(chan error, 1)
	go func() { sdone <- s.Run(sctx, 200*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, r := range s.Records() {
			if r.Answered() {
				n++
			}
		}
		if n >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d echoes", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	scancel()
	if err := <-sdone; err != nil {
		t.Fatal(err)
	}
	recs := s.Records()
	for i, r := range recs {
		if r.Seq != uint32(i) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if r.Answered() && r.Recv.Before(r.Sent) {
			t.Errorf("probe %d answered before it was sent", i)
		}
	}
	first, ok := s.Answered(recs[0].Sent, recs[0].Sent)
	if !ok {
		t.Error("Answered finds no echo")
	}
	if got, ok := s.FirstEchoSince(recs[0].Sent); !ok || !got.Equal(first) {
		t.Errorf("FirstEchoSince(first probe) = %v, %v; want %v as Answered", got, ok, first)
	}
	if got, ok := s.FirstEchoSince(recs[len(recs)-1].Sent.Add(time.Nanosecond)); ok {
		t.Errorf("FirstEchoSince(after the last probe) = %v, want none", got)
	}
	if resp.Dropped.Load() != 1 {
		t.Errorf("responder dropped %d, want 1", resp.Dropped.Load())
	}
	cancel()
	if err := <-rdone; err != nil {
		t.Error(err)
	}
}
