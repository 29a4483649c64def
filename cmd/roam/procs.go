package main

import "runtime"

// dataplaneProcs is how many threads may run the daemon's or the
// gateway's Go code at once (GOMAXPROCS), given the CPUs the process may
// use: half of them. Most of a userspace tunnel's work per packet is the
// kernel's, in its TUN and UDP system calls (the inner TCP stack under a
// TUN write, the outer network stack under sendmmsg), and the packet
// path is a chain of goroutines handing batches to each other. With a P
// per CPU every handoff finds an idle P and wakes a thread for it, which
// spins looking for work and steals the CPU that a system call of the
// chain was about to use: on the 2-CPU lab, GOMAXPROCS 1 against 2 (same
// build, one bench run) halved the context switches per GB of a
// single-stream TCP transfer, cut the tunnel's CPU per GB by a quarter
// and carried a third more 64-byte datagrams (docs/dataplane.md).
// A goroutine blocked in a system call still lets go of its P, so the
// kernel's work keeps the other CPUs.
func dataplaneProcs(cpus int) int { return max(1, cpus/2) }

// setDataplaneProcs applies dataplaneProcs to the Go runtime's own choice
// (the CPUs of the process's affinity and cgroup limit), unless the user
// chose with GOMAXPROCS.
func setDataplaneProcs(getenv func(string) string) {
	if getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(dataplaneProcs(runtime.GOMAXPROCS(0)))
}
