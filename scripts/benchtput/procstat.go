package main

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the times in /proc/PID/stat: the kernel reports
// them in USER_HZ, which is 100 on every Linux architecture we run on.
const userHZ = 100

// parseStatCPU returns utime+stime (all threads of the process) from the
// contents of /proc/PID/stat. The command name in parentheses may itself
// hold spaces and parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat: no command name in %q", b)
	}
	// After ") ": state(3) ppid(4) ... utime(14) stime(15).
	f := strings.Fields(string(b[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want more than %d", len(f), stime)
	}
	u, err := strconv.ParseUint(f[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat utime %q: %w", f[utime], err)
	}
	s, err := strconv.ParseUint(f[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat stime %q: %w", f[stime], err)
	}
	return time.Duration(u+s) * time.Second / userHZ, nil
}

// cpuOf sums the CPU time the processes have used so far.
func cpuOf(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("tunnel process %d: %w", pid, err)
		}
		c, err := parseStatCPU(b)
		if err != nil {
			return 0, fmt.Errorf("tunnel process %d: %w", pid, err)
		}
		sum += c
	}
	return sum, nil
}

// udpDrops is what a namespace's kernel dropped at UDP sockets: datagrams
// that found the receive buffer full, and sends refused for a full send
// buffer (/proc/net/snmp Udp RcvbufErrors, SndbufErrors).
type udpDrops struct{ rcvbuf, sndbuf int64 }

func (d udpDrops) sub(o udpDrops) udpDrops {
	return udpDrops{d.rcvbuf - o.rcvbuf, d.sndbuf - o.sndbuf}
}

// parseUDPDrops reads the "Udp:" header and value lines of /proc/net/snmp.
func parseUDPDrops(snmp string) (udpDrops, error) {
	lines := strings.Split(snmp, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "Udp:" || len(vals) != len(names) || vals[0] != "Udp:" {
			continue
		}
		var d udpDrops
		found := 0
		for j, n := range names {
			var to *int64
			switch n {
			case "RcvbufErrors":
				to = &d.rcvbuf
			case "SndbufErrors":
				to = &d.sndbuf
			default:
				continue
			}
			v, err := strconv.ParseInt(vals[j], 10, 64)
			if err != nil {
				return udpDrops{}, fmt.Errorf("snmp Udp %s %q: %w", n, vals[j], err)
			}
			*to = v
			found++
		}
		if found == 2 {
			return d, nil
		}
	}
	return udpDrops{}, errors.New("snmp: no Udp RcvbufErrors and SndbufErrors")
}

// devDrops is what the namespaces' network devices dropped, per
// "namespace/device" (/proc/net/dev receive and transmit drop columns): a
// TUN device whose reader falls behind drops on transmit, before the
// tunnel sees the packet, and the sender's TCP retransmits.
type devDrops map[string][2]int64

// sub is d minus o, with only the devices that dropped something.
func (d devDrops) sub(o devDrops) devDrops {
	out := devDrops{}
	for k, v := range d {
		w := o[k]
		if r := [2]int64{v[0] - w[0], v[1] - w[1]}; r != [2]int64{} {
			out[k] = r
		}
	}
	return out
}

func (d devDrops) String() string {
	return sortedFields(d, func(k string, v [2]int64) string { return fmt.Sprintf("%s rx %d tx %d", k, v[0], v[1]) })
}

// sortedFields renders m's entries with field in key order, space-separated;
// "none" when m is empty.
func sortedFields[V any](m map[string]V, field func(string, V) string) string {
	if len(m) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(field(k, m[k]))
	}
	return b.String()
}

// parseDevDrops reads /proc/net/dev of namespace ns into d.
func parseDevDrops(ns, dev string, d devDrops) error {
	for _, line := range strings.Split(dev, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.Contains(name, "|") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return fmt.Errorf("/proc/net/dev %s: %d fields, want 16", strings.TrimSpace(name), len(f))
		}
		rx, err1 := strconv.ParseInt(f[3], 10, 64)
		tx, err2 := strconv.ParseInt(f[11], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("/proc/net/dev %s: %w", strings.TrimSpace(name), err)
		}
		d[ns+"/"+strings.TrimSpace(name)] = [2]int64{rx, tx}
	}
	return nil
}

// tcpExtKeys are the TcpExt counters (/proc/net/netstat) that tell a TCP
// sender's retransmits apart: tail loss probes and fast retransmits (loss
// or reordering), timeouts, and what the receiver reported back (D-SACK:
// the retransmit was spurious; reordering seen), plus the receiver's
// out-of-order queue.
var tcpExtKeys = []string{"TCPLossProbes", "TCPFastRetrans", "TCPTimeouts", "TCPSpuriousRTOs", "TCPDSACKRecv",
	"TCPSACKReorder", "TCPTSReorder", "TCPOFOQueue", "TCPDSACKOldSent"}

// tcpExt is a set of TcpExt counters per "namespace/counter".
type tcpExt map[string]int64

// parseTCPExt reads tcpExtKeys from /proc/net/netstat of namespace ns
// into t.
func parseTCPExt(ns, netstat string, t tcpExt) error {
	lines := strings.Split(netstat, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(vals) != len(names) || vals[0] != "TcpExt:" {
			continue
		}
		for j, n := range names {
			if !slices.Contains(tcpExtKeys, n) {
				continue
			}
			v, err := strconv.ParseInt(vals[j], 10, 64)
			if err != nil {
				return fmt.Errorf("netstat TcpExt %s %q: %w", n, vals[j], err)
			}
			t[ns+"/"+n] = v
		}
		return nil
	}
	return errors.New("netstat: no TcpExt lines")
}

// sub is t minus o, with only the counters that moved.
func (t tcpExt) sub(o tcpExt) tcpExt {
	out := tcpExt{}
	for k, v := range t {
		if d := v - o[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (t tcpExt) String() string {
	return sortedFields(t, func(k string, v int64) string { return fmt.Sprintf("%s %d", k, v) })
}
