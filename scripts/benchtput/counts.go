package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// countEvents are the load-independent counts COUNTS=1 takes of each
// tunnel process during a run: every system call, the ones that move
// packets, and context switches. Wall-clock figures on a shared machine
// move with the load; these move with the code.
var countEvents = []string{
	"raw_syscalls:sys_enter",
	"syscalls:sys_enter_read", "syscalls:sys_enter_write",
	"syscalls:sys_enter_sendmmsg", "syscalls:sys_enter_recvmmsg",
	"syscalls:sys_enter_futex", "context-switches",
}

// counts is what perf stat counted for one process.
type counts map[string]float64

// perfCounter is a perf stat attached to one process for the length of a
// run.
type perfCounter struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
}

func startCounter(pid int) (*perfCounter, error) {
	c := &perfCounter{}
	c.cmd = exec.Command("perf", "stat", "-x", ",", "-e", strings.Join(countEvents, ","), "-p", strconv.Itoa(pid))
	c.cmd.Stderr = &c.stderr
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat: %w", err)
	}
	return c, nil
}

// stop ends the count (perf stat prints its totals on SIGINT).
func (c *perfCounter) stop() (counts, error) {
	c.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("perf stat did not stop")
	}
	return parsePerfCSV(c.stderr.String())
}

// parsePerfCSV reads perf stat -x , output: value,unit,event,... per line.
func parsePerfCSV(out string) (counts, error) {
	cs := counts{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue // "<not counted>" and the like
		}
		cs[strings.TrimPrefix(strings.TrimPrefix(f[2], "syscalls:sys_enter_"), "raw_syscalls:")] = v
	}
	if _, ok := cs["sys_enter"]; !ok {
		return nil, fmt.Errorf("perf stat: no system call count in %q", strings.TrimSpace(out))
	}
	return cs, nil
}

// describeCounts puts each end's counts per unit delivered: per 1000
// datagrams for UDP, per GB for TCP.
func describeCounts(t test, m measurement, names []string) string {
	per, unit := float64(m.Bytes)/1e9, "GB"
	if t.udp {
		per, unit = float64(m.Packets)/1000, "1000 datagrams"
	}
	if per <= 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "per %s delivered:", unit)
	for i, cs := range m.counts {
		fmt.Fprintf(&b, " %s syscalls %.0f (read %.0f write %.0f sendmmsg %.0f recvmmsg %.0f futex %.0f) ctxsw %.0f;",
			names[i], cs["sys_enter"]/per, cs["read"]/per, cs["write"]/per, cs["sendmmsg"]/per, cs["recvmmsg"]/per,
			cs["futex"]/per, cs["context-switches"]/per)
	}
	return b.String()
}
