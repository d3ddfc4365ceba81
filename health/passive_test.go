package health

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// base is an arbitrary whole second, so offsets read as nginx's ngx_time().
var base = time.Unix(1_700_000_000, 0)

func at(sec float64) time.Time { return base.Add(time.Duration(sec * float64(time.Second))) }

// step is one event or assertion on a group, at base+at seconds.
type step struct {
	at float64
	op string // "fail", "fail!" (fail that disables), "ok", "pick", "reset", "up", "down"
	i  int
}

func runSteps(t *testing.T, g *Group, steps []step) {
	t.Helper()
	for n, s := range steps {
		now := at(s.at)
		p := g.Peer(s.i)
		switch s.op {
		case "fail", "fail!":
			if got, want := p.Failed(now), s.op == "fail!"; got != want {
				t.Fatalf("step %d (%v): Failed disabled = %v, want %v", n, s, got, want)
			}
		case "ok":
			p.Succeeded(now)
		case "pick":
			p.Picked(now)
		case "reset":
			g.ResetFails()
		case "up", "down":
			if got := p.Usable(now); got != (s.op == "up") {
				t.Fatalf("step %d (%v): Usable = %v; state %v", n, s, got, p.State(now))
			}
		default:
			t.Fatalf("bad op %q", s.op)
		}
	}
}

func two(maxFails int, failTimeout time.Duration) []Params {
	p := Params{Weight: 1, MaxFails: maxFails, FailTimeout: failTimeout}
	return []Params{p, p}
}

func TestPassive(t *testing.T) {
	tests := []struct {
		name   string
		params []Params
		steps  []step
	}{
		{"one failure disables for fail_timeout (max_fails=1)", two(1, 10*time.Second), []step{
			{0, "up", 0}, {0, "fail!", 0}, {0, "down", 0}, {10, "down", 0}, {10.999, "down", 0},
			{11, "up", 0}, {0, "up", 1},
		}},
		{"nginx counts whole seconds", two(1, 10*time.Second), []step{
			{0.9, "fail!", 0}, {10.99, "down", 0}, {11, "up", 0},
		}},
		{"sub-second fail_timeout rounds down", two(1, 1500*time.Millisecond), []step{
			{0, "fail!", 0}, {1, "down", 0}, {2, "up", 0},
		}},
		{"success after the retry clears", two(1, 10*time.Second), []step{
			{0, "fail!", 0}, {11, "pick", 0},
			{11, "down", 0}, // the probe holds other flows off for another fail_timeout
			{12, "ok", 0}, {12, "up", 0},
			{13, "fail!", 0}, {13, "down", 0}, // max_fails=1 again from scratch
		}},
		{"failed retry disables again", two(1, 10*time.Second), []step{
			{0, "fail!", 0}, {11, "pick", 0}, {12, "fail!", 0}, {22, "down", 0}, {23, "up", 0},
		}},
		{"max_fails within the window", two(3, 10*time.Second), []step{
			{0, "fail", 0}, {1, "fail", 0}, {1, "up", 0}, {2, "fail!", 0}, {2, "down", 0},
			{12, "down", 0}, {13, "up", 0},
		}},
		{"success within the window does not clear", two(2, 10*time.Second), []step{
			// accessed == checked: the peer was not picked since the failure
			// in a new window, so nginx keeps the count.
			{0, "fail", 0}, {5, "pick", 0}, {5, "ok", 0}, {8, "fail!", 0}, {8, "down", 0},
		}},
		{"window expiry: a success after fail_timeout clears", two(2, 10*time.Second), []step{
			{0, "fail", 0}, {11, "pick", 0}, {11, "ok", 0}, {12, "fail", 0}, {12, "up", 0},
		}},
		{"window expiry: an old failure counts until a success", two(2, 10*time.Second), []step{
			{0, "fail", 0}, {11, "pick", 0}, {12, "fail!", 0}, {12, "down", 0},
		}},
		{"max_fails=0 turns accounting off", two(0, 10*time.Second), []step{
			{0, "fail", 0}, {0, "fail", 0}, {0, "fail", 0}, {0, "up", 0},
		}},
		{"single server is never disabled", []Params{{Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}}, []step{
			{0, "fail", 0}, {0, "fail", 0}, {1, "up", 0}, {1, "pick", 0}, {1, "up", 0},
		}},
		{"one primary and a backup is not single", []Params{{MaxFails: 1, FailTimeout: 10 * time.Second}, {MaxFails: 1, FailTimeout: 10 * time.Second, Backup: true}}, []step{
			{0, "fail!", 0}, {1, "down", 0},
		}},
		{"reset on no peer makes every peer usable", two(1, 10*time.Second), []step{
			{0, "fail!", 0}, {0, "fail!", 1}, {1, "down", 0}, {1, "down", 1},
			{1, "reset", 0}, {1, "up", 0}, {1, "up", 1},
			{2, "fail!", 0}, // counting starts again from zero
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, NewGroup(tt.params), tt.steps)
		})
	}
}

func TestSingle(t *testing.T) {
	if !NewGroup([]Params{{}}).Single() {
		t.Error("one peer: not single")
	}
	if NewGroup([]Params{{}, {Backup: true}}).Single() {
		t.Error("primary and backup: single")
	}
	if NewGroup([]Params{{}, {}}).Single() {
		t.Error("two peers (e.g. one name, two addresses): single")
	}
}

