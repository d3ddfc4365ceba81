package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// peerBackend answers each connection with the address it sees the
// connection come from (baton's upstream socket) and holds it open until
// the other side closes.
func peerBackend(t *testing.T) *backend {
	return startBackend(t, "peer", func(c net.Conn) {
		io.WriteString(c, c.RemoteAddr().String()+"\n")
		io.Copy(io.Discard, c)
	})
}

// needLocal skips the test unless addr is an address of this host (Linux
// routes all of 127.0.0.0/8 to lo; some sandboxes do not).
func needLocal(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Skipf("%s is not a local address here: %v", addr, err)
	}
	ln.Close()
}

// findSocket returns the descriptor of this process whose socket has local
// and peer as its addresses: baton's end of a connection the test made or
// accepted. The test's own end has them the other way round.
func findSocket(t *testing.T, local, peer netip.AddrPort) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil || sock.AddrPort(sa) != local {
			continue
		}
		if pa, err := unix.Getpeername(fd); err == nil && sock.AddrPort(pa) == peer {
			return fd
		}
	}
	t.Fatalf("no socket %s -> %s in this process", local, peer)
	return -1
}

func sockoptOf(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatalf("getsockopt(%d, %d) on %d: %v", level, opt, fd, err)
	}
	return v
}

// boundSession is one client connection through baton to a peerBackend, and
// baton's two sockets for it.
type boundSession struct {
	seen     netip.AddrPort // the peer the backend saw: baton's upstream socket
	client   int            // baton's client socket
	upstream int            // baton's upstream socket
}

// dialThrough connects to proxy (from local, if valid), reads the address the
// backend b saw, finds baton's sockets and calls check while the session
// is open.
func dialThrough(t *testing.T, proxy string, local netip.Addr, b *backend, check func(boundSession)) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	c, err := d.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v (got %q)", proxy, err, line)
	}
	seen, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("%s: backend said %q", proxy, line)
	}
	check(boundSession{
		seen:     seen,
		client:   findSocket(t, netip.MustParseAddrPort(proxy), c.LocalAddr().(*net.TCPAddr).AddrPort()),
		upstream: findSocket(t, seen, b.addr()),
	})
}

