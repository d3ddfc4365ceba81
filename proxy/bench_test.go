package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// Each benchmark runs "direct" (client to backend) and "baton" (client to
// backend through the proxy) in one run, so their ratio is meaningful on a
// noisy machine. Client, backend and proxy share the machine's cores.

func benchTargets(b *testing.B, backend *backend) map[string]string {
	addr := startBenchProxy(b, testConfig([]upstreamSpec{{addr: backend.addr()}}, func(s *config.Server) {
		s.ProxyHalfClose = true
	}))
	return map[string]string{"direct": backend.addr().String(), "baton": addr}
}

// startBenchProxy starts cfg logging at nginx's default level (error), as a
// production baton: the tests' info level writes lines per session.
func startBenchProxy(b *testing.B, cfg *config.Config) string {
	return startBenchProxies(b, cfg)[0].String()
}

// startBenchProxies is startBenchProxy for a config of several listens:
// their addresses in order.
func startBenchProxies(b *testing.B, cfg *config.Config) []net.Addr {
	p, err := New(cfg, Options{Log: NewWriterLogger(io.Discard, LevelError)})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p.Addrs()
}

// BenchmarkThroughput streams 64 KiB writes from one client to a backend
// that discards them; the last byte is acknowledged so every byte is counted.
func BenchmarkThroughput(b *testing.B) {
	sink := startBackend(b, "sink", func(c net.Conn) {
		io.Copy(io.Discard, c)
		c.Write([]byte{1})
	})
	targets := benchTargets(b, sink)
	for _, name := range []string{"direct", "baton"} {
		b.Run(name, func(b *testing.B) {
			c := dial(b, targets[name])
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			if _, err := io.ReadFull(c, buf[:1]); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkConnRate measures new connections per second: each op dials,
// sends one byte, reads its echo and closes.
func BenchmarkConnRate(b *testing.B) {
	e := startBackend(b, "echo", echo)
	targets := benchTargets(b, e)
	for _, name := range []string{"direct", "baton"} {
		b.Run(name, func(b *testing.B) {
			addr := targets[name]
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				one := make([]byte, 1)
				for pb.Next() {
					c, err := net.DialTimeout("tcp", addr, 5*time.Second)
					if err != nil {
						b.Error(err)
						return
					}
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write(one); err != nil {
						b.Error(err)
					}
					if _, err := io.ReadFull(c, one); err != nil {
						b.Error(err)
					}
					c.Close()
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}

// BenchmarkPingPong measures the round trip of a small request on a
// persistent connection (keep-alive latency): one op is a 64-byte write and
// its echo.
func BenchmarkPingPong(b *testing.B) {
	e := startBackend(b, "echo", echo)
	targets := benchTargets(b, e)
	for _, name := range []string{"direct", "baton"} {
		b.Run(name, func(b *testing.B) {
			c := dial(b, targets[name])
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			msg := make([]byte, 64)
			got := make([]byte, 64)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
