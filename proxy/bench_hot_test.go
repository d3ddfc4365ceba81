package proxy

import (
	"crypto/tls"
	"fmt"
	"github.com/batonproxy/baton/config"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// Hot-path benchmarks (issue 7). The copy loop is BenchmarkThroughput
// (bench_test.go) and upstream picks are lb's BenchmarkPick; see
// bench/README.md for the full list and how to run them.

// BenchmarkAcceptFirstByte measures accept to first byte: one op dials,
// waits for the first byte of the backend's greeting and closes, one
// connection at a time. Through baton that is the client's connect, baton's
// accept, the upstream connect and the first byte relayed; "direct" is the
// same without baton, so baton's share is the difference. p50 and p99 of
// the per-connection times are reported besides the mean (ns/op).
func BenchmarkAcceptFirstByte(b *testing.B) {
	// A one-byte greeting, then close: the client reads everything there is,
	// so its close never resets a connection with unread data.
	g := startBackend(b, "greet", func(c net.Conn) { c.Write([]byte{'g'}) })
	addr := startBenchProxy(b, testConfig([]upstreamSpec{{addr: g.addr()}}, nil))
	targets := map[string]string{"direct": g.addr().String(), "baton": addr}
	for _, name := range []string{"direct", "baton"} {
		b.Run(name, func(b *testing.B) {
			target := targets[name]
			lat := make([]time.Duration, 0, b.N)
			one := make([]byte, 1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				c, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				c.SetDeadline(t0.Add(10 * time.Second))
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatalf("connection %d: reading the first byte: %v", i, err)
				}
				lat = append(lat, time.Since(t0))
				c.Close()
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(q(0.50), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}

// logSession is a session as finish sees it when it writes the access log:
// a finished TCP session with a client, an upstream and bytes both ways.
func logSession() *session {
	return &session{
		id:            123456,
		cfd:           -1,
		ufd:           -1,
		client:        netip.MustParseAddrPort("192.0.2.10:54321"),
		peerAddr:      netip.MustParseAddrPort("192.0.2.10:54321"),
		local:         netip.MustParseAddrPort("127.0.0.1:5432"),
		upstreamAddrs: []byte("10.0.0.7:5432"),
		c2u:           flow{n: 1234567},
		u2c:           flow{n: 987654321},
		startMono:     0,
		endMono:       int64(3*time.Second + 141*time.Millisecond),
		connectTime:   int64(2 * time.Millisecond),
		status:        200,
	}
}

// logFormats are typical log_format strings, and a hash key.
var logFormats = []struct{ name, format string }{
	// the example of nginx's stream log module documentation, plus timings
	{"typical", `$remote_addr [$time_local] $protocol $status $bytes_sent $bytes_received ` +
		`$session_time "$upstream_addr" "$upstream_bytes_sent" "$upstream_bytes_received" "$upstream_connect_time"`},
	// the same without the clock: what formatting costs apart from time.Now
	{"no_time", `$remote_addr $protocol $status $bytes_sent $bytes_received ` +
		`$session_time "$upstream_addr" "$upstream_bytes_sent" "$upstream_bytes_received" "$upstream_connect_time"`},
	// every address and port variable
	{"addrs", `$remote_addr:$remote_port $server_addr:$server_port $realip_remote_addr:$realip_remote_port ` +
		`$connection $msec $pid`},
	// the key of "hash $remote_addr", evaluated for every pick of a hash upstream
	{"hash_key", `$remote_addr`},
}

// BenchmarkLogFormat measures formatting one access-log line (or hash key)
// for a finished session, as finish does: appendTo into a reused buffer.
// It is expected to allocate nothing (TestLogFormatNoAllocs checks it).
func BenchmarkLogFormat(b *testing.B) {
	for _, f := range logFormats {
		b.Run(f.name, func(b *testing.B) {
			t, err := compileTemplate(f.format)
			if err != nil {
				b.Fatal(err)
			}
			s := logSession()
			var rec record
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				line := t.appendTo(buf[:0], s.record(&rec))
				line = append(line, '\n')
				buf = line[:0]
			}
			b.ReportMetric(float64(len(t.appendTo(buf[:0], s.record(&rec)))+1), "bytes/line")
		})
	}
}

// TestLogFormatNoAllocs keeps access-log formatting free of allocations:
// it runs once per proxied connection.
func TestLogFormatNoAllocs(t *testing.T) {
	for _, f := range logFormats {
		tm, err := compileTemplate(f.format)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		s := logSession()
		var rec record
		buf := make([]byte, 0, 512)
		if n := testing.AllocsPerRun(100, func() {
			buf = append(tm.appendTo(buf[:0], s.record(&rec)), '\n')[:0]
		}); n != 0 {
			t.Errorf("%s: %v allocations per line, want 0", f.name, n)
		}
	}
}

// BenchmarkSNIRoute measures a connection routed by its ClientHello
// (ssl_preread, a map of server names, proxy_pass $var) against the same
// proxy's plain proxy_pass, each a dial, a hello, its echo, a close.
func BenchmarkSNIRoute(b *testing.B) {
	echoB := startBackend(b, "echo", func(c net.Conn) { io.Copy(c, c) })
	hello := benchHello(b)
	var names strings.Builder
	for i := 0; i < 15; i++ {
		fmt.Fprintf(&names, "n%d.example.com u;\n", i)
	}
	var ports []uint16
	for _, a := range distinctAddrs(b, 4) {
		ports = append(ports, netip.MustParseAddrPort(a).Port())
	}
	cfg, err := config.Parse("sni.conf", []byte(fmt.Sprintf(`stream {
		upstream u { server %s; }
		map $ssl_preread_server_name $backend { %s db.example.com u; default u; }
		server { listen 127.0.0.1:%d; ssl_preread on; proxy_pass $backend; }
		server { listen 127.0.0.1:%d; proxy_pass u; }
		server { listen 127.0.0.1:%d; ssl_preread on; proxy_pass u; }
		server { listen 127.0.0.1:%d; set $x u; proxy_pass $x; }
	}`, echoB.addr(), names.String(), ports[0], ports[1], ports[2], ports[3])))
	if err != nil {
		b.Fatal(err)
	}
	addrs := startBenchProxies(b, cfg)
	for i, name := range []string{"sni", "plain", "preread_only", "var_only"} {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, len(hello))
			for j := 0; j < b.N; j++ {
				c, err := net.DialTimeout("tcp", addrs[i].String(), 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write(hello)
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// benchHello is a crypto/tls ClientHello for db.example.com.
func benchHello(b *testing.B) []byte {
	a, c := net.Pipe()
	defer a.Close()
	defer c.Close()
	go tls.Client(a, &tls.Config{ServerName: "db.example.com", InsecureSkipVerify: true}).Handshake()
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil {
		b.Fatal(err)
	}
	return buf[:n]
}
