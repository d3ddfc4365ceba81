package lb

import (
	"errors"
	"testing"
	"time"
)

// timedState is a CheckedState kept by a test: live connections, and each
// peer's nginx "checked" second and fail_timeout.
type timedState struct {
	active  []int
	checked []int64
	timeout []int64
}

func (s *timedState) Active(i int) int                  { return s.active[i] }
func (s *timedState) Checked(i int) (checked, ft int64) { return s.checked[i], s.timeout[i] }

// newTimed returns n idle peers, each checked at t0 with fail_timeout=10s.
func newTimed(n int, t0 time.Time) *timedState {
	s := &timedState{active: make([]int, n), checked: make([]int64, n), timeout: make([]int64, n)}
	for i := range n {
		s.checked[i], s.timeout[i] = t0.Unix(), 10
	}
	return s
}

// clock is a settable clock for Options.Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                { return c.t }
func (c *clock) add(d time.Duration)           { c.t = c.t.Add(d) }
func ms(n int) time.Duration                   { return time.Duration(n) * time.Millisecond }
func done(total int) Times                     { return Times{Connect: ms(1), FirstByte: ms(2), Total: ms(total)} }
func ltOf(t *testing.T, b Balancer) *leastTime { t.Helper(); return b.(*leastTime) }

var t0 = time.Unix(1_700_000_000, 0)

// TestLeastTimeAverage: ngx_stream_upstream_response_time_avg, the first
// sample as it is, then avg*0.95 + v*0.05 rounded half up.
func TestLeastTimeAverage(t *testing.T) {
	for _, tc := range []struct {
		from, v, want uint64
	}{
		{0, 4000, 4000},    // first sample
		{100, 0, 95},       // 0.5 + 0 + 95 = 95.5 → 95
		{100, 200, 105},    // 0.5 + 10 + 95 = 105.5 → 105
		{4000, 1, 3800},    // 0.5 + 0.05 + 3800 = 3800.55
		{19, 30, 20},       // 0.5 + 1.5 + 18.05 = 20.05
		{3, 0, 3},          // 0.5 + 2.85 = 3.35: a small average never drains to 0
		{1000, 1010, 1001}, // 0.5 + 50.5 + 950 = 1001
	} {
		a := tc.from
		avg(&a, tc.v)
		if a != tc.want {
			t.Errorf("avg(%d, %d) = %d, want %d", tc.from, tc.v, a, tc.want)
		}
	}
}

// TestLeastTimeEta checks the estimate's steps one by one: the mode's
// average, the 20 ms clusters, the 5000 ms cap, live connections and
// weights.
func TestLeastTimeEta(t *testing.T) {
	c := &clock{t0}
	tests := []struct {
		name    string
		method  Method
		weights []int
		active  []int
		times   []Times // one successful attempt per peer (Total < 0: none)
		want    int
	}{
		{"faster last byte", LeastTimeLastByte, []int{1, 1}, []int{0, 0},
			[]Times{done(4000), done(10)}, 1},
		{"slower last byte", LeastTimeLastByte, []int{1, 1}, []int{0, 0},
			[]Times{done(10), done(4000)}, 0},
		{"by connect", LeastTimeConnect, []int{1, 1}, []int{0, 0},
			[]Times{{ms(50), ms(60), ms(70)}, {ms(5), ms(900), ms(5000)}}, 1},
		{"by first byte", LeastTimeFirstByte, []int{1, 1}, []int{0, 0},
			[]Times{{ms(5), ms(1000), ms(1100)}, {ms(50), ms(60), ms(9000)}}, 1},
		// 39 and 21 both round up to 40: a tie, so round robin, from a.
		{"same cluster", LeastTimeLastByte, []int{1, 1}, []int{0, 0},
			[]Times{done(39), done(21)}, 0},
		// 40 is the next cluster: 60 against 40.
		{"next cluster", LeastTimeLastByte, []int{1, 1}, []int{0, 0},
			[]Times{done(40), done(21)}, 1},
		// 60·(1+0) = 60 beats 20·(1+3) = 80.
		{"connections count", LeastTimeLastByte, []int{1, 1}, []int{0, 3},
			[]Times{done(50), done(5)}, 0},
		// Over 5000 everything is 5000: least_conn.
		{"cap", LeastTimeLastByte, []int{1, 1}, []int{1, 0},
			[]Times{done(6000), done(90000)}, 1},
		// 60 at weight 2 (30 a unit) beats 40 at weight 1.
		{"weights", LeastTimeLastByte, []int{2, 1}, []int{0, 0},
			[]Times{done(50), done(30)}, 0},
		// A failed attempt's times are not averaged: both stay at 0 → 20.
		{"failed not averaged", LeastTimeLastByte, []int{1, 1}, []int{0, 0},
			[]Times{done(-1), done(-1)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newTimed(len(tt.weights), t0)
			b := mustNew(t, tt.method, weighted(tt.weights...), Options{State: st, Now: c.now})
			tm := b.(Timer)
			for i, x := range tt.times {
				if x.Total < 0 {
					tm.Done(i, true, Times{Connect: -1, FirstByte: -1, Total: ms(5000)})
					continue
				}
				tm.Done(i, false, x)
			}
			copy(st.active, tt.active)
			if i := mustPick(t, b, nil); i != tt.want {
				t.Errorf("got %d, want %d", i, tt.want)
			}
		})
	}
}

