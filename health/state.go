package health

import (
	"fmt"
	"time"
)

// Status is what a State says about a peer, worst first in the order
// State.Status picks it.
type Status int

// The statuses.
const (
	Up          Status = iota // takes flows at full weight
	Failing                   // takes flows, but has failures counted against it
	Unavailable               // max_fails failures within fail_timeout: no flows until it passes
	Checking                  // mandatory health check has not passed yet: no flows
	DownByCheck               // failed "fails" consecutive health checks: no flows
	SlowStart                 // recovered, takes flows at a reduced weight
)

var statusNames = [...]string{
	Up:          "up",
	Failing:     "failing",
	Unavailable: "unavailable",
	Checking:    "checking",
	DownByCheck: "down by check",
	SlowStart:   "slow start",
}

// String returns the status as "baton status" shows it: "up", "failing",
// "unavailable", "checking", "down by check" or "slow start".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// State is a snapshot of one peer's health for display.
type State struct {
	Status Status
	// Fails and MaxFails are nginx's counters; MaxFails 0 means accounting
	// is off (max_fails=0 or a single-peer group).
	Fails, MaxFails int
	// Since is when Status began: the first counted failure (Failing), the
	// last check transition (DownByCheck, Checking), the start of the ramp
	// (SlowStart). Zero for Up.
	Since time.Time
	// Until is when Unavailable ends by nginx's reckoning (the next pick
	// after it tries the peer again) or when SlowStart reaches full weight.
	Until time.Time
	// Weight is the weight in effect at the snapshot; FullWeight the
	// configured one.
	Weight, FullWeight int
	// CheckErr is the last failed health check's error, for DownByCheck.
	CheckErr string
}

// timeLayout is nginx's error_log time format.
const timeLayout = "2006/01/02 15:04:05"

// String describes the state in one line, e.g. "up", "failing since
// 2025/01/02 15:04:05 (1 of 3 fails)", "unavailable until 2025/01/02
// 15:04:15 (3 fails)", "checking", "down by check since 2025/01/02 15:04:05:
// dial tcp 10.0.0.1:5432: connect: connection refused", "slow start until
// 2025/01/02 15:04:35 (weight 2 of 5)".
func (s State) String() string {
	switch s.Status {
	case Up:
		return "up"
	case Failing:
		return fmt.Sprintf("failing since %s (%d of %d fails)", s.Since.Format(timeLayout), s.Fails, s.MaxFails)
	case Unavailable:
		return fmt.Sprintf("unavailable until %s (%d fails)", s.Until.Format(timeLayout), s.Fails)
	case Checking:
		return "checking since " + s.Since.Format(timeLayout)
	case DownByCheck:
		msg := "down by check since " + s.Since.Format(timeLayout)
		if s.CheckErr != "" {
			msg += ": " + s.CheckErr
		}
		return msg
	case SlowStart:
		return fmt.Sprintf("slow start until %s (weight %d of %d)", s.Until.Format(timeLayout), s.Weight, s.FullWeight)
	}
	return s.Status.String()
}

// State returns a snapshot of the peer's health at now, with times in now's
// location. It takes the peer's lock; it is for status display, not for the
// pick path.
func (p *Peer) State(now time.Time) State {
	st := p.state(now)
	if !st.Since.IsZero() {
		st.Since = st.Since.In(now.Location())
	}
	if !st.Until.IsZero() {
		st.Until = st.Until.In(now.Location())
	}
	return st
}

func (p *Peer) state(now time.Time) State {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := State{
		Fails:      int(p.fails.Load()),
		FullWeight: p.weight,
		Weight:     p.Weight(now),
	}
	if !p.single.Load() {
		st.MaxFails = int(p.maxFails)
	}
	switch p.check.Load() {
	case checkPending:
		st.Status, st.Since = Checking, time.Unix(0, p.checkSince.Load())
		return st
	case checkDown:
		st.Status, st.Since, st.CheckErr = DownByCheck, time.Unix(0, p.checkSince.Load()), p.checkErr
		return st
	}
	if st.MaxFails > 0 && st.Fails > 0 {
		checked := p.checked.Load()
		if int64(st.Fails) >= p.maxFails && now.Unix()-checked <= p.failTimeout {
			st.Status = Unavailable
			st.Until = time.Unix(checked+p.failTimeout+1, 0)
			return st
		}
		st.Status, st.Since = Failing, time.Unix(0, p.firstFail.Load())
		return st
	}
	if from := p.rampFrom.Load(); from != 0 {
		st.Status = SlowStart
		st.Since = time.Unix(0, from)
		st.Until = st.Since.Add(p.slowStart)
		return st
	}
	return st
}
