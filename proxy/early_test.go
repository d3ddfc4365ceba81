package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"golang.org/x/sys/unix"
)

// lineEcho answers every line it reads with "NAME LINE"; a PROXY header
// line is answered as "NAME header".
func lineEcho(name string) func(net.Conn) {
	return func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "PROXY TCP4 ") {
				line = "header\n"
			}
			fmt.Fprintf(c, "%s %s", name, line)
		}
	}
}

// The client writes as soon as it is connected, so its first bytes are
// usually read before the upstream is chosen and sent with the upstream
// handshake (readEarly, sendOpening). Whatever the timing, and whether the
// first upstream refuses or never answers, the upstream must see the PROXY
// header (if any) first, then the client's bytes once each, in order.
func TestEarlyBytesGoFirstAndOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		first  func(t *testing.T) string // the upstream tried first
		pp     int
		conns  int
		within time.Duration
	}{
		{"refused first", func(t *testing.T) string { return deadAddr(t).String() }, 0, 20, 5 * time.Second},
		{"refused first, PROXY header out", func(t *testing.T) string { return deadAddr(t).String() }, 1, 20, 5 * time.Second},
		{"timed out first, PROXY header out", fullListener, 1, 2, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := startBackend(t, "live", lineEcho("live"))
			_, addr, log := startProxy(t, testConfig([]upstreamSpec{
				{addr: mustAddrPort(tc.first(t))}, {addr: live.addr()},
			}, func(s *config.Server) {
				s.ProxyConnectTimeout = 200 * time.Millisecond
				s.ProxyProtocol = tc.pp
				// Never marked failed, so round robin keeps sending
				// sessions to it first.
				s.Upstream.Servers[0].MaxFails = 0
			}))
			var wg sync.WaitGroup
			errs := make(chan error, tc.conns)
			for i := 0; i < tc.conns; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					errs <- earlyRoundTrip(addr, i, tc.pp > 0, tc.within)
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if !strings.Contains(log.String(), "while connecting to upstream") {
				t.Errorf("no session tried the first upstream:\n%s", log)
			}
		})
	}
}

func earlyRoundTrip(addr string, i int, header bool, within time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, within)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	first, second := fmt.Sprintf("first %d\n", i), fmt.Sprintf("second %d\n", i)
	if _, err := c.Write([]byte(first)); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	want := []string{"live " + first}
	if header {
		want = append([]string{"live header\n"}, want...)
	}
	for _, w := range want {
		got, err := r.ReadString('\n')
		if err != nil || got != w {
			return fmt.Errorf("conn %d: got %q, %v; want %q", i, got, err, w)
		}
	}
	if _, err := c.Write([]byte(second)); err != nil {
		return err
	}
	if got, err := r.ReadString('\n'); err != nil || got != "live "+second {
		return fmt.Errorf("conn %d: got %q, %v; want %q", i, got, err, "live "+second)
	}
	return nil
}

// A burst of clients connecting at once is spread over the loops: every
// loop is woken for the listener and the first awake would otherwise take
// the whole burst, leaving one core to serve every keep-alive client.
func TestAcceptBurstIsSpreadOverLoops(t *testing.T) {
	b := startBackend(t, "echo", echo)
	cfg := testConfig([]upstreamSpec{{addr: b.addr()}}, nil)
	p, err := New(cfg, Options{Log: NewWriterLogger(&logBuf{}, LevelInfo), Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addr := p.Addrs()[0].String()
	const n = 40
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ { // connect all first: one burst
		c := dial(t, addr)
		conns = append(conns, c)
	}
	for i, c := range conns { // each session is proxying once it echoes
		msg := fmt.Sprintf("ping %d\n", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := readLine(t, c); got+"\n" != msg {
			t.Fatalf("conn %d: got %q", i, got)
		}
	}
	a, z := p.loops[0].load.Load(), p.loops[1].load.Load()
	if a+z != n || a-z > 2*balanceSlack || z-a > 2*balanceSlack {
		t.Fatalf("loops hold %d and %d of %d sessions; want them within %d of each other", a, z, n, 2*balanceSlack)
	}
}

// An upstream's last reply and its close reach the client as one segment
// (pump's MSG_MORE before flowDone's close), as they left the upstream: the
// client's socket receives the SYN-ACK, the ACK of its request and the
// reply with the FIN, three segments, not four.
func TestLastReplyCarriesTheFIN(t *testing.T) {
	reply := strings.Repeat("r", 300)
	be := startBackend(t, "corked", func(c net.Conn) {
		tc := c.(*net.TCPConn)
		raw, err := tc.SyscallConn()
		if err != nil {
			return
		}
		// Corked, so the reply and the FIN leave together and reach
		// baton in one event.
		raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) })
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return
		}
		io.WriteString(c, reply)
		c.Close()
	})
	_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: be.addr()}}, nil))
	for i := 0; i < 5; i++ {
		c := requestReply(t, addr, i, reply)
		raw, _ := c.SyscallConn()
		var info *unix.TCPInfo
		var err error
		raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if info.Segs_in > 3 {
			t.Errorf("connection %d: the client received %d segments; want 3 (SYN-ACK, ACK, reply with FIN)", i, info.Segs_in)
		}
	}
}

// An upstream that resets after its last reply: the client gets the reply,
// and the reset is logged as nginx logs it, whether baton reads the reply
// and the reset in one pass (pump's look for the EOF finds the reset) or
// in two.
func TestResetAfterLastReplyIsLogged(t *testing.T) {
	reply := strings.Repeat("r", 300)
	be := startBackend(t, "resetter", func(c net.Conn) {
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return
		}
		io.WriteString(c, reply)
		c.(*net.TCPConn).SetLinger(0) // close sends RST
		c.Close()
	})
	_, addr, log := startProxy(t, testConfig([]upstreamSpec{{addr: be.addr()}}, nil))
	const conns = 20
	for i := 0; i < conns; i++ {
		requestReply(t, addr, i, reply).Close()
	}
	// The client's EOF comes when baton closes, after the log line.
	if n := strings.Count(log.String(), "recv() failed (104: Connection reset by peer)"); n != conns {
		t.Errorf("%d of %d resets logged:\n%s", n, conns, log)
	}
}

// requestReply sends one request line to addr and reads to EOF, which must
// come right after want. It returns the connection, still open.
func requestReply(t *testing.T, addr string, i int, want string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "request\n"); err != nil {
		c.Close()
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != want {
		c.Close()
		t.Fatalf("connection %d: read %d bytes, %v; want the %d-byte reply, then EOF", i, len(got), err, len(want))
	}
	return c.(*net.TCPConn)
}