// TestLeastTimeTies: peers with equal estimates per unit of weight share by
// smooth weighted round robin among them.
func TestLeastTimeTies(t *testing.T) {
	c := &clock{t0}
	b := mustNew(t, LeastTimeLastByte, weighted(1, 1, 1), Options{State: newTimed(3, t0), Now: c.now})
	if got, want := seq(t, b, 6, all), "abcabc"; got != want {
		t.Errorf("no samples: got %s, want %s", got, want)
	}

	// a is slow; b and c tie.
	b = mustNew(t, LeastTimeLastByte, weighted(1, 1, 1), Options{State: newTimed(3, t0), Now: c.now})
	tm := b.(Timer)
	tm.Done(0, false, done(300))
	tm.Done(1, false, done(1))
	tm.Done(2, false, done(19))
	if got, want := seq(t, b, 6, all), "bcbcbc"; got != want {
		t.Errorf("b and c tie: got %s, want %s", got, want)
	}

	// nginx's tie pass compares each peer's estimate with the first best's
	// but multiplies by the current best's weight. With a (w2, eta 40),
	// b (w1, eta 20) and c (w2, eta 40), all 20 a unit of weight, c drops
	// out of the second pick once b leads: a b c a b, where a plain smooth
	// round robin of 2, 1, 2 would give a c b a c.
	st := newTimed(3, t0)
	b = mustNew(t, LeastTimeLastByte, weighted(2, 1, 2), Options{State: st, Now: c.now})
	tm = b.(Timer)
	tm.Done(0, false, done(30))
	tm.Done(1, false, done(5))
	tm.Done(2, false, done(30))
	if got, want := seq(t, b, 6, all), "abcabc"; got != want {
		t.Errorf("nginx's tie pass: got %s, want %s", got, want)
	}
}

// TestLeastTimeDecay: once more than fail_timeout passed since a peer was
// checked, its average halves for every fail_timeout+1 seconds, which is
// how nginx's test gets its slow peer a probe ("response time decay").
func TestLeastTimeDecay(t *testing.T) {
	c := &clock{t0}
	st := newTimed(2, t0)
	st.timeout[0] = 0 // "fail_timeout=0", as nginx's test
	b := mustNew(t, LeastTimeLastByte, weighted(1, 1), Options{State: st, Now: c.now})
	lt := ltOf(t, b)
	lt.Done(0, false, done(4000))
	lt.Done(1, false, done(10))
	for _, tc := range []struct {
		after time.Duration
		a     uint64 // a's estimate
	}{
		{0, 4020},              // not more than fail_timeout: as it is
		{time.Second, 2020},    // 4000>>1
		{4 * time.Second, 260}, // 4000>>4 = 250
		{8 * time.Second, 20},  // 4000>>8 = 15, the lowest cluster: a tie with b
		{70 * time.Second, 20}, // shifted out
		{999 * time.Hour, 20},  // a shift past 63: 0
	} {
		c.t = t0.Add(tc.after)
		if got := lt.etaLocked(0, c.t.Unix()); got != tc.a {
			t.Errorf("after %v: eta %d, want %d", tc.after, got, tc.a)
		}
	}
	// With fail_timeout=10s, no decay up to 10s, then a halving every 11s.
	st.timeout[0] = 10
	for _, tc := range []struct {
		after time.Duration
		a     uint64
	}{
		{10 * time.Second, 4020},
		{11 * time.Second, 2020},
		{21 * time.Second, 2020},
		{22 * time.Second, 1020},
	} {
		if got := lt.etaLocked(0, t0.Add(tc.after).Unix()); got != tc.a {
			t.Errorf("fail_timeout=10s, after %v: eta %d, want %d", tc.after, got, tc.a)
		}
	}
	// A peer never checked (0) has decayed entirely.
	st.checked[0] = 0
	if got := lt.etaLocked(0, t0.Unix()); got != 20 {
		t.Errorf("never checked: %d, want 20", got)
	}
}

