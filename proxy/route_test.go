package proxy

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// startConf parses text (an nginx config) and starts it; the listen
// addresses are returned in config order. Each "127.0.0.1:0" in text
// becomes a free port (nginx refuses port 0).
func startConf(t *testing.T, text string) (*Proxy, []string, *logBuf) {
	t.Helper()
	used := map[string]bool{}
	for strings.Contains(text, "127.0.0.1:0;") || strings.Contains(text, "127.0.0.1:0 ") {
		// Each a port of its own: servers sharing one would be virtual
		// servers of one socket, and the kernel may offer a port twice.
		free := deadAddr(t).String()
		if used[free] || strings.Contains(text, free) {
			continue
		}
		used[free] = true
		text = strings.Replace(strings.Replace(text, "127.0.0.1:0;", free+";", 1), "127.0.0.1:0 ", free+" ", 1)
	}
	cfg, err := config.Parse("route.conf", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	p, lb := startProxyWith(t, cfg, Options{}, nil)
	var addrs []string
	for _, a := range p.Addrs() {
		addrs = append(addrs, a.String())
	}
	return p, addrs, lb
}

// distinctAddrs returns n loopback addresses where nothing listens, no two
// alike (the kernel may offer a port twice in a row).
func distinctAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for len(out) < n {
		a := deadAddr(t).String()
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// readAll dials addr and returns all it answers before closing.
func readAll(t *testing.T, addr string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	return string(b)
}

func TestSetAndReturn(t *testing.T) {
	_, addrs, _ := startConf(t, `stream {
		server {
			listen 127.0.0.1:0;
			set $a "x";
			set $B "$a-$remote_addr";
			return "$b|${A}|$nginx_version|$protocol|$bytes_sent";
		}
		server {
			listen 127.0.0.1:0;
			return $a;         # set elsewhere only: empty here
		}
		server {
			listen 127.0.0.1:0;
			return "";
		}
	}`)
	if got, want := readAll(t, addrs[0]), "x-127.0.0.1|x|"+nginxVersion+"|TCP|0"; got != want {
		t.Errorf("return = %q, want %q", got, want)
	}
	if got := readAll(t, addrs[1]); got != "" {
		t.Errorf("unset variable = %q, want empty", got)
	}
	if got := readAll(t, addrs[2]); got != "" {
		t.Errorf("empty return = %q", got)
	}
}

// A return text larger than the socket takes at once is sent as the client
// reads it (stateReturning), whole.
func TestReturnLargeText(t *testing.T) {
	chunk := strings.Repeat("0123456789abcdef", 64) // 1 KiB
	_, addrs, _ := startConf(t, `stream { server {
		listen 127.0.0.1:0;
		set $k "`+chunk+`";
		set $m "$k$k$k$k$k$k$k$k$k$k$k$k$k$k$k$k";
		set $g "$m$m$m$m$m$m$m$m$m$m$m$m$m$m$m$m";
		return "$g$g$g$g$g$g$g$g$g$g$g$g$g$g$g$g";
	} }`)
	c := dial(t, addrs[0])
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %d bytes: %v", len(b), err)
	}
	if want := strings.Repeat(chunk, 16*16*16); string(b) != want {
		t.Fatalf("got %d bytes, want %d", len(b), len(want))
	}
}

func TestReturnUDP(t *testing.T) {
	_, addrs, _ := startConf(t, `stream { server {
		listen 127.0.0.1:0 udp;
		set $x "$protocol";
		return "$x:$remote_addr";
	} }`)
	c, err := net.Dial("udp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(".")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 100)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b[:n]); got != "UDP:127.0.0.1" {
		t.Errorf("UDP return = %q", got)
	}
}

func TestProxyPassVariable(t *testing.T) {
	a := startBackend(t, "a", greet("a"))
	b := startBackend(t, "b", greet("b"))
	c := startBackend(t, "c", greet("c"))
	d := startBackend(t, "d", greet("d"))
	_, addrs, lb := startConf(t, fmt.Sprintf(`stream {
		upstream UA { server %s; }
		upstream ub { server %s; }   # named by no server directly
		server { listen 127.0.0.1:0; set $t ua; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t Ub; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t %s; proxy_pass $t; }       # an address: its own upstream
		server { listen 127.0.0.1:0; proxy_pass %s; }                    # an implicit upstream
		server { listen 127.0.0.1:0; set $t %s; proxy_pass ${t}; }     # ... found by host:port
		server { listen 127.0.0.1:0; proxy_pass $t; }                   # empty
		server { listen 127.0.0.1:0; set $t nosuch; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t nosuch.invalid:80; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t 127.0.0.1:x; proxy_pass $t; }
	}`, a.addr(), b.addr(), c.addr(), d.addr(), d.addr()))
	for i, want := range []string{"a\n", "b\n", "c\n", "d\n", "d\n", "", "", "", ""} {
		if got := readAll(t, addrs[i]); got != want {
			t.Errorf("server %d: got %q, want %q", i, got, want)
		}
	}
	waitFor(t, func() bool { return strings.Count(lb.String(), "in upstream") >= 3 })
	for _, want := range []string{
		`no host in upstream ""`,
		`no port in upstream "nosuch"`,
		`no resolver defined to resolve nosuch.invalid`,
		`invalid port in upstream "127.0.0.1:x"`,
	} {
		waitFor(t, func() bool { return strings.Contains(lb.String(), want) })
	}
}

func TestRoutingConfigErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{`stream { server { listen 127.0.0.1:1; return $nosuch; } }`, `unknown "nosuch" variable`},
		{`stream { server { listen 127.0.0.1:1; set $remote_addr 1; return x; } }`, `the duplicate "remote_addr" variable in route.conf:1`},
		{`stream { server { listen 127.0.0.1:1; proxy_pass $nosuch; } }`, `unknown "nosuch" variable`},
	} {
		cfg, err := config.Parse("route.conf", []byte(tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(cfg, Options{Log: NewWriterLogger(io.Discard, LevelError)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.conf, err, tc.want)
		}
	}
}

// clientHello returns the first flight a crypto/tls client sends for sni
// and alpn.
func clientHello(t *testing.T, sni string, alpn ...string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true}).Handshake()
	buf := make([]byte, 64<<10)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// exchange sends msg to addr (in pieces of at most split bytes, if > 0),
