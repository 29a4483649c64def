package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// How full the tunnels' UDP receive buffers got: the kernel drops a
// datagram when a socket's queued memory reaches its buffer, so the peak
// of the queue over a run says how close a stalled receive loop came to
// an overflow, which a drop count (0 or not) does not.
//
// "benchtput udpq" runs inside a namespace (ip netns exec), samples
// /proc/net/udp and /proc/net/udp6 every millisecond until SIGINT, and
// prints the largest rx_queue (bytes of queued datagrams, truesize) seen
// over all the namespace's UDP sockets.

const udpqInterval = time.Millisecond

func udpqMain(w io.Writer) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(udpqInterval)
	defer tick.Stop()
	var peak int64
	var buf []byte
	for {
		select {
		case <-stop:
			fmt.Fprintln(w, peak)
			return nil
		case <-tick.C:
		}
		for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
			var err error
			if buf, err = readInto(buf[:0], f); err != nil {
				return err
			}
			if q := maxRxQueue(buf); q > peak {
				peak = q
			}
		}
	}
}

func readInto(buf []byte, name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	b := bytes.NewBuffer(buf)
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// maxRxQueue reads the largest rx_queue of /proc/net/udp text: the
// fifth column, "tx_queue:rx_queue" in hex.
func maxRxQueue(text []byte) int64 {
	var peak int64
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(rx, 16, 64)
		if err == nil && n > peak {
			peak = n
		}
	}
	return peak
}

// queueSampler runs udpq in the client's and the gateway's namespace.
type queueSampler struct {
	procs []*lab.Proc
}

func startQueueSampler(l *lab.Lab) (*queueSampler, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	s := &queueSampler{}
	for _, ns := range []string{lab.Client, lab.Gateway} {
		p, err := l.StartCmd(exec.Command("ip", "netns", "exec", l.NS(ns), self, "udpq"))
		if err != nil {
			s.stop()
			return nil, err
		}
		s.procs = append(s.procs, p)
	}
	return s, nil
}

// stop ends the samplers and returns the peaks, client then gateway.
func (s *queueSampler) stop() ([2]int64, error) {
	var peaks [2]int64
	var firstErr error
	for i, p := range s.procs {
		p.Signal(syscall.SIGINT)
		if err := p.Wait(5 * time.Second); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("udpq: %w: %s", err, p.Output())
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(p.Output()), 10, 64)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("udpq output %q", p.Output())
		}
		peaks[i] = n
	}
	return peaks, firstErr
}
