package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"

	"github.com/batonproxy/baton/internal/testutil"
)

// backend is a real loopback TCP server for tests.
type backend struct {
	ln       net.Listener
	name     string
	wg       sync.WaitGroup
	mu       sync.Mutex
	accepted int
}

func (b *backend) addr() netip.AddrPort {
	return b.ln.Addr().(*net.TCPAddr).AddrPort()
}

// startBackend serves handle on 127.0.0.1:0 until the test ends.
func startBackend(t testing.TB, name string, handle func(c net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveBackend(t, ln, name, handle)
}

// serveBackend serves handle on ln until the test ends.
func serveBackend(t testing.TB, ln net.Listener, name string, handle func(c net.Conn)) *backend {
	b := &backend{ln: ln, name: name}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.accepted++
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.wg.Wait()
	})
	return b
}

// greet answers with "NAME\n" and closes, like the nginx-cases backends.
func greet(name string) func(net.Conn) {
	return func(c net.Conn) { io.WriteString(c, name+"\n") }
}

func echo(c net.Conn) { io.Copy(c, c) }

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	a, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type upstreamSpec struct {
	addr   netip.AddrPort
	weight int
	backup bool
	down   bool
}

// testConfig builds a one-server config listening on 127.0.0.1:0 with the
// given upstream servers and nginx's defaults; mod adjusts the server.
func testConfig(ups []upstreamSpec, mod func(*config.Server)) *config.Config {
	u := &config.Upstream{Name: "backend", Pos: config.Pos{File: "test.conf", Line: 1}}
	for _, s := range ups {
		w := s.weight
		if w == 0 {
			w = 1
		}
		u.Servers = append(u.Servers, &config.UpstreamServer{
			Name: s.addr.String(), Addrs: []netip.AddrPort{s.addr},
			Weight: w, MaxFails: 1, FailTimeout: 10 * time.Second, Backup: s.backup, Down: s.down,
		})
	}
	srv := &config.Server{
		Pos:                 config.Pos{File: "test.conf", Line: 2},
		Listen:              []*config.Listen{{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Text: "127.0.0.1:0", Backlog: 511}},
		ProxyPass:           "backend",
		Upstream:            u,
		ProxyConnectTimeout: 60 * time.Second,
		ProxyTimeout:        10 * time.Minute,
		ProxyNextUpstream:   true,
	}
	if mod != nil {
		mod(srv)
	}
	return &config.Config{Stream: &config.Stream{Upstreams: []*config.Upstream{u}, Servers: []*config.Server{srv}}}
}

// logBuf collects the proxy's error log for assertions.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProxy starts a proxy for cfg and returns its first listen address.
func startProxy(t testing.TB, cfg *config.Config) (*Proxy, string, *logBuf) {
	t.Helper()
	p, lb := startProxyWith(t, cfg, Options{}, nil)
	return p, p.Addrs()[0].String(), lb
}

// startProxyWith starts a proxy for cfg with opts (its Log is set here,
// at info); set, if not nil, adjusts the proxy before Start.
func startProxyWith(t testing.TB, cfg *config.Config, opts Options, set func(*Proxy)) (*Proxy, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	opts.Log = NewWriterLogger(lb, LevelInfo)
	p, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(p)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			t.Logf("proxy log:\n%s", lb.String())
		}
	})
	return p, lb
}

// openFDs counts this process's open descriptors whose /proc link starts
// with kind ("pipe:", "socket:"; "" for all).
func openFDs(t testing.TB, kind string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if kind == "" {
			n++
		} else if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, kind) {
			n++
		}
	}
	return n
}

// dial connects to addr with a deadline that turns a hang into a failure.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// readLine reads one line from c.
func readLine(t testing.TB, c net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading a line: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

// waitDone waits for p to finish or fails the test.
func waitDone(t testing.TB, p *Proxy, within time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(within):
		t.Fatalf("proxy still running after %s", within)
	}
}

var _ = context.Background
var _ = errors.New
var _ = os.Getpid