func TestSlowStart(t *testing.T) {
	ps := []Params{{Weight: 5, MaxFails: 1, FailTimeout: 10 * time.Second, SlowStart: 10 * time.Second}, {Weight: 1}}
	g := NewGroup(ps)
	p := g.Peer(0)
	if w := p.Weight(at(0)); w != 5 {
		t.Fatalf("before any failure: weight %d, want 5", w)
	}
	p.Failed(at(0))
	p.Picked(at(11))
	p.Succeeded(at(11)) // recovered: the ramp starts
	for _, c := range []struct {
		sec  float64
		want int
	}{{11, 1}, {13, 1}, {14, 2}, {16, 3}, {20.5, 5}, {21, 5}, {30, 5}} {
		if w := p.Weight(at(c.sec)); w != c.want {
			t.Errorf("t=%v: weight %d, want %d", c.sec, w, c.want)
		}
	}
	if st := p.State(at(30)); st.Status != Up {
		t.Errorf("after the ramp: %v", st)
	}

	// An active check's down-to-up starts a ramp too; a failure that did not
	// disable the peer does not.
	p.setCheck(checkDown, at(40), errors.New("refused"))
	p.setCheck(checkUp, at(50), nil)
	if w := p.Weight(at(55)); w != 3 {
		t.Errorf("5s into the ramp after a check: weight %d, want 3", w)
	}
	if st := p.State(at(55)); st.Status != SlowStart || !st.Until.Equal(at(60)) {
		t.Errorf("state %+v", st)
	}

	// A single peer ignores slow_start.
	s := NewGroup(ps[:1]).Peer(0)
	s.setCheck(checkDown, at(0), nil)
	s.setCheck(checkUp, at(1), nil)
	if w := s.Weight(at(1)); w != 5 {
		t.Errorf("single: weight %d, want 5", w)
	}
}

func TestStateString(t *testing.T) {
	g := NewGroup(two(3, 10*time.Second))
	p := g.Peer(0)
	check := func(now time.Time, want string) {
		t.Helper()
		if got := p.State(now).String(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	ts := func(sec float64) string { return at(sec).Format(timeLayout) }
	check(at(0), "up")
	p.Failed(at(1))
	check(at(1), "failing since "+ts(1)+" (1 of 3 fails)")
	p.Failed(at(2))
	p.Failed(at(3))
	check(at(4), "unavailable until "+ts(14)+" (3 fails)")
	p.setCheck(checkDown, at(5), errors.New("connect: connection refused"))
	check(at(5), "down by check since "+ts(5)+": connect: connection refused")
	p.setCheck(checkPending, at(6), nil)
	check(at(6), "checking since "+ts(6))
	if s := Status(99).String(); s != "Status(99)" {
		t.Errorf("unknown status: %q", s)
	}
	if !strings.HasPrefix(NewGroup([]Params{{}}).Peer(0).State(at(0)).String(), "up") {
		t.Error("single peer not up")
	}
}

// TestConcurrent runs every method at once; run with -race.
func TestConcurrent(t *testing.T) {
	g := NewGroup(two(2, time.Second))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 2000 {
				now := at(float64(n) / 100)
				p := g.Peer(n % 2)
				if p.Usable(now) {
					p.Picked(now)
				}
				switch (n + w) % 5 {
				case 0:
					p.Failed(now)
				case 1:
					p.Succeeded(now)
				case 2:
					g.ResetFails()
				case 3:
					_ = p.State(now).String()
				}
				_ = p.Weight(now)
			}
		}()
	}
	wg.Wait()
}

func BenchmarkUsable(b *testing.B) {
	g := NewGroup(two(1, 10*time.Second))
	now := at(0)
	b.Run("healthy", func(b *testing.B) {
		p := g.Peer(0)
		b.ReportAllocs()
		for b.Loop() {
			if !p.Usable(now) {
				b.Fatal("unusable")
			}
		}
	})
	b.Run("disabled", func(b *testing.B) {
		p := g.Peer(1)
		p.Failed(now)
		b.ReportAllocs()
		for b.Loop() {
			if p.Usable(now) {
				b.Fatal("usable")
			}
		}
	})
	b.Run("pick-path", func(b *testing.B) { // Usable, Picked and Weight, as on every pick
		p := g.Peer(0)
		b.ReportAllocs()
		for b.Loop() {
			if p.Usable(now) {
				p.Picked(now)
				_ = p.Weight(now)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		p := g.Peer(0)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if p.Usable(now) {
					p.Picked(now)
				}
			}
		})
	})
}

func TestRampFraction(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := NewGroup([]Params{{Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, SlowStart: 10 * time.Second}, {Weight: 1}})
	p := g.Peer(0)
	if r := p.Ramp(t0); r != 1 {
		t.Fatalf("not ramping: %v", r)
	}
	p.Picked(t0)
	p.Failed(t0)
	t1 := t0.Add(11 * time.Second)
	p.Picked(t1)
	p.Succeeded(t1) // recovers: the ramp begins
	for _, tc := range []struct {
		after time.Duration
		want  float64
	}{{2500 * time.Millisecond, 0.25}, {5 * time.Second, 0.5}, {10 * time.Second, 1}, {20 * time.Second, 1}} {
		if r := p.Ramp(t1.Add(tc.after)); r < tc.want-0.01 || r > tc.want+0.01 {
			t.Errorf("Ramp after %s = %v, want %v", tc.after, r, tc.want)
		}
	}
}