// TestLeastTimeInflight: with "inflight", flows count from their pick, and
// a peer whose flows in flight are older than its average is judged by
// their age ("lesser inflight time wins").
func TestLeastTimeInflight(t *testing.T) {
	c := &clock{t0}
	st := newTimed(2, t0)
	b := mustNew(t, LeastTimeLastByte, weighted(1, 1), Options{State: st, Now: c.now, Inflight: true})
	lt := ltOf(t, b)
	if i := mustPick(t, b, nil); i != 0 {
		t.Fatalf("first pick %d", i)
	}
	st.active[0] = 1
	if got := lt.times[0]; got.inflightReqs != 1 || got.inflightChanged != 0 {
		t.Fatalf("after the pick: %+v", got)
	}
	// 2.1 s later a's flow is still in flight: its age is the estimate.
	c.add(2100 * time.Millisecond)
	if i := mustPick(t, b, nil); i != 1 {
		t.Errorf("second pick %d, want 1 (a's flow is 2100 ms old)", i)
	}
	st.active[1] = 1
	if got := lt.times[0].inflightTime; got != 2100 {
		t.Errorf("a's inflight average %d, want 2100", got)
	}
	// b's flow is 100 ms old: (100+20)·2 = 240 against a's 2120·2.
	c.add(100 * time.Millisecond)
	if i := mustPick(t, b, nil); i != 1 {
		t.Errorf("third pick %d, want 1", i)
	}
	st.active[1] = 2
	// b now has 2 in flight, one 100 ms old, one new: sum 100 at 2200 ms.
	if got := lt.times[1]; got.inflightReqs != 2 || got.inflightLast != 100 || got.inflightChanged != 2200 {
		t.Errorf("b: %+v", got)
	}
	// One of b's ends after 150 ms (50 ms from now): the sum keeps the
	// others' age, 100+50·2-150 = 50, as nginx's inflight_done.
	c.add(50 * time.Millisecond)
	lt.Done(1, false, done(150))
	st.active[1] = 1
	if got := lt.times[1]; got.inflightReqs != 1 || got.inflightLast != 50 || got.inflightChanged != 2250 || got.lastByte != 150 {
		t.Errorf("b after one ended: %+v", got)
	}
	// The last one leaves nothing in flight; Done with none left changes
	// nothing (a flow the balancer did not count).
	lt.Done(1, false, done(200))
	lt.Done(1, false, done(200))
	if got := lt.times[1]; got.inflightReqs != 0 || got.inflightLast != 0 {
		t.Errorf("b after both ended: %+v", got)
	}
	// A failed attempt is out of flight but not averaged.
	lt.Done(0, true, Times{Connect: -1, FirstByte: -1, Total: -1})
	if got := lt.times[0]; got.inflightReqs != 0 || got.lastByte != 0 {
		t.Errorf("a after its failure: %+v", got)
	}
}

