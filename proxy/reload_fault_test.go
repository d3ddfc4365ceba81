package proxy

import (
	"fmt"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// Issue 13, fault 1: a loop whose accept pause (acceptResume, set at the
// connection cap or after EMFILE) came due in the same pass as a reload's
// disarm command re-armed at once, from the shared listener slice the
// reload was about to rewrite: -race reported it, and the listeners kept
// their old epoll tags, so with the list shrunk the next connection
// indexed past its end (a panic), or was accepted for the wrong listener.
// The test makes that pass happen: the loop is held while a command that
// makes its pause due and the reload's command queue up behind each other.
// Each loop now arms its own copy of the listeners, and a reload holds it
// disarmed until it hands it the new set.
func TestReloadWhilePauseComesDue(t *testing.T) {
	b := startBackend(t, "echo", echo)
	const n = 8 // listeners, then only the last: it moves from index 7 to 0
	cfgOf := func(addrs []string) *config.Config {
		return testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
			s.Listen = nil
			for i, a := range addrs {
				s.Listen = append(s.Listen, &config.Listen{Addr: netip.MustParseAddrPort(a), Text: fmt.Sprintf("l%d", i), Backlog: 511})
			}
		})
	}
	zero := make([]string, n)
	for i := range zero {
		zero[i] = "127.0.0.1:0"
	}
	p, _ := startProxyWith(t, cfgOf(zero), Options{Loops: 1}, nil)
	kept := p.Addrs()[n-1].String()
	l := p.loops[0]

	gate, inGate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	defer open() // a failure below must not leave the loop blocked
	l.do(func() { close(inGate); <-gate })
	<-inGate
	l.do(func() { l.pauseAccept(0) }) // due at once, in the pass that runs it
	done := make(chan error, 1)
	go func() {
		_, err := p.Reload(cfgOf([]string{kept}))
		done <- err
	}()
	waitFor(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.cmds) == 2 // the pause and the reload's first command
	})
	open()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reload did not return")
	}
	c := dial(t, kept)
	defer c.Close()
	io.WriteString(c, "kept\n")
	if got := readLine(t, c); got != "kept" {
		t.Fatalf("the kept listener after the reload: %q", got)
	}
}

// Issue 13, fault 2: a reload that adds "health_check mandatory" to an
// upstream whose servers did not change used to reuse its group and give
// it a monitor nobody started: its peers stayed "checking" and every
// client got "no live upstreams". The check is part of the upstream's
// signature now: a new check makes a new group, whose monitor starts.
func TestReloadAddsMandatoryHealthCheck(t *testing.T) {
	b := startBackend(t, "b", greet("b"))
	plain := testConfig([]upstreamSpec{{addr: b.addr()}}, nil)
	p, addr, _ := startProxy(t, plain)
	checked := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
		s.HealthCheck = &config.HealthCheck{Interval: 50 * time.Millisecond, Fails: 1, Passes: 1, Mandatory: true, Timeout: time.Second}
	})
	ch, err := p.Reload(checked)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.UpstreamsChanged) != 1 {
		t.Errorf("changes: %+v, want the upstream changed", ch)
	}
	// The first check passes within an interval or so; then clients are
	// served.
	waitFor(t, func() bool { return p.Status().Upstreams[0].Servers[0].State == "up" })
	if got := readLine(t, dial(t, addr)); got != "b" {
		t.Fatalf("after adding a mandatory check: %q", got)
	}
	// Removing it takes it away: no monitor is left running on the live group.
	back := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) { s.Listen[0].Addr = netip.MustParseAddrPort(addr) })
	if _, err := p.Reload(back); err != nil {
		t.Fatal(err)
	}
	if g := p.groups[0]; g.monitor.Load() != nil {
		t.Errorf("the check was removed, yet the upstream has a monitor")
	}
}
