package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// loopBatches returns how many epoll_wait batches the loops have run.
func loopBatches(p *Proxy) uint64 {
	var n uint64
	done := make(chan uint64, len(p.loops))
	for _, l := range p.loops {
		if !l.do(func() { done <- l.batch }) {
			done <- 0
		}
	}
	for range p.loops {
		n += <-done
	}
	return n
}

// resetConn closes c with a reset (SO_LINGER 0).
func resetConn(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A client that resets while its upstream is still connecting ends the
// session at once, whether it sent a PROXY header or not. Before, a
// PROXY-protocol client's socket stayed in the epoll set with no interest
// while connecting: the reset's EPOLLERR|EPOLLHUP, reported whatever the
// interest, was ignored, and the loop spun on it until
// proxy_connect_timeout (60 s).
func TestClientResetWhileConnectingEndsSession(t *testing.T) {
	for _, pp := range []bool{true, false} {
		name := "plain"
		if pp {
			name = "PROXY header"
		}
		t.Run(name, func(t *testing.T) {
			hang := fullListener(t)
			cfg := testConfig([]upstreamSpec{{addr: mustAddrPort(hang)}}, func(s *config.Server) {
				s.Listen[0].ProxyProtocol = pp
				s.ProxyConnectTimeout = time.Minute
			})
			p, addr, log := startProxy(t, cfg)
			const n = 20
			var conns []*net.TCPConn
			for i := 0; i < n; i++ {
				c := dial(t, addr)
				if pp {
					if _, err := c.Write(v1Header("192.0.2.7:5555")); err != nil {
						t.Fatal(err)
					}
				}
				conns = append(conns, c)
			}
			waitFor(t, func() bool { return p.Stats().Active == n })
			// Every session is connecting now (the upstream never answers).
			// Idle loops run few batches.
			before := loopBatches(p)
			for _, c := range conns {
				resetConn(t, c)
			}
			waitFor(t, func() bool { return p.Stats().Active == 0 }) // within 10 s: far below proxy_connect_timeout
			if got := strings.Count(log.String(), "client closed connection while connecting to upstream"); got != n {
				t.Errorf("%d sessions logged the client's close, want %d:\n%s", got, n, log)
			}
			// No descriptor is left for the loops to spin on: a second of
			// idling takes a handful of batches (timers; an idle loop waits
			// up to a second), not thousands.
			mid := loopBatches(p)
			<-time.After(time.Second) // the window measured, not a wait for something
			if d := loopBatches(p) - mid; d > 100 {
				t.Errorf("the loops ran %d batches in an idle second (%d while the resets were handled)", d, mid-before)
			}
		})
	}
}

// A client that sends its bytes and its FIN while the upstream is still
// connecting is not ended: the bytes go upstream once connected, and its
// socket raises no event in the meantime.
func TestClientFINWhileConnectingIsDelivered(t *testing.T) {
	hang := fullListener(t)
	got := make(chan string, 1)
	live := startBackend(t, "live", func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	cfg := testConfig([]upstreamSpec{{addr: mustAddrPort(hang)}, {addr: live.addr()}}, func(s *config.Server) {
		s.Listen[0].ProxyProtocol = true
		s.ProxyConnectTimeout = 300 * time.Millisecond
		s.Upstream.Servers[0].MaxFails = 0
	})
	_, addr, _ := startProxy(t, cfg)
	c := dial(t, addr)
	defer c.Close()
	if _, err := c.Write(v1Header("192.0.2.7:5555")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("late bytes\n")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	select {
	case s := <-got:
		if s != "late bytes\n" {
			t.Fatalf("upstream got %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the bytes never reached the upstream")
	}
}

// Headers that can never become valid are refused at once, not at
// proxy_protocol_timeout: a v1 line ending in LF alone, a v2 header of an
// unknown version.
func TestBrokenProxyHeaderRefusedAtOnce(t *testing.T) {
	b := startBackend(t, "echo", echo)
	v2bad := append(append([]byte{}, sigV2...), 0x31, 0x11, 0, 0)
	for name, raw := range map[string][]byte{
		"v1 LF only":          []byte("PROXY TCP4 192.0.2.1 10.0.0.1 1111 443\n"),
		"v2 version 3":        v2bad,
		"v1 LF in the middle": []byte("PROXY TCP4\n192.0.2.1 10.0.0.1 1111 443\r\n"),
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
				s.Listen[0].ProxyProtocol = true
				s.ProxyProtocolTimeout = time.Minute
			})
			_, addr, log := startProxy(t, cfg)
			c := dial(t, addr)
			defer c.Close()
			if _, err := c.Write(raw); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 16)); n != 0 || err == nil || strings.Contains(err.Error(), "timeout") {
				t.Fatalf("read %d, %v: want the connection closed at once", n, err)
			}
			if !strings.Contains(log.String(), "broken header") {
				t.Errorf("no broken header line:\n%s", log)
			}
		})
	}
}

// A v2 header with the PROXY command and an address family or transport
// that carries no usable address (UNSPEC, AF_UNIX) is accepted without
// one, as nginx accepts it: $remote_addr stays the peer's.
func TestProxyV2UnspecAccepted(t *testing.T) {
	b := startBackend(t, "echo", echo)
	v2 := func(famTransport byte, addrs []byte) []byte {
		h := append(append([]byte{}, sigV2...), 0x21, famTransport)
		h = binary.BigEndian.AppendUint16(h, uint16(len(addrs)))
		return append(h, addrs...)
	}
	for name, raw := range map[string][]byte{
		"UNSPEC":                v2(0x00, nil),
		"UNSPEC with bytes":     v2(0x00, []byte{1, 2, 3, 4}),
		"AF_UNIX stream":        v2(0x31, make([]byte, 216)),
		"INET over transport 0": v2(0x10, make([]byte, 12)),
	} {
		t.Run(name, func(t *testing.T) {
			cfg, path := ppConfig(t, b.addr(), "127.0.0.0/8")
			_, addr, log := startProxy(t, cfg)
			if got := ppSession(t, addr, append(raw, "hello"...), false); got != "hello" {
				t.Fatalf("echo %q, want %q:\n%s", got, "hello", log)
			}
			if line := lastLine(t, path); !strings.HasPrefix(line, "127.0.0.1:") || !strings.Contains(line, " 200 5") {
				t.Fatalf("access log %q: want the peer's address and 200", line)
			}
		})
	}
}
