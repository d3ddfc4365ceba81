package errlog

import (
	"testing"
	"time"
)

func TestRateLog(t *testing.T) {
	var r RateLog
	sec := int64(time.Second)
	if n := r.Hit(1); n != 1 {
		t.Fatalf("first event: report %d, want 1", n)
	}
	for i := 0; i < 5; i++ {
		if n := r.Hit(2 + int64(i)*sec); n != 0 {
			t.Fatalf("event %d within 10s reported %d", i, n)
		}
	}
	if n := r.Add(1+rateLogEvery, 3); n != 8 {
		t.Fatalf("after 10s: report %d, want 8", n)
	}
	r.Hit(2 + rateLogEvery)
	if n := r.Flush(); n != 1 {
		t.Fatalf("flush %d, want 1", n)
	}
}

// The control socket's accept alerts through RateLog: Hit for a failure,
// Due when accept works again.
func TestRateLogAlertRuns(t *testing.T) {
	type step struct {
		at      time.Duration // since the start
		pending bool          // the failures stopped: due, not hit
		want    int           // -1: held back; else logged, with this many held back before it
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a run of failures", []step{{0, false, 0}, {100 * time.Millisecond, false, -1}, {200 * time.Millisecond, false, -1},
			{1050 * time.Millisecond, false, 2}, {1100 * time.Millisecond, false, -1}, {3 * time.Second, false, 1}}},
		{"the end of a run", []step{{0, false, 0}, {500 * time.Millisecond, false, -1},
			{700 * time.Millisecond, true, -1}, {1200 * time.Millisecond, true, 1}, {1300 * time.Millisecond, true, -1}}},
		{"nothing held back", []step{{0, false, 0}, {2 * time.Second, true, -1}, {3 * time.Second, false, 0}}},
		{"failures alternating with successes", []step{{0, false, 0}, {100 * time.Millisecond, true, -1},
			{200 * time.Millisecond, false, -1}, {300 * time.Millisecond, true, -1}, {1100 * time.Millisecond, true, 1},
			{1200 * time.Millisecond, false, -1}, {1300 * time.Millisecond, true, -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := RateLog{Every: int64(time.Second)}
			t0 := int64(1e9)
			for _, s := range tc.steps {
				now := t0 + int64(s.at)
				got := -1
				if s.pending {
					if n := r.Due(now); n > 0 {
						got = int(n)
					}
				} else if n := r.Hit(now); n > 0 {
					got = int(n) - 1 // Hit counts the failure it reports
				}
				if got != s.want {
					t.Errorf("at %s (pending %v): %d, want %d", s.at, s.pending, got, s.want)
				}
			}
		})
	}
}
