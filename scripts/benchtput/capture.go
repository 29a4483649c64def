package main

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// A capture point of a download: where the host's TCP segments pass on
// their way to the client, in path order. Packet headers captured at each
// show at which hop the order of the inner TCP stream (or of the ESP
// sequence numbers) first breaks.
type capturePoint struct {
	name string // file name and label
	ns   string // lab role
	dev  string
	esp  bool // the point carries the tunnel's outer packets, not the inner TCP
}

// capturePoints of a tunnel: the host's uplink (send order of the TCP
// sender), the gateway's side of that veth, the gateway's TUN (what the
// gateway reads), the gateway's uplink and the client's (outer packets),
// and the client's tunnel device (what the client wrote).
func capturePoints(l *lab.Lab, t *tunnel) ([]capturePoint, error) {
	route, err := l.Output(lab.Client, "ip", "route", "get", lab.HostAddr.Addr().String())
	if err != nil {
		return nil, err
	}
	src, err := routeField(route, "src")
	if err != nil {
		return nil, err
	}
	back, err := l.Output(lab.Gateway, "ip", "route", "get", src)
	if err != nil {
		return nil, err
	}
	gwTun, err := routeDevice(back)
	if err != nil {
		return nil, err
	}
	return []capturePoint{
		{name: "host-eth0", ns: lab.Host, dev: "eth0"},
		{name: "gw-lan", ns: lab.Gateway, dev: "lan"},
		{name: "gw-" + gwTun, ns: lab.Gateway, dev: gwTun},
		{name: "gw-eth0", ns: lab.Gateway, dev: "eth0", esp: true},
		{name: "client-" + lab.WLAN, ns: lab.Client, dev: lab.WLAN, esp: true},
		{name: "client-" + t.iface, ns: lab.Client, dev: t.iface},
	}, nil
}

// routeField reads the value after key in `ip route get` output.
func routeField(out, key string) (string, error) {
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == key {
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("no %s in route %q", key, strings.TrimSpace(out))
}

// captures is the set of tcpdumps of one test.
type captures struct {
	points []capturePoint
	files  []string
	procs  []*lab.Proc
}

// startCaptures starts a bounded tcpdump (headers only) at every point.
// The filter keeps the download's data segments (from iperf3's port) and
// the outer UDP packets.
func startCaptures(l *lab.Lab, t *tunnel, dir, prefix string) (*captures, error) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		return nil, fmt.Errorf("CAPTURE needs tcpdump: apt-get install tcpdump")
	}
	points, err := capturePoints(l, t)
	if err != nil {
		return nil, err
	}
	c := &captures{points: points}
	for _, p := range points {
		file := filepath.Join(dir, prefix+"-"+p.name+".pcap")
		filter := "tcp src port 5201"
		if p.esp {
			filter = "udp"
		}
		proc, err := l.Start(p.ns, "tcpdump", "-ni", p.dev, "-s", "96", "-B", "16384", "-c", "3000000", "-w", file, filter)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.files = append(c.files, file)
		c.procs = append(c.procs, proc)
	}
	// tcpdump says "listening on" once its socket is bound; give it that
	// long rather than parse its output.
	time.Sleep(500 * time.Millisecond)
	return c, nil
}

func (c *captures) stop() {
	for _, p := range c.procs {
		p.Signal(syscall.SIGINT)
	}
	for _, p := range c.procs {
		p.Wait(5 * time.Second)
	}
}

// report summarises each point's order, one line per point.
func (c *captures) report(w io.Writer, label string) error {
	for i, p := range c.points {
		o, err := fileOrder(c.files[i], p.esp)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s capture %-14s %s\n", label, p.name, o)
	}
	return nil
}

// orderFiles reports the order of saved captures, as TCP and as ESP.
func orderFiles(w io.Writer, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("order: want capture files (.pcap) to read")
	}
	for _, f := range files {
		for _, esp := range []bool{false, true} {
			o, err := fileOrder(f, esp)
			if err != nil {
				return err
			}
			if o.packets > 0 {
				fmt.Fprintf(w, "%s: %s\n", filepath.Base(f), o)
			}
		}
	}
	return nil
}

func fileOrder(file string, esp bool) (order, error) {
	cmd := exec.Command("tcpdump", "-nn", "-S", "-r", file)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return order{}, err
	}
	if err := cmd.Start(); err != nil {
		return order{}, fmt.Errorf("tcpdump -r %s: %w", file, err)
	}
	var o order
	if esp {
		o = espOrder(out)
	} else {
		o = tcpOrder(out)
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return o, fmt.Errorf("tcpdump -r %s: %w", file, err)
	}
	return o, nil
}

// order counts, at one capture point, packets that arrived behind a later
// one.
type order struct {
	packets int
	// late: packets whose new data (TCP) or sequence number (ESP) is
	// below the highest already seen, so a later packet passed them.
	late int
	// lateBytes: TCP payload bytes of the late packets that this point
	// had not seen before (0 for ESP).
	lateBytes int64
	// again: TCP packets carrying only data this point had already
	// seen (retransmissions), or ESP sequence numbers seen before.
	again int
	first []string // the first few late packets, as tcpdump printed them
}