// TestLeastTimeInflightNotify: with inflight, the mode's own time is
// averaged when it is known (Connected, FirstByte), which also takes the
// flow out of flight; Done then leaves both alone.
func TestLeastTimeInflightNotify(t *testing.T) {
	c := &clock{t0}
	for _, tc := range []struct {
		method Method
		notify func(Timer)
		avg    func(ltPeer) uint64
	}{
		{LeastTimeConnect, func(tm Timer) { tm.Connected(0, ms(7)) }, func(p ltPeer) uint64 { return p.connect }},
		{LeastTimeFirstByte, func(tm Timer) { tm.FirstByte(0, ms(7)) }, func(p ltPeer) uint64 { return p.firstByte }},
	} {
		st := newTimed(2, t0)
		b := mustNew(t, tc.method, weighted(1, 1), Options{State: st, Now: c.now, Inflight: true})
		lt := ltOf(t, b)
		mustPick(t, b, nil)
		tc.notify(lt)
		if p := lt.times[0]; p.inflightReqs != 0 || tc.avg(p) != 7 {
			t.Errorf("%v: after the notify %+v", tc.method, p)
		}
		lt.Done(0, false, Times{Connect: ms(7), FirstByte: ms(7), Total: ms(900)})
		if p := lt.times[0]; p.inflightReqs != 0 || tc.avg(p) != 7 || p.lastByte != 900 {
			t.Errorf("%v: after Done %+v", tc.method, p)
		}
	}
	// Without inflight the notifications change nothing: Done averages.
	b := mustNew(t, LeastTimeConnect, weighted(1, 1), Options{State: newTimed(2, t0), Now: c.now})
	lt := ltOf(t, b)
	lt.Connected(0, ms(7))
	lt.FirstByte(0, ms(8))
	if p := lt.times[0]; p != (ltPeer{}) {
		t.Errorf("notified without inflight: %+v", p)
	}
	// A session that never connected or saw a byte averages its total only.
	lt.Done(0, false, Times{Connect: -1, FirstByte: -1, Total: ms(30)})
	if p := lt.times[0]; p != (ltPeer{lastByte: 30}) {
		t.Errorf("unconnected session: %+v", p)
	}
}

func TestLeastTimeBackupAndSingle(t *testing.T) {
	c := &clock{t0}
	peers := []Peer{{Name: "a:1"}, {Name: "b:1"}, {Name: "c:1", Backup: true}, {Name: "d:1", Backup: true}}
	st := newTimed(4, t0)
	b := mustNew(t, LeastTimeLastByte, peers, Options{State: st, Now: c.now, Inflight: true})
	tm := b.(Timer)
	tm.Done(0, false, done(900))
	tm.Done(2, false, done(900))
	if i := mustPick(t, b, nil); i != 1 {
		t.Errorf("primaries up: got %d, want 1 (backups are not compared)", i)
	}
	if i, _ := b.Pick(nil, func(i int) bool { return i >= 2 }); i != 3 {
		t.Errorf("primaries down: got %d, want 3", i)
	}
	if _, err := b.Pick(nil, func(int) bool { return false }); !errors.Is(err, ErrNoPeer) {
		t.Errorf("none usable: %v", err)
	}

	// A single peer is round robin: nothing counted in flight.
	b = mustNew(t, LeastTimeFirstByte, weighted(1), Options{State: newTimed(1, t0), Now: c.now, Inflight: true})
	if i := mustPick(t, b, nil); i != 0 {
		t.Errorf("single: %d", i)
	}
	if p := ltOf(t, b).times[0]; p.inflightReqs != 0 {
		t.Errorf("single counted in flight: %+v", p)
	}
}

func TestLeastTimeOptions(t *testing.T) {
	if _, err := New(LeastConn, weighted(1, 1), Options{Inflight: true}); err == nil {
		t.Error("inflight accepted with least_conn")
	}
	for _, m := range []Method{LeastTimeConnect, LeastTimeFirstByte, LeastTimeLastByte} {
		if got, err := ParseMethod(m.String()); got != m || err != nil {
			t.Errorf("%q: %v %v", m.String(), got, err)
		}
	}
	// No State, no clock: every peer idle, nothing decays, every estimate
	// is 20, and per unit of weight a's is the least: unlike least_conn's
	// 0 for idle peers, it does not tie.
	b := mustNew(t, LeastTimeConnect, weighted(5, 1, 1), Options{})
	if got, want := seq(t, b, 7, all), "aaaaaaa"; got != want {
		t.Errorf("no state: got %s, want %s", got, want)
	}
}
