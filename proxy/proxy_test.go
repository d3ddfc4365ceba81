package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

func TestForwardBothWays(t *testing.T) {
	b := startBackend(t, "echo", echo)
	for _, halfClose := range []bool{false, true} {
		t.Run(fmt.Sprintf("half_close=%v", halfClose), func(t *testing.T) {
			_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
				s.ProxyHalfClose = halfClose
			}))
			const clients = 8
			const size = 4 << 20 // larger than every socket buffer, so backpressure is exercised
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := 0; i < clients; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- echoRoundTrip(addr, size, halfClose)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// echoRoundTrip sends size random bytes through addr to an echo upstream and
// checks they all come back. With closeWrite the client half-closes after
// sending, and then expects EOF after the echo.
func echoRoundTrip(addr string, size int, closeWrite bool) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	want := make([]byte, size)
	rand.Read(want)
	go func() {
		c.Write(want)
		if closeWrite {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	var got []byte
	if closeWrite {
		got, err = io.ReadAll(c)
	} else {
		got = make([]byte, size)
		_, err = io.ReadFull(c, got)
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echoed %d bytes differ from the %d sent", len(got), len(want))
	}
	return nil
}

// The upstream answers only after the client's EOF, so the answer arrives
// only if the client's half-close is passed on and the session survives it.
func TestHalfClose(t *testing.T) {
	b := startBackend(t, "count", func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d bytes\n", n)
	})
	for _, tc := range []struct {
		name      string
		halfClose bool
		want      string
	}{
		{"on", true, "got 5 bytes\n"},
		{"off", false, ""}, // nginx ends the session at the client's EOF
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
				s.ProxyHalfClose = tc.halfClose
			}))
			c := dial(t, addr)
			defer c.Close()
			io.WriteString(c, "hello")
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNextUpstreamSkipsDeadServer(t *testing.T) {
	live := startBackend(t, "live", greet("live"))
	dead := deadAddr(t)
	_, addr, log := startProxy(t, testConfig([]upstreamSpec{{addr: dead}, {addr: live.addr()}}, nil))
	for i := 0; i < 6; i++ {
		c := dial(t, addr)
		if got := readLine(t, c); got != "live" {
			t.Fatalf("connection %d: got %q, want live", i, got)
		}
		c.Close()
	}
	if !strings.Contains(log.String(), "connect() failed (111: Connection refused) while connecting to upstream") {
		t.Errorf("the refused connect was not logged as nginx logs it:\n%s", log)
	}
}

func TestNextUpstreamOff(t *testing.T) {
	dead := deadAddr(t)
	live := startBackend(t, "live", greet("live"))
	_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: dead}, {addr: live.addr()}}, func(s *config.Server) {
		s.ProxyNextUpstream = false
	}))
	// The first connection meets the dead server and, with next-upstream
	// off, is closed with nothing; max_fails=1 (nginx's default) then takes
	// the dead server out for fail_timeout, so the others reach live.
	got := map[string]int{}
	for i := 0; i < 4; i++ {
		c := dial(t, addr)
		b, _ := io.ReadAll(c)
		got[string(b)]++
		c.Close()
	}
	if got["live\n"] != 3 || got[""] != 1 {
		t.Fatalf("got answers %v, want 3 live and 1 closed", got)
	}
}

// nginx's smooth weighted round robin, end to end: the backends reached in
// order must equal what a real nginx did (../lb/testdata/rr_w511.json).
func TestRoundRobinOrderMatchesNginx(t *testing.T) {
	var rc struct {
		Upstream []struct {
			Backend string
			Weight  int
		}
		Expected []string
	}
	data, err := os.ReadFile("../lb/testdata/rr_w511.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rc); err != nil {
		t.Fatal(err)
	}
	var ups []upstreamSpec
	for _, u := range rc.Upstream {
		b := startBackend(t, u.Backend, greet(u.Backend))
		ups = append(ups, upstreamSpec{addr: b.addr(), weight: u.Weight})
	}
	_, addr, _ := startProxy(t, testConfig(ups, nil))
	for i, want := range rc.Expected {
		c := dial(t, addr)
		got := readLine(t, c)
		c.Close()
		if got != want {
			t.Fatalf("connection %d went to %s, nginx chose %s", i+1, got, want)
		}
	}
}

