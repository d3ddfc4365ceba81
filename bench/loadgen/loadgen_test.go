package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"math/rand"
	"net"
	"testing"
	"time"
)

// startSink serves mode on a fresh 127.0.0.1 port until the test ends.
func startSink(tb testing.TB, mode string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := newSink(ln, mode, 10*time.Second, 1000)
	done := make(chan error, 1)
	go func() { done <- s.serve() }()
	tb.Cleanup(func() {
		s.close()
		if err := <-done; err != nil {
			tb.Errorf("sink %s: serve: %v", mode, err)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c.(*net.TCPConn)
}

func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:80", true},
		{"127.1.2.3:23401", true},
		{"[::1]:23401", true},
		{"127.0.0.1:0", true},
		{"10.0.0.1:80", false},
		{"0.0.0.0:80", false},
		{"[::]:80", false},
		{"localhost:80", false}, // names are refused: literal IPs only
		{"example.com:80", false},
		{"127.0.0.1", false}, // no port
		{"127.0.0.1:", false},
		{"[::1%lo]:80", false},
	} {
		err := checkLoopback(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}

func TestSinkDiscard(t *testing.T) {
	c := dial(t, startSink(t, modeDiscard))
	data := bytes.Repeat([]byte("abcdefgh"), 128<<10) // 1 MiB
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The sink sends nothing back and closes after our EOF.
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read after close-write: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("discard sink sent %d bytes, want 0", len(got))
	}
}

func TestSinkEcho(t *testing.T) {
	c := dial(t, startSink(t, modeEcho))
	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo mismatch: sent %d bytes, got %d back", len(data), len(got))
	}
}

func TestSinkGreet(t *testing.T) {
	addr := startSink(t, modeGreet)
	for i := 0; i < 3; i++ {
		c := dial(t, addr)
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if string(got) != GreetLine {
			t.Fatalf("greet sink sent %q, want %q then EOF", got, GreetLine)
		}
	}
}

func TestSinkSource(t *testing.T) {
	c := dial(t, startSink(t, modeSource))
	// It also swallows what we send, at the same time.
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, 1<<20))
		werr <- err
	}()
	buf := make([]byte, 64<<10)
	var n int64
	for n < 8<<20 {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", n, err)
		}
	}
	if err := <-werr; err != nil {
		t.Fatalf("write to source sink: %v", err)
	}
}

func TestSinkCloseDropsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(ln, modeDiscard, time.Minute, 10)
	done := make(chan error, 1)
	go func() { done <- s.serve() }()
	c := dial(t, ln.Addr().String())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	for s.active.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	s.close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// EOF, or a reset if the byte was still unread: either way not a timeout.
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("after sink close: read err = %v, want EOF or reset", err)
	}
}

func TestThroughput(t *testing.T) {
	discard, source := startSink(t, modeDiscard), startSink(t, modeSource)
	for _, tc := range []struct {
		dir, addr string
		conns     int
	}{
		{"up", discard, 1},
		{"up", discard, 3},
		{"down", source, 2},
		{"both", source, 1},
	} {
		res, err := runThroughput(throughputConfig{
			addr: tc.addr, conns: tc.conns, duration: 200 * time.Millisecond,
			warmup: 50 * time.Millisecond, size: 32 << 10, dir: tc.dir, dialTimeout: 2 * time.Second,
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.dir, err)
		}
		if res.errors != 0 {
			t.Errorf("%s: %d errors, first %v", tc.dir, res.errors, res.firstErr)
		}
		wantUp, wantDown := tc.dir != "down", tc.dir != "up"
		if (res.upBytes > 0) != wantUp || (res.downBytes > 0) != wantDown {
			t.Errorf("%s: up=%d down=%d bytes", tc.dir, res.upBytes, res.downBytes)
		}
		if res.elapsed < 200*time.Millisecond || res.elapsed > time.Second {
			t.Errorf("%s: window %v, want about 200ms", tc.dir, res.elapsed)
		}
	}
	// Reading from a sink that never sends moves nothing and reports no error.
	res, err := runThroughput(throughputConfig{addr: discard, conns: 1, duration: 100 * time.Millisecond,
		size: 1024, dir: "down", dialTimeout: time.Second})
	if err != nil || res.downBytes != 0 || res.errors != 0 {
		t.Errorf("down from discard sink: %+v, %v", res, err)
	}
}

