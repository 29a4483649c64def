package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roam-vpn/roam/scripts/internal/benchkit"
	"github.com/roam-vpn/roam/scripts/lab/probe"
)

// metric is one number taken from every run of a test.
type metric struct {
	name, unit string
	get        func(measurement) float64
}

var (
	mbps        = metric{"mbps", "Mbit/s", func(m measurement) float64 { return m.Mbps }}
	pps         = metric{"pps", "datagrams/s", func(m measurement) float64 { return m.PPS }}
	lost        = metric{"lost_pct", "% lost", func(m measurement) float64 { return m.LostPercent }}
	retransmits = metric{"retransmits", "retransmits", func(m measurement) float64 { return float64(m.Retransmits) }}
	cpuGB       = metric{"cpu_s_per_gb", "CPU s/GB", cpuPerGB}
	sockDrops   = metric{"udp_socket_drops", "UDP socket drops", func(m measurement) float64 { return float64(m.drops.rcvbuf + m.drops.sndbuf) }}
)

func metricsOf(t test) []metric {
	if t.udp {
		return []metric{pps, lost, cpuGB}
	}
	// In a TCP test the namespaces' only UDP sockets are the tunnel's.
	return []metric{mbps, retransmits, sockDrops, cpuGB}
}

// kindFigure is one kind's values of a figure over the repetitions.
type kindFigure struct {
	Runs   []float64 `json:"runs"` // in repetition order, failed runs left out
	Errors int       `json:"errors"`
	Median *float64  `json:"median"`
}

// figure is one metric of one test, for every kind.
type figure struct {
	Test   string                `json:"figure"`
	Metric string                `json:"metric"`
	Unit   string                `json:"unit"`
	Kinds  map[string]kindFigure `json:"kinds"`
	// Ratio is roam's median over wireguard-go's; nil when either is
	// missing or wireguard-go's is 0.
	Ratio *float64 `json:"ratio_roam_wireguard"`
}

// figures computes every figure's medians and ratio from the runs.
func figures(ts []test, kinds []string, runs map[string][]run) []figure {
	var fs []figure
	for _, t := range ts {
		for _, m := range metricsOf(t) {
			f := figure{Test: t.name, Metric: m.name, Unit: m.unit, Kinds: map[string]kindFigure{}}
			for _, k := range kinds {
				kf := kindFigure{Runs: []float64{}}
				for _, r := range runs[k] {
					if res, ok := r.results[t.name]; ok {
						kf.Runs = append(kf.Runs, m.get(res))
					} else {
						kf.Errors++
					}
				}
				if len(kf.Runs) > 0 {
					kf.Median = benchkit.Ptr(probe.Median(kf.Runs))
				}
				f.Kinds[k] = kf
			}
			r, w := f.Kinds[kindRoam].Median, f.Kinds[kindWG].Median
			if r != nil && w != nil && *w != 0 {
				f.Ratio = benchkit.Ptr(*r / *w)
			}
			fs = append(fs, f)
		}
	}
	return fs
}

// label is a figure's row name in the table.
func label(f figure) string {
	var b strings.Builder
	parts := strings.Split(f.Test, "-") // tcp-up-4, udp-down-64
	if len(parts) == 3 {
		if parts[0] == "tcp" {
			s := "streams"
			if parts[2] == "1" {
				s = "stream"
			}
			fmt.Fprintf(&b, "TCP %s, %s %s", parts[1], parts[2], s)
		} else {
			fmt.Fprintf(&b, "UDP %s, %s B", parts[1], parts[2])
		}
	} else {
		b.WriteString(f.Test)
	}
	fmt.Fprintf(&b, ": %s", f.Unit)
	return b.String()
}

func cell(kf kindFigure, reps int) string {
	if kf.Median == nil {
		return "failed"
	}
	v := *kf.Median
	var s string
	switch {
	case v >= 100:
		s = fmt.Sprintf("%.0f", v)
	case v >= 10:
		s = fmt.Sprintf("%.1f", v)
	default:
		s = fmt.Sprintf("%.2f", v)
	}
	if len(kf.Runs) < reps {
		s += fmt.Sprintf(" (%d/%d)", len(kf.Runs), reps)
	}
	return s
}

func report(w io.Writer, cfg config, m machine, ts []test, runs map[string][]run, took time.Duration) {
	fmt.Fprintf(w, "\nbench-tput: iperf3 client namespace -> wlan NAT -> inet -> gateway -> host behind it, no added delay\n")
	fmt.Fprintf(w, "%d repetitions (kinds interleaved, fresh lab each), %v per run, TCP 1 and %d streams, UDP -b 0; took %v\n",
		cfg.reps, cfg.duration, cfg.streams, took.Round(time.Second))
	fmt.Fprintf(w, "machine: nproc %d, load average %s at start, %s at end; %s\n", m.nproc, m.loadStart, m.loadEnd, m.perf)
	var mtus []string
	for _, k := range cfg.kinds {
		for _, r := range runs[k] {
			if r.mtu > 0 {
				mtus = append(mtus, fmt.Sprintf("%s %d", kindLabel[k], r.mtu))
				break
			}
		}
	}
	fmt.Fprintf(w, "client tunnel device MTU: %s\n\n", strings.Join(mtus, ", "))

	fs := figures(ts, cfg.kinds, runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "figure (median)\t")
	for _, k := range cfg.kinds {
		fmt.Fprintf(tw, "%s\t", kindLabel[k])
	}
	fmt.Fprintln(tw, "roam/wg\t")
	for _, f := range fs {
		fmt.Fprintf(tw, "%s\t", label(f))
		for _, k := range cfg.kinds {
			fmt.Fprintf(tw, "%s\t", cell(f.Kinds[k], cfg.reps))
		}
		ratio := "-"
		if f.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *f.Ratio)
		}
		fmt.Fprintf(tw, "%s\t\n", ratio)
	}
	tw.Flush()
	fmt.Fprintln(w, `
Mbit/s and datagrams/s are what the receiver got. CPU s/GB: user+system time of the
tunnel processes on both ends (roam client daemon + roam gateway; both wireguard-go;
roam client daemon + charon) during the run, per 10^9 payload bytes delivered.
retransmits: the TCP sender's. UDP socket drops: datagrams the client's and the
gateway's kernels dropped at the tunnel's sockets (receive or send buffer full,
/proc/net/snmp RcvbufErrors + SndbufErrors) during a TCP run. roam/wg: ratio of
the medians (above 1 is better for throughput, worse for retransmits, drops,
loss and CPU). (k/n): only k of n runs succeeded.`)
	var errs int
	for _, k := range cfg.kinds {
		for _, r := range runs[k] {
			errs += len(r.errs)
		}
	}
	if errs > 0 {
		fmt.Fprintf(w, "%d runs failed (see stderr; LOGS=DIR keeps the logs of failed tunnels)\n", errs)
	}
	fmt.Fprintln(w)
	for _, f := range fs {
		b, _ := json.Marshal(struct {
			figure
			Reps      int    `json:"reps"`
			DurationS int    `json:"duration_s"`
			NProc     int    `json:"nproc"`
			LoadStart string `json:"load_start"`
			LoadEnd   string `json:"load_end"`
		}{f, cfg.reps, int(cfg.duration.Seconds()), m.nproc, m.loadStart, m.loadEnd})
		fmt.Fprintln(w, "BENCH-TPUT "+string(b))
	}
}
