package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// newLocalListener listens on a loopback port, IPv4 first (tcpproxy's
// newLocalListener), and closes it when the test ends.
func newLocalListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		if ln, err = net.Listen("tcp", "[::1]:0"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serve runs handle on each connection ln accepts until ln is closed.
func serve(t *testing.T, handle func(net.Conn)) string {
	ln := newLocalListener(t)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T, network string) string {
	t.Helper()
	var addr string
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		pc.Close()
	} else {
		ln := newLocalListener(t)
		addr = ln.Addr().String()
		ln.Close()
	}
	return addr
}

func TestTCPChecker(t *testing.T) {
	greeter := serve(t, func(c net.Conn) { io.WriteString(c, "220 mail.example ESMTP ready\r\n") })
	echo := serve(t, func(c net.Conn) { io.Copy(c, c) })
	// The slow server answers only after the test's timeouts; it holds the
	// connection until the client closes it.
	slow := serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	closer := serve(t, func(c net.Conn) { io.WriteString(c, "BUSY") })
	refused := closedPort(t, "tcp")

	tests := []struct {
		name    string
		addr    string
		match   *Match
		timeout time.Duration
		wantErr error // nil: pass
		anyErr  bool  // fails with some other error
	}{
		{name: "connect only", addr: slow},
		{name: "refused", addr: refused, wantErr: syscall.ECONNREFUSED},
		{name: "greeting literal", addr: greeter, match: &Match{Expect: []byte("ESMTP")}},
		{name: "greeting regex", addr: greeter, match: &Match{ExpectRegexp: regexp.MustCompile(`^220 \S+ ESMTP`)}},
		{name: "greeting mismatch then close", addr: closer, match: &Match{Expect: []byte("OK")}, wantErr: ErrNoMatch},
		{name: "send and expect echo", addr: echo, match: &Match{Send: []byte("PING\r\n"), Expect: []byte("PING")}},
		{name: "send only", addr: slow, match: &Match{Send: []byte("hello")}},
		{name: "slow server times out", addr: slow, match: &Match{Send: []byte("x"), Expect: []byte("y")},
			timeout: 50 * time.Millisecond, wantErr: os.ErrDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &TCPChecker{Match: tt.match, Timeout: tt.timeout}
			if c.Timeout == 0 {
				c.Timeout = 5 * time.Second
			}
			err := c.Check(context.Background(), tt.addr)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Check = %v, want pass", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Check = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestTCPCheckerCancel: a check waiting on a silent server ends at once when
// its context is cancelled (Monitor.Stop), not at its timeout.
func TestTCPCheckerCancel(t *testing.T) {
	slow := serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	err := (&TCPChecker{Match: &Match{Expect: []byte("never")}, Timeout: time.Minute}).Check(ctx, slow)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Check = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

// udpEcho answers every datagram with prefix+datagram.
func udpEcho(t *testing.T, prefix string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().String()
}

func TestUDPChecker(t *testing.T) {
	echo := udpEcho(t, "")
	refused := closedPort(t, "udp")
	tests := []struct {
		name    string
		addr    string
		match   *Match
		wantErr error
	}{
		{"echo literal", echo, &Match{Send: []byte("ping"), Expect: []byte("ping")}, nil},
		{"echo regex", echo, &Match{Send: []byte("id=42"), ExpectRegexp: regexp.MustCompile(`id=\d+`)}, nil},
		{"default datagram, any reply", echo, nil, nil},
		{"reply mismatch", echo, &Match{Send: []byte("ping"), Expect: []byte("pong")}, ErrNoMatch},
		{"refused", refused, &Match{Send: []byte("ping"), Expect: []byte("ping")}, syscall.ECONNREFUSED},
		{"refused without expect", refused, nil, syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&UDPChecker{Match: tt.match, Timeout: 5 * time.Second}).Check(context.Background(), tt.addr)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestUDPCheckerSilent: without expect, silence until the timeout passes
// (no ICMP unreachable), as nginx Plus; with expect it fails.
func TestUDPCheckerSilent(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := pc.LocalAddr().String()
	if err := (&UDPChecker{Timeout: 30 * time.Millisecond}).Check(context.Background(), addr); err != nil {
		t.Errorf("silent, no expect: %v, want pass", err)
	}
	m := &Match{Send: []byte("ping"), Expect: []byte("ping")}
	if err := (&UDPChecker{Match: m, Timeout: 30 * time.Millisecond}).Check(context.Background(), addr); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("silent, expect: %v, want timeout", err)
	}
}

// LocalError tells baton's own failures to make or bind a socket from the
// target's: socket(2), and bind(2) and its setsockopt(2) calls as
// sock.DialWith reports them (proxy_bind), but not connect(2).
func TestLocalError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{os.NewSyscallError("socket", syscall.EMFILE), true},
		{os.NewSyscallError("bind", syscall.EADDRNOTAVAIL), true},
		{os.NewSyscallError("setsockopt(IP_TRANSPARENT)", syscall.EPERM), true},
		{fmt.Errorf("dial: %w", os.NewSyscallError("socket", syscall.ENOBUFS)), true},
		{os.NewSyscallError("connect", syscall.ECONNREFUSED), false},
		{syscall.ECONNREFUSED, false},
		{nil, false},
	} {
		if got := LocalError(tc.err); got != tc.want {
			t.Errorf("LocalError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
