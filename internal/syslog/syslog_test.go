package syslog

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// The header is ngx_syslog_add_header's: PRI is facility*8+severity, the
// day is space-padded, and nohostname leaves the host out.
func TestAppendHeader(t *testing.T) {
	now := time.Date(2026, time.March, 7, 9, 5, 3, 0, time.Local)
	for _, tt := range []struct {
		cfg  Config
		sev  int
		want string
	}{
		{Config{Facility: DefaultFacility, Severity: DefaultSeverity, Tag: DefaultTag}, -1, "<190>Mar  7 09:05:03 HOST nginx: "},
		{Config{Facility: 3, Severity: 6, Tag: "baton"}, 3, "<27>Mar  7 09:05:03 HOST baton: "},
		{Config{Facility: 0, Severity: 0, Tag: "t", NoHostname: true}, -1, "<0>Mar  7 09:05:03 t: "},
	} {
		p := New(tt.cfg)
		p.hostname = "HOST"
		if got := string(p.AppendHeader(nil, tt.sev, now)); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.cfg, got, tt.want)
		}
	}
	if now := time.Date(2026, time.December, 17, 23, 59, 59, 0, time.Local); string(New(Config{Tag: "x", NoHostname: true}).AppendHeader(nil, 7, now)) != "<7>Dec 17 23:59:59 x: " {
		t.Error("two-digit day")
	}
}

// listenUDP is a syslog server on loopback that the test reads.
func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return c
}

func read(t *testing.T, c net.PacketConn) string {
	t.Helper()
	b := make([]byte, 4096)
	n, _, err := c.ReadFrom(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestSendUDP(t *testing.T) {
	srv := listenUDP(t)
	p := New(Config{Addr: srv.LocalAddr().(*net.UDPAddr).AddrPort(), Facility: 23, Severity: 6, Tag: "nginx"})
	defer p.Close()
	for _, m := range []string{"one", "two"} {
		if err := p.Send([]byte(m)); err != nil {
			t.Fatal(err)
		}
		if got := read(t, srv); got != m {
			t.Errorf("got %q, want %q", got, m)
		}
	}
	if p.String() != srv.LocalAddr().String() {
		t.Errorf("String %q", p.String())
	}
	p.Close()
	if err := p.Send([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
}

// A server that is not there makes sends fail (the port unreachable of a
// datagram comes back on the next send) without blocking; once it is
// there, lines arrive again through a new socket.
func TestSendRecovers(t *testing.T) {
	srv := listenUDP(t)
	addr := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	srv.Close()
	p := New(Config{Addr: addr, Tag: "nginx"})
	defer p.Close()
	failed := false
	for i := 0; i < 100 && !failed; i++ {
		failed = p.Send([]byte("lost")) != nil
	}
	if !failed {
		t.Fatal("100 sends to a closed port, none failed")
	}
	back, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Skipf("port taken again: %v", err)
	}
	defer back.Close()
	back.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := p.Send([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, back); got != "back" {
		t.Errorf("got %q", got)
	}
}

func TestSendUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	srv, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	p := New(Config{Unix: path, Tag: "nginx"})
	defer p.Close()
	if err := p.Send([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, srv); got != "hello" {
		t.Errorf("got %q", got)
	}
	if p.String() != "unix:"+path {
		t.Errorf("String %q", p.String())
	}
}
