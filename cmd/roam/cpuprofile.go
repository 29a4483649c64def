package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names a file that the daemon and `roam gateway` write a CPU
// profile into, from start until they exit: a debugging aid for finding
// where the dataplane spends its time (scripts/benchtput uses it). Read it
// with `go tool pprof -top BINARY FILE`.
const cpuProfileEnv = "ROAM_CPUPROFILE"

// startCPUProfile starts the profile that getenv(cpuProfileEnv) asks for;
// stop writes it out. Without the variable both are no-ops.
func startCPUProfile(getenv func(string) string) (stop func(), err error) {
	path := getenv(cpuProfileEnv)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