// proxy_bind binds the upstream socket as nginx: an address (with a port or
// not), inherited from stream unless the server says off; with variables,
// evaluated per session, where an empty value or one that is no address
// binds nothing. proxy_socket_keepalive and tcp_nodelay set their options
// on the sockets, and a server that sets none of the three dials as before.
func TestProxyBindKeepaliveNoDelay(t *testing.T) {
	for _, a := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		needLocal(t, a)
	}
	b := peerBackend(t)
	port := deadAddr(t).Port()
	p, addrs, lb := startConf(t, fmt.Sprintf(`stream {
		proxy_bind 127.0.0.2;
		server { listen 127.0.0.1:0; proxy_pass %[1]s; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; proxy_bind off; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; proxy_bind 127.0.0.3:%[2]d; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; set $b 127.0.0.4; proxy_bind $b; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; proxy_bind $remote_addr; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; set $b ""; proxy_bind $b; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; set $b nonsense; proxy_bind $b; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; proxy_bind off; proxy_socket_keepalive on; tcp_nodelay off; }
		map $upstream_addr $bindu { "" 127.0.0.4; default 127.0.0.3; }
		server { listen 127.0.0.1:0; proxy_pass %[1]s; proxy_bind $bindu; }
	}`, b.addr(), port))
	for i, tc := range []struct {
		name       string
		from       string // the client's address; "" for any
		want       string // the address the backend sees, or with ":" the address and port
		keepalive  int
		noDelay    int // on both of baton's sockets
		plainDial  bool
		logContain string
	}{
		{name: "inherited", want: "127.0.0.2", noDelay: 1},
		{name: "off", want: "127.0.0.1", noDelay: 1, plainDial: true},
		{name: "port", want: fmt.Sprintf("127.0.0.3:%d", port), noDelay: 1},
		{name: "variable", want: "127.0.0.4", noDelay: 1},
		{name: "remote_addr", from: "127.0.0.5", want: "127.0.0.5", noDelay: 1},
		{name: "empty", want: "127.0.0.1", noDelay: 1},
		{name: "no address", want: "127.0.0.1", noDelay: 1, logContain: `invalid local address "nonsense", client: 127.0.0.1, server: `},
		{name: "keepalive, nodelay off", want: "127.0.0.1", keepalive: 1, noDelay: 0},
		// Evaluated before a peer is picked, as nginx: no $upstream_addr yet.
		{name: "before the pick", want: "127.0.0.4", noDelay: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.servers[i].up == nil; got != tc.plainDial {
				t.Errorf("server without upstream socket options: %v, want %v", got, tc.plainDial)
			}
			var from netip.Addr
			if tc.from != "" {
				from = netip.MustParseAddr(tc.from)
			}
			dialThrough(t, addrs[i], from, b, func(s boundSession) {
				got := s.seen.Addr().String()
				if strings.Contains(tc.want, ":") {
					got = s.seen.String()
				}
				if got != tc.want {
					t.Errorf("backend saw %s, want %s", s.seen, tc.want)
				}
				if v := sockoptOf(t, s.upstream, unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != tc.keepalive {
					t.Errorf("upstream SO_KEEPALIVE %d, want %d", v, tc.keepalive)
				}
				if v := sockoptOf(t, s.upstream, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != tc.noDelay {
					t.Errorf("upstream TCP_NODELAY %d, want %d", v, tc.noDelay)
				}
				if v := sockoptOf(t, s.client, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != tc.noDelay {
					t.Errorf("client TCP_NODELAY %d, want %d", v, tc.noDelay)
				}
			})
			if tc.logContain != "" && !strings.Contains(lb.String(), tc.logContain) {
				t.Errorf("log lacks %q:\n%s", tc.logContain, lb)
			}
		})
	}
}

// A bind that fails is baton's own failure, as nginx's ngx_event_connect_peer
// returning NGX_ERROR: logged at crit as nginx words it, the session ends
// with 500, no other peer is tried and none is blamed.
func TestProxyBindFails(t *testing.T) {
	b1, b2 := peerBackend(t), peerBackend(t)
	logPath := t.TempDir() + "/access.log"
	_, addrs, lb := startConf(t, fmt.Sprintf(`stream {
		log_format st "$status $upstream_addr";
		upstream u { server %s; server %s; }
		server { listen 127.0.0.1:0; proxy_pass u; proxy_bind 192.0.2.1; access_log %s st; }
		server { listen 127.0.0.1:0; proxy_pass u; }
	}`, b1.addr(), b2.addr(), logPath))
	for i := 0; i < 2; i++ {
		if got := readAll(t, addrs[0]); got != "" {
			t.Fatalf("a session whose bind failed answered %q", got)
		}
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(logPath); return strings.Count(string(b), "\n") == 2 })
	logged, _ := os.ReadFile(logPath)
	for _, line := range strings.Split(strings.TrimSpace(string(logged)), "\n") {
		if f := strings.Fields(line); len(f) != 2 || f[0] != "500" {
			t.Errorf("access log %q, want status 500 and one upstream", line)
		}
	}
	if !strings.Contains(lb.String(), "[crit]") ||
		!strings.Contains(lb.String(), `bind(192.0.2.1) failed (99: Cannot assign requested address) while connecting to upstream, client: 127.0.0.1, server: `) {
		t.Errorf("log lacks nginx's bind line:\n%s", lb)
	}
	if strings.Contains(lb.String(), "temporarily disabled") || strings.Contains(lb.String(), "connect() failed") {
		t.Errorf("a local failure was counted against the peer:\n%s", lb)
	}
	// Both peers still take sessions.
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		c := dial(t, addrs[1])
		seen[readLine(t, c)] = true
		c.Close()
	}
	if len(seen) != 2 {
		t.Errorf("the other server reached %d peers, want 2", len(seen))
	}
}

