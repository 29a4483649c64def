package probe

import (
	"slices"
	"time"
)

// Move describes one handover for Analyze.
type Move struct {
	// Event is when the change was triggered (the start of the command
	// that makes it): recovery is measured from here.
	Event time.Time
	// Applied is when the change was certainly in effect (the command
	// returned). Only probes sent from here on can prove recovery, so a
	// probe that slipped through the old path before the change took
	// effect does not count.
	Applied time.Time
	// NewPath is when the first tunnel packet toward the client was
	// forwarded on the new path; zero when none was. Only echoes arriving
	// from then on count as answered on the new path.
	NewPath time.Time
	// WindowStart: probes sent before it are ignored (connection setup).
	WindowStart time.Time
	// Bound: a recovery later than this after Event does not count.
	Bound time.Duration
}

// Result of one handover.
type Result struct {
	Sent      int           // probes sent in the window
	Lost      int           // of those, never answered
	Recovered bool          // answered on the new path within the bound
	Recovery  time.Duration // Event to the first echo on the new path
	RTT       time.Duration // median round trip of probes sent before Event
	Gap       time.Duration // longest time without any echo that ends after Event (or runs to the last probe)
	// SendGap is the longest time between two probes sent: far above the
	// interval, the sender itself was starved of CPU and the loss count
	// covers fewer probes than it should.
	SendGap time.Duration
}

// Analyze computes a handover's figures from a sender's records.
func Analyze(recs []Record, m Move) Result {
	var res Result
	var rtts []time.Duration
	var arrivals []time.Time
	var lastSent time.Time
	for _, r := range recs {
		if r.Sent.Before(m.WindowStart) {
			continue
		}
		if !lastSent.IsZero() && r.Sent.Sub(lastSent) > res.SendGap {
			res.SendGap = r.Sent.Sub(lastSent)
		}
		lastSent = r.Sent
		res.Sent++
		if !r.Answered() {
			res.Lost++
			continue
		}
		arrivals = append(arrivals, r.Recv)
		if r.Sent.Before(m.Event) {
			rtts = append(rtts, r.Recv.Sub(r.Sent))
		}
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		res.RTT = rtts[len(rtts)/2]
	}
	// The longest silence between two echoes that ends after the event
	// (echoes still in flight at the event can arrive just after it, so
	// "the silence around the event" alone would miss the outage).
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	prev := m.WindowStart
	for _, a := range arrivals {
		if a.After(m.Event) && a.Sub(prev) > res.Gap {
			res.Gap = a.Sub(prev)
		}
		prev = a
	}
	// Silence that never ended: from the last echo to the last probe.
	if lastSent.After(m.Event) && lastSent.Sub(prev) > res.Gap {
		res.Gap = lastSent.Sub(prev)
	}
	if m.NewPath.IsZero() {
		return res
	}
	notBefore := m.NewPath
	if at, ok := firstAnswer(recs, m.Applied, notBefore); ok {
		if d := at.Sub(m.Event); d <= m.Bound {
			res.Recovered = true
			res.Recovery = d
		}
	}
	return res
}

// firstAnswer returns the earliest echo arrival, not before notBefore, of
// a probe sent at or after sentFrom.
func firstAnswer(recs []Record, sentFrom, notBefore time.Time) (time.Time, bool) {
	var best time.Time
	for _, r := range recs {
		if r.Sent.Before(sentFrom) || !r.Answered() || r.Recv.Before(notBefore) {
			continue
		}
		if best.IsZero() || r.Recv.Before(best) {
			best = r.Recv
		}
	}
	return best, !best.IsZero()
}

// Summary of repeated runs of one scenario for one client.
type Summary struct {
	Runs      int
	Recovered int
	Median    time.Duration // of the recovered runs' Recovery; 0 when none
	Max       time.Duration
	// Loss over every run: a run that never recovered loses everything up
	// to the bound, and that is part of the picture.
	LostMed int
	LostMax int
	RTT     time.Duration // median of the runs' RTT
}

// Summarize aggregates runs. Runs that did not recover are left out of the
// recovery times (theirs is unknown, not "the bound") but not of the loss.
func Summarize(rs []Result) Summary {
	s := Summary{Runs: len(rs)}
	var rec []time.Duration
	var lost []int
	var rtts []time.Duration
	for _, r := range rs {
		if r.RTT > 0 {
			rtts = append(rtts, r.RTT)
		}
		lost = append(lost, r.Lost)
		if !r.Recovered {
			continue
		}
		s.Recovered++
		rec = append(rec, r.Recovery)
	}
	if len(rec) > 0 {
		s.Median = Median(rec)
		s.Max = slices.Max(rec)
	}
	if len(lost) > 0 {
		s.LostMed = Median(lost)
		s.LostMax = slices.Max(lost)
	}
	if len(rtts) > 0 {
		s.RTT = Median(rtts)
	}
	return s
}

// Median is the middle value, the mean of the two middle ones for an even
// count (the benchmarks' figures use it too).
func Median[T ~int | ~int64 | ~float64](v []T) T {
	v = slices.Clone(v)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Ratio is a/b of two medians, ok only when both sides recovered at least
// once (otherwise there is no median to compare).
func Ratio(a, b Summary) (float64, bool) {
	if a.Recovered == 0 || b.Recovered == 0 || b.Median <= 0 {
		return 0, false
	}
	return float64(a.Median) / float64(b.Median), true
}
