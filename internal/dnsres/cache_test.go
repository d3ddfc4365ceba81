package dnsres

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/dnstest"
	"github.com/miekg/dns"
)

// clock is a time the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newCache is a cache (of size entries) on the clock in front of a
// resolver of cfg asking s.
func newCache(cfg Config, s *dnstest.Server, size int) (*Cache, *clock) {
	clk := &clock{t: time.Unix(1e9, 0)}
	c := NewCache(newResolver(cfg, s), size)
	c.now = clk.now
	return c, clk
}

// cachedHost runs c.LookupHost and fails the test on an error.
func cachedHost(t *testing.T, c *Cache, name string) Answer {
	t.Helper()
	a, err := c.LookupHost(t.Context(), name)
	if err != nil {
		t.Fatalf("LookupHost(%q): %v", name, err)
	}
	return a
}

func TestCacheHitAndExpiry(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1", "127.0.0.2")
	c, clk := newCache(v4, s, 0)
	a := cachedHost(t, c, "example.net")
	a.Addrs[0] = Addr{} // the caller's copy
	clk.advance(299 * time.Second)
	a = cachedHost(t, c, "EXAMPLE.net.")
	wantIPs(t, a, "127.0.0.1", "127.0.0.2")
	if a.TTL != time.Second {
		t.Errorf("TTL %v after 299s of 300s", a.TTL)
	}
	if n := s.Queries(); n != 1 {
		t.Fatalf("%d queries before expiry, want 1", n)
	}
	clk.advance(time.Second)
	s.SetA("example.net", 300, "127.0.0.3")
	wantIPs(t, cachedHost(t, c, "example.net"), "127.0.0.3")
	if n := s.Queries(); n != 2 {
		t.Errorf("%d queries after expiry, want 2", n)
	}
}

func TestCacheEmpty(t *testing.T) {
	s := dnstest.Start(t)
	c, clk := newCache(v4, s, 0)
	cachedHost(t, c, "example.net")
	clk.advance(9 * time.Second)
	cachedHost(t, c, "example.net")
	if n := s.Queries(); n != 1 {
		t.Errorf("%d queries within the 10s of an empty answer, want 1", n)
	}
}

func TestCacheErrors(t *testing.T) {
	s := dnstest.Start(t)
	s.SetRcode("example.net", dns.RcodeServerFailure)
	c, clk := newCache(v4, s, 0)
	for range 2 {
		if _, err := c.LookupHost(t.Context(), "example.net"); err == nil {
			t.Fatal("SERVFAIL: no error")
		}
	}
	if n := s.Queries(); n != 1 {
		t.Errorf("%d queries for a failure within 1s, want 1", n)
	}
	clk.advance(time.Second)
	s.SetRcode("example.net", 0)
	s.SetA("example.net", 300, "127.0.0.1")
	wantIPs(t, cachedHost(t, c, "example.net"), "127.0.0.1")
}

func TestCacheSingleflight(t *testing.T) {
	const n = 20
	s := dnstest.Start(t)
	s.SetA("example.net", 0, "127.0.0.1") // TTL 0: nothing served from the cache
	c, _ := newCache(v4, s, 0)
	joined := make(chan struct{}, n)
	c.joined = func() { joined <- struct{}{} }
	release := s.Hold()
	defer release()
	errs := make(chan error, n)
	for range n {
		go func() {
			a, err := c.LookupHost(t.Context(), "example.net")
			if err == nil && len(a.Addrs) != 1 {
				err = errors.New("no address")
			}
			errs <- err
		}()
	}
	for range n - 1 {
		<-joined
	}
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if q := s.Queries(); q != 1 {
		t.Errorf("%d queries for %d concurrent lookups, want 1", q, n)
	}
}

func TestCacheWaiterGivesUp(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1")
	c, _ := newCache(v4, s, 0)
	release := s.Hold()
	defer release()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.LookupHost(ctx, "example.net")
		done <- err
	}()
	if err := s.WaitQueries(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled lookup: error %v", err)
	}
	release() // the lookup itself went on: its answer is cached
	wantIPs(t, cachedHost(t, c, "example.net"), "127.0.0.1")
	if n := s.Queries(); n != 1 {
		t.Errorf("%d queries, want 1", n)
	}
}

func TestCacheSize(t *testing.T) {
	s := dnstest.Start(t)
	c, clk := newCache(v4, s, 2)
	s.SetA("a.example.net", 100, "127.0.0.1")
	s.SetA("b.example.net", 300, "127.0.0.2")
	s.SetA("c.example.net", 300, "127.0.0.3")
	for _, name := range []string{"a.example.net", "b.example.net", "c.example.net"} {
		cachedHost(t, c, name)
	}
	if c.Len() != 2 {
		t.Errorf("%d entries, want 2", c.Len())
	}
	cachedHost(t, c, "b.example.net") // kept: a expired first
	if n := s.Queries(); n != 3 {
		t.Errorf("%d queries, want 3", n)
	}
	clk.advance(300 * time.Second)
	s.SetA("d.example.net", 300, "127.0.0.4")
	cachedHost(t, c, "d.example.net") // the expired ones go
	if c.Len() != 1 {
		t.Errorf("%d entries after expiry, want 1", c.Len())
	}
}

func TestCacheService(t *testing.T) {
	s := dnstest.Start(t)
	s.SetSRV("_http._tcp.example.net", 300, dnstest.SRV{Port: 80, Target: "a.example.net"})
	s.SetA("a.example.net", 300, "127.0.0.1")
	c, _ := newCache(v4, s, 0)
	for range 2 {
		a, err := c.LookupService(t.Context(), "http", "example.net")
		if err != nil || len(a.Addrs) != 1 || a.Addrs[0].Port != 80 {
			t.Fatalf("LookupService: %+v, %v", a, err)
		}
	}
	if n := s.Queries(); n != 2 {
		t.Errorf("%d queries, want 2 (SRV and A, once)", n)
	}
}

// CachedHost answers from the cache only: nothing before a lookup, the
// answer while it is fresh, nothing once it expired; it never queries.
func TestCachedHost(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 10, "127.0.0.1")
	c, clk := newCache(v4, s, 0)
	if _, ok, _ := c.CachedHost("example.net"); ok {
		t.Fatal("CachedHost answered before any lookup")
	}
	cachedHost(t, c, "example.net")
	a, ok, err := c.CachedHost("Example.NET.")
	if !ok || err != nil {
		t.Fatalf("CachedHost after a lookup: ok %v, err %v", ok, err)
	}
	wantIPs(t, a, "127.0.0.1")
	clk.advance(10 * time.Second)
	if _, ok, _ := c.CachedHost("example.net"); ok {
		t.Fatal("CachedHost answered with an expired answer")
	}
	if n := s.Queries(); n != 1 {
		t.Errorf("%d queries, want 1: CachedHost must not query", n)
	}
}
