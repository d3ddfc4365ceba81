package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

func TestUDPEchoAndAccessLog(t *testing.T) {
	b := startUDPBackend(t, udpEcho)
	path := filepath.Join(t.TempDir(), "access.log")
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.AccessLogs = []*config.AccessLog{{Path: path, Format: &config.LogFormat{
			Name:   "t",
			Format: "$protocol $status $bytes_received $bytes_sent $upstream_addr $remote_addr $server_addr",
		}}}
	}))
	ends := watchEnds(t, p)
	c := newUDPClient(t, addr)
	if got := c.ask("hello"); got != "hello" {
		t.Fatalf("got %q", got)
	}
	if got := c.ask("world!"); got != "world!" {
		t.Fatalf("got %q", got)
	}
	if st := p.Stats(); st.Active != 1 || st.Total != 1 {
		t.Fatalf("stats %+v, want 1 active of 1", st)
	}
	if n := p.servers[0].group.peers[0].active.Load(); n != 1 {
		t.Fatalf("peer active %d, want 1", n)
	}
	p.Close()
	if e := waitEnd(t, ends); e.status != 200 || e.reason != endClosed || e.failed {
		t.Fatalf("end %+v", e)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("UDP 200 11 11 %s 127.0.0.1 127.0.0.1\n", b.addr)
	if string(data) != want {
		t.Fatalf("access log %q, want %q", data, want)
	}
	if st := p.Stats(); st.Active != 0 {
		t.Fatalf("stats %+v after Close", st)
	}
	if n := p.servers[0].group.peers[0].active.Load(); n != 0 {
		t.Fatalf("peer active %d after Close", n)
	}
}

// TestUDPHashKey: "hash $remote_port consistent" sends each session where
// the Picker (the same group code) says, so the key is evaluated for UDP.
func TestUDPHashKey(t *testing.T) {
	b1 := startUDPBackend(t, udpTag("b1"))
	b2 := startUDPBackend(t, udpTag("b2"))
	cfg := udpConfig([]upstreamSpec{{addr: b1.addr}, {addr: b2.addr}}, nil)
	u := cfg.Stream.Upstreams[0]
	u.Method, u.HashKey, u.Consistent = "hash", "$remote_port", true
	_, addr, _ := startProxy(t, cfg)
	pk, err := NewPicker(u)
	if err != nil {
		t.Fatal(err)
	}
	names := map[netip.AddrPort]string{b1.addr: "b1", b2.addr: "b2"}
	used := map[string]int{}
	for i := 0; i < 40; i++ {
		c := newUDPClient(t, addr)
		got := strings.Fields(c.ask("x"))[0]
		_, want, err := pk.Pick(fmt.Sprint(c.c.LocalAddr().(*net.UDPAddr).Port))
		if err != nil {
			t.Fatal(err)
		}
		if got != names[want] {
			t.Fatalf("client %s went to %s, the hash says %s", c.c.LocalAddr(), got, names[want])
		}
		used[got]++
	}
	if len(used) != 2 {
		t.Fatalf("sessions per backend %v", used)
	}
}

func TestUDPLargeDatagrams(t *testing.T) {
	b := startUDPBackend(t, udpEcho)
	_, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, nil))
	c := newUDPClient(t, addr)
	for _, size := range []int{0, 1, 2048, 4097, 65507} {
		msg := make([]byte, size)
		rand.Read(msg)
		c.send(msg)
		got, err := c.recv(5 * time.Second)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes sent, %d came back, equal=%v", size, len(got), bytes.Equal(got, msg[:min(len(got), size)]))
		}
	}
}