func (o order) String() string {
	s := fmt.Sprintf("packets %d late %d (%d new bytes) repeated %d", o.packets, o.late, o.lateBytes, o.again)
	for _, f := range o.first {
		s += "\n    late: " + f
	}
	return s
}

// tcpOrder reads tcpdump -nn -S text of one TCP flow's data segments and
// counts those carrying new data below the highest sequence number seen:
// reordering at or before this point. Segments whose data was all seen
// before are retransmissions, counted apart. Sequence numbers are
// compared relative to the first segment (no wrap in a short run).
func tcpOrder(r io.Reader) order {
	// iperf3's control connection shares the port: keep flows apart.
	type flow struct {
		base uint32
		seen spans
		high int64
	}
	var o order
	flows := map[string]*flow{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		key, start, end, ok := tcpSeq(line)
		if !ok || end == start {
			continue
		}
		f := flows[key]
		if f == nil {
			f = &flow{base: start}
			flows[key] = f
		}
		s, e := int64(start-f.base), int64(start-f.base)+int64(end-start)
		o.packets++
		fresh := f.seen.add(s, e)
		switch {
		case fresh == 0:
			o.again++
		case s < f.high:
			o.late++
			o.lateBytes += fresh
			if len(o.first) < 3 {
				o.first = append(o.first, line)
			}
		}
		if e > f.high {
			f.high = e
		}
	}
	return o
}

// tcpSeq finds the flow ("a.p > b.q") and "seq A:B" in a tcpdump line.
func tcpSeq(line string) (flow string, start, end uint32, ok bool) {
	i := strings.Index(line, " seq ")
	j := strings.Index(line, " IP ")
	k := strings.Index(line, ": ")
	if i < 0 || j < 0 || k < j {
		return "", 0, 0, false
	}
	flow = line[j+len(" IP ") : k]
	f := line[i+len(" seq "):]
	if j := strings.IndexByte(f, ','); j >= 0 {
		f = f[:j]
	}
	a, b, found := strings.Cut(f, ":")
	if !found {
		return "", 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 10, 32)
	y, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return flow, uint32(x), uint32(y), true
}

// espOrder reads tcpdump text of outer packets and counts ESP sequence
// numbers below the highest seen (per SPI).
func espOrder(r io.Reader) order {
	var o order
	high := map[string]uint64{}
	seen := map[string]map[uint64]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		spi, seq, ok := espSeq(line)
		if !ok {
			continue
		}
		o.packets++
		if seen[spi] == nil {
			seen[spi] = map[uint64]bool{}
		}
		switch {
		case seen[spi][seq]:
			o.again++
		case seq < high[spi]:
			o.late++
			if len(o.first) < 3 {
				o.first = append(o.first, line)
			}
		}
		seen[spi][seq] = true
		if seq > high[spi] {
			high[spi] = seq
		}
	}
	return o
}

// espSeq finds "ESP(spi=0x...,seq=0x...)" in a tcpdump line.
func espSeq(line string) (spi string, seq uint64, ok bool) {
	i := strings.Index(line, "ESP(spi=")
	if i < 0 {
		return "", 0, false
	}
	f := line[i+len("ESP(spi="):]
	spi, rest, found := strings.Cut(f, ",seq=")
	if !found {
		return "", 0, false
	}
	if j := strings.IndexByte(rest, ')'); j >= 0 {
		rest = rest[:j]
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(rest, "0x"), 16, 64)
	if err != nil {
		return "", 0, false
	}
	return spi, n, true
}

// spans is a sorted set of disjoint half-open byte ranges.
type spans [][2]int64

// add inserts [s, e) and returns how many of its bytes were not in the
// set before.
func (sp *spans) add(s, e int64) int64 {
	set := *sp
	// Fast path: in-order data extends the last span.
	if n := len(set); n > 0 && s >= set[n-1][0] {
		last := &set[n-1]
		switch {
		case s > last[1]:
			*sp = append(set, [2]int64{s, e})
			return e - s
		case e <= last[1]:
			return 0
		default:
			fresh := e - last[1]
			last[1] = e
			return fresh
		}
	}
	fresh := e - s
	var out [][2]int64
	ns, ne := s, e
	for _, r := range set {
		if r[1] < ns || r[0] > ne {
			out = append(out, r)
			continue
		}
		// Overlapping or touching: subtract the overlap, merge.
		lo, hi := max(r[0], s), min(r[1], e)
		if hi > lo {
			fresh -= hi - lo
		}
		ns, ne = min(ns, r[0]), max(ne, r[1])
	}
	out = append(out, [2]int64{ns, ne})
	for i := len(out) - 1; i > 0 && out[i][0] < out[i-1][0]; i-- {
		out[i], out[i-1] = out[i-1], out[i]
	}
	*sp = out
	return fresh
}
