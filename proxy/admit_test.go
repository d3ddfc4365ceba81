package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	proxyproto "github.com/pires/go-proxyproto"
)

// ppConfig is a proxy_protocol listener to an echo backend that logs
// $remote_addr, $proxy_protocol_addr and $realip_remote_addr.
func ppConfig(t *testing.T, backend netip.AddrPort, trusted string) (*config.Config, string) {
	path := filepath.Join(t.TempDir(), "access.log")
	cfg := testConfig([]upstreamSpec{{addr: backend}}, func(s *config.Server) {
		s.Listen[0].ProxyProtocol = true
		s.ProxyProtocolTimeout = 300 * time.Millisecond
		s.ProxyHalfClose = true
		if trusted != "" {
			s.SetRealIPFrom = []netip.Prefix{netip.MustParsePrefix(trusted)}
		}
		s.AccessLogs = []*config.AccessLog{{Path: path, Format: &config.LogFormat{
			Format: "$remote_addr:$remote_port pp=$proxy_protocol_addr:$proxy_protocol_port real=$realip_remote_addr $status $bytes_received",
		}}}
	})
	return cfg, path
}

func v1Header(src string) []byte {
	h := proxyproto.HeaderProxyFromAddrs(1, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 443})
	b, _ := h.Format()
	return b
}

func v2Header(src string) []byte {
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 443})
	b, _ := h.Format()
	return b
}

// session sends raw, then payload, half-closes and returns what came back.
func ppSession(t *testing.T, addr string, raw []byte, byteByByte bool) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	if byteByByte {
		for i := range raw {
			if _, err := c.Write(raw[i : i+1]); err != nil {
				t.Fatal(err)
			}
		}
	} else if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	b, _ := io.ReadAll(c)
	return string(b)
}

func lastLine(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1]
}

func TestProxyProtocolIn(t *testing.T) {
	b := startBackend(t, "echo", echo)
	for _, tc := range []struct {
		name       string
		trusted    string
		raw        []byte
		byteByByte bool
		wantEcho   string
		wantLog    string
	}{
		{"v1 trusted, payload in the same segment", "127.0.0.0/8", append(v1Header("192.0.2.7:5555"), "hello"...), false, "hello",
			"192.0.2.7:5555 pp=192.0.2.7:5555 real=127.0.0.1 200 5"},
		{"v2 trusted", "127.0.0.1/32", append(v2Header("[2001:db8::9]:6000"), "hi"...), false, "hi",
			"2001:db8::9:6000 pp=2001:db8::9:6000 real=127.0.0.1 200 2"},
		{"v1 byte by byte", "127.0.0.0/8", append(v1Header("192.0.2.8:1"), "x"...), true, "x",
			"192.0.2.8:1 pp=192.0.2.8:1 real=127.0.0.1 200 1"},
		{"v2 byte by byte", "127.0.0.0/8", append(v2Header("192.0.2.9:2"), "yz"...), true, "yz",
			"192.0.2.9:2 pp=192.0.2.9:2 real=127.0.0.1 200 2"},
		{"untrusted: the header is not believed", "10.0.0.0/8", append(v1Header("192.0.2.7:5555"), "hello"...), false, "hello",
			"127.0.0.1:"},
		{"no set_real_ip_from at all", "", append(v2Header("192.0.2.7:5555"), "hello"...), false, "hello",
			"127.0.0.1:"},
		{"garbage", "127.0.0.0/8", []byte("GET / HTTP/1.0\r\n\r\n"), false, "", "pp=-:- real=127.0.0.1 400 0"}, // nginx logs a variable not found as "-"
		{"v1 without CRLF within 107 bytes", "127.0.0.0/8", []byte("PROXY TCP4 " + strings.Repeat("1", 120)), false, "", "400 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, path := ppConfig(t, b.addr(), tc.trusted)
			_, addr, log := startProxy(t, cfg)
			if got := ppSession(t, addr, tc.raw, tc.byteByByte); got != tc.wantEcho {
				t.Fatalf("echo %q, want %q", got, tc.wantEcho)
			}
			line := lastLine(t, path)
			if !strings.Contains(line, tc.wantLog) {
				t.Fatalf("access log %q, want it to contain %q", line, tc.wantLog)
			}
			if tc.trusted != "127.0.0.0/8" && tc.trusted != "127.0.0.1/32" && strings.HasPrefix(line, "192.0.2") {
				t.Fatalf("an untrusted header set $remote_addr: %q", line)
			}
			if tc.wantEcho == "" && !strings.Contains(log.String(), "broken header") {
				t.Errorf("no broken header line:\n%s", log)
			}
		})
	}
}