// TestUDPStickiness: every client port is its own session with its own
// upstream socket; sessions are balanced (round robin) but a session never
// changes upstream.
func TestUDPStickiness(t *testing.T) {
	b1 := startUDPBackend(t, udpTag("b1"))
	b2 := startUDPBackend(t, udpTag("b2"))
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b1.addr}, {addr: b2.addr}}, nil))
	const clients, rounds, workers = 2000, 3, 50
	cs := make([]*udpClient, clients)
	for i := range cs {
		cs[i] = newUDPClient(t, addr)
	}
	upstreamOf := make([]string, clients)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < clients; i += workers {
				c := cs[i]
				for r := 0; r < rounds; r++ {
					msg := fmt.Sprintf("c%d-r%d", i, r)
					c.send([]byte(msg))
					got, err := c.recv(10 * time.Second)
					if err != nil {
						errs <- fmt.Errorf("client %d round %d: %v", i, r, err)
						return
					}
					f := strings.Fields(string(got))
					if len(f) != 3 || f[2] != msg {
						errs <- fmt.Errorf("client %d: reply %q to %q", i, got, msg)
						return
					}
					if up := f[0] + " " + f[1]; r == 0 {
						upstreamOf[i] = up
					} else if up != upstreamOf[i] {
						errs <- fmt.Errorf("client %d moved from %s to %s", i, upstreamOf[i], up)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	perBackend := map[string]int{}
	sockets := map[string]bool{}
	for _, up := range upstreamOf {
		perBackend[strings.Fields(up)[0]]++
		sockets[up] = true
	}
	if len(sockets) != clients {
		t.Fatalf("%d upstream sockets for %d clients", len(sockets), clients)
	}
	if perBackend["b1"] != clients/2 || perBackend["b2"] != clients/2 {
		t.Fatalf("sessions per backend %v, want round robin", perBackend)
	}
	if st := p.Stats(); st.Active != clients || st.Total != clients {
		t.Fatalf("stats %+v", st)
	}
}

func TestUDPProxyTimeout(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	const timeout = 300 * time.Millisecond
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.ProxyTimeout = timeout
	}))
	ends := watchEnds(t, p)
	c := newUDPClient(t, addr)
	first := tagPort(t, c.ask("a"))
	// Activity moves the deadline on: datagrams a third of the timeout
	// apart keep one session for longer than the timeout.
	start := time.Now()
	tick := time.NewTicker(timeout / 3)
	defer tick.Stop()
	var last time.Time // before the last datagram went: the session's last activity is later
	for i := 0; i < 5; i++ {
		<-tick.C
		last = time.Now()
		if got := tagPort(t, c.ask("more")); got != first {
			t.Fatalf("round %d: upstream %s, want the session's %s", i, got, first)
		}
	}
	tick.Stop()
	e := waitEnd(t, ends)
	if e.status != 200 || e.reason != endTimedOut || e.failed {
		t.Fatalf("end %+v", e)
	}
	if d := time.Since(last); d < timeout {
		t.Fatalf("session ended %s after the last datagram, before proxy_timeout", d)
	}
	if time.Since(start) < timeout*5/3 {
		t.Fatal("the session did not outlive one timeout")
	}
	if got := tagPort(t, c.ask("b")); got == first {
		t.Fatalf("after the timeout the client still uses upstream socket %s", got)
	}
	if st := p.Stats(); st.Total != 2 {
		t.Fatalf("stats %+v, want 2 sessions", st)
	}
}

func TestUDPProxyResponses(t *testing.T) {
	t.Run("1", func(t *testing.T) {
		b := startUDPBackend(t, udpTag("b"))
		p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
			s.ProxyResponses = 1
		}))
		ends := watchEnds(t, p)
		c := newUDPClient(t, addr)
		first := tagPort(t, c.ask("a"))
		if e := waitEnd(t, ends); e.status != 200 || e.reason != endDone {
			t.Fatalf("end %+v", e)
		}
		if got := tagPort(t, c.ask("b")); got == first {
			t.Fatal("the second datagram reused the ended session's socket")
		}
		if e := waitEnd(t, ends); e.reason != endDone {
			t.Fatalf("end %+v", e)
		}
	})
	t.Run("0", func(t *testing.T) {
		got := make(chan string, 1)
		b := startUDPBackend(t, func(m []byte, _ netip.AddrPort) [][]byte {
			got <- string(m)
			return nil
		})
		p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
			s.ProxyResponses = 0
		}))
		ends := watchEnds(t, p)
		newUDPClient(t, addr).send([]byte("fire and forget"))
		if e := waitEnd(t, ends); e.status != 200 || e.reason != endDone {
			t.Fatalf("end %+v", e)
		}
		if m := <-got; m != "fire and forget" {
			t.Fatalf("backend got %q", m)
		}
	})
	t.Run("1 unanswered", func(t *testing.T) {
		// nginx: a timed-out session missing responses is "upstream timed
		// out", 502, and a failure of the peer.
		silent := func([]byte, netip.AddrPort) [][]byte { return nil }
		b1, b2 := startUDPBackend(t, silent), startUDPBackend(t, silent)
		p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b1.addr}, {addr: b2.addr}}, func(s *config.Server) {
			s.ProxyResponses = 1
			s.ProxyTimeout = 100 * time.Millisecond
		}))
		ends := watchEnds(t, p)
		newUDPClient(t, addr).send([]byte("hello?"))
		e := waitEnd(t, ends)
		if e.status != 502 || e.reason != endUpstreamTimedOut || !e.failed || e.peer < 0 {
			t.Fatalf("end %+v", e)
		}
		if p.servers[0].group.health.Peer(e.peer).Usable(time.Now()) {
			t.Fatal("the peer is still usable after max_fails=1 failures")
		}
	})
}

func TestUDPProxyRequests(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.ProxyRequests = 2
		s.ProxyTimeout = 200 * time.Millisecond
	}))
	ends := watchEnds(t, p)
	c := newUDPClient(t, addr)
	p1, p2, p3 := tagPort(t, c.ask("1")), tagPort(t, c.ask("2")), tagPort(t, c.ask("3"))
	if p1 != p2 || p3 == p2 {
		t.Fatalf("upstream sockets %s %s %s: want the third datagram in a new session", p1, p2, p3)
	}
	if st := p.Stats(); st.Total != 2 || st.Active != 2 {
		t.Fatalf("stats %+v", st)
	}
	// The first session, out of the table, still ends on proxy_timeout.
	for i := 0; i < 2; i++ {
		if e := waitEnd(t, ends); e.status != 200 || e.reason != endTimedOut {
			t.Fatalf("end %+v", e)
		}
	}
}

