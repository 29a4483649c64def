package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/roam-vpn/roam/scripts/lab"
)

// profileRoam runs one TCP upload and one download through roam client <->
// roam gateway with ROAM_CPUPROFILE on both ends, in fresh labs after the
// measured runs (profiling costs a little CPU itself), and prints the top
// of each profile. The profiles, their pprof -top text and the roam binary
// stay in cfg.profileDir.
func profileRoam(ctx context.Context, cfg config, bin binaries, n int) error {
	dir, err := filepath.Abs(cfg.profileDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	roamCopy := filepath.Join(dir, "roam")
	if b, err := os.ReadFile(bin.roam); err != nil {
		return err
	} else if err := os.WriteFile(roamCopy, b, 0o755); err != nil {
		return err
	}
	for i, tt := range []test{{name: "tcp-up-1", streams: 1}, {name: "tcp-down-1", streams: 1, reverse: true}} {
		prof := profile{
			client:  filepath.Join(dir, "client-"+tt.name+".pprof"),
			gateway: filepath.Join(dir, "gateway-"+tt.name+".pprof"),
		}
		m, err := profiledRun(ctx, bin, n+1+i, tt, cfg, prof)
		if err != nil {
			return fmt.Errorf("%s: %w", tt.name, err)
		}
		fmt.Printf("\nprofiled %s through roam <-> roam: %s\n", tt.name, describe(tt, m))
		for _, side := range []struct{ name, file string }{{"client", prof.client}, {"gateway", prof.gateway}} {
			out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", roamCopy, side.file).CombinedOutput()
			if err != nil {
				return fmt.Errorf("pprof %s: %w: %s", side.file, err, out)
			}
			// Which system calls the time in Syscall6 belongs to (in the
			// lab a send also carries the packet through the veth
			// pairs and NATs, in the sender's context).
			peek, err := exec.Command("go", "tool", "pprof", "-peek", `^syscall\.Syscall6?$`, "-nodecount=12", roamCopy, side.file).CombinedOutput()
			if err != nil {
				return fmt.Errorf("pprof -peek %s: %w: %s", side.file, err, peek)
			}
			if i := bytes.Index(peek, []byte("-----")); i >= 0 {
				out = append(append(out, "\nsystem calls by caller:\n"...), peek[i:]...)
			}
			top := side.file[:len(side.file)-len(".pprof")] + "-top.txt"
			if err := os.WriteFile(top, out, 0o644); err != nil {
				return err
			}
			fmt.Printf("\n== roam %s, %s (%s)\n%s", side.name, tt.name, side.file, out)
		}
	}
	return nil
}

func profiledRun(ctx context.Context, bin binaries, n int, tt test, cfg config, prof profile) (measurement, error) {
	l, err := lab.New(lab.Options{})
	if err != nil {
		return measurement{}, err
	}
	defer l.Close()
	t, err := startTunnel(l, kindRoam, bin, n, prof)
	if err != nil {
		return measurement{}, err
	}
	plain := cfg
	plain.counts = false
	m, err := measure(ctx, l, t, tt, plain, "")
	if err != nil {
		return m, err
	}
	// The profiles are written when the daemons exit.
	if err := t.stop(); err != nil {
		return m, err
	}
	for _, f := range []string{prof.client, prof.gateway} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			return m, fmt.Errorf("no CPU profile in %s (%v)", f, err)
		}
	}
	return m, nil
}
