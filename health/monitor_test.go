package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestVerdict(t *testing.T) {
	tests := []struct {
		name      string
		mandatory bool
		fails     int
		passes    int
		results   string // p = pass, f = fail
		want      string // the verdict after each result: U up, D down, P pending; lower case when unchanged
	}{
		{"defaults: one fail, one pass", false, 1, 1, "pfpfp", "uDUDU"},
		{"fails=3", false, 3, 1, "ffpfff", "uuuuuD"},
		{"passes=2", false, 1, 2, "fpfppp", "DdddUu"},
		{"mandatory: first pass", true, 1, 1, "pp", "Uu"},
		{"mandatory: first fails, then passes needed", true, 1, 2, "fppf", "DdUD"},
		{"consecutive means consecutive", false, 2, 2, "fpfpffppp", "uuuuuDdUu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerdict(tt.mandatory, tt.fails, tt.passes)
			got := make([]byte, 0, len(tt.results))
			for _, r := range tt.results {
				changed := v.record(r == 'p')
				c := byte('u')
				switch {
				case v.pending:
					c = 'p'
				case !v.up:
					c = 'd'
				}
				if changed {
					c -= 'a' - 'A'
				}
				got = append(got, c)
			}
			if string(got) != tt.want {
				t.Errorf("results %s: got %s, want %s", tt.results, got, tt.want)
			}
		})
	}
}

// scripted is a Checker whose results per address come from a channel the
// test feeds, so the state logic runs without sleeps.
type scripted struct {
	results map[string]chan error
}

