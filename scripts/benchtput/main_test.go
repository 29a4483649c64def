package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
)

func TestParseIperf(t *testing.T) {
	tests := []struct {
		file    string
		want    result
		wantErr string
	}{
		{file: "tcp-up-1.json", want: result{Seconds: 1.000439, Bytes: 2317352960, Retransmits: 6}},
		{file: "tcp-down-2.json", want: result{Seconds: 1.000013, Bytes: 1515519947, Retransmits: 6}},
		// Received: packets 218234 - lost 3285; sent 218240.
		{file: "udp-up-64.json", want: result{Seconds: 1.000068, Bytes: 13756736, Packets: 214949}},
		{file: "udp-down-64.json", want: result{Seconds: 1.00001, Bytes: 14262720, Packets: 222855}},
		{file: "refused.json", wantErr: "Connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseIperf(b)
			if benchkit.WantErr(t, err, tt.wantErr) {
				return
			}
			if got.Seconds != tt.want.Seconds || got.Bytes != tt.want.Bytes || got.Packets != tt.want.Packets || got.Retransmits != tt.want.Retransmits {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if wantMbps := float64(tt.want.Bytes) * 8 / tt.want.Seconds / 1e6; math.Abs(got.Mbps-wantMbps) > 1e-6 {
				t.Errorf("Mbps = %v, want %v", got.Mbps, wantMbps)
			}
			if tt.want.Packets > 0 {
				if wantPPS := float64(tt.want.Packets) / tt.want.Seconds; math.Abs(got.PPS-wantPPS) > 1e-6 {
					t.Errorf("PPS = %v, want %v", got.PPS, wantPPS)
				}
				if got.LostPercent <= 0 || got.LostPercent >= 100 {
					t.Errorf("LostPercent = %v", got.LostPercent)
				}
			}
		})
	}
}

