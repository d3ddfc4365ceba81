package errlog

import (
	"fmt"
	"time"
)

// rateLogEvery is RateLog's period unless it is given one.
const rateLogEvery = int64(10 * time.Second)

// RateLog counts events and says when one is worth a log line: the first,
// then at most one every rateLogEvery (10 s, or Every) with the count since
// the last line, TimesText saying how many it stands for. Its zero value is
// ready to use. It is owned by one goroutine.
type RateLog struct {
	Every   int64 // the shortest time between two reports, in nanoseconds; 0: 10 s
	last    int64
	pending uint64
}

// Hit counts one event at now (monotonic nanoseconds) and returns how many
// to report now, or 0.
func (r *RateLog) Hit(now int64) uint64 { return r.Add(now, 1) }

// Add counts n events at now, as Hit.
func (r *RateLog) Add(now int64, n uint64) uint64 {
	r.pending += n
	every := r.Every
	if every == 0 {
		every = rateLogEvery
	}
	if r.last != 0 && now-r.last < every {
		return 0
	}
	r.last = now
	c := r.pending
	r.pending = 0
	return c
}

// Due returns, when the events have stopped (an accept that works again),
// how many were not reported, if a report is due at now; the report counts
// as a line, so that events alternating with successes still make one line
// per period.
func (r *RateLog) Due(now int64) uint64 {
	if r.pending == 0 {
		return 0
	}
	return r.Add(now, 0)
}

// Flush returns the events not reported yet.
func (r *RateLog) Flush() uint64 {
	n := r.pending
	r.pending = 0
	return n
}

// TimesText says how many events a rate-limited log line stands for.
func TimesText(n uint64) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf(" (%d times since the last line)", n)
}
