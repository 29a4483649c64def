package netmon

import "time"

// systemClock reads both clocks from one time.Now: its wall reading comes
// from CLOCK_REALTIME and its monotonic reading from CLOCK_MONOTONIC, which
// on Linux does not advance during suspend.
type systemClock struct{ start time.Time }

func newSystemClock() systemClock { return systemClock{start: time.Now()} }

func (c systemClock) Now() (time.Time, time.Duration) {
	now := time.Now()
	return now.Round(0), now.Sub(c.start)
}

// jumpDetector compares how far the wall and monotonic clocks moved between
// two readings. Scheduling delays move both alike and cancel out; only a
// suspend or a stepped wall clock makes them diverge.
type jumpDetector struct {
	threshold time.Duration
	primed    bool
	wall      time.Time
	mono      time.Duration
}

func (d *jumpDetector) observe(wall time.Time, mono time.Duration) (ClockJump, bool) {
	if !d.primed {
		d.primed, d.wall, d.mono = true, wall, mono
		return ClockJump{}, false
	}
	dw, dm := wall.Sub(d.wall), mono-d.mono
	d.wall, d.mono = wall, mono
	j := ClockJump{Wall: dw, Monotonic: dm}
	if delta := j.Jump(); delta > d.threshold || delta < -d.threshold {
		return j, true
	}
	return ClockJump{}, false
}
