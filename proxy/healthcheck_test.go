package proxy

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// waitStatus polls the proxy's status (at most 10s) until ok accepts it.
func waitStatus(t *testing.T, p *Proxy, ok func(Status) bool) Status {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		st := p.Status()
		if ok(st) {
			return st
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("status never became as expected: %+v", st)
		}
	}
}

// With "health_check ... mandatory" a server that was dead before the
// clients arrived never sees a client connection: not one connect() to it
// fails, and every client is served.
func TestHealthCheckMandatoryNeverTriesDeadServer(t *testing.T) {
	a := startBackend(t, "a", greet("a"))
	b := startBackend(t, "b", greet("b"))
	dead := deadAddr(t)
	cfg := testConfig([]upstreamSpec{{addr: a.addr()}, {addr: dead}, {addr: b.addr()}}, func(s *config.Server) {
		s.HealthCheck = &config.HealthCheck{Interval: 50 * time.Millisecond, Fails: 1, Passes: 1, Mandatory: true, Timeout: time.Second}
	})
	p, addr, log := startProxy(t, cfg)
	waitStatus(t, p, func(st Status) bool {
		sv := st.Upstreams[0].Servers
		return sv[0].Up && sv[2].Up
	})
	for i := 0; i < 30; i++ {
		c := dial(t, addr)
		if got := readLine(t, c); got != "a" && got != "b" {
			t.Fatalf("connection %d: %q", i, got)
		}
		c.Close()
	}
	if strings.Contains(log.String(), "connect() failed") {
		t.Fatalf("a client connection was attempted to the dead server:\n%s", log)
	}
	st := p.Status().Upstreams[0].Servers[1]
	if st.Up || !strings.HasPrefix(st.State, "down by check") || st.ConnectFails != 0 {
		t.Fatalf("dead server status: %+v", st)
	}
}

// A server that fails its check is skipped before any client is sent to it,
// and comes back when it passes again; a match decides what passing means.
func TestHealthCheckMatch(t *testing.T) {
	good := startBackend(t, "good", greet("OK good"))
	bad := startBackend(t, "bad", greet("ERR bad"))
	cfg := testConfig([]upstreamSpec{{addr: good.addr()}, {addr: bad.addr()}}, func(s *config.Server) {
		s.HealthCheck = &config.HealthCheck{Interval: 50 * time.Millisecond, Fails: 1, Passes: 1, Timeout: time.Second,
			Match: &config.Match{Name: "ok", Regexp: regexp.MustCompile(`^OK`)}}
	})
	p, addr, _ := startProxy(t, cfg)
	waitStatus(t, p, func(st Status) bool { return !st.Upstreams[0].Servers[1].Up })
	for i := 0; i < 10; i++ {
		c := dial(t, addr)
		if got := readLine(t, c); got != "OK good" {
			t.Fatalf("connection %d reached %q, a server that fails its check", i, got)
		}
		c.Close()
	}
}

// slow_start: a recovered server's share of new connections grows with the
// ramp instead of jumping to its full share.
func TestSlowStartSpreadsConnections(t *testing.T) {
	const ramp = 10 * time.Second
	u := &config.Upstream{Name: "u"}
	for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2"} {
		ap := netip.MustParseAddrPort(a)
		u.Servers = append(u.Servers, &config.UpstreamServer{Name: a, Addrs: []netip.AddrPort{ap}, Weight: 1, MaxFails: 1, FailTimeout: time.Second, SlowStart: ramp})
	}
	g, err := newGroup(u, builtinVars)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_000_000, 0)
	h := g.health.Peer(1)
	h.Picked(t0)
	h.Failed(t0) // disabled for fail_timeout
	t1 := t0.Add(2 * time.Second)
	h.Picked(t1)
	h.Succeeded(t1) // recovered: the ramp starts at t1

	share := func(at time.Duration) float64 {
		now := t1.Add(at)
		usable := func(i int) bool { return g.usable(i, now) }
		n := 0
		const picks = 20000
		for i := 0; i < picks; i++ {
			j, err := g.bal.Pick(nil, usable)
			if err != nil {
				t.Fatal(err)
			}
			if j == 1 {
				n++
			}
		}
		return float64(n) / picks
	}
	s10, s50, s100 := share(ramp/10), share(ramp/2), share(2*ramp)
	t.Logf("share of the recovering server: %.3f at 10%% of the ramp, %.3f at 50%%, %.3f after", s10, s50, s100)
	if !(s10 < 0.12 && s10 < s50 && s50 < s100) || s100 < 0.45 || s100 > 0.55 {
		t.Fatalf("slow start does not ramp: %.3f, %.3f, %.3f", s10, s50, s100)
	}
}

// Passive health end to end, with a backend killed and restarted: clients
// never see a failure, and the dead server is tried again after
// fail_timeout and takes traffic once it is back.
func TestBackendKilledAndRestarted(t *testing.T) {
	a := startBackend(t, "a", greet("a"))
	b := startBackend(t, "b", greet("b"))
	victim, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	vaddr := victim.Addr().(*net.TCPAddr).AddrPort()
	serveGreeting := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("c\n"))
			c.Close()
		}
	}
	go serveGreeting(victim)
	cfg := testConfig([]upstreamSpec{{addr: a.addr()}, {addr: b.addr()}, {addr: vaddr}}, nil)
	for _, us := range cfg.Stream.Servers[0].Upstream.Servers {
		us.MaxFails, us.FailTimeout = 1, time.Second
	}
	p, addr, _ := startProxy(t, cfg)
	reach := func(n int) map[string]int {
		seen := map[string]int{}
		for i := 0; i < n; i++ {
			c := dial(t, addr)
			seen[readLine(t, c)]++ // a failed connection fails the test here
			c.Close()
			// The next client comes once baton has ended this session: a
			// server tried again after fail_timeout takes no other client
			// until its try has ended well, and the next connection may be
			// accepted by the other loop before this one sees the close.
			waitFor(t, func() bool { return p.Stats().Active == 0 })
		}
		return seen
	}
	if seen := reach(6); seen["c"] != 2 {
		t.Fatalf("before the kill: %v", seen)
	}
	victim.Close() // the backend dies
	if seen := reach(30); seen["c"] != 0 || seen["a"]+seen["b"] != 30 {
		t.Fatalf("while dead: %v", seen)
	}
	if fails := p.Status().Upstreams[0].Servers[2].ConnectFails; fails != 1 {
		t.Fatalf("the dead server was tried %d times within fail_timeout, want 1", fails)
	}
	// Back on the same address; after fail_timeout it is tried and used again.
	victim, err = net.Listen("tcp", vaddr.String())
	if err != nil {
		t.Skipf("could not listen on %s again: %v", vaddr, err)
	}
	defer victim.Close()
	go serveGreeting(victim)
	waitStatus(t, p, func(st Status) bool { return st.Upstreams[0].Servers[2].Up })
	if seen := reach(9); seen["c"] != 3 {
		t.Fatalf("after the restart: %v", seen)
	}
}