// and returns all that comes back.
func exchange(t *testing.T, addr string, msg []byte, split int) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for len(msg) > 0 {
		n := len(msg)
		if split > 0 {
			n = min(n, split)
		}
		if _, err := c.Write(msg[:n]); err != nil {
			t.Fatal(err)
		}
		msg = msg[n:]
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestSSLPreread(t *testing.T) {
	echoB := startBackend(t, "echo", func(c net.Conn) {
		b := make([]byte, 64<<10)
		n, _ := c.Read(b)
		fmt.Fprintf(c, "got %d", n)
	})
	_, addrs, lb := startConf(t, fmt.Sprintf(`stream {
		log_format st "$status $ssl_preread_server_name";
		server {
			listen 127.0.0.1:0;
			ssl_preread on;
			return "$ssl_preread_server_name|$ssl_preread_alpn_protocols|$ssl_preread_protocol";
		}
		server {
			listen 127.0.0.1:0;
			ssl_preread on;
			proxy_pass %s;
		}
		server {
			listen 127.0.0.1:0;
			ssl_preread on;
			preread_buffer_size 64;
			return "$ssl_preread_server_name";
		}
		server {
			listen 127.0.0.1:0;
			ssl_preread on;
			preread_timeout 100ms;
			return "t:$ssl_preread_server_name";
		}
	}`, echoB.addr()))
	hello := clientHello(t, "db.example.com", "h2", "http/1.1")
	want := "db.example.com|h2,http/1.1|TLSv1.3"
	if got := exchange(t, addrs[0], hello, 0); got != want {
		t.Errorf("whole hello: %q, want %q", got, want)
	}
	if got := exchange(t, addrs[0], hello, 7); got != want {
		t.Errorf("hello in pieces: %q, want %q", got, want)
	}
	if got := exchange(t, addrs[0], []byte("GET / HTTP/1.0\r\n\r\n"), 0); got != "||" {
		t.Errorf("not TLS: %q", got)
	}
	// The preread bytes go to the upstream first, once.
	if got, want := exchange(t, addrs[1], hello, 0), fmt.Sprintf("got %d", len(hello)); got != want {
		t.Errorf("proxied: %q, want %q", got, want)
	}
	// A buffer too small for the hello ends the session (400).
	if got := exchange(t, addrs[2], hello, 0); got != "" {
		t.Errorf("buffer full: %q", got)
	}
	waitFor(t, func() bool { return strings.Contains(lb.String(), "preread buffer full while prereading client data") })
	// preread_timeout: on with what was found (nothing).
	c := dial(t, addrs[3])
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(hello[:10])
	if b, _ := io.ReadAll(c); string(b) != "t:" {
		t.Errorf("timed out: %q", b)
	}
}

func TestProxyProtocolTLVs(t *testing.T) {
	_, addrs, _ := startConf(t, `stream { server {
		listen 127.0.0.1:0 proxy_protocol;
		return "$proxy_protocol_tlv_alpn|$proxy_protocol_tlv_0x3|$proxy_protocol_tlv_0x000ae|$proxy_protocol_tlv_ssl_verify|$proxy_protocol_tlv_ssl_cn|$proxy_protocol_tlv_0x0e|$proxy_protocol_server_addr:$proxy_protocol_server_port";
	} }`)
	tlv := func(typ byte, v string) []byte { return append([]byte{typ, byte(len(v) >> 8), byte(len(v))}, v...) }
	var tlvs []byte
	tlvs = append(tlvs, tlv(0x01, "ALPN1")...)
	tlvs = append(tlvs, tlv(0x03, "4321")...)
	tlvs = append(tlvs, tlv(0xae, "12345")...)
	tlvs = append(tlvs, tlv(0x20, string([]byte{1, 0, 0, 0, 255})+string(tlv(0x22, "example.com")))...)
	hdr := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11")
	body := append([]byte{192, 0, 2, 1, 192, 0, 2, 2, 0, 123, 0x16, 0x2e}, tlvs...)
	hdr = append(hdr, byte(len(body)>>8), byte(len(body)))
	hdr = append(hdr, body...)
	want := "ALPN1|4321|12345|255|example.com||192.0.2.2:5678"
	if got := exchange(t, addrs[0], hdr, 0); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A session still in its preread phase moves in an upgrade with the bytes
// read so far, and its "set" values; the new process finishes the phase.
func TestHandoffPrereadSession(t *testing.T) {
	addr := deadAddr(t).String()
	conf := `stream { server {
		listen ` + addr + `;
		ssl_preread on;
		set $mark "$remote_addr";
		return "$mark|$ssl_preread_server_name|$ssl_preread_alpn_protocols";
	} }`
	old, _, _ := startConf(t, conf)
	hello := clientHello(t, "mq.example.com", "mqtt")
	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello[:20]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		n := 0
		old.eachLoop(func(l *loop) {
			for _, s := range l.sessions {
				if s.state == statePreread && len(s.early) == 20 {
					n++
				}
			}
		})
		return n == 1
	})
	cfg, err := config.Parse("route.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	nw, _ := newProxyFor(t, cfg, 1)
	if moved := handOver(t, old, nw); moved != 1 {
		t.Fatalf("moved %d sessions, want 1", moved)
	}
	old.Close()
	if _, err := c.Write(hello[20:]); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	if want := "127.0.0.1|mq.example.com|mqtt"; string(b) != want {
		t.Errorf("got %q, want %q", b, want)
	}
}

func TestPass(t *testing.T) {
	a := startBackend(t, "a", greet("a"))
	two := distinctAddrs(t, 2)
	inner, ppInner := two[0], two[1]
	_, addrs, lb := startConf(t, fmt.Sprintf(`stream {
		server { listen 127.0.0.1:0; pass %s; }
		server { listen %s; set $who "inner:$server_port"; return $who; }
		server { listen 127.0.0.1:0; set $to %s; pass $to; }
		server { listen 127.0.0.1:0; pass 127.0.0.1:1; }
		server { listen 127.0.0.1:0; pass %s; }
		server { listen %s proxy_protocol; return "pp:$proxy_protocol_addr"; }
		server { listen 127.0.0.1:0; ssl_preread on; pass %s; }
		server { listen 127.0.0.1:0; pass $remote_addr:%d; }
	}`, inner, inner, inner, ppInner, ppInner, a.addr(), mustPort(inner)))
	_, innerPort, _ := net.SplitHostPort(inner)
	if got, want := readAll(t, addrs[0]), "inner:"+innerPort; got != want {
		t.Errorf("pass: %q, want %q", got, want)
	}
	if got, want := readAll(t, addrs[2]), "inner:"+innerPort; got != want {
		t.Errorf("pass $var: %q, want %q", got, want)
	}
	if got := readAll(t, addrs[3]); got != "" {
		t.Errorf("pass to no listener: %q", got)
	}
	waitFor(t, func() bool { return strings.Contains(lb.String(), `port not found for "127.0.0.1:1"`) })
	// The PROXY header the client sends is read by the server passed to.
	if got := exchange(t, addrs[4], []byte("PROXY TCP4 192.0.2.7 192.0.2.8 1000 2000\r\n"), 0); got != "pp:192.0.2.7" {
		t.Errorf("pass to a proxy_protocol listener: %q", got)
	}
	// pass is not proxy_pass: an address baton does not listen on is no listener.
	if got := exchange(t, addrs[6], []byte("hello"), 0); got != "" {
		t.Errorf("pass to a backend: %q", got)
	}
	if got, want := readAll(t, addrs[7]), "inner:"+innerPort; got != want {
		t.Errorf("pass $remote_addr:port: %q, want %q", got, want)
	}
}

func mustPort(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n := 0
	fmt.Sscan(p, &n)
	return n
}

// Servers sharing an address are chosen by the ClientHello's server name
// (server_name, once ssl_preread has read it); the default server takes
// the rest: the first, or the one whose listen says default_server.
func TestServerNameVhosts(t *testing.T) {
	addr := deadAddr(t).String()
	_, _, _ = startConf(t, `stream {
		ssl_preread on;
		server { listen `+addr+`; server_name default; return "first"; }
		server { listen `+addr+` default_server; return "default"; }
		server { listen `+addr+`; server_name db.example.com; return "db:$ssl_preread_server_name"; }
		server { listen `+addr+`; server_name *.example.com; return "wild"; }
		server { listen `+addr+`; server_name .example.org; return "dot"; }
		server { listen `+addr+`; server_name www.example.*; return "tail"; }
		server { listen `+addr+`; server_name ~^mq\d+\.example\.net$; return "re"; }
	}`)
	for sni, want := range map[string]string{
		"db.example.com":   "db:db.example.com",
		"DB.Example.COM.":  "db:DB.Example.COM", // crypto/tls drops the trailing dot
		"a.example.com":    "wild",
		"example.org":      "dot",
		"x.y.example.org":  "dot",
		"www.example.biz":  "tail",
		"mq12.example.net": "re",
		"mqx.example.net":  "default",
		"default":          "first",
		"other":            "default",
	} {
		if got := exchange(t, addr, clientHello(t, sni), 0); got != want {
			t.Errorf("%s: %q, want %q", sni, got, want)
		}
	}
	if got := exchange(t, addr, []byte("plain text"), 0); got != "default" {
		t.Errorf("no hello: %q", got)
	}
}

func TestServerNameVariable(t *testing.T) {
	_, addrs, _ := startConf(t, `stream {
		server_names_hash_bucket_size 64;
		server { listen 127.0.0.1:0; server_name .example.com www.example.org; return "[$server_name]"; }
		server { listen 127.0.0.1:0; server_name ~^db\d+$; return "[$server_name]"; }
		server { listen 127.0.0.1:0; return "[$server_name]"; }
	}`)
	for i, want := range []string{"[example.com]", `[~^db\d+$]`, "[]"} {
		if got := readAll(t, addrs[i]); got != want {
			t.Errorf("server %d: %q, want %q", i, got, want)
		}
	}
}

// proxy_download_rate and proxy_upload_rate pace each direction as nginx:
// rate*(seconds+1) bytes at most, and a rest after each read.
func TestRateLimits(t *testing.T) {
	const size = 6000
	b := startBackend(t, "src", func(c net.Conn) {
		c.Write(make([]byte, size))
		io.Copy(io.Discard, c)
	})
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
		server { listen 127.0.0.1:0; proxy_pass %s; proxy_download_rate 2k; }
		server { listen 127.0.0.1:0; proxy_pass %s; set $r 0; proxy_download_rate $r; }
	}`, b.addr(), b.addr()))
	read := func(addr string) time.Duration {
		c := dial(t, addr)
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		start := time.Now()
		if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		return time.Since(start)
	}
	// 6000 bytes at 2048/s: 2048 at once, the rest as the seconds pass.
	if d := read(addrs[0]); d < 1500*time.Millisecond {
		t.Errorf("paced download took %v, want at least 1.5s", d)
	}
	if d := read(addrs[1]); d > 1500*time.Millisecond {
		t.Errorf("a rate of 0 (from a variable) paced: %v", d)
	}
}

// access_log buffer= holds lines until the buffer fills, flush= passes or
// the proxy closes; gzip= writes each flush as one gzip member; a path
// with variables is opened for each line.
func TestAccessLogBufferGzipAndVariablePath(t *testing.T) {
	dir := t.TempDir()
	p, addrs, _ := startConf(t, `stream {
		log_format f "$server_port $status";
		server { listen 127.0.0.1:0; return x; access_log `+dir+`/buf.log f buffer=64k; }
		server { listen 127.0.0.1:0; return x; access_log `+dir+`/gz.log f gzip flush=50ms; }
		server { listen 127.0.0.1:0; return x; access_log `+dir+`/var_$server_port.log f; }
	}`)
	for _, a := range addrs {
		readAll(t, a)
	}
	// The variable path's line is there at once, in a file of its own.
	port2 := addrs[2][strings.LastIndexByte(addrs[2], ':')+1:]
	waitFor(t, func() bool {
		b, _ := os.ReadFile(dir + "/var_" + port2 + ".log")
		return string(b) == port2+" 200\n"
	})
	// flush= writes the gzip buffer out without waiting for more.
	waitFor(t, func() bool {
		b, err := os.ReadFile(dir + "/gz.log")
		if err != nil || len(b) == 0 {
			return false
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return false
		}
		got, _ := io.ReadAll(zr)
		return strings.HasSuffix(string(got), " 200\n")
	})
	// buffer= without flush=: nothing until the proxy closes.
	if b, _ := os.ReadFile(dir + "/buf.log"); len(b) != 0 {
		t.Errorf("buffered log written early: %q", b)
	}
	p.Close()
	port0 := addrs[0][strings.LastIndexByte(addrs[0], ':')+1:]
	if b, _ := os.ReadFile(dir + "/buf.log"); string(b) != port0+" 200\n" {
		t.Errorf("buffered log after close: %q", b)
	}
}

// proxy_buffer_size caps each read: with 1, bytes cross one at a time,
// and all of them.
func TestProxyBufferSize(t *testing.T) {
	b := startBackend(t, "echo", echo)
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream { server { listen 127.0.0.1:0; proxy_pass %s; proxy_buffer_size 1; } }`, b.addr()))
	c := dial(t, addrs[0])
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := strings.Repeat("0123456789", 300)
	go c.Write([]byte(msg))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through proxy_buffer_size 1: %v, %d bytes equal", err, len(got))
	}
}

