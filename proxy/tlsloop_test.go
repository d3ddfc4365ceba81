package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testutil"
	"golang.org/x/sys/unix"
)

// The loop's record layer under what makes it hold bytes epoll cannot see,
// or cannot write at once: reads capped by proxy_buffer_size (records
// opened past what one read takes), paced directions (opened data waiting
// out a rest), a client that writes megabytes while it reads (sealed bytes
// waiting for its socket), KeyUpdates that ask for one back mid-stream,
// and a close_notify right behind the last data with proxy_half_close (the
// end read with the data, the echo still delivered after it). Every byte
// comes back, in order.
func TestTLSLoopRecordLayer(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	cases := []struct {
		name, directives string
		size             int
	}{
		{"plain", "", 4 << 20},
		{"proxy_buffer_size 512", "proxy_buffer_size 512;", 1 << 20},
		{"paced", "proxy_upload_rate 8m; proxy_download_rate 8m;", 1 << 20},
	}
	var servers strings.Builder
	for _, c := range cases {
		fmt.Fprintf(&servers, "    server { listen 127.0.0.1:0 ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_half_close on; %s proxy_pass %s; }\n",
			crt, key, c.directives, b.addr())
	}
	_, addrs, lg := startConf(t, "stream {\n"+servers.String()+"}\n")
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Megabytes both ways at once: the client's reads lag its writes.
			bulk := dialTLSClient(t, addrs[i], "bulk", cfg, false)
			bulk.echoes(t, randomBytes(c.size))

			// KeyUpdates between echoes, each asking for one back: the
			// loop answers while it reads, and both sides change keys.
			ku := dialTLSClient(t, addrs[i], "keyupdate", cfg, true)
			for range 3 {
				ku.echoes(t, randomBytes(64<<10))
				if err := ku.Rec.KeyUpdate(true); err != nil {
					t.Fatal(err)
				}
			}
			ku.echoes(t, randomBytes(100))

			// The last data and close_notify in one flight: the echo
			// still comes back whole, then the end.
			hc, err := testutil.DialTLS(addrs[i], &tls.Config{ServerName: "a.test"}, false)
			if err != nil {
				t.Fatal(err)
			}
			defer hc.Raw.Close()
			msg := randomBytes(200 << 10)
			go func() {
				hc.TC.Write(msg)
				hc.TC.CloseWrite()
			}()
			got, err := io.ReadAll(hc.TC)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("half-closed echo: %d of %d bytes, %v\n%s", len(got), len(msg), err, lg)
			}
		})
	}
}

// An idle TLS session holds what a plain one does, its two sockets, and no
// goroutine: the loop runs its record layer (before, a socketpair and two
// pump goroutines a TLS side).
func TestTLSSessionHoldsNoMore(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	p, addrs, _ := startConf(t, fmt.Sprintf(`stream {
    server { listen 127.0.0.1:0 ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; }
}`, crt, key, b.addr()))
	const n = 40
	fdsBefore, gBefore := openFDs(t, "socket:"), runtime.NumGoroutine()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	for i := range n {
		c := dialTLSClient(t, addrs[0], fmt.Sprint("client ", i), cfg, false)
		c.echoes(t, []byte("hello"))
	}
	waitFor(t, func() bool { return sessionsWhere(p, func(s *session) bool { return s.state == stateProxying }) == n })
	// Per session: the test's client socket, the backend's, and the
	// proxy's two.
	if d := openFDs(t, "socket:") - fdsBefore; d > 4*n+2 {
		t.Errorf("%d idle TLS sessions added %d sockets, want at most %d", n, d, 4*n+2)
	}
	// Per session: the backend's echo goroutine (and a few of the
	// runtime's), once the handshakes' goroutines have ended.
	waitFor(t, func() bool { return runtime.NumGoroutine()-gBefore <= n+5 })
}

