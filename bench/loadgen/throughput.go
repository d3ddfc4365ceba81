package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

type throughputConfig struct {
	addr        string
	conns       int
	duration    time.Duration // measured window
	warmup      time.Duration // run before the window, not counted
	size        int           // bytes per write/read call
	dir         string        // up | down | both
	dialTimeout time.Duration
	tls         tlsFlags
}

type throughputResult struct {
	upBytes, downBytes int64         // moved inside the measured window
	elapsed            time.Duration // length of the measured window
	errors             int64         // connections that failed before the end
	firstErr           error
}

func (r throughputResult) gbps(b int64) float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(b) * 8 / r.elapsed.Seconds() / 1e9
}

// counter is padded to a cache line so that connections do not share one.
type counter struct {
	n atomic.Int64
	_ [56]byte
}

// runThroughput dials cfg.conns connections, moves data for warmup+duration
// and returns what moved during the last cfg.duration. Byte counts are taken
// at the client: for up it is what the client wrote (after the warm-up all
// socket and proxy buffers are full, so in the window written = delivered
// up to a few MB), for down what it read.
func runThroughput(cfg throughputConfig) (throughputResult, error) {
	var res throughputResult
	up := cfg.dir == "up" || cfg.dir == "both"
	down := cfg.dir == "down" || cfg.dir == "both"
	if !up && !down {
		return res, usageError(fmt.Sprintf("unknown -dir %q (want up, down or both)", cfg.dir))
	}
	d := net.Dialer{Timeout: cfg.dialTimeout}
	tcfg, err := cfg.tls.config()
	if err != nil {
		return res, err
	}
	conns := make([]net.Conn, 0, cfg.conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < cfg.conns; i++ {
		c, err := dialWith(&d, cfg.addr, tcfg)
		if err != nil {
			return res, fmt.Errorf("dial %d of %d: %w", i+1, cfg.conns, err)
		}
		conns = append(conns, c)
	}

	start := time.Now()
	// Hard stop, in case the orderly stop below is somehow not reached.
	hard := start.Add(cfg.warmup + cfg.duration + 10*time.Second)
	upN := make([]counter, len(conns))
	downN := make([]counter, len(conns))
	var stopping atomic.Bool
	var errMu sync.Mutex
	var wg sync.WaitGroup
	fail := func(err error) {
		if stopping.Load() {
			return // interrupted on purpose
		}
		errMu.Lock()
		res.errors++
		if res.firstErr == nil {
			res.firstErr = err
		}
		errMu.Unlock()
	}
	for i, c := range conns {
		c.SetDeadline(hard)
		if up {
			wg.Add(1)
			go func(c net.Conn, cnt *counter) {
				defer wg.Done()
				buf := make([]byte, cfg.size)
				for i := range buf {
					buf[i] = byte(i)
				}
				for {
					n, err := c.Write(buf)
					cnt.n.Add(int64(n))
					if err != nil {
						fail(fmt.Errorf("write: %w", err))
						return
					}
				}
			}(c, &upN[i])
		}
		if down {
			wg.Add(1)
			go func(c net.Conn, cnt *counter) {
				defer wg.Done()
				buf := make([]byte, cfg.size)
				for {
					n, err := c.Read(buf)
					cnt.n.Add(int64(n))
					if err != nil {
						fail(fmt.Errorf("read: %w", err))
						return
					}
				}
			}(c, &downN[i])
		}
	}
	sum := func(cs []counter) int64 {
		var t int64
		for i := range cs {
			t += cs[i].n.Load()
		}
		return t
	}

	time.Sleep(time.Until(start.Add(cfg.warmup)))
	t0 := time.Now()
	u0, d0 := sum(upN), sum(downN)
	time.Sleep(time.Until(t0.Add(cfg.duration)))
	t1 := time.Now()
	u1, d1 := sum(upN), sum(downN)
	stopping.Store(true)

	// Unblock every goroutine now and wait for them (bounded).
	now := time.Now()
	for _, c := range conns {
		c.SetDeadline(now)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return res, errors.New("connections did not stop within 10s")
	}
	res.upBytes, res.downBytes, res.elapsed = u1-u0, d1-d0, t1.Sub(t0)
	return res, nil
}

func throughputMain(args []string) error {
	fs := flag.NewFlagSet("throughput", flag.ContinueOnError)
	var cfg throughputConfig
	fs.StringVar(&cfg.addr, "addr", "", "loopback `address` to connect to (sink in discard mode for up, source mode for down/both)")
	fs.IntVar(&cfg.conns, "conns", 1, "parallel connections (1-1000)")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "measured time (at most 10m)")
	fs.DurationVar(&cfg.warmup, "warmup", 500*time.Millisecond, "time run before the measurement, not counted")
	fs.IntVar(&cfg.size, "size", 128<<10, "bytes per write (and read) call, 1 B - 16 MiB")
	fs.StringVar(&cfg.dir, "dir", "up", "up (client writes) | down (client reads) | both")
	fs.DurationVar(&cfg.dialTimeout, "dial-timeout", 5*time.Second, "timeout for each dial")
	cfg.tls.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	switch {
	case fs.NArg() > 0:
		return usageError(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	case cfg.addr == "":
		return usageError("-addr is required")
	case cfg.conns < 1 || cfg.conns > 1000:
		return usageError("-conns must be 1-1000")
	case cfg.duration <= 0 || cfg.duration > 10*time.Minute:
		return usageError("-duration must be in (0, 10m]")
	case cfg.warmup < 0 || cfg.warmup > time.Minute:
		return usageError("-warmup must be in [0, 1m]")
	case cfg.size < 1 || cfg.size > 16<<20:
		return usageError("-size must be 1 B - 16 MiB")
	case cfg.dialTimeout <= 0:
		return usageError("-dial-timeout must be positive")
	}
	if err := checkLoopback(cfg.addr); err != nil {
		return err
	}
	res, err := runThroughput(cfg)
	if err != nil {
		return err
	}
	total := res.upBytes + res.downBytes
	fmt.Printf("RESULT throughput dir=%s conns=%d size=%d warmup_s=%.3f duration_s=%.3f bytes=%d up_bytes=%d down_bytes=%d up_gbps=%.3f down_gbps=%.3f throughput_gbps=%.3f errors=%d\n",
		cfg.dir, cfg.conns, cfg.size, cfg.warmup.Seconds(), res.elapsed.Seconds(), total, res.upBytes, res.downBytes,
		res.gbps(res.upBytes), res.gbps(res.downBytes), res.gbps(total), res.errors)
	if res.errors > 0 {
		return fmt.Errorf("%d connection(s) failed, first: %v", res.errors, res.firstErr)
	}
	if total == 0 {
		return errors.New("no data moved (wrong sink mode for -dir?)")
	}
	return nil
}
