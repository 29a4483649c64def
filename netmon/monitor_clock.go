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
// The time the process did not run between two looks is the boot clock's
// advance beyond the interval: suspended time (boot minus monotonic) plus
// stopped time (monotonic beyond the interval). A gap above threshold is a
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
	w := Wake{Suspended: max(db-dm, 0), Stopped: max(dm-d.interval, 0), At: r.Wall}
	if w.Gap() > d.threshold {
		return w, true
	}
	return Wake{}, false
}
