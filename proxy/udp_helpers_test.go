package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// udpBackend is a loopback UDP server for tests: one goroutine answers each
// datagram with what handle returns.
type udpBackend struct {
	conn *net.UDPConn
	addr netip.AddrPort
}

func startUDPBackend(t testing.TB, handle func(b []byte, from netip.AddrPort) [][]byte) *udpBackend {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := &udpBackend{conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			for _, r := range handle(buf[:n], from) {
				c.WriteToUDPAddrPort(r, from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return b
}

func udpEcho(b []byte, _ netip.AddrPort) [][]byte { return [][]byte{bytes.Clone(b)} }

// udpTag answers "NAME PORT PAYLOAD": PORT is the source port the backend
// saw, that is the session's upstream socket.
func udpTag(name string) func([]byte, netip.AddrPort) [][]byte {
	return func(b []byte, from netip.AddrPort) [][]byte {
		return [][]byte{fmt.Appendf(nil, "%s %d %s", name, from.Port(), b)}
	}
}

// deadUDPAddr returns a loopback UDP address where nothing listens.
func deadUDPAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return a
}

// udpConfig is testConfig with the listen made "udp" and proxy_responses
// not limited (nginx's default; testConfig's zero value would mean 0).
func udpConfig(ups []upstreamSpec, mod func(*config.Server)) *config.Config {
	return testConfig(ups, func(s *config.Server) {
		s.Listen[0].UDP = true
		s.ProxyResponses = -1
		if mod != nil {
			mod(s)
		}
	})
}

// watchEnds returns the sessions of p as they finish.
func watchEnds(t testing.TB, p *Proxy) <-chan udpEnd {
	ch := make(chan udpEnd, 8192)
	fn := func(e udpEnd) {
		select {
		case ch <- e:
		default:
		}
	}
	for _, u := range p.udp {
		u.endHook.Store(&fn)
	}
	return ch
}

func waitEnd(t testing.TB, ends <-chan udpEnd) udpEnd {
	t.Helper()
	select {
	case e := <-ends:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no UDP session ended within 10s")
		return udpEnd{}
	}
}

// udpClient is a client socket on its own port.
type udpClient struct {
	t     testing.TB
	c     *net.UDPConn
	proxy netip.AddrPort
}

func newUDPClient(t testing.TB, proxy string) *udpClient {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{t: t, c: c, proxy: netip.MustParseAddrPort(proxy)}
}

func (c *udpClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.c.WriteToUDPAddrPort(b, c.proxy); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next datagram, which must come from the proxy's address.
func (c *udpClient) recv(within time.Duration) ([]byte, error) {
	buf := make([]byte, 1<<16+1)
	c.c.SetReadDeadline(time.Now().Add(within))
	n, from, err := c.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, err
	}
	if from != c.proxy {
		return nil, fmt.Errorf("reply from %s, want it from %s", from, c.proxy)
	}
	return buf[:n], nil
}

func (c *udpClient) ask(msg string) string {
	c.t.Helper()
	c.send([]byte(msg))
	b, err := c.recv(5 * time.Second)
	if err != nil {
		c.t.Fatalf("after sending %q: %v", msg, err)
	}
	return string(b)
}

// tagPort returns the upstream socket's port from a udpTag reply.
func tagPort(t testing.TB, reply string) string {
	t.Helper()
	f := strings.Fields(reply)
	if len(f) < 2 {
		t.Fatalf("reply %q is not NAME PORT ...", reply)
	}
	return f[0] + " " + f[1]
}

// settleGoroutines waits, within a bound, for the goroutine count to drop to n.
func settleGoroutines(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
}

// shutdown stops u reading, on its loop, as Shutdown does.
func (u *udpListener) shutdown() { u.l.call(u.stop) }
