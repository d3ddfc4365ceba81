package main

// go test -bench benchmarks: direct connection vs through a proxy.
//
//	go build -o bench/.run/baton ./cmd/baton
//	BATON_BIN=$PWD/bench/.run/baton go test -run '^$' -bench . ./bench/loadgen
//
// Without BATON_BIN (or PROXY_CMD, a command template as in bench/quick.sh) only
// the "direct" sub-benchmarks run; the proxied ones are skipped. The sinks run
// inside the test process; the proxy is a separate process started once per
// benchmark and stopped (SIGTERM, then SIGKILL after 5 s) by its PID.

import (
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proxyFor starts the proxy under test in front of backend and returns its
// listen address and label, or "" when no proxy is configured.
func proxyFor(b *testing.B, backend string) (addr, label string) {
	b.Helper()
	bin, tmpl := os.Getenv("BATON_BIN"), os.Getenv("PROXY_CMD")
	if bin == "" && tmpl == "" {
		return "", ""
	}
	// Pick a free port: bind :0, note the port, release it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	_, lport, _ := net.SplitHostPort(addr)
	_, bport, _ := net.SplitHostPort(backend)

	var cmd *exec.Cmd
	if tmpl != "" {
		label = "proxy"
		r := strings.NewReplacer("{listen}", addr, "{backend}", backend,
			"{listen_port}", lport, "{backend_port}", bport)
		cmd = exec.Command("bash", "-c", "exec "+r.Replace(tmpl))
	} else {
		label = "baton"
		cmd = exec.Command(bin, "run", "--listen", addr, "--upstream", backend)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start proxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, label
		}
		select {
		case <-exited:
			b.Fatalf("proxy %v exited before listening on %s", cmd.Args, addr)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("proxy not listening on %s after 10s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkThroughput writes 128 KiB chunks on one connection to a discard
// sink; the MB/s column is the throughput (client-side, written bytes).
func BenchmarkThroughput(b *testing.B) {
	const size = 128 << 10
	sink := startSink(b, modeDiscard)
	run := func(addr string) func(*testing.B) {
		return func(b *testing.B) {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, size)
			b.SetBytes(size)
			for b.Loop() {
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size)*8*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gbit/s")
		}
	}
	b.Run("direct", run(sink))
	if addr, label := proxyFor(b, sink); addr != "" {
		b.Run(label, run(addr))
	} else {
		b.Run("proxy", func(b *testing.B) { b.Skip("set BATON_BIN or PROXY_CMD to benchmark through a proxy") })
	}
}

// BenchmarkConnect measures new connections: dial, 1-byte echo, close, from
// 4 goroutines per GOMAXPROCS; conns/s is the rate, ns/op its inverse.
func BenchmarkConnect(b *testing.B) {
	sink := startSink(b, modeEcho)
	run := func(addr string) func(*testing.B) {
		return func(b *testing.B) {
			var errs atomic.Int64
			var first atomic.Value
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				d := net.Dialer{Timeout: 2 * time.Second}
				out := []byte{'x'}
				in := make([]byte, 1)
				for pb.Next() {
					c, err := d.Dial("tcp", addr)
					if err == nil {
						c.SetDeadline(time.Now().Add(2 * time.Second))
						if _, err = c.Write(out); err == nil {
							_, err = io.ReadFull(c, in)
						}
						c.Close()
					}
					if err != nil {
						errs.Add(1)
						first.CompareAndSwap(nil, err.Error())
						time.Sleep(time.Millisecond)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
			if n := errs.Load(); n > 0 {
				b.Errorf("%d of %d connections failed, first: %v", n, b.N, first.Load())
			}
		}
	}
	b.Run("direct", run(sink))
	if addr, label := proxyFor(b, sink); addr != "" {
		b.Run(label, run(addr))
	} else {
		b.Run("proxy", func(b *testing.B) { b.Skip("set BATON_BIN or PROXY_CMD to benchmark through a proxy") })
	}
}