// A socket handed to a handshake's goroutine leaves the loop's epoll set:
// its duplicate keeps the socket open, so closing the loop's number alone
// left the registration in the set, and an upstream socket registered for
// its connect (EPOLLOUT, always ready) woke the loop on every wait for as
// long as the session lived: both loops at 100% CPU with three idle
// proxy_ssl sessions. Every entry of every loop's epoll set must be a
// descriptor open under that number, the same socket (inode).
func TestTLSHandshakeLeavesNoStaleEpollEntry(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "up", "up.test")
	b := startBackend(t, "echo", echo)
	tlsAddr := deadAddr(t).String()
	p, addrs, _ := startConf(t, fmt.Sprintf(`stream {
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; }
    server { listen 127.0.0.1:0; proxy_pass %s; proxy_ssl on; }
}`, tlsAddr, crt, key, b.addr(), tlsAddr))
	for i := range 3 {
		c := dial(t, addrs[1])
		defer c.Close()
		echoesOn(t, fmt.Sprint("session ", i), c, []byte("hello\n"))
	}
	waitFor(t, func() bool { return sessionsWhere(p, func(s *session) bool { return s.state == stateProxying }) == 6 })
	var mu sync.Mutex // eachLoop runs on every loop at once
	var epfds []int
	p.eachLoop(func(l *loop) {
		mu.Lock()
		epfds = append(epfds, l.epfd)
		mu.Unlock()
	})
	entries := 0
	for _, epfd := range epfds {
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
		if err != nil {
			t.Skipf("no fdinfo: %v", err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			var tfd int
			var events, data, ino uint64
			var pos int
			if n, _ := fmt.Sscanf(line, "tfd: %d events: %x data: %x pos:%d ino:%x", &tfd, &events, &data, &pos, &ino); n < 5 {
				continue
			}
			entries++
			var st unix.Stat_t
			if err := unix.Fstat(tfd, &st); err != nil || st.Ino != ino {
				t.Errorf("loop epoll set %d: entry for descriptor %d (inode %x, events %x) is stale: %v, inode now %x",
					epfd, tfd, ino, events, err, st.Ino)
			}
		}
	}
	if entries == 0 {
		t.Fatal("no epoll entries read")
	}
}

// A TLS server that passes its connections on: the server passed to reads
// them through the record layer, its PROXY header (inside TLS, as nginx's
// ngx_ssl_recv reads it) and its return text too.
func TestTLSPassReadsThroughRecordLayer(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	inner := deadAddr(t).String()
	_, addrs, lg := startConf(t, fmt.Sprintf(`stream {
    server { listen 127.0.0.1:0 ssl; ssl_certificate %s; ssl_certificate_key %s; pass %s; }
    server { listen %s proxy_protocol; return "from $proxy_protocol_addr\n"; }
}`, crt, key, inner, inner))
	c := tlsDial(t, addrs[0], "a.test")
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "PROXY TCP4 192.0.2.7 192.0.2.8 1111 2222\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if string(got) != "from 192.0.2.7\n" {
		t.Fatalf("got %q, %v\n%s", got, err, lg)
	}
}

// Many sessions at once over both TLS sides the loop runs: plain clients
// through a proxy_ssl server into a terminating one (each session has a
// TLS upstream and, one hop on, a TLS client), and TLS clients of their
// own record layer, which send KeyUpdates. Each echoes random sizes, then
// half-closes with its last bytes in flight and reads the rest to the
// end. Bounded: 24 clients, 6 rounds each, at most 256 KiB a round.
func TestTLSLoopManySessions(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	term := deadAddr(t).String()
	_, addrs, lg := startConf(t, fmt.Sprintf(`stream {
    proxy_half_close on;
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_buffer_size 7000; proxy_pass %s; }
    server { listen 127.0.0.1:0; proxy_pass %s; proxy_ssl on; }
}`, term, crt, key, b.addr(), term))
	const clients, rounds = 24, 6
	errc := make(chan error, clients)
	for i := range clients {
		go func() {
			rng := mrand.New(mrand.NewPCG(uint64(i), 7))
			var rw io.ReadWriter
			var closeWrite func() error
			var own *testutil.TLSClient
			if i%2 == 0 {
				c, err := net.DialTimeout("tcp", addrs[1], 5*time.Second) // the proxy_ssl server
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				rw, closeWrite = c, c.(*net.TCPConn).CloseWrite
			} else {
				c, err := testutil.DialTLS(term, &tls.Config{ServerName: "a.test"}, true)
				if err != nil {
					errc <- err
					return
				}
				defer c.Raw.Close()
				rw, closeWrite, own = c, c.Rec.CloseWrite, c
			}
			for r := range rounds {
				p := randomBytes(1 + rng.IntN(256<<10))
				if err := testutil.Echo(rw, p); err != nil {
					errc <- fmt.Errorf("client %d round %d (%d bytes): %w", i, r, len(p), err)
					return
				}
				if own != nil && rng.IntN(2) == 0 {
					if err := own.Rec.KeyUpdate(rng.IntN(2) == 0); err != nil {
						errc <- fmt.Errorf("client %d: KeyUpdate: %w", i, err)
						return
					}
				}
			}
			last := randomBytes(1 + rng.IntN(64<<10))
			go func() {
				rw.Write(last)
				closeWrite()
			}()
			got, err := io.ReadAll(rw)
			if err == nil && !bytes.Equal(got, last) {
				err = fmt.Errorf("%d of %d bytes, or not the same", len(got), len(last))
			}
			if err != nil {
				err = fmt.Errorf("client %d, half-closed: %w", i, err)
			}
			errc <- err
		}()
	}
	for range clients {
		if err := <-errc; err != nil {
			t.Fatalf("%v\n%s", err, lg)
		}
	}
}
