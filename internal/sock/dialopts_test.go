package sock

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopback listens on 127.0.0.1:0 and returns its address; it closes when
// the test ends.
func loopback(t *testing.T) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).AddrPort()
}

func getInt(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dialed completes a DialWith to ln and returns the address the listener
// saw the connection come from.
func dialed(t *testing.T, ln net.Listener, fd int, err error) netip.AddrPort {
	t.Helper()
	if fd < 0 || (err != nil && err != unix.EINPROGRESS) {
		t.Fatalf("DialWith: %d, %v", fd, err)
	}
	t.Cleanup(func() { Close(fd) })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.RemoteAddr().(*net.TCPAddr).AddrPort()
}

func TestDialWith(t *testing.T) {
	if ln, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		t.Skipf("127.0.0.2 is not a local address here: %v", err)
	} else {
		ln.Close()
	}
	ln, ap := loopback(t)

	// proxy_bind 127.0.0.2; proxy_socket_keepalive on; tcp_nodelay off.
	o := DialOpts{Local: netip.MustParseAddrPort("127.0.0.2:0"), KeepAlive: true}
	fd, err := DialWith(ap, unix.SOCK_STREAM, &o)
	if from := dialed(t, ln, fd, err); from.Addr() != o.Local.Addr() || from.Port() == 0 {
		t.Errorf("peer %s, want 127.0.0.2 and a port", from)
	}
	for _, c := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0},
		{"IP_BIND_ADDRESS_NO_PORT", unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1},
		{"IP_TRANSPARENT", unix.IPPROTO_IP, unix.IP_TRANSPARENT, 0},
	} {
		if v := getInt(t, fd, c.level, c.opt); v != c.want {
			t.Errorf("%s = %d, want %d", c.name, v, c.want)
		}
	}

	// A port: bound as asked, without IP_BIND_ADDRESS_NO_PORT; TCP_NODELAY.
	free, _ := loopback(t)
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	o = DialOpts{Local: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(port)), NoDelay: true}
	fd, err = DialWith(ap, unix.SOCK_STREAM, &o)
	if from := dialed(t, ln, fd, err); from != o.Local {
		t.Errorf("peer %s, want %s", from, o.Local)
	}
	if getInt(t, fd, unix.IPPROTO_TCP, unix.TCP_NODELAY) != 1 || getInt(t, fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE) != 0 {
		t.Error("TCP_NODELAY off or SO_KEEPALIVE on")
	}
}

// A bind that fails leaves nothing open and names the call, errno inside.
func TestDialWithBindFails(t *testing.T) {
	_, ap := loopback(t)
	before := countFDs(t)
	o := DialOpts{Local: netip.MustParseAddrPort("192.0.2.1:0")} // TEST-NET-1: not this host's
	fd, err := DialWith(ap, unix.SOCK_STREAM, &o)
	var se *os.SyscallError
	if fd != -1 || !errors.As(err, &se) || se.Syscall != "bind" || !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Fatalf("DialWith = %d, %v; want -1 and bind's EADDRNOTAVAIL", fd, err)
	}
	if n := countFDs(t); n != before {
		t.Errorf("%d descriptors open after a failed DialWith, %d before", n, before)
	}
}

// With Transparent, an address this host does not have can be bound
// (IP_TRANSPARENT), given CAP_NET_ADMIN or CAP_NET_RAW.
func TestDialWithTransparent(t *testing.T) {
	_, ap := loopback(t)
	o := DialOpts{Local: netip.MustParseAddrPort("192.0.2.1:0"), Transparent: true}
	fd, err := DialWith(ap, unix.SOCK_STREAM, &o)
	var se *os.SyscallError
	if errors.As(err, &se) && se.Syscall == "setsockopt(IP_TRANSPARENT)" && errors.Is(err, unix.EPERM) {
		t.Skipf("IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW: %v", err)
	}
	if errors.As(err, &se) {
		t.Fatalf("DialWith: %v", err) // the bind, or its setsockopt, failed
	}
	if fd >= 0 {
		if v := getInt(t, fd, unix.IPPROTO_IP, unix.IP_TRANSPARENT); v != 1 {
			t.Errorf("IP_TRANSPARENT = %d", v)
		}
		Close(fd)
	}
}

// Two UDP sockets may be bound to one address and port (SO_REUSEADDR, as
// nginx), each connected to its own peer.
func TestDialWithUDPPort(t *testing.T) {
	var peers [2]*net.UDPConn
	for i := range peers {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		peers[i] = c
	}
	free, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	local := free.LocalAddr().(*net.UDPAddr).AddrPort()
	free.Close()
	o := DialOpts{Local: local, NoDelay: true, KeepAlive: true}
	for _, p := range peers {
		fd, err := DialWith(p.LocalAddr().(*net.UDPAddr).AddrPort(), unix.SOCK_DGRAM, &o)
		if err != nil {
			t.Fatalf("DialWith to %s from %s: %v", p.LocalAddr(), local, err)
		}
		defer Close(fd)
		if _, err := SendUDP(fd, []byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, from, err := p.ReadFromUDPAddrPort(buf)
		if err != nil || from != local {
			t.Errorf("datagram from %s (%v), want %s", from, err, local)
		}
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}
