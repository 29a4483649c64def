package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// test is one iperf3 run through the tunnel, client namespace to the host
// behind the gateway (reverse: the host sends).
type test struct {
	name    string
	udp     bool
	size    int // UDP datagram payload (iperf3 -l)
	streams int // TCP streams (iperf3 -P)
	reverse bool
}

func (t test) args(dst string, d time.Duration) []string {
	a := []string{"iperf3", "-c", dst, "-J", "-t", strconv.Itoa(max(1, int(d.Seconds())))}
	if t.udp {
		a = append(a, "-u", "-b", "0", "-l", strconv.Itoa(t.size))
	}
	if t.streams > 1 {
		a = append(a, "-P", strconv.Itoa(t.streams))
	}
	if t.reverse {
		a = append(a, "-R")
	}
	return a
}

// tests lists the runs of one kind in one repetition, in the order they
// run: TCP first (1 and n streams, up and down), then UDP floods.
func tests(streams int, udpSizes []int, udpDown bool) []test {
	var ts []test
	for _, n := range []int{1, streams} {
		for _, rev := range []bool{false, true} {
			ts = append(ts, test{name: fmt.Sprintf("tcp-%s-%d", dir(rev), n), streams: n, reverse: rev})
		}
		if streams == 1 {
			break
		}
	}
	for _, rev := range []bool{false, true} {
		if rev && !udpDown {
			break
		}
		for _, s := range udpSizes {
			ts = append(ts, test{name: fmt.Sprintf("udp-%s-%d", dir(rev), s), udp: true, size: s, streams: 1, reverse: rev})
		}
	}
	return ts
}

func dir(reverse bool) string {
	if reverse {
		return "down"
	}
	return "up"
}

// result is what one iperf3 run delivered, from the receiver's side.
type result struct {
	Seconds     float64 // receiver's measured interval
	Bytes       int64   // payload bytes received
	Mbps        float64 // received payload, Mbit/s
	Packets     int64   // UDP datagrams received
	PPS         float64 // UDP datagrams received per second
	LostPercent float64 // UDP datagrams sent but not received
	Retransmits int64   // TCP sender's retransmits
}

// iperfReport is the part of iperf3 -J output the benchmark reads.
type iperfReport struct {
	Error string `json:"error"`
	Start struct {
		TestStart struct {
			Protocol string `json:"protocol"`
			BlkSize  int    `json:"blksize"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
	} `json:"end"`
}

type iperfSum struct {
	Seconds     float64 `json:"seconds"`
	Bytes       int64   `json:"bytes"`
	Retransmits int64   `json:"retransmits"`
	Packets     int64   `json:"packets"`
	LostPackets int64   `json:"lost_packets"`
	LostPercent float64 `json:"lost_percent"`
}

// parseIperf reads iperf3 -J output (3.12's layout: end.sum_sent and
// end.sum_received, also for UDP).
func parseIperf(b []byte) (result, error) {
	var rep iperfReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return result{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if rep.Error != "" {
		return result{}, fmt.Errorf("iperf3: %s", rep.Error)
	}
	sent, recv := rep.End.SumSent, rep.End.SumReceived
	if sent == nil || recv == nil {
		return result{}, errors.New("iperf3 JSON: no end.sum_sent or end.sum_received")
	}
	if recv.Seconds <= 0 || recv.Bytes <= 0 {
		return result{}, fmt.Errorf("iperf3: nothing received (%d bytes in %.1f s)", recv.Bytes, recv.Seconds)
	}
	r := result{
		Seconds: recv.Seconds,
		Bytes:   recv.Bytes,
		Mbps:    float64(recv.Bytes) * 8 / recv.Seconds / 1e6,
	}
	switch rep.Start.TestStart.Protocol {
	case "TCP":
		r.Retransmits = sent.Retransmits
	case "UDP":
		// packets is the highest sequence number seen, lost_packets the
		// gaps below it: what arrived is their difference.
		r.Packets = recv.Packets - recv.LostPackets
		if r.Packets <= 0 {
			return result{}, fmt.Errorf("iperf3: UDP receiver counted %d packets, %d lost", recv.Packets, recv.LostPackets)
		}
		r.PPS = float64(r.Packets) / recv.Seconds
		// Datagrams the sender sent that never arrived, including the
		// ones after the receiver's highest sequence number.
		if sent.Packets > 0 {
			r.LostPercent = 100 * float64(sent.Packets-r.Packets) / float64(sent.Packets)
		}
	default:
		return result{}, fmt.Errorf("iperf3 JSON: protocol %q", rep.Start.TestStart.Protocol)
	}
	return r, nil
}

// runIperf runs one test from the client namespace against the iperf3
// server on the host, bounded by the test's duration plus a margin. The
// server may still be starting: a refused connection is retried.
func runIperf(parent context.Context, l *lab.Lab, t test, d time.Duration) (result, error) {
	dst := lab.HostAddr.Addr().String()
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		ctx, cancel := context.WithTimeout(parent, d+30*time.Second)
		args := append([]string{"netns", "exec", l.NS(lab.Client)}, t.args(dst, d)...)
		cmd := exec.CommandContext(ctx, "ip", args...)
		cmd.WaitDelay = time.Second
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		r, perr := parseIperf(stdout.Bytes())
		if perr == nil {
			return r, nil
		}
		if parent.Err() != nil {
			return result{}, parent.Err()
		}
		if timedOut {
			return result{}, fmt.Errorf("%s: no result within %v (stderr: %s)", t.name, d+30*time.Second, strings.TrimSpace(stderr.String()))
		}
		lastErr = fmt.Errorf("%s: %w (exit: %v; stderr: %s)", t.name, perr, err, strings.TrimSpace(stderr.String()))
		if !strings.Contains(perr.Error(), "refused") && !strings.Contains(perr.Error(), "busy") {
			return result{}, lastErr
		}
		time.Sleep(200 * time.Millisecond)
	}
	return result{}, lastErr
}