// A header that never finishes is closed after proxy_protocol_timeout, and
// meanwhile accept keeps serving others.
func TestProxyProtocolTimeoutDoesNotBlockAccept(t *testing.T) {
	b := startBackend(t, "echo", echo)
	cfg, _ := ppConfig(t, b.addr(), "127.0.0.0/8")
	// Stuck headers hold for 3s; a good client behind them must not wait
	// for that (1s leaves a loaded CI runner room, and still proves it).
	cfg.Stream.Servers[0].ProxyProtocolTimeout = 3 * time.Second
	_, addr, log := startProxy(t, cfg)
	var stuck []*net.TCPConn
	for i := 0; i < 20; i++ {
		c := dial(t, addr)
		defer c.Close()
		c.Write([]byte("PROXY TCP4 1.2.3.4")) // never finished
		stuck = append(stuck, c)
	}
	start := time.Now()
	if got := ppSession(t, addr, append(v1Header("192.0.2.1:1"), "ok"...), false); got != "ok" {
		t.Fatalf("a good client behind stuck ones: %q", got)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("a good client waited %s behind stuck headers", el)
	}
	for _, c := range stuck {
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("stuck connection not closed: %d %v", n, err)
		}
	}
	if !strings.Contains(log.String(), "client timed out (110: Connection timed out) while reading PROXY protocol") {
		t.Errorf("no timeout line:\n%s", log)
	}
}

func TestProxyProtocolOut(t *testing.T) {
	// The upstream reads the header baton sends and answers with its source.
	up := startBackend(t, "pp", func(c net.Conn) {
		h, err := proxyproto.Read(bufio.NewReader(c))
		if err != nil {
			fmt.Fprintf(c, "error %v\n", err)
			return
		}
		fmt.Fprintf(c, "v%d %s -> %s\n", h.Version, h.SourceAddr, h.DestinationAddr)
	})
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: up.addr()}}, func(s *config.Server) {
				s.ProxyProtocol = v
			}))
			c := dial(t, addr)
			defer c.Close()
			got := readLine(t, c)
			want := fmt.Sprintf("v%d %s -> %s", v, c.LocalAddr(), addr)
			if got != want {
				t.Fatalf("upstream saw %q, want %q", got, want)
			}
		})
	}
}

// dialFromAddr connects from a given 127.x source address.
func dialFromAddr(t *testing.T, src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return c, err
}

func TestAllowDeny(t *testing.T) {
	b := startBackend(t, "b", greet("b"))
	rule := func(allow bool, cidr string) *config.AccessRule {
		if cidr == "all" {
			return &config.AccessRule{Allow: allow, All: true}
		}
		return &config.AccessRule{Allow: allow, Prefix: netip.MustParsePrefix(cidr)}
	}
	_, addr, log := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		// nginx's order: the first match decides.
		s.Access = []*config.AccessRule{rule(false, "127.0.0.2/32"), rule(true, "127.0.0.0/24"), rule(false, "all")}
	}))
	for _, tc := range []struct {
		src  string
		want string
	}{{"127.0.0.1", "b"}, {"127.0.0.2", ""}, {"127.0.0.3", "b"}, {"127.0.1.1", ""}} {
		c, err := dialFromAddr(t, tc.src, addr)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if strings.TrimSpace(string(got)) != tc.want {
			t.Errorf("from %s: %q, want %q", tc.src, got, tc.want)
		}
	}
	if n := strings.Count(log.String(), "access forbidden by rule"); n != 2 {
		t.Errorf("%d access forbidden lines, want 2:\n%s", n, log)
	}
}

func TestLimitConn(t *testing.T) {
	b := startBackend(t, "echo", echo)
	zone := &config.LimitConnZone{Name: "addr", Key: "$binary_remote_addr", Size: 1 << 20}
	cfg := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.LimitConns = []*config.LimitConn{{Zone: zone, N: 2}}
		s.LimitConnLogLevel = "error"
	})
	cfg.Stream.LimitConnZones = map[string]*config.LimitConnZone{"addr": zone}
	_, addr, log := startProxy(t, cfg)
	open := func(src string) (net.Conn, bool) {
		c, err := dialFromAddr(t, src, addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(c, "ping")
		line, err := bufio.NewReader(c).ReadString('\n')
		return c, err == nil && line == "ping\n"
	}
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, ok := open("127.0.0.5")
		if !ok {
			t.Fatalf("connection %d from 127.0.0.5 refused under the limit", i)
		}
		held = append(held, c)
	}
	if c, ok := open("127.0.0.5"); ok {
		t.Fatal("a third connection from 127.0.0.5 was served over limit_conn 2")
	} else {
		c.Close()
	}
	if c, ok := open("127.0.0.6"); !ok {
		t.Fatal("another address was limited")
	} else {
		c.Close()
	}
	held[0].Close()
	// Once the first session has ended, 127.0.0.5 may connect again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, ok := open("127.0.0.5")
		c.Close()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the limit was not released when a connection ended")
		}
	}
	held[1].Close()
	if !strings.Contains(log.String(), `limiting connections by zone "addr"`) {
		t.Errorf("no limiting line:\n%s", log)
	}
}

func FuzzProxyHeader(f *testing.F) {
	f.Add(v1Header("192.0.2.1:80"))
	f.Add(v2Header("[2001:db8::1]:80"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\npayload"))
	f.Add(append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := proxyHeaderLen(b)
		if err != nil {
			return
		}
		if n < 0 || n > len(b) || n > maxProxyHeader {
			t.Fatalf("header length %d for %d bytes", n, len(b))
		}
		if n > 0 {
			parseProxyHeader(b[:n]) // must not panic
		}
	})
}
