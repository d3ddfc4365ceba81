package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

type connrateConfig struct {
	addr      string
	workers   int
	duration  time.Duration
	maxIters  int64         // hard cap on attempts, all workers together
	opTimeout time.Duration // deadline for dial and for write+read of each connection
	maxErrors int64         // stop early after this many failed attempts
	// payload is written on each connection and must come back whole; nil
	// means the single byte 'x' (the default). -hello puts a TLS ClientHello
	// here.
	payload []byte
	tls     tlsFlags
	tcfg    *tls.Config // from tls
}

type connrateResult struct {
	ok       int64
	attempts int64
	elapsed  time.Duration
	errDial  int64
	errWrite int64
	errRead  int64 // includes a wrong byte coming back
	firstErr error
	stopped  string // why it ended early, "" if it ran its time
	lat      hist   // dial start -> echo read, successful attempts only
}

func (r *connrateResult) errors() int64 { return r.errDial + r.errWrite + r.errRead }

func (r *connrateResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// runConnRate runs cfg.workers loops of dial, write cfg.payload (1 byte by
// default), read it back, close, until cfg.duration has passed, cfg.maxIters
// attempts were made or cfg.maxErrors attempts failed. The peer must echo
// (sink -mode echo). The whole payload is read back, so that the client never
// closes with unread data (which would reset the connection instead of
// closing it), and compared.
func runConnRate(cfg connrateConfig) *connrateResult {
	res := &connrateResult{}
	var (
		attempts             atomic.Int64
		ok                   atomic.Int64
		eDial, eWrite, eRead atomic.Int64
		abort                atomic.Bool
		mu                   sync.Mutex
		wg                   sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(cfg.duration)
	noteErr := func(kind *atomic.Int64, err error) {
		kind.Add(1)
		if eDial.Load()+eWrite.Load()+eRead.Load() >= cfg.maxErrors {
			abort.Store(true)
		}
		mu.Lock()
		if res.firstErr == nil {
			res.firstErr = err
		}
		mu.Unlock()
	}
	for w := 0; w < cfg.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h hist
			d := net.Dialer{Timeout: cfg.opTimeout}
			out := cfg.payload
			if out == nil {
				out = []byte{'x'}
			}
			in := make([]byte, len(out))
			for !abort.Load() {
				t := time.Now()
				if !t.Before(end) {
					break
				}
				if attempts.Add(1) > cfg.maxIters {
					attempts.Add(-1)
					break
				}
				c, err := dialWith(&d, cfg.addr, cfg.tcfg)
				if err != nil {
					noteErr(&eDial, fmt.Errorf("dial: %w", err))
					time.Sleep(time.Millisecond) // do not spin on e.g. EADDRNOTAVAIL
					continue
				}
				c.SetDeadline(time.Now().Add(cfg.opTimeout))
				if _, err := c.Write(out); err != nil {
					c.Close()
					noteErr(&eWrite, fmt.Errorf("write: %w", err))
					continue
				}
				if _, err := io.ReadFull(c, in); err != nil {
					c.Close()
					noteErr(&eRead, fmt.Errorf("read: %w", err))
					continue
				}
				lat := time.Since(t)
				c.Close()
				if !bytes.Equal(in, out) {
					if len(out) == 1 {
						noteErr(&eRead, fmt.Errorf("read: got byte %#x, want %#x (is the sink in echo mode?)", in[0], out[0]))
					} else {
						noteErr(&eRead, fmt.Errorf("read: the %d bytes back differ from those sent (is the sink in echo mode?)", len(out)))
					}
					continue
				}
				h.add(lat)
				ok.Add(1)
			}
			mu.Lock()
			res.lat.merge(&h)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ok, res.attempts = ok.Load(), attempts.Load()
	res.errDial, res.errWrite, res.errRead = eDial.Load(), eWrite.Load(), eRead.Load()
	switch {
	case abort.Load():
		res.stopped = "max-errors"
	case res.attempts >= cfg.maxIters:
		res.stopped = "max-iters"
	}
	return res
}

func connrateMain(args []string) error {
	fs := flag.NewFlagSet("connrate", flag.ContinueOnError)
	var cfg connrateConfig
	fs.StringVar(&cfg.addr, "addr", "", "loopback `address` of an echo sink (or a proxy in front of one)")
	fs.IntVar(&cfg.workers, "workers", 4, "concurrent dial loops (1-1000)")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "run time (at most 10m)")
	fs.Int64Var(&cfg.maxIters, "max-iters", 10_000_000, "hard cap on connection attempts")
	fs.DurationVar(&cfg.opTimeout, "timeout", 2*time.Second, "deadline for the dial and for the echo exchange of each connection")
	fs.Int64Var(&cfg.maxErrors, "max-errors", 10000, "stop early after this many failed attempts")
	hello := fs.String("hello", "", "send a TLS ClientHello for this server `name` (made once by crypto/tls) instead of 1 byte, and read it back")
	alpn := fs.String("alpn", "", "with -hello: ALPN `protocols` in the hello, comma-separated (e.g. h2,http/1.1)")
	cfg.tls.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	switch {
	case fs.NArg() > 0:
		return usageError(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	case cfg.addr == "":
		return usageError("-addr is required")
	case cfg.workers < 1 || cfg.workers > 1000:
		return usageError("-workers must be 1-1000")
	case cfg.duration <= 0 || cfg.duration > 10*time.Minute:
		return usageError("-duration must be in (0, 10m]")
	case cfg.maxIters < 1 || cfg.maxIters > 10_000_000:
		return usageError("-max-iters must be 1-10000000")
	case cfg.opTimeout <= 0 || cfg.opTimeout > time.Minute:
		return usageError("-timeout must be in (0, 1m]")
	case cfg.maxErrors < 1:
		return usageError("-max-errors must be positive")
	}
	if err := checkLoopback(cfg.addr); err != nil {
		return err
	}
	var err error
	if cfg.tcfg, err = cfg.tls.config(); err != nil {
		return err
	}
	if *hello != "" && cfg.tls.on {
		return usageError("-hello and -tls: one or the other")
	}
	if *alpn != "" && *hello == "" {
		return usageError("-alpn needs -hello")
	}
	protos, err := splitALPN(*alpn)
	if err != nil {
		return usageError(err.Error())
	}
	if *hello != "" {
		if cfg.payload, err = clientHello(*hello, protos); err != nil {
			return usageError(fmt.Sprintf("-hello: %v", err))
		}
	}
	r := runConnRate(cfg)
	us := func(d time.Duration) int64 { return d.Microseconds() }
	stopped := r.stopped
	if stopped == "" {
		stopped = "duration"
	}
	fmt.Printf("RESULT connrate workers=%d duration_s=%.3f conns=%d attempts=%d conns_per_sec=%.0f p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%d errors=%d err_dial=%d err_write=%d err_read=%d stopped_by=%s",
		cfg.workers, r.elapsed.Seconds(), r.ok, r.attempts, r.rate(),
		us(r.lat.quantile(0.50)), us(r.lat.quantile(0.90)), us(r.lat.quantile(0.99)), us(time.Duration(r.lat.max)), us(r.lat.mean()),
		r.errors(), r.errDial, r.errWrite, r.errRead, stopped)
	if *hello != "" {
		// Appended, so the default line stays as it was.
		fmt.Printf(" hello=%s alpn=%s hello_bytes=%d", *hello, orDash(*alpn), len(cfg.payload))
	}
	if cfg.tls.on {
		fmt.Printf(" tls_max=%s tls_resume=%v tls_pq=%v", cfg.tls.max, cfg.tls.resume, cfg.tls.pq)
	}
	fmt.Println()
	if r.firstErr != nil {
		return fmt.Errorf("%d failed attempt(s), first: %v", r.errors(), r.firstErr)
	}
	if r.ok == 0 {
		return errors.New("no connection completed")
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