func TestBackupOnlyWhenPrimariesUnusable(t *testing.T) {
	primary := startBackend(t, "primary", greet("primary"))
	backup := startBackend(t, "backup", greet("backup"))
	dead := deadAddr(t)
	for _, tc := range []struct {
		name string
		ups  []upstreamSpec
		want string
	}{
		{"primary up", []upstreamSpec{{addr: primary.addr()}, {addr: backup.addr(), backup: true}}, "primary"},
		{"primary dead", []upstreamSpec{{addr: dead}, {addr: backup.addr(), backup: true}}, "backup"},
		{"primary down", []upstreamSpec{{addr: primary.addr(), down: true}, {addr: backup.addr(), backup: true}}, "backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr, _ := startProxy(t, testConfig(tc.ups, nil))
			for i := 0; i < 3; i++ {
				c := dial(t, addr)
				got := readLine(t, c)
				c.Close()
				if got != tc.want {
					t.Fatalf("connection %d reached %s, want %s", i, got, tc.want)
				}
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	b := startBackend(t, "echo", echo)
	const idle = 300 * time.Millisecond
	_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.ProxyTimeout = idle
	}))
	c := dial(t, addr)
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "ping\n")
	if got := readLine(t, c); got != "ping" {
		t.Fatalf("got %q", got)
	}
	// Now idle: the proxy must close the connection after proxy_timeout.
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Fatalf("read after idle: n=%d err=%v, want EOF", n, err)
	}
	if el := time.Since(start); el < idle {
		t.Fatalf("closed after %s, before proxy_timeout %s", el, idle)
	}
}

// fullListener returns an address whose accept queue is full, so that a
// connect to it hangs (the kernel drops the SYN) until the connect timeout.
func fullListener(t *testing.T) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := sock.AddrPort(sa).String()
	// Fill the queue: each of these completes the handshake but is never accepted.
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

func TestConnectTimeoutThenNextUpstream(t *testing.T) {
	hang := fullListener(t)
	live := startBackend(t, "live", greet("live"))
	_, addr, log := startProxy(t, testConfig([]upstreamSpec{
		{addr: mustAddrPort(hang)}, {addr: live.addr()},
	}, func(s *config.Server) {
		s.ProxyConnectTimeout = 200 * time.Millisecond
	}))
	c := dial(t, addr)
	defer c.Close()
	if got := readLine(t, c); got != "live" {
		t.Fatalf("got %q, want live", got)
	}
	if !strings.Contains(log.String(), "upstream timed out (110: Connection timed out) while connecting to upstream") {
		t.Errorf("the connect timeout was not logged:\n%s", log)
	}
}

func TestAllUpstreamsDead(t *testing.T) {
	_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: deadAddr(t)}, {addr: deadAddr(t)}}, nil))
	c := dial(t, addr)
	defer c.Close()
	b, err := io.ReadAll(c)
	if len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("got %q, %v; want the connection closed", b, err)
	}
}

func TestAccessLog(t *testing.T) {
	b := startBackend(t, "echo", echo)
	path := filepath.Join(t.TempDir(), "access.log")
	_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.AccessLogs = []*config.AccessLog{{Path: path, Format: &config.LogFormat{
			Name:   "t",
			Format: "$remote_addr $protocol $status $bytes_sent $bytes_received $upstream_addr $server_port",
		}}}
	}))
	c := dial(t, addr)
	io.WriteString(c, "hello")
	c.CloseWrite()
	io.ReadAll(c) // the session ends at the client's EOF (no half-close)
	c.Close()
	// The line is written before the client's socket is closed.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	want := fmt.Sprintf("127.0.0.1 TCP 200 %d 5 %s %s\n", len(""), b.addr(), port)
	// The echo may or may not have come back before the EOF ended the
	// session; accept both byte counts the upstream could have sent.
	want5 := fmt.Sprintf("127.0.0.1 TCP 200 5 5 %s %s\n", b.addr(), port)
	if got := string(data); got != want && got != want5 {
		t.Fatalf("access log %q, want %q or %q", got, want, want5)
	}
}

func TestGracefulShutdown(t *testing.T) {
	b := startBackend(t, "echo", echo)
	p, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, nil))
	c := dial(t, addr)
	defer c.Close()
	io.WriteString(c, "before\n")
	if got := readLine(t, c); got != "before" {
		t.Fatal(got)
	}
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(context.Background()) }()

	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after Shutdown")
		}
	}
	// The live connection still works.
	io.WriteString(c, "during\n")
	if got := readLine(t, c); got != "during" {
		t.Fatalf("live connection broke during graceful shutdown: %q", got)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a connection still live", err)
	default:
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitDone(t, p, 5*time.Second)
}

func TestShutdownTimeoutCutsConnections(t *testing.T) {
	b := startBackend(t, "echo", echo)
	p, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, nil))
	c := dial(t, addr)
	defer c.Close()
	io.WriteString(c, "x\n")
	readLine(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("connection still open after the shutdown timeout")
	}
}

