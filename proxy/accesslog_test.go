package proxy

import (
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/syslog"
)

// value is a variable whose value is s, for escaping tests.
func value(s string) segment {
	return segment{v: func(b []byte, _ *record) []byte { return append(b, s...) }}
}

// escape= applies to variable values, not to the format's text, as
// ngx_stream_log_escape, ngx_escape_json and no escaping write them.
func TestAccessLogEscape(t *testing.T) {
	raw := "a\"b\\c\x01\n\t\x1f\x7f\xc3\xa9 d"
	tmpl := template{{lit: `"`}, value(raw), {lit: "\"\x01 "}, value(""), value("plain")}
	for _, tt := range []struct {
		esc  logEscape
		want string
	}{
		{escapeDefault, `"a\x22b\x5Cc\x01\x0A\x09\x1F\x7F\xC3\xA9 d"` + "\x01 plain"},
		{escapeJSON, `"a\"b\\c\u0001\n\t\u001F` + "\x7f\xc3\xa9 d\"\x01 plain"},
		{escapeNone, `"` + raw + "\"\x01 plain"},
	} {
		// Escaping happens in place after what b already holds.
		got := tmpl.appendLog([]byte("head:"), &record{}, tt.esc)
		if want := "head:" + tt.want; string(got) != want {
			t.Errorf("escape %d:\n got %q\nwant %q", tt.esc, got, want)
		}
	}
	for s, want := range map[string]logEscape{"default": escapeDefault, "json": escapeJSON, "none": escapeNone, "": escapeDefault} {
		if parseEscape(s) != want {
			t.Errorf("parseEscape(%q)", s)
		}
	}
}

// A line costs no allocation once the loop's buffer has grown, escaping or
// not.
func TestAccessLogEscapeAllocs(t *testing.T) {
	tmpl, err := compileTemplate(`$remote_addr [$time_local] $protocol $status $bytes_sent $bytes_received $session_time "$upstream_addr"`)
	if err != nil {
		t.Fatal(err)
	}
	r := &record{client: netip.MustParseAddrPort("10.0.0.1:5000"), upstreamAddrs: []byte("10.0.0.2:80"), status: 200, cfd: -1}
	withEscapes := append(template{value("\"\x01\xff")}, tmpl...)
	buf := make([]byte, 0, 512)
	for _, esc := range []logEscape{escapeDefault, escapeJSON, escapeNone} {
		for _, tm := range []template{tmpl, withEscapes} {
			if n := testing.AllocsPerRun(100, func() { buf = tm.appendLog(buf[:0], r, esc) }); n != 0 {
				t.Errorf("escape %d: %v allocations per line", esc, n)
			}
		}
	}
}

// oneSession sends "data" through the proxy at addr to a backend that
// answers "ack" and closes, and waits for the client's EOF: by then baton
// has written its log lines (they are written before it closes the client).
func oneSession(t *testing.T, addr string) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	io.WriteString(c, "data")
	if b, err := io.ReadAll(c); err != nil || string(b) != "ack" {
		t.Fatalf("got %q, %v", b, err)
	}
}

// ack reads 4 bytes, answers "ack" and closes, as stream_error_log.t's backend.
func ack(c net.Conn) {
	b := make([]byte, 4)
	io.ReadFull(c, b)
	io.WriteString(c, "ack")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// if= skips the line when the condition is "" or "0" (ngx_stream_log_handler).
func TestAccessLogIf(t *testing.T) {
	b := startBackend(t, "ack", ack)
	dir := t.TempDir()
	f := &config.LogFormat{Name: "t", Format: "$status $bytes_received", Escape: "default"}
	conds := map[string]string{"empty": "$proxy_protocol_addr", "zero": "0", "status": "$status", "always": "", "port": "$remote_port"}
	cfg := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		for name, cond := range conds {
			s.AccessLogs = append(s.AccessLogs, &config.AccessLog{Path: filepath.Join(dir, name), Format: f, If: cond})
		}
	})
	// stream's access_log is opened, as nginx, though the server has its own.
	unused := filepath.Join(dir, "stream.log")
	cfg.Stream.AccessLogs = []*config.AccessLog{{Path: unused, Format: f}}
	_, addr, _ := startProxy(t, cfg)
	oneSession(t, addr)
	if fi, err := os.Stat(unused); err != nil || fi.Size() != 0 {
		t.Errorf("stream's access_log: %v, %v", fi, err)
	}
	for name, want := range map[string]string{"empty": "", "zero": "", "status": "200 4\n", "always": "200 4\n", "port": "200 4\n"} {
		if got := readFile(t, filepath.Join(dir, name)); got != want {
			t.Errorf("if=%s: %q, want %q", conds[name], got, want)
		}
	}
}

// listenSyslog is a syslog server on loopback that the test reads.
func listenSyslog(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func readSyslog(t *testing.T, c *net.UDPConn) string {
	t.Helper()
	b := make([]byte, 8192)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("syslog: %v", err)
	}
	return string(b[:n])
}

// access_log syslog:... sends each line as one datagram with the syslog
// header, at the target's severity (info unless given), with no newline.
func TestAccessLogSyslog(t *testing.T) {
	b := startBackend(t, "ack", ack)
	srv, sa := listenSyslog(t)
	f := &config.LogFormat{Name: "t", Format: `$protocol $status "$upstream_addr"`, Escape: "json"}
	_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.AccessLogs = []*config.AccessLog{
			{Path: "syslog:server=" + sa.String(), Syslog: &config.Syslog{Server: sa, Facility: 23, Severity: 6, Tag: "nginx"}, Format: f},
			{Path: "syslog:server=" + sa.String() + ",severity=notice,facility=user,tag=baton,nohostname",
				Syslog: &config.Syslog{Server: sa, Facility: 1, Severity: 5, Tag: "baton", NoHostname: true}, Format: f},
		}
	}))
	oneSession(t, addr)
	line := `TCP 200 "` + b.addr().String() + `"`
	date := `[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d`
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`^<190>` + date + ` ` + regexp.QuoteMeta(syslog.Hostname()) + ` nginx: ` + regexp.QuoteMeta(line) + `$`),
		regexp.MustCompile(`^<13>` + date + ` baton: ` + regexp.QuoteMeta(line) + `$`),
	} {
		if got := readSyslog(t, srv); !re.MatchString(got) {
			t.Errorf("syslog %q, want %s", got, re)
		}
	}
}