func (s *scripted) Check(ctx context.Context, addr string) error {
	select {
	case err := <-s.results[addr]:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestMonitorVerdicts(t *testing.T) {
	g := NewGroup(two(1, 10*time.Second))
	s := &scripted{results: map[string]chan error{"a:1": make(chan error), "b:1": make(chan error)}}
	changes := make(chan Change)
	clock := func() time.Time { return at(100) }
	m, err := NewMonitor(MonitorConfig{
		Checker:  s,
		Targets:  []Target{{Addr: "a:1", Peer: g.Peer(0)}, {Addr: "b:1", Peer: g.Peer(1)}},
		Interval: time.Millisecond,
		Fails:    2,
		Now:      clock,
		OnChange: func(c Change) { changes <- c },
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	defer m.Stop()

	refused := errors.New("refused")
	s.results["a:1"] <- refused
	s.results["a:1"] <- refused
	c := <-changes
	if c.Index != 0 || c.Up || c.Err != refused || !c.At.Equal(at(100)) {
		t.Fatalf("change %+v", c)
	}
	if g.Peer(0).Usable(at(100)) {
		t.Fatal("down by check, yet usable")
	}
	if st := g.Peer(0).State(at(100)); st.Status != DownByCheck || st.CheckErr != "refused" {
		t.Fatalf("state %v", st)
	}
	s.results["b:1"] <- nil // a pass on a healthy target changes nothing
	s.results["a:1"] <- nil
	if c := <-changes; c.Index != 0 || !c.Up {
		t.Fatalf("change %+v", c)
	}
	if !g.Peer(0).Usable(at(100)) || !g.Peer(1).Usable(at(100)) {
		t.Fatal("up, yet unusable")
	}
}

func TestMonitorMandatory(t *testing.T) {
	g := NewGroup(two(1, 10*time.Second))
	s := &scripted{results: map[string]chan error{"a:1": make(chan error)}}
	changes := make(chan Change)
	m, err := NewMonitor(MonitorConfig{
		Checker: s, Targets: []Target{{Addr: "a:1", Peer: g.Peer(0)}}, Mandatory: true,
		OnChange: func(c Change) { changes <- c },
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.Peer(0).Usable(at(0)) {
		t.Fatal("mandatory: usable before the first check")
	}
	if st := g.Peer(0).State(at(0)); st.Status != Checking {
		t.Fatalf("state %v", st)
	}
	m.Start(context.Background())
	defer m.Stop()
	s.results["a:1"] <- nil
	<-changes
	if !g.Peer(0).Usable(at(0)) {
		t.Fatal("first check passed, yet unusable")
	}
}

// TestMonitorStopNoLeak: Stop cancels checks in flight and returns after
// every goroutine is gone, and so does the end of Run's context.
func TestMonitorStopNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	var started sync.WaitGroup
	started.Add(8)
	blocker := CheckerFunc(func(ctx context.Context, addr string) error {
		started.Done()
		<-ctx.Done() // only Stop ends it
		return ctx.Err()
	})
	targets := make([]Target, 8)
	for i := range targets {
		targets[i].Addr = "x:1"
	}
	m, err := NewMonitor(MonitorConfig{Checker: blocker, Targets: targets, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	started.Wait()
	m.Stop()
	m.Stop() // idempotent
	waitGoroutines(t, before)

	ctx, cancel := context.WithCancel(context.Background())
	m, _ = NewMonitor(MonitorConfig{Checker: CheckerFunc(func(context.Context, string) error { return nil }),
		Targets: targets, Interval: time.Millisecond})
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	cancel()
	<-done
	waitGoroutines(t, before)

	m, _ = NewMonitor(MonitorConfig{Checker: blocker, Targets: targets})
	m.Stop() // before Start: Start then does nothing
	m.Start(context.Background())
	waitGoroutines(t, before)
}

// waitGoroutines waits until no more than n goroutines run: a goroutine that
// has called wg.Done is still counted until it returns.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

// TestMonitorOneInFlight: a check slower than the interval delays the next
// check of its target instead of overlapping it.
func TestMonitorOneInFlight(t *testing.T) {
	var inflight, most, calls atomic.Int32
	done := make(chan struct{})
	slow := CheckerFunc(func(ctx context.Context, addr string) error {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-time.After(5 * time.Millisecond): // five intervals
		case <-ctx.Done():
		}
		if calls.Add(1) == 5 {
			close(done)
		}
		return nil
	})
	m, _ := NewMonitor(MonitorConfig{Checker: slow, Targets: []Target{{Addr: "x:1"}}, Interval: time.Millisecond})
	m.Start(context.Background())
	<-done
	m.Stop()
	if most.Load() != 1 {
		t.Fatalf("%d checks of one target in flight at once", most.Load())
	}
}

// TestMonitorTCP runs the real TCP checker against loopback: a server that
// greets passes, a closed port fails, and port= redirects the check.
func TestMonitorTCP(t *testing.T) {
	ok := serve(t, func(c net.Conn) { io.WriteString(c, "+OK ready\r\n") })
	bad := closedPort(t, "tcp")
	g := NewGroup(two(1, 10*time.Second))
	changes := make(chan Change, 4)
	m, err := NewMonitor(MonitorConfig{
		Checker:   &TCPChecker{Match: &Match{Name: "ok", Expect: []byte("+OK")}},
		Targets:   []Target{{Addr: ok, Peer: g.Peer(0)}, {Addr: bad, Peer: g.Peer(1)}},
		Mandatory: true,
		Interval:  time.Hour, // the first check runs at once
		Timeout:   5 * time.Second,
		OnChange:  func(c Change) { changes <- c },
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	defer m.Stop()
	for range 2 {
		c := <-changes
		if want := c.Index == 0; c.Up != want {
			t.Errorf("change %+v: Up %v, want %v", c, c.Up, want)
		}
	}
	if !g.Peer(0).Usable(at(0)) || g.Peer(1).Usable(at(0)) {
		t.Error("usable: want peer 0 only")
	}

	// port= checks another port on the same host.
	_, okPort, _ := net.SplitHostPort(ok)
	var port int
	for _, d := range okPort {
		port = port*10 + int(d-'0')
	}
	m2, err := NewMonitor(MonitorConfig{Checker: &TCPChecker{}, Targets: []Target{{Addr: bad}}, Port: port,
		Mandatory: true, Interval: time.Hour, OnChange: func(c Change) { changes <- c }})
	if err != nil {
		t.Fatal(err)
	}
	m2.Start(context.Background())
	defer m2.Stop()
	if c := <-changes; !c.Up || c.Addr != ok {
		t.Errorf("port=: change %+v, want up on %s", c, ok)
	}
}

func TestNewMonitorErrors(t *testing.T) {
	nop := CheckerFunc(func(context.Context, string) error { return nil })
	for _, cfg := range []MonitorConfig{
		{},
		{Checker: nop, Interval: -1},
		{Checker: nop, Fails: -1},
		{Checker: nop, Port: 70000},
		{Checker: nop, Port: 80, Targets: []Target{{Addr: "no-port"}}},
	} {
		if _, err := NewMonitor(cfg); err == nil {
			t.Errorf("NewMonitor(%+v): no error", cfg)
		}
	}
}

// A check that fails because this process could not make a socket (EMFILE)
// says nothing about the target: no verdict changes, however many come.
func TestMonitorLocalErrorIsNotTheTargets(t *testing.T) {
	g := NewGroup(two(1, 10*time.Second))
	s := &scripted{results: map[string]chan error{"a:1": make(chan error)}}
	changes := make(chan Change, 1)
	m, err := NewMonitor(MonitorConfig{
		Checker: s, Targets: []Target{{Addr: "a:1", Peer: g.Peer(0)}}, Interval: time.Millisecond,
		OnChange: func(c Change) { changes <- c },
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	defer m.Stop()
	emfile := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	for i := 0; i < 5; i++ {
		s.results["a:1"] <- fmt.Errorf("health: connect to a:1: %w", emfile)
	}
	s.results["a:1"] <- nil // the sixth check has begun: the five were recorded
	select {
	case c := <-changes:
		t.Fatalf("a local failure changed the verdict: %+v", c)
	default:
	}
	if !g.Peer(0).Usable(at(100)) {
		t.Fatal("down after local failures")
	}
	s.results["a:1"] <- errors.New("refused") // a real failure still counts
	if c := <-changes; c.Up {
		t.Fatalf("change %+v", c)
	}
}