func TestConnRate(t *testing.T) {
	echo := startSink(t, modeEcho)
	r := runConnRate(connrateConfig{addr: echo, workers: 2, duration: 300 * time.Millisecond,
		maxIters: 1_000_000, opTimeout: 2 * time.Second, maxErrors: 10})
	if r.errors() != 0 || r.firstErr != nil {
		t.Fatalf("errors: %d, first %v", r.errors(), r.firstErr)
	}
	if r.ok == 0 || r.ok != r.attempts || r.lat.n != uint64(r.ok) || r.stopped != "" {
		t.Fatalf("ok=%d attempts=%d samples=%d stopped=%q", r.ok, r.attempts, r.lat.n, r.stopped)
	}
	if p50, p99 := r.lat.quantile(0.5), r.lat.quantile(0.99); p50 <= 0 || p99 < p50 {
		t.Fatalf("p50=%v p99=%v", p50, p99)
	}

	// The count cap ends the run before the time does.
	r = runConnRate(connrateConfig{addr: echo, workers: 3, duration: time.Minute,
		maxIters: 50, opTimeout: 2 * time.Second, maxErrors: 10})
	if r.ok != 50 || r.attempts != 50 || r.stopped != "max-iters" || r.elapsed > 30*time.Second {
		t.Fatalf("max-iters: ok=%d attempts=%d stopped=%q elapsed=%v", r.ok, r.attempts, r.stopped, r.elapsed)
	}

	// A peer that does not echo makes every attempt fail; the error cap ends it.
	r = runConnRate(connrateConfig{addr: startSink(t, modeGreet), workers: 2, duration: time.Minute,
		maxIters: 1_000_000, opTimeout: 2 * time.Second, maxErrors: 20})
	if r.ok != 0 || r.errRead < 20 || r.stopped != "max-errors" {
		t.Fatalf("greet peer: ok=%d errRead=%d stopped=%q", r.ok, r.errRead, r.stopped)
	}

	// Nothing listening: dial errors, counted, bounded.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	r = runConnRate(connrateConfig{addr: dead, workers: 1, duration: 2 * time.Second,
		maxIters: 1_000_000, opTimeout: time.Second, maxErrors: 5})
	if r.ok != 0 || r.errDial != 5 || r.stopped != "max-errors" {
		t.Fatalf("dead port: ok=%d errDial=%d stopped=%q", r.ok, r.errDial, r.stopped)
	}
}

func TestHist(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(tc.q)
		if d := float64(got-tc.want) / float64(tc.want); d < -0.02 || d > 0.02 {
			t.Errorf("quantile(%v) = %v, want %v within 2%%", tc.q, got, tc.want)
		}
	}
	if m := h.mean(); m < 500*time.Microsecond || m > 501*time.Microsecond {
		t.Errorf("mean = %v", m)
	}
	// Every bucket's value maps back to the same bucket.
	for i := 0; i < histBuckets; i++ {
		if j := histIndex(histValue(i)); j != i {
			t.Fatalf("histIndex(histValue(%d)) = %d", i, j)
		}
	}
	var empty hist
	if empty.quantile(0.5) != 0 || empty.mean() != 0 {
		t.Error("empty histogram should report 0")
	}
}

// -tls: a TLS sink, and TLS clients of it (full and resumed handshakes,
// TLS 1.2 and 1.3), move bytes and count connections.
func TestTLS(t *testing.T) {
	cfg, err := sinkTLS("", "")
	if err != nil {
		t.Fatal(err)
	}
	start := func(mode string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := newSink(tls.NewListener(ln, cfg), mode, 10*time.Second, 1000)
		go s.serve()
		t.Cleanup(s.close)
		return ln.Addr().String()
	}
	discard, echo := start(modeDiscard), start(modeEcho)
	res, err := runThroughput(throughputConfig{addr: discard, conns: 2, duration: 200 * time.Millisecond,
		size: 32 << 10, dir: "up", dialTimeout: 2 * time.Second, tls: tlsFlags{on: true, max: "1.3"}})
	if err != nil || res.errors != 0 || res.upBytes == 0 {
		t.Fatalf("throughput over TLS: %+v, %v", res, err)
	}
	for _, tf := range []tlsFlags{{on: true, max: "1.3"}, {on: true, max: "1.2", resume: true}} {
		c := connrateConfig{addr: echo, workers: 2, duration: time.Minute, maxIters: 20,
			opTimeout: 2 * time.Second, maxErrors: 5, tls: tf}
		if c.tcfg, err = c.tls.config(); err != nil {
			t.Fatal(err)
		}
		if r := runConnRate(c); r.ok != 20 || r.errors() != 0 {
			t.Fatalf("connrate %+v: ok=%d, first error %v", tf, r.ok, r.firstErr)
		}
	}
	if _, err := (&tlsFlags{max: "1.3", resume: true}).config(); err == nil {
		t.Fatal("-tls-resume without -tls accepted")
	}
	if _, err := (&tlsFlags{on: true, max: "1.1"}).config(); err == nil {
		t.Fatal("-tls-max 1.1 accepted")
	}
}
