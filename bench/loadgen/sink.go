package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// GreetLine is what a sink in greet mode writes before closing.
const GreetLine = "baton-bench greet\n"

// Sink modes.
const (
	modeDiscard = "discard" // read and throw away
	modeEcho    = "echo"    // write back everything read
	modeGreet   = "greet"   // write GreetLine, close
	modeSource  = "source"  // write as fast as possible, discard reads
)

func validMode(m string) bool {
	switch m {
	case modeDiscard, modeEcho, modeGreet, modeSource:
		return true
	}
	return false
}

// sink is a TCP backend serving one mode on one listener.
type sink struct {
	ln       net.Listener
	mode     string
	idle     time.Duration // per-operation deadline: a peer silent this long is dropped
	maxConns int64         // connections beyond this many are closed at once

	accepted atomic.Int64
	rejected atomic.Int64
	active   atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newSink(ln net.Listener, mode string, idle time.Duration, maxConns int) *sink {
	return &sink{ln: ln, mode: mode, idle: idle, maxConns: int64(maxConns), conns: make(map[net.Conn]struct{})}
}

// serve accepts connections until close is called; it then returns nil.
func (s *sink) serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// e.g. EMFILE under a connection storm: back off a little, go on.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.accepted.Add(1)
		if s.active.Load() >= s.maxConns {
			s.rejected.Add(1)
			c.Close()
			continue
		}
		if !s.track(c) {
			c.Close()
			return nil
		}
		s.active.Add(1)
		go func() { // s.wg counted by track
			defer s.wg.Done()
			defer s.active.Add(-1)
			defer s.untrack(c)
			s.handle(c)
		}()
	}
}

// track records c and counts its handler in s.wg, under s.mu: close sets
// closed under it too, so no Add ever races close's Wait.
func (s *sink) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *sink) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// close stops accepting, closes every open connection and waits (at most
// 5 s) for their handlers to return.
func (s *sink) close() {
	s.mu.Lock()
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func (s *sink) handle(c net.Conn) {
	switch s.mode {
	case modeDiscard:
		buf := make([]byte, 256<<10)
		for {
			c.SetReadDeadline(time.Now().Add(s.idle))
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	case modeEcho:
		buf := make([]byte, 64<<10)
		for {
			c.SetDeadline(time.Now().Add(s.idle))
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case modeGreet:
		c.SetWriteDeadline(time.Now().Add(s.idle))
		c.Write([]byte(GreetLine))
	case modeSource:
		// Reader: discard whatever the peer sends (for -dir both). It has no
		// deadline: it ends when the peer closes or when the writer below
		// gives up and closes the connection.
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			buf := make([]byte, 256<<10)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
		buf := make([]byte, 128<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		for {
			c.SetWriteDeadline(time.Now().Add(s.idle))
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.Close()
		<-readerDone
	}
}

func sinkMain(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:23401", "loopback `address` to listen on (port 0: any free port)")
	mode := fs.String("mode", modeDiscard, "discard | echo | greet | source")
	idle := fs.Duration("idle", 30*time.Second, "drop a connection when one read/write waits this long")
	maxConns := fs.Int("max-conns", 10000, "close new connections at once beyond this many open ones")
	maxLife := fs.Duration("max-life", 30*time.Minute, "exit after this long even if nobody stops the sink")
	useTLS := fs.Bool("tls", false, "serve TLS (a proxy_ssl upstream)")
	cert := fs.String("tls-cert", "", "with -tls: certificate `file` (default: a self-signed ECDSA P-256 one made at start)")
	key := fs.String("tls-key", "", "with -tls: private key `file`")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if !validMode(*mode) {
		return usageError(fmt.Sprintf("unknown -mode %q (want discard, echo, greet or source)", *mode))
	}
	if *idle <= 0 || *maxConns <= 0 || *maxLife <= 0 {
		return usageError("-idle, -max-conns and -max-life must be positive")
	}
	if err := checkLoopback(*listen); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *useTLS {
		cfg, err := sinkTLS(*cert, *key)
		if err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, cfg)
	} else if *cert != "" || *key != "" {
		ln.Close()
		return usageError("-tls-cert and -tls-key need -tls")
	}
	s := newSink(ln, *mode, *idle, *maxConns)
	fmt.Fprintf(os.Stderr, "loadgen sink: mode=%s listening on %s (pid %d)\n", *mode, ln.Addr(), os.Getpid())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case got := <-sig:
			fmt.Fprintf(os.Stderr, "loadgen sink: %v, stopping\n", got)
		case <-time.After(*maxLife):
			fmt.Fprintf(os.Stderr, "loadgen sink: -max-life %v reached, stopping\n", *maxLife)
		}
		s.close()
	}()
	err = s.serve()
	s.close()
	fmt.Fprintf(os.Stderr, "loadgen sink: accepted=%d rejected=%d\n", s.accepted.Load(), s.rejected.Load())
	return err
}
