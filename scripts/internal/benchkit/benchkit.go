// Package benchkit holds what the lab benchmarks (bench-roam, bench-switch,
// bench-tput) share: flags that default to environment variables, the
// commands' exit convention, building the lab's binaries, the UDP probes
// through the tunnel (responder behind the gateway, prober in the client),
// figures in milliseconds, collecting and saving logs and the machine's
// load.
//
// It never measures anything itself; the benchmarks own their scenarios.
package benchkit

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// Main runs a benchmark command named prog: parse reads its arguments and
// environment, run does the work. Asking for help exits 0, bad flags exit 2
// and a failed run exits 1, each with one line naming prog.
func Main[C any](prog string, parse func(args []string, getenv func(string) string) (C, error), run func(C) error) {
	cfg, err := parse(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		os.Exit(1)
	}
}

// Flags is a flag set whose flags default to environment variables, so a
// make target can pass settings either way.
type Flags struct {
	*flag.FlagSet
	getenv func(string) string
}

// NewFlags returns an empty set for the command prog that reads the
// environment through getenv (os.Getenv, or a map in tests).
func NewFlags(prog string, getenv func(string) string) *Flags {
	return &Flags{FlagSet: flag.NewFlagSet(prog, flag.ContinueOnError), getenv: getenv}
}

// Env defines the string flag -name whose default is the environment
// variable env, or def when that is unset or empty.
func (f *Flags) Env(name, env, def, usage string) *string {
	v := f.getenv(env)
	if v == "" {
		v = def
	}
	return f.String(name, v, usage)
}

// Parse parses args; the benchmarks take no positional arguments, so one
// is an error.
func (f *Flags) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", f.Arg(0))
	}
	return nil
}

// Duration is one flag's value to parse as a duration.
type Duration struct {
	Label  string // how errors name the setting, such as "BOUND/-bound"
	Value  string
	To     *time.Duration
	ZeroOK bool // 0 is a valid setting (negative never is)
}

// ParseDurations parses each value into its To, or returns an error naming
// the first that is not a valid duration.
func ParseDurations(ds ...Duration) error {
	for _, d := range ds {
		v, err := time.ParseDuration(d.Value)
		if err != nil || v < 0 || v == 0 && !d.ZeroOK {
			return fmt.Errorf("%s %q: want a duration such as 10s or 5ms", d.Label, d.Value)
		}
		*d.To = v
	}
	return nil
}

// Int parses s, the setting label names, as an integer from lo to hi; hi 0
// means no upper bound.
func Int(label, s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	switch {
	case hi == 0 && (err != nil || n < lo):
		if lo == 1 {
			return 0, fmt.Errorf("%s %q: want a positive integer", label, s)
		}
		return 0, fmt.Errorf("%s %q: want an integer of at least %d", label, s, lo)
	case hi != 0 && (err != nil || n < lo || n > hi):
		return 0, fmt.Errorf("%s %q: want an integer from %d to %d", label, s, lo, hi)
	}
	return n, nil
}

// Bool parses s, the setting label names, as a switch: 1, true or yes; 0,
// false or no.
func Bool(label, s string) (bool, error) {
	switch s {
	case "1", "true", "yes":
		return true, nil
	case "0", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("%s %q: want 1 or 0", label, s)
}

// Binaries are the roam and delay-line executables built for one run.
type Binaries struct {
	Dir   string // a temporary directory holding both; Remove deletes it
	Roam  string
	Delay string
}

// BuildLab builds roam and the delay line into a new temporary directory
// named after prog; without root (network namespaces) it says to run make
// target with sudo instead.
func BuildLab(prog, target string) (Binaries, error) {
	if err := NeedRoot(target); err != nil {
		return Binaries{}, err
	}
	var b Binaries
	var err error
	if b.Dir, err = os.MkdirTemp("", prog+"-bin-"); err != nil {
		return b, err
	}
	if b.Roam, err = lab.BuildRoam(b.Dir); err != nil {
		b.Remove()
		return Binaries{}, err
	}
	if b.Delay, err = lab.BuildDelay(b.Dir); err != nil {
		b.Remove()
		return Binaries{}, err
	}
	return b, nil
}

// Remove deletes the binaries' directory.
func (b Binaries) Remove() {
	if b.Dir != "" {
		os.RemoveAll(b.Dir)
	}
}

// NeedRoot says how to run make target when the process cannot make
// network namespaces.
func NeedRoot(target string) error {
	if !lab.Root() {
		return fmt.Errorf("needs root (network namespaces): sudo make %s", target)
	}
	return nil
}

// SaveLogs keeps a run's logs under dir/name; failing to is worth a line
// (naming prog), not the run.
func SaveLogs(prog, dir, name string, files map[string]string) {
	if err := lab.SaveLogs(dir, name, files); err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
	}
}

// MS formats d in milliseconds for the benchmarks' tables.
func MS(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

// MSF is d in milliseconds for the machine-readable lines.
func MSF(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Ptr returns a pointer to a copy of v, for the optional fields of the
// machine-readable lines.
func Ptr[T any](v T) *T { return &v }

// Loadavg is the first three fields of /proc/loadavg, or "?" when they
// cannot be read: a report says how busy the shared machine was.
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Load is what a report says about the machine, so that figures from a
// busy one are read as such.
type Load struct {
	CPUs       int
	Start, End string // Loadavg at the start and at the end of the bench
}

// StartLoad notes the machine as a bench starts; Finish completes it.
func StartLoad() Load { return Load{CPUs: runtime.NumCPU(), Start: Loadavg()} }

// Finish notes the load as the bench ends.
func (l *Load) Finish() { l.End = Loadavg() }

func (l Load) String() string {
	return fmt.Sprintf("machine: %d CPUs, load average %s at start, %s at end", l.CPUs, l.Start, l.End)
}

// AddLogFile puts the file at path into logs under name. A file not
// written (yet) is kept as empty: that it is empty says something too.
func AddLogFile(logs map[string]string, name, path string) {
	b, _ := os.ReadFile(path)
	logs[name] = string(b)
}

// AddStatus puts the status JSON of the roam daemon or gateway r into logs
// under name, when r answers.
func AddStatus(logs map[string]string, name string, r *lab.Roam) {
	if _, raw, err := r.Status(); err == nil {
		logs[name] = raw
	}
}