// A syslog server that is not there costs lines, not traffic.
func TestAccessLogSyslogAway(t *testing.T) {
	b := startBackend(t, "ack", ack)
	srv, sa := listenSyslog(t)
	srv.Close()
	f := &config.LogFormat{Name: "t", Format: "$status"}
	_, addr, lb := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.AccessLogs = []*config.AccessLog{{Path: "syslog:server=" + sa.String(), Syslog: &config.Syslog{Server: sa, Facility: 23, Severity: 6, Tag: "nginx"}, Format: f}}
	}))
	for i := 0; i < 5; i++ {
		oneSession(t, addr)
	}
	// The first datagram's port unreachable makes the next send fail.
	if !strings.Contains(lb.String(), "send() to syslog failed (111: Connection refused), syslog: "+sa.String()) {
		t.Errorf("log:\n%s", lb)
	}
}

// A server's error_log (its own or stream's) takes its sessions' lines,
// nginx's info lines among them; the proxy's log does not see them.
func TestServerErrorLog(t *testing.T) {
	b := startBackend(t, "ack", ack)
	srv, sa := listenSyslog(t)
	path := filepath.Join(t.TempDir(), "server.log")
	_, addr, lb := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.ErrorLogs = []config.ErrorLog{
			{Path: path, Level: "info"},
			{Path: "syslog:server=" + sa.String(), Syslog: &config.Syslog{Server: sa, Facility: 23, Severity: 0, Tag: "nginx"}, Level: "info"},
		}
	}))
	oneSession(t, addr)
	stamp := `\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[info\] \d+#0: \*\d+ `
	want := []string{
		stamp + `client 127\.0\.0\.1:\d+ connected to ` + regexp.QuoteMeta(addr),
		stamp + `proxy 127\.0\.0\.1:\d+ connected to ` + regexp.QuoteMeta(b.addr().String()),
		stamp + `upstream disconnected, bytes from/to client:4/3, bytes from/to upstream:3/4`,
	}
	lines := strings.Split(strings.TrimSuffix(readFile(t, path), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("server log:\n%s", strings.Join(lines, "\n"))
	}
	date := `[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d`
	for i, w := range want {
		if !regexp.MustCompile("^" + w + "$").MatchString(lines[i]) {
			t.Errorf("line %d: %q, want %s", i, lines[i], w)
		}
		// The same line, after a header at severity info (ngx_syslog_writer).
		hdr := `<190>` + date + ` ` + regexp.QuoteMeta(syslog.Hostname()) + ` nginx: `
		if got := readSyslog(t, srv); !regexp.MustCompile("^" + hdr + w + "$").MatchString(got) {
			t.Errorf("syslog %d: %q", i, got)
		}
	}
	if strings.Contains(lb.String(), "connected to") {
		t.Errorf("the proxy's log has the server's lines:\n%s", lb)
	}
}

// The top-level error_log directives all take baton's lines, a syslog one
// at the line's severity.
func TestErrorLogSyslog(t *testing.T) {
	srv, sa := listenSyslog(t)
	path := filepath.Join(t.TempDir(), "error.log")
	cfg := testConfig([]upstreamSpec{{addr: deadAddr(t), down: true}}, nil)
	cfg.ErrorLogs = []config.ErrorLog{
		{Path: path, Level: "error"},
		{Path: "syslog:server=" + sa.String(), Syslog: &config.Syslog{Server: sa, Facility: 23, Severity: 6, Tag: "nginx"}, Level: "error"},
	}
	p, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := dial(t, p.Addrs()[0].String())
	io.ReadAll(c) // closed once "no live upstreams" is logged
	c.Close()
	msg := `no live upstreams while connecting to upstream, client: 127.0.0.1, server: 127.0.0.1:0, upstream: "backend"`
	if got := readFile(t, path); !strings.Contains(got, "[error] ") || !strings.HasSuffix(got, msg+"\n") {
		t.Errorf("error.log %q", got)
	}
	got := readSyslog(t, srv)
	if !strings.HasPrefix(got, "<187>") || !strings.Contains(got, " nginx: ") || !strings.HasSuffix(got, msg) { // local7*8 + 3 (err)
		t.Errorf("syslog %q", got)
	}
}

// BenchmarkAccessLogLine measures a line as finish writes it, appendLog
// with each escape= (BenchmarkLogFormat measures appendTo alone).
func BenchmarkAccessLogLine(b *testing.B) {
	for _, esc := range []struct {
		name string
		esc  logEscape
	}{{"default", escapeDefault}, {"json", escapeJSON}, {"none", escapeNone}} {
		for _, f := range logFormats {
			b.Run(esc.name+"/"+f.name, func(b *testing.B) {
				t, err := compileTemplate(f.format)
				if err != nil {
					b.Fatal(err)
				}
				s := logSession()
				var rec record
				buf := make([]byte, 0, 512)
				b.ReportAllocs()
				for b.Loop() {
					buf = append(t.appendLog(buf[:0], s.record(&rec), esc.esc), '\n')[:0]
				}
			})
		}
	}
}
