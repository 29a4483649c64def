package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
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