func TestParseIperfBroken(t *testing.T) {
	tests := []struct {
		name, json, wantErr string
	}{
		{"not json", "iperf3: error", "iperf3 JSON"},
		{"no sums", `{"start":{"test_start":{"protocol":"TCP"}},"end":{}}`, "no end.sum_sent"},
		{"nothing received", `{"start":{"test_start":{"protocol":"TCP"}},"end":{"sum_sent":{"bytes":5,"seconds":1},"sum_received":{"bytes":0,"seconds":1}}}`, "nothing received"},
		{"udp all lost", `{"start":{"test_start":{"protocol":"UDP"}},"end":{"sum_sent":{"bytes":64,"seconds":1,"packets":1},"sum_received":{"bytes":64,"seconds":1,"packets":3,"lost_packets":3}}}`, "UDP receiver counted"},
		{"sctp", `{"start":{"test_start":{"protocol":"SCTP"}},"end":{"sum_sent":{"bytes":5,"seconds":1},"sum_received":{"bytes":5,"seconds":1}}}`, "protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseIperf([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "4242 (roam) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 125 0 0 20 0 9 0 100 0 0", 3750 * time.Millisecond, false},
		{"name with spaces and parens", "7 (a) b) (c) R 1 7 7 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5", 100 * time.Millisecond, false},
		{"truncated", "7 (x) R 1 7 7 0", 0, true},
		{"no name", "7 x R 1", 0, true},
		{"bad number", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 abc 3 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCPUOfSelf(t *testing.T) {
	if _, err := cpuOf([]int{os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	if _, err := cpuOf([]int{-1}); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

func TestTests(t *testing.T) {
	names := func(ts []test) []string {
		var n []string
		for _, t := range ts {
			n = append(n, t.name)
		}
		return n
	}
	cases := []struct {
		streams int
		sizes   []int
		down    bool
		want    []string
	}{
		{4, []int{64, 1400}, true, []string{"tcp-up-1", "tcp-down-1", "tcp-up-4", "tcp-down-4", "udp-up-64", "udp-up-1400", "udp-down-64", "udp-down-1400"}},
		{1, []int{64}, false, []string{"tcp-up-1", "tcp-down-1", "udp-up-64"}},
		{2, nil, true, []string{"tcp-up-1", "tcp-down-1", "tcp-up-2", "tcp-down-2"}},
	}
	for _, tt := range cases {
		if got := names(tests(tt.streams, tt.sizes, tt.down)); !slices.Equal(got, tt.want) {
			t.Errorf("tests(%d, %v, %v) = %v, want %v", tt.streams, tt.sizes, tt.down, got, tt.want)
		}
	}
	ts := tests(4, []int{64}, true)
	want := [][]string{
		{"-t", "8"},
		{"-t", "8", "-R"},
		{"-t", "8", "-P", "4"},
		{"-t", "8", "-P", "4", "-R"},
		{"-t", "8", "-u", "-b", "0", "-l", "64"},
		{"-t", "8", "-u", "-b", "0", "-l", "64", "-R"},
	}
	for i, tt := range ts {
		got := tt.args("10.99.0.10", 8*time.Second)
		full := append([]string{"iperf3", "-c", "10.99.0.10", "-J"}, want[i]...)
		if !slices.Equal(got, full) {
			t.Errorf("%s args = %v, want %v", tt.name, got, full)
		}
	}
}

func TestFigures(t *testing.T) {
	ts := []test{{name: "tcp-up-1", streams: 1}, {name: "udp-up-64", udp: true, size: 64, streams: 1}}
	tcp := func(mbps float64, retr int64, cpu time.Duration, bytes int64) measurement {
		return measurement{result: result{Mbps: mbps, Retransmits: retr, Bytes: bytes}, cpu: cpu}
	}
	runs := map[string][]run{
		kindRoam: {
			{results: map[string]measurement{"tcp-up-1": tcp(400, 50000, 2*time.Second, 1e9), "udp-up-64": {result: result{PPS: 300000, Bytes: 1e8}, cpu: time.Second}}},
			{results: map[string]measurement{"tcp-up-1": tcp(500, 40000, 3*time.Second, 1e9)}},
			{results: map[string]measurement{"tcp-up-1": tcp(450, 90000, 4*time.Second, 2e9)}},
		},
		kindWG: {
			{results: map[string]measurement{"tcp-up-1": tcp(1000, 0, time.Second, 1e9), "udp-up-64": {result: result{PPS: 200000, Bytes: 1e8}, cpu: time.Second}}},
			{results: map[string]measurement{"tcp-up-1": tcp(900, 0, time.Second, 1e9), "udp-up-64": {result: result{PPS: 100000, Bytes: 1e8}, cpu: time.Second}}},
			{errs: []error{os.ErrClosed}, results: map[string]measurement{}},
		},
	}
	fs := figures(ts, []string{kindRoam, kindWG}, runs)
	type row struct {
		key         string
		roam, wg    *float64
		ratio       *float64
		roamRuns    int
		wgErrs      int
		wantRoamErr int
	}
	f := func(v float64) *float64 { return &v }
	want := []row{
		{key: "tcp-up-1/mbps", roam: f(450), wg: f(950), ratio: f(450.0 / 950), roamRuns: 3, wgErrs: 1},
		{key: "tcp-up-1/retransmits", roam: f(50000), wg: f(0), ratio: nil, roamRuns: 3, wgErrs: 1},
		{key: "tcp-up-1/udp_socket_drops", roam: f(0), wg: f(0), ratio: nil, roamRuns: 3, wgErrs: 1},
		{key: "tcp-up-1/cpu_s_per_gb", roam: f(2), wg: f(1), ratio: f(2), roamRuns: 3, wgErrs: 1},
		{key: "udp-up-64/pps", roam: f(300000), wg: f(150000), ratio: f(2), roamRuns: 1, wgErrs: 1, wantRoamErr: 2},
		{key: "udp-up-64/lost_pct", roam: f(0), wg: f(0), ratio: nil, roamRuns: 1, wgErrs: 1, wantRoamErr: 2},
		{key: "udp-up-64/cpu_s_per_gb", roam: f(10), wg: f(10), ratio: f(1), roamRuns: 1, wgErrs: 1, wantRoamErr: 2},
	}
	if len(fs) != len(want) {
		t.Fatalf("%d figures, want %d", len(fs), len(want))
	}
	eq := func(a, b *float64) bool {
		if a == nil || b == nil {
			return a == b
		}
		return math.Abs(*a-*b) < 1e-9
	}
	for i, w := range want {
		g := fs[i]
		if key := g.Test + "/" + g.Metric; key != w.key {
			t.Fatalf("figure %d is %s, want %s", i, key, w.key)
		}
		r, wg := g.Kinds[kindRoam], g.Kinds[kindWG]
		if !eq(r.Median, w.roam) || !eq(wg.Median, w.wg) || !eq(g.Ratio, w.ratio) {
			t.Errorf("%s: roam %v wg %v ratio %v, want %v %v %v", w.key, deref(r.Median), deref(wg.Median), deref(g.Ratio), deref(w.roam), deref(w.wg), deref(w.ratio))
		}
		if len(r.Runs) != w.roamRuns || r.Errors != w.wantRoamErr || wg.Errors != w.wgErrs {
			t.Errorf("%s: roam %d runs %d errors, wg %d errors; want %d, %d, %d", w.key, len(r.Runs), r.Errors, wg.Errors, w.roamRuns, w.wantRoamErr, w.wgErrs)
		}
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestReport(t *testing.T) {
	cfg := config{reps: 2, duration: 8 * time.Second, kinds: []string{kindRoam, kindWG}, streams: 4}
	ts := []test{{name: "tcp-up-1", streams: 1}}
	runs := map[string][]run{
		kindRoam: {
			{mtu: 1400, results: map[string]measurement{"tcp-up-1": {result: result{Mbps: 400, Bytes: 4e8}, cpu: time.Second}}},
			{results: map[string]measurement{}, errs: []error{os.ErrClosed}},
		},
		kindWG: {
			{mtu: 1420, results: map[string]measurement{"tcp-up-1": {result: result{Mbps: 1000, Bytes: 1e9}, cpu: time.Second}}},
			{mtu: 1420, results: map[string]measurement{"tcp-up-1": {result: result{Mbps: 1200, Bytes: 1e9}, cpu: time.Second}}},
		},
	}
	var b bytes.Buffer
	report(&b, cfg, machine{nproc: 2, loadStart: "1.00 0.50 0.20", loadEnd: "2.00 1.00 0.50", perf: "perf: x"}, ts, runs, time.Minute)
	out := b.String()
	for _, want := range []string{
		"nproc 2, load average 1.00 0.50 0.20 at start, 2.00 1.00 0.50 at end",
		"roam 1400, wireguard-go 1420",
		"TCP up, 1 stream: Mbit/s", "400 (1/2)", "1100", "0.36",
		"1 runs failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	var lines int
	for _, line := range strings.Split(out, "\n") {
		j, ok := strings.CutPrefix(line, "BENCH-TPUT ")
		if !ok {
			continue
		}
		lines++
		var v struct {
			Figure string   `json:"figure"`
			Metric string   `json:"metric"`
			Ratio  *float64 `json:"ratio_roam_wireguard"`
			NProc  int      `json:"nproc"`
			Kinds  map[string]struct {
				Median *float64 `json:"median"`
			} `json:"kinds"`
		}
		if err := json.Unmarshal([]byte(j), &v); err != nil {
			t.Fatalf("JSON line %q: %v", j, err)
		}
		if v.Figure != "tcp-up-1" || v.NProc != 2 || v.Kinds[kindWG].Median == nil {
			t.Errorf("JSON line %q", j)
		}
	}
	if lines != 4 { // mbps, retransmits, udp_socket_drops, cpu_s_per_gb
		t.Errorf("%d JSON lines, want 4", lines)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(config) bool
	}{
		{name: "defaults", check: func(c config) bool {
			return c.reps == 3 && c.duration == 8*time.Second && slices.Equal(c.kinds, []string{kindRoam, kindWG, kindSwan, kindRoamTCP}) &&
				c.streams == 4 && slices.Equal(c.udpSizes, []int{64, 1372}) && c.udpDown && c.profileDir == ""
		}},
		{name: "env", env: map[string]string{"REPS": "1", "DURATION": "2s", "KINDS": "wireguard, roam", "UDP_SIZES": "", "UDP_DOWN": "0", "BENCH_PROFILE": "/tmp/p"},
			check: func(c config) bool {
				return c.reps == 1 && c.duration == 2*time.Second && slices.Equal(c.kinds, []string{kindWG, kindRoam}) &&
					len(c.udpSizes) == 2 && !c.udpDown && c.profileDir == "/tmp/p"
			}},
		{name: "flags win", args: []string{"-reps", "5", "-udp-sizes", "100"}, env: map[string]string{"REPS": "2"},
			check: func(c config) bool { return c.reps == 5 && slices.Equal(c.udpSizes, []int{100}) }},
		{name: "bad reps", env: map[string]string{"REPS": "0"}, wantErr: "REPS"},
		{name: "fractional duration", env: map[string]string{"DURATION": "1.5s"}, wantErr: "DURATION"},
		{name: "bad kind", env: map[string]string{"KINDS": "roam,ipsec"}, wantErr: `unknown kind "ipsec"`},
		{name: "tiny datagram", args: []string{"-udp-sizes", "8"}, wantErr: "UDP_SIZES"},
		{name: "bad udp-down", env: map[string]string{"UDP_DOWN": "maybe"}, wantErr: "UDP_DOWN"},
		{name: "rps and capture", env: map[string]string{"RPS": "1", "CAPTURE": "/tmp/cap"},
			check: func(c config) bool { return c.rps && c.captureDir == "/tmp/cap" }},
		{name: "rps off by default", check: func(c config) bool { return !c.rps && c.captureDir == "" }},
		{name: "bad rps", env: map[string]string{"RPS": "all"}, wantErr: "RPS"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected argument"},
		{name: "tests", env: map[string]string{"TESTS": "tcp-up-1, udp-up-64"},
			check: func(c config) bool { return len(c.only) == 2 && c.only["tcp-up-1"] && c.only["udp-up-64"] }},
		{name: "roam-base without binary", env: map[string]string{"KINDS": "roam,roam-base"}, wantErr: "ROAM_BASE"},
		{name: "roam-base", env: map[string]string{"KINDS": "roam-base,roam", "ROAM_BASE": "/tmp/roam"},
			check: func(c config) bool {
				return c.roamBase == "/tmp/roam" && slices.Equal(c.kinds, []string{kindRoamBase, kindRoam})
			}},
		{name: "all tests", check: func(c config) bool { return c.only == nil }},
		{name: "unknown test", env: map[string]string{"TESTS": "tcp-up-3"}, wantErr: `unknown test "tcp-up-3"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args, func(k string) string { return tt.env[k] })
			if benchkit.WantErr(t, err, tt.wantErr) {
				return
			}
			if !tt.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}

func TestRouteDevice(t *testing.T) {
	tests := []struct{ out, want string }{
		{"10.99.0.10 dev roam-corp table 220 src 10.99.200.1 uid 0 \n    cache \n", "roam-corp"},
		{"10.99.0.10 dev wg1234c1 src 10.99.201.2 uid 0 \n    cache \n", "wg1234c1"},
		{"10.99.0.10 via 192.168.10.1 dev wlan src 192.168.10.2 uid 0", "wlan"},
		{"RTNETLINK answers: Network is unreachable", ""},
	}
	for _, tt := range tests {
		got, err := routeDevice(tt.out)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("routeDevice(%q) = %q, %v; want %q", tt.out, got, err, tt.want)
		}
	}
}

func TestRouteField(t *testing.T) {
	for _, tt := range []struct{ out, key, want string }{
		{"10.99.0.10 dev roam-corp table 220 src 10.99.200.1 uid 0 \n    cache \n", "src", "10.99.200.1"},
		{"10.99.200.1 dev roam-gw src 10.99.0.1 uid 0", "dev", "roam-gw"},
		{"10.99.0.10 dev wlan", "src", ""},
	} {
		got, err := routeField(tt.out, tt.key)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("routeField(%q, %q) = %q, %v; want %q", tt.out, tt.key, got, err, tt.want)
		}
	}
}

func TestParseUDPDrops(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 12345
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 900 1 7 800 6 2 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 99 99 0 0 0
`
	tests := []struct {
		name, in string
		want     udpDrops
		wantErr  bool
	}{
		{"counters", snmp, udpDrops{rcvbuf: 6, sndbuf: 2}, false},
		{"no udp", "Ip: Forwarding\nIp: 1\n", udpDrops{}, true},
		{"bad value", "Udp: RcvbufErrors SndbufErrors\nUdp: x 1\n", udpDrops{}, true},
		{"short value line", "Udp: RcvbufErrors SndbufErrors\nUdp: 1\n", udpDrops{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseUDPDrops(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if d := (udpDrops{10, 5}).sub(udpDrops{4, 5}); d != (udpDrops{6, 0}) {
		t.Errorf("sub = %+v", d)
	}
}

func TestParseDevDrops(t *testing.T) {
	const dev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  tun0:    5000      10    0    3    0     0          0         0     7000      12    0   41    0     0       0          0
`
	tests := []struct {
		name    string
		in      string
		want    devDrops
		wantErr bool
	}{
		{"counters", dev, devDrops{"gw/lo": {0, 0}, "gw/tun0": {3, 41}}, false},
		{"short line", "  tun0: 1 2 3\n", nil, true},
		{"bad value", "  tun0: 1 2 3 x 5 6 7 8 9 10 11 12 13 14 15 16\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := devDrops{}
			err := parseDevDrops("gw", tt.in, got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	after := devDrops{"gw/lo": {0, 0}, "gw/tun0": {3, 50}}
	if d := after.sub(devDrops{"gw/lo": {0, 0}, "gw/tun0": {3, 41}}); !maps.Equal(d, devDrops{"gw/tun0": {0, 9}}) || d.String() != "gw/tun0 rx 0 tx 9" {
		t.Errorf("sub: %v", d)
	}
}

func TestParseTCPExt(t *testing.T) {
	const netstat = `TcpExt: SyncookiesSent TCPLossProbes TCPOFOQueue
TcpExt: 1 7 30
IpExt: InNoRoutes
IpExt: 0
`
	tests := []struct {
		name    string
		in      string
		want    tcpExt
		wantErr bool
	}{
		{"counters", netstat, tcpExt{"host/TCPLossProbes": 7, "host/TCPOFOQueue": 30}, false},
		{"no TcpExt", "IpExt: InNoRoutes\nIpExt: 0\n", nil, true},
		{"bad value", "TcpExt: TCPLossProbes\nTcpExt: x\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tcpExt{}
			err := parseTCPExt("host", tt.in, got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	d := tcpExt{"host/TCPLossProbes": 9, "host/TCPOFOQueue": 30}.sub(tcpExt{"host/TCPLossProbes": 7, "host/TCPOFOQueue": 30})
	if d.String() != "host/TCPLossProbes 2" {
		t.Errorf("sub: %v", d)
	}
}

func TestFailedRuns(t *testing.T) {
	setup := errors.New("lab: ip netns add: exit status 1")
	for _, tc := range []struct {
		name string
		runs map[string][]run
		want string
	}{
		{"none", nil, ""},
		{"all measured", map[string][]run{"roam": {{rep: 1}, {rep: 2}}, "wireguard": {{rep: 1}}}, ""},
		{"every run failed", map[string][]run{"roam": {{rep: 1, errs: []error{setup}}}, "wireguard": {{rep: 1, errs: []error{setup, setup}}}},
			"2 of 2 runs had errors (one: lab: ip netns add: exit status 1)"},
		{"one failed", map[string][]run{"roam": {{rep: 1}, {rep: 2, errs: []error{setup}}}},
			"1 of 2 runs had errors (one: lab: ip netns add: exit status 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := failedRuns(tc.runs)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v for a bench that measured", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, setup)):
				t.Fatalf("error %v, want %q wrapping the run's", err, tc.want)
			}
		})
	}
}
