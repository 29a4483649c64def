package netmon

import (
	"time"

	"golang.org/x/sys/unix"
)

// ClockReading is one look at the system's clocks.
type ClockReading struct {
	// Wall is CLOCK_REALTIME: it stamps events and nothing else, as NTP or
	// the user may step it at any time.
	Wall time.Time
	// Boot is CLOCK_BOOTTIME and Mono CLOCK_MONOTONIC. Neither is stepped;
	// Boot advances while the system is suspended, Mono does not. Both
	// advance while the process is stopped (SIGSTOP), so a stopped process
	// sees a gap in both since its last look.
	Boot, Mono time.Duration
}

// systemClock reads the kernel's clocks.
type systemClock struct{}

func (systemClock) Now() ClockReading {
	var boot, mono unix.Timespec
	// Both calls go through the vDSO on Linux and cannot fail for these
	// clock ids; a zero reading would only look like no time passing.
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	return ClockReading{Wall: time.Now().Round(0), Boot: time.Duration(boot.Nano()), Mono: time.Duration(mono.Nano())}
}

// wakeDetector compares successive clock readings, taken every interval.
// The time the process did not run between two looks (the gap) is the
// boot clock's advance beyond the interval; of it, the boot clock's lead
// over the monotonic clock was suspended, the rest stopped. A gap above threshold is a
// wake-up. A stepped wall clock moves neither clock and is never one.
type wakeDetector struct {
	interval, threshold time.Duration
	primed              bool
	boot, mono          time.Duration
}

func (d *wakeDetector) observe(r ClockReading) (Wake, bool) {
	if !d.primed {
		d.primed, d.boot, d.mono = true, r.Boot, r.Mono
		return Wake{}, false
	}
	db, dm := r.Boot-d.boot, r.Mono-d.mono
	d.boot, d.mono = r.Boot, r.Mono
	gap := max(db-d.interval, 0)
	slept := db - dm
	if slept < d.interval {
		// Noise: the two clocks are read one after the other, and the
		// process may be preempted in between.
		slept = 0
	}
	slept = min(slept, gap)
	w := Wake{Suspended: slept, Stopped: gap - slept, At: r.Wall}
	if w.Gap() > d.threshold {
		return w, true
	}
	return Wake{}, false
}