func TestConnectionCap(t *testing.T) {
	b := startBackend(t, "echo", echo)
	cfg := testConfig([]upstreamSpec{{addr: b.addr()}}, nil)
	cfg.WorkerConnections = 4 // two proxied sessions
	_, addr, log := startProxy(t, cfg)
	var conns []*net.TCPConn
	for i := 0; i < 2; i++ {
		c := dial(t, addr)
		defer c.Close()
		io.WriteString(c, "x\n")
		readLine(t, c)
		conns = append(conns, c)
	}
	third := dial(t, addr) // the kernel completes the handshake; baton must not serve it yet
	defer third.Close()
	io.WriteString(third, "third\n")
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := third.Read(make([]byte, 1)); n != 0 {
		t.Fatal("a third session was served beyond worker_connections")
	}
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	conns[0].Close()
	if got := readLine(t, third); got != "third" {
		t.Fatalf("third connection after a slot freed: %q", got)
	}
	if !strings.Contains(log.String(), "worker_connections are not enough") {
		t.Errorf("reaching the cap was not logged:\n%s", log)
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "v6 "+c.RemoteAddr().(*net.TCPAddr).IP.String()+"\n")
			c.Close()
		}
	}()
	up := ln.Addr().(*net.TCPAddr).AddrPort()
	_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: up}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort("[::1]:0")
		s.Listen[0].Text = "[::1]:0"
	}))
	if !strings.HasPrefix(addr, "[::1]:") {
		t.Fatalf("listening on %s, want [::1]", addr)
	}
	c := dial(t, addr)
	defer c.Close()
	if got := readLine(t, c); got != "v6 ::1" {
		t.Fatalf("got %q", got)
	}
}

// Shutdown and Close after the proxy has ended return at once.
func TestShutdownAfterEnd(t *testing.T) {
	b := startBackend(t, "echo", echo)
	p, _, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, nil))
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p, 5*time.Second)
	done := make(chan struct{})
	go func() {
		p.Shutdown(context.Background())
		p.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown/Close after the end hung")
	}
}

// Passive health as nginx: with max_fails=1 a dead server is tried once and
// then left alone for fail_timeout; with max_fails=0 round robin keeps
// trying it. Clients notice nothing either way.
func TestMaxFails(t *testing.T) {
	for _, tc := range []struct {
		maxFails  int
		wantFails int
	}{{1, 1}, {0, 3}} {
		t.Run(fmt.Sprintf("max_fails=%d", tc.maxFails), func(t *testing.T) {
			a := startBackend(t, "a", greet("a"))
			b := startBackend(t, "b", greet("b"))
			cfg := testConfig([]upstreamSpec{{addr: a.addr()}, {addr: deadAddr(t)}, {addr: b.addr()}}, nil)
			for _, us := range cfg.Stream.Servers[0].Upstream.Servers {
				us.MaxFails = tc.maxFails
			}
			_, addr, log := startProxy(t, cfg)
			for i := 0; i < 9; i++ {
				c := dial(t, addr)
				if got := readLine(t, c); got != "a" && got != "b" {
					t.Fatalf("connection %d: %q", i, got)
				}
				c.Close()
			}
			if n := strings.Count(log.String(), "connect() failed"); n != tc.wantFails {
				t.Fatalf("%d failed connects to the dead server, want %d:\n%s", n, tc.wantFails, log)
			}
			if disabled := strings.Contains(log.String(), "upstream server temporarily disabled"); disabled != (tc.maxFails > 0) {
				t.Fatalf("temporarily disabled logged: %v:\n%s", disabled, log)
			}
		})
	}
}

// TestErrorsCallersCanTest: proxy's errors are told apart with errors.Is,
// while their text stays nginx's.
func TestErrorsCallersCanTest(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().(*net.TCPAddr).AddrPort()
	cfg := testConfig([]upstreamSpec{{addr: addr}}, func(s *config.Server) { s.Listen[0].Addr = addr })
	p, err := New(cfg, Options{Log: NewWriterLogger(io.Discard, LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Reload(cfg); !errors.Is(err, ErrNotRunning) {
		t.Errorf("reload before start: %v, want ErrNotRunning", err)
	}
	err = p.Start()
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("start on a port in use: %v, want EADDRINUSE inside", err)
	}
	want := "bind() to " + addr.String() + " failed (98: Address already in use) in "
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error text %q, want nginx's %q...", err, want)
	}
	udp := udpConfig([]upstreamSpec{{addr: addr}}, func(s *config.Server) { s.Listen[0].ProxyProtocol = true })
	q, err := New(udp, Options{Log: NewWriterLogger(io.Discard, LevelInfo)})
	if err == nil {
		err = q.Start()
		q.Close()
	}
	if !errors.Is(err, errUDPProxyProt) {
		t.Errorf("udp with proxy_protocol: %v", err)
	}
}
