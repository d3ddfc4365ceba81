package fdpass

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fdCount returns the number of open descriptors of this process. Tests that
// use it must not run in parallel with tests that open descriptors.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// checkNoLeak fails t if the descriptor count differs from base.
func checkNoLeak(t *testing.T, base int) {
	t.Helper()
	if got := fdCount(t); got != base {
		t.Errorf("open descriptors: %d, want %d (leaked %d)", got, base, got-base)
	}
}

// channel returns both ends of a handoff socketpair as conns, closed at cleanup,
// with a deadline that turns a hang into a failure.
func channel(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	a, f, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	b = c.(*net.UnixConn)
	deadline := time.Now().Add(10 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// localListener listens on a loopback port, closed at cleanup.
func localListener(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// tcpPair returns a connected loopback pair accepted from ln, both closed at cleanup.
func tcpPair(t *testing.T, ln *net.TCPListener) (client, server *net.TCPConn) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// pipes returns n pipe write ends, each named, closed at cleanup.
func pipes(t *testing.T, n int) []*os.File {
	t.Helper()
	var fs []*os.File
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		fs = append(fs, w)
	}
	t.Cleanup(func() { closeFiles(fs) })
	return fs
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// sendRaw sends b as is, with files as SCM_RIGHTS, bypassing Send's checks.
func sendRaw(t *testing.T, c *net.UnixConn, b []byte, files ...*os.File) {
	t.Helper()
	var fds []int
	err := withFDs(files, &fds, func() error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		_, _, err := c.WriteMsgUnix(b, oob, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fdFlags returns F_GETFD and F_GETFL of sc's descriptor.
func fdFlags(t *testing.T, sc syscall.Conn) (fdfl, flfl int) {
	t.Helper()
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		fdfl, _ = unix.FcntlInt(fd, unix.F_GETFD, 0)
		flfl, _ = unix.FcntlInt(fd, unix.F_GETFL, 0)
	})
	return fdfl, flfl
}