func TestUDPUpstreamRefused(t *testing.T) {
	cfg := udpConfig([]upstreamSpec{{addr: deadUDPAddr(t)}, {addr: deadUDPAddr(t)}}, nil)
	p, addr, logs := startProxy(t, cfg)
	ends := watchEnds(t, p)
	g := p.servers[0].group
	seen := map[int]bool{}
	for i := 0; i < 2; i++ {
		newUDPClient(t, addr).send([]byte("anyone?"))
		e := waitEnd(t, ends)
		if !e.failed || e.status != 200 || e.reason != endUpstreamError || e.peer < 0 {
			t.Fatalf("session %d: end %+v", i, e)
		}
		seen[e.peer] = true
		if g.health.Peer(e.peer).Usable(time.Now()) {
			t.Fatalf("peer %d is still usable after the port unreachable", e.peer)
		}
		if n := g.peers[e.peer].fails.Load(); n != 1 {
			t.Fatalf("peer %d: %d failures counted", e.peer, n)
		}
	}
	if len(seen) != 2 {
		t.Fatalf("peers %v: the second session should have avoided the failed peer", seen)
	}
	// Both peers are out: no live upstreams, a 502, and nginx's reset.
	newUDPClient(t, addr).send([]byte("anyone?"))
	if e := waitEnd(t, ends); e.status != 502 || e.peer != -1 {
		t.Fatalf("end %+v", e)
	}
	for _, want := range []string{"(111: Connection refused)", "upstream server temporarily disabled", "no live upstreams"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("error log lacks %q:\n%s", want, logs)
		}
	}
	if !g.health.Peer(0).Usable(time.Now()) {
		t.Fatal("no live upstreams should reset the failures")
	}
}

// TestUDPWildcardReplyAddress: a wildcard listener replies from the
// address the client sent to (IP_PKTINFO).
func TestUDPWildcardReplyAddress(t *testing.T) {
	b := startUDPBackend(t, udpEcho)
	path := filepath.Join(t.TempDir(), "access.log")
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort("0.0.0.0:0")
		s.AccessLogs = []*config.AccessLog{{Path: path, Format: &config.LogFormat{Name: "t", Format: "$server_addr"}}}
	}))
	_, port, _ := net.SplitHostPort(addr)
	c := newUDPClient(t, "127.0.0.2:"+port)
	if got := c.ask("hi"); got != "hi" {
		t.Fatalf("got %q", got)
	}
	p.Close()
	data, _ := os.ReadFile(path)
	if string(data) != "127.0.0.2\n" {
		t.Fatalf("$server_addr %q, want 127.0.0.2", data)
	}
}

func TestUDPCloseLeavesNoGoroutine(t *testing.T) {
	b := startUDPBackend(t, udpEcho)
	before := runtime.NumGoroutine()
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, nil))
	for i := 0; i < 20; i++ {
		newUDPClient(t, addr).ask("x")
	}
	p.Close()
	waitDone(t, p, 5*time.Second)
	settleGoroutines(t, before)
}

func TestUDPShutdown(t *testing.T) {
	b := startUDPBackend(t, func(m []byte, from netip.AddrPort) [][]byte {
		return [][]byte{bytes.Clone(m), []byte("late")}
	})
	before := runtime.NumGoroutine()
	const timeout = 300 * time.Millisecond
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.ProxyTimeout = timeout
	}))
	c := newUDPClient(t, addr)
	if got := c.ask("a"); got != "a" {
		t.Fatal(got)
	}
	p.udp[0].shutdown() // what Shutdown does, done first so that the next step is sure to follow it
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- p.Shutdown(context.Background()) }()
	// The live session still delivers replies.
	if got, err := c.recv(5 * time.Second); err != nil || string(got) != "late" {
		t.Fatalf("got %q, %v; want the late reply", got, err)
	}
	// A new client is not served.
	nc := newUDPClient(t, addr)
	nc.send([]byte("new"))
	if got, err := nc.recv(timeout); err == nil {
		t.Fatalf("a new client got %q during shutdown", got)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after proxy_timeout")
	}
	if d := time.Since(start); d < timeout/2 {
		t.Fatalf("Shutdown returned after %s, before the session's timeout", d)
	}
	settleGoroutines(t, before)
}

// BenchmarkUDPRoundTrip: one client, one session, 64-byte datagrams echoed
// through baton.
func BenchmarkUDPRoundTrip(b *testing.B) {
	be := startUDPBackend(b, udpEcho)
	_, addr, _ := startProxy(b, udpConfig([]upstreamSpec{{addr: be.addr}}, nil))
	c := newUDPClient(b, addr)
	msg := make([]byte, 64)
	buf := make([]byte, 1<<16)
	c.c.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		c.c.WriteToUDPAddrPort(msg, c.proxy)
		if _, _, err := c.c.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}