// hash keys are evaluated after the preread phase: the same server name
// lands on the same server, as nginx's ring says.
func TestHashOnServerName(t *testing.T) {
	a := startBackend(t, "a", greet("a"))
	b := startBackend(t, "b", greet("b"))
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
		upstream u { hash $ssl_preread_server_name consistent; server %s; server %s; }
		server { listen 127.0.0.1:0; ssl_preread on; proxy_pass u; }
	}`, a.addr(), b.addr()))
	seen := map[string]map[string]bool{}
	for i := 0; i < 12; i++ {
		name := fmt.Sprintf("tenant%d.example.com", i%4)
		got := exchange(t, addrs[0], clientHello(t, name), 0)
		if seen[name] == nil {
			seen[name] = map[string]bool{}
		}
		seen[name][got] = true
	}
	all := map[string]bool{}
	for name, backends := range seen {
		if len(backends) != 1 {
			t.Errorf("%s went to %v", name, backends)
		}
		for k := range backends {
			all[k] = true
		}
	}
	if len(all) < 2 {
		t.Logf("4 names all on one server: %v (possible, but unlikely)", all)
	}
}

// A reload changes routing at once: a map's new entries, a new virtual
// server on a kept address, a hash on a map's variable that is rebuilt.
func TestReloadRouting(t *testing.T) {
	a := startBackend(t, "a", greet("a"))
	b := startBackend(t, "b", greet("b"))
	addr := deadAddr(t).String()
	conf := func(target, extra string) *config.Config {
		cfg, err := config.Parse("route.conf", []byte(fmt.Sprintf(`stream {
			upstream ua { server %s; }
			upstream ub { server %s; }
			map $ssl_preread_server_name $to { db.example.com %s; default ua; }
			upstream h { hash $to consistent; server %s; server %s; }
			server { listen %s; ssl_preread on; proxy_pass $to; }
			%s
		}`, a.addr(), b.addr(), target, a.addr(), b.addr(), addr, extra)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	p, _ := startProxyWith(t, conf("ua", ""), Options{}, nil)
	hello := clientHello(t, "db.example.com")
	if got := exchange(t, addr, hello, 0); got != "a\n" {
		t.Fatalf("before reload: %q", got)
	}
	if _, err := p.Reload(conf("ub", "server { listen "+addr+"; server_name db.example.com; return vhost; }")); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, addr, hello, 0); got != "vhost" {
		t.Errorf("after adding a virtual server: %q", got)
	}
	if got := exchange(t, addr, clientHello(t, "other.example.com"), 0); got != "a\n" {
		t.Errorf("default after reload: %q", got)
	}
	if _, err := p.Reload(conf("ub", "")); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, addr, hello, 0); got != "b\n" {
		t.Errorf("after the map changed: %q", got)
	}
}

// UDP pacing, as nginx's: a datagram from the client while the upload
// rests is dropped (counted as "rate"); the upstream's replies wait in its
// socket while the download rests, and all come, paced.
func TestUDPRates(t *testing.T) {
	var mu sync.Mutex
	got := 0
	b := startUDPBackend(t, func(d []byte, _ netip.AddrPort) [][]byte {
		mu.Lock()
		got++
		mu.Unlock()
		return [][]byte{bytes.Repeat([]byte("r"), 100), bytes.Repeat([]byte("s"), 100), bytes.Repeat([]byte("t"), 100)}
	})
	p, addrs, _ := startConf(t, fmt.Sprintf(`stream {
		server { listen 127.0.0.1:0 udp; proxy_pass %s; proxy_upload_rate 100; proxy_download_rate 200; }
	}`, b.addr))
	c := newUDPClient(t, addrs[0])
	start := time.Now()
	for i := 0; i < 3; i++ {
		c.send(bytes.Repeat([]byte("q"), 100)) // the first is allowed, then a 1 s rest
	}
	for i := 0; i < 3; i++ {
		if _, err := c.recv(10 * time.Second); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	// 300 bytes of replies at 200/s: 200 at once, then a rest before the third.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("paced replies came in %v", d)
	}
	mu.Lock()
	n := got
	mu.Unlock()
	if n != 1 {
		t.Errorf("the upstream got %d datagrams, want 1 (the others came while the upload rested)", n)
	}
	var drops uint64
	for _, u := range p.udpListeners() {
		drops += u.dropCounts()["rate"]
	}
	if drops != 2 {
		t.Errorf("rate drops %d, want 2", drops)
	}
}

// A paced session keeps its allowance when it moves: the new process goes
// on from the bytes read and the time since pacing began, as the old one.
func TestPacedSessionKeepsAllowance(t *testing.T) {
	const size = 5000
	b := startBackend(t, "src", func(c net.Conn) {
		c.Write(make([]byte, size))
		io.Copy(io.Discard, c)
	})
	addr := deadAddr(t).String()
	conf := fmt.Sprintf(`stream { server { listen %s; proxy_pass %s; proxy_download_rate 1000; } }`, addr, b.addr())
	cfg, _ := config.Parse("p.conf", []byte(conf))
	old, _ := startProxyWith(t, cfg, Options{}, nil)
	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	first := make([]byte, 1000)
	if _, err := io.ReadFull(c, first); err != nil { // the first second's allowance
		t.Fatal(err)
	}
	var moved pacedState
	waitFor(t, func() bool {
		old.eachLoop(func(l *loop) {
			for _, s := range l.sessions {
				if s.x != nil && s.x.pace[1] != nil {
					moved = pacedState{rate: s.x.pace[1].rate, got: s.x.pace[1].got}
				}
			}
		})
		return moved.got >= 1000
	})
	cfg2, _ := config.Parse("p.conf", []byte(conf))
	nw, _ := newProxyFor(t, cfg2, 1)
	if n := handOver(t, old, nw); n != 1 {
		t.Fatalf("moved %d", n)
	}
	var got pacedState
	waitFor(t, func() bool {
		nw.eachLoop(func(l *loop) {
			for _, s := range l.sessions {
				if s.x != nil && s.x.pace[1] != nil {
					got = pacedState{rate: s.x.pace[1].rate, got: s.x.pace[1].got}
				}
			}
		})
		return got.rate != 0
	})
	if got.rate != 1000 || got.got < moved.got {
		t.Errorf("new process paces at %d with %d bytes counted, want 1000 and at least %d", got.rate, got.got, moved.got)
	}
	old.Close()
	if _, err := io.ReadFull(c, make([]byte, size-1000)); err != nil {
		t.Fatal(err)
	}
}

// A session routed by proxy_pass $var moves in an upgrade with the
// upstream its value named, and counts there.
func TestHandoffRoutedSession(t *testing.T) {
	b := startBackend(t, "echo", echo)
	addr := deadAddr(t).String()
	conf := fmt.Sprintf(`stream {
		upstream db { server %s; }
		server { listen %s; set $to db; proxy_pass $to; }
	}`, b.addr(), addr)
	cfg, _ := config.Parse("r.conf", []byte(conf))
	old, _ := startProxyWith(t, cfg, Options{}, nil)
	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "one\n")
	if l := readLine(t, c); l != "one" {
		t.Fatalf("before: %q", l)
	}
	cfg2, _ := config.Parse("r.conf", []byte(conf))
	nw, _ := newProxyFor(t, cfg2, 1)
	if n := handOver(t, old, nw); n != 1 {
		t.Fatalf("moved %d", n)
	}
	old.Close()
	io.WriteString(c, "two\n")
	if l := readLine(t, c); l != "two" {
		t.Fatalf("after: %q", l)
	}
	var active int32
	for _, g := range nw.groups {
		if g.name == "db" {
			active = g.peers[0].active.Load()
		}
	}
	if active != 1 {
		t.Errorf("the new process counts %d live sessions on db, want 1", active)
	}
}

// A UDP session's limit_conn count moves with it: in the new process the
// client's address is still at its limit.
func TestUDPLimitCarriedInUpgrade(t *testing.T) {
	b := startUDPBackend(t, udpEcho)
	addr := deadUDPAddr(t).String()
	conf := fmt.Sprintf(`stream {
		limit_conn_zone $binary_remote_addr zone=z:1m;
		server { listen %s udp; proxy_pass %s; limit_conn z 1; proxy_timeout 30s; }
	}`, addr, b.addr)
	cfg, _ := config.Parse("l.conf", []byte(conf))
	old, _ := startProxyWith(t, cfg, Options{}, nil)
	c1 := newUDPClient(t, addr)
	if got := c1.ask("one"); got != "one" {
		t.Fatalf("first session: %q", got)
	}
	cfg2, _ := config.Parse("l.conf", []byte(conf))
	nw, _ := newProxyFor(t, cfg2, 1)
	if n := udpHandOver(t, old, nw, nil); n != 1 {
		t.Fatalf("moved %d", n)
	}
	old.Close()
	if got := c1.ask("two"); got != "two" {
		t.Fatalf("moved session: %q", got)
	}
	c2 := newUDPClient(t, addr) // the same address, another port: over the limit
	c2.send([]byte("three"))
	if got, err := c2.recv(300 * time.Millisecond); err == nil {
		t.Errorf("a second session of the address was let through in the new process: %q", got)
	}
}

// ssl_preread's variables are "not found" (logged "-") when the client
// sends no TLS (nginx drops its context), found when it does.
func TestPrereadVariablesNotFound(t *testing.T) {
	dir := t.TempDir()
	_, addrs, _ := startConf(t, `stream {
		log_format f "[$ssl_preread_server_name] [$ssl_preread_protocol]";
		server { listen 127.0.0.1:0; ssl_preread on; return x; access_log `+dir+`/p.log f; }
	}`)
	exchange(t, addrs[0], []byte("GET / HTTP/1.0\r\n\r\n"), 0)
	exchange(t, addrs[0], clientHello(t, "a.example.com"), 0)
	want := "[-] [-]\n[a.example.com] [TLSv1.3]\n"
	waitFor(t, func() bool {
		b, _ := os.ReadFile(dir + "/p.log")
		return string(b) == want
	})
}

// A server with no proxy_pass, return or pass is accepted, as nginx 1.25.5+
// (a virtual server may be there only for its certificates); its sessions
// end at once with 500.
func TestNoHandler(t *testing.T) {
	log := filepath.Join(t.TempDir(), "a.log")
	tcp, udp := deadAddr(t).String(), deadAddr(t).String()
	startConf(t, fmt.Sprintf(`stream {
    log_format s $status;
    server { listen %s; access_log %s s; }
    server { listen %s udp; access_log %s s; }
}`, tcp, log, udp, log))
	c, err := net.DialTimeout("tcp", tcp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Fatalf("got %q", got)
	}
	u, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("x"))
	waitFor(t, func() bool { data, _ := os.ReadFile(log); return string(data) == "500\n500\n" })
}