// proxy_bind ADDRESS transparent: IP_TRANSPARENT is set before the bind, so
// the address may be one this host does not have (here a local one, as
// nginx's test does). It needs CAP_NET_ADMIN or CAP_NET_RAW.
func TestProxyBindTransparent(t *testing.T) {
	needLocal(t, "127.0.0.2")
	probe, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.SetsockoptInt(probe, unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1)
	unix.Close(probe)
	if err != nil {
		t.Skipf("IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW: %v", err)
	}
	b := peerBackend(t)
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
		server { listen 127.0.0.1:0; proxy_pass %s; proxy_bind 127.0.0.2 transparent; }
	}`, b.addr()))
	dialThrough(t, addrs[0], netip.Addr{}, b, func(s boundSession) {
		if s.seen.Addr().String() != "127.0.0.2" {
			t.Errorf("backend saw %s, want 127.0.0.2", s.seen)
		}
		if v := sockoptOf(t, s.upstream, unix.IPPROTO_IP, unix.IP_TRANSPARENT); v != 1 {
			t.Errorf("upstream IP_TRANSPARENT %d, want 1", v)
		}
	})
}

// tcp_nodelay on the client socket as nginx's content phase sets it: each
// server with it on sets TCP_NODELAY, none clears it, so a session "pass"ed
// between servers has it if any of them has it on.
func TestTCPNoDelayAcrossPass(t *testing.T) {
	b := peerBackend(t)
	on, off := deadAddr(t).String(), deadAddr(t).String()
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
		server { listen 127.0.0.1:0; tcp_nodelay off; pass %[1]s; }
		server { listen 127.0.0.1:0; pass %[2]s; }
		server { listen 127.0.0.1:0; tcp_nodelay off; pass %[2]s; }
		server { listen %[1]s; proxy_pass %[3]s; }
		server { listen %[2]s; tcp_nodelay off; proxy_pass %[3]s; }
	}`, on, off, b.addr()))
	for i, want := range []struct{ client, upstream int }{{1, 1}, {1, 0}, {0, 0}} {
		dialThrough(t, addrs[i], netip.Addr{}, b, func(s boundSession) {
			if v := sockoptOf(t, s.client, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != want.client {
				t.Errorf("server %d: client TCP_NODELAY %d, want %d", i, v, want.client)
			}
			if v := sockoptOf(t, s.upstream, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != want.upstream {
				t.Errorf("server %d: upstream TCP_NODELAY %d, want %d", i, v, want.upstream)
			}
		})
	}
}

// proxy_bind on UDP, as nginx: the session's upstream socket is bound
// (variables allowed), and a bind that fails is logged as for TCP.
func TestProxyBindUDP(t *testing.T) {
	needLocal(t, "127.0.0.2")
	needLocal(t, "127.0.0.3")
	b := startUDPBackend(t, func(_ []byte, from netip.AddrPort) [][]byte { return [][]byte{[]byte(from.Addr().String())} })
	_, addrs, lb := startConf(t, fmt.Sprintf(`stream {
		server { listen 127.0.0.1:0 udp; proxy_pass %[1]s; proxy_bind 127.0.0.2; }
		server { listen 127.0.0.1:0 udp; proxy_pass %[1]s; set $b 127.0.0.3; proxy_bind $b; }
		server { listen 127.0.0.1:0 udp; proxy_pass %[1]s; proxy_socket_keepalive on; tcp_nodelay off; }
		server { listen 127.0.0.1:0 udp; proxy_pass %[1]s; proxy_bind 192.0.2.1; }
	}`, b.addr))
	for i, want := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.1"} {
		if got := newUDPClient(t, addrs[i]).ask("x"); got != want {
			t.Errorf("server %d: backend saw %s, want %s", i, got, want)
		}
	}
	newUDPClient(t, addrs[3]).send([]byte("x"))
	waitFor(t, func() bool {
		return strings.Contains(lb.String(), "bind(192.0.2.1) failed (99: Cannot assign requested address) while connecting to upstream, udp client: 127.0.0.1, ")
	})
}
