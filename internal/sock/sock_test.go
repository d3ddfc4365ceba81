package sock

import (
	"errors"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestErrnoText(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"errno", unix.ECONNREFUSED, "(111: Connection refused)"},
		{"other", errors.New("no live upstreams"), "(no live upstreams)"},
		{"wrapped", BareErrno(&sysError{call: "connect()", err: unix.ETIMEDOUT}), "(110: Connection timed out)"},
	} {
		if got := ErrnoText(tc.err); got != tc.want {
			t.Errorf("%s: ErrnoText = %q; want %q", tc.name, got, tc.want)
		}
	}
}

// A listen on an address in use fails as nginx words it, and unwraps to
// the errno.
func TestListenInUse(t *testing.T) {
	fd, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), ListenOpts{Backlog: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	sa, _ := unix.Getsockname(fd)
	ap := AddrPort(sa)
	_, err = Listen(ap, ListenOpts{Backlog: 16})
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second Listen on %s: %v; want EADDRINUSE", ap, err)
	}
	if want := "bind() to " + ap.String() + " failed (98: Address already in use)"; err.Error() != want {
		t.Errorf("error %q; want %q", err, want)
	}
}

func TestRawSockaddr(t *testing.T) {
	for _, s := range []string{"192.0.2.1:53", "[2001:db8::1]:65535", "[::1]:1"} {
		ap := netip.MustParseAddrPort(s)
		var sa unix.RawSockaddrInet6
		n := RawSockaddr(&sa, ap)
		want := uint32(unix.SizeofSockaddrInet6)
		if ap.Addr().Is4() {
			want = unix.SizeofSockaddrInet4
		}
		if n != want {
			t.Errorf("%s: length %d; want %d", s, n, want)
		}
		var rsa unix.RawSockaddrAny
		*(*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa)) = sa
		if got := RawAddrPort(&rsa); got != ap {
			t.Errorf("RawAddrPort(RawSockaddr(%s)) = %s", s, got)
		}
	}
}

// Dial, Accept4, Write, Read, Splice through a Pipe, and Close on loopback.
func TestTCPRoundTrip(t *testing.T) {
	lfd, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), ListenOpts{Backlog: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer Close(lfd)
	sa, _ := unix.Getsockname(lfd)
	cfd, err := Dial(AddrPort(sa), false)
	if err != nil && err != unix.EINPROGRESS {
		t.Fatal(err)
	}
	defer Close(cfd)
	waitIn(t, lfd)
	afd, from, err := Accept4(lfd)
	if err != nil {
		t.Fatalf("Accept4: %v", err)
	}
	if from.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("accepted from %s", from)
	}
	defer Close(afd)
	if !IsConnectedStream(afd) || IsStream(lfd) {
		t.Error("IsConnectedStream(accepted) false or IsStream(listener) true")
	}
	if n, err := WriteAll(cfd, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("WriteAll: %d, %v", n, err)
	}
	r, w, err := Pipe(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseFD(r)
	defer CloseFD(w)
	waitIn(t, afd)
	if m, again, err := Splice(afd, w, 64<<10); m != 5 || again || err != nil {
		t.Fatalf("Splice: %d, %v, %v; want 5", m, again, err)
	}
	buf := make([]byte, 16)
	if n, err := Read(r, buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read from pipe: %q, %v", buf[:max(n, 0)], err)
	}
}

// A wildcard UDP listener learns the address each datagram was sent to.
func TestUDPPktinfo(t *testing.T) {
	lfd, err := ListenUDP(netip.MustParseAddrPort("0.0.0.0:0"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(lfd)
	sa, _ := unix.Getsockname(lfd)
	port := AddrPort(sa).Port()
	cfd, err := DialUDP(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
	if err != nil {
		t.Fatal(err)
	}
	defer Close(cfd)
	if _, err := SendUDP(cfd, []byte("q")); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, DatagramBufSize), make([]byte, OOBSize)
	waitIn(t, lfd)
	n, oobn, _, _, err := unix.Recvmsg(lfd, buf, oob, 0)
	if err != nil || string(buf[:n]) != "q" {
		t.Fatalf("Recvmsg: %q, %v", buf[:n], err)
	}
	if in := ParseOOB(oob[:oobn]); in.Dst != netip.MustParseAddr("127.0.0.1") || in.HasDrop {
		t.Errorf("ParseOOB = %+v; want Dst 127.0.0.1 and no drop count (the kernel sends one only once it has dropped)", in)
	}
}

// waitIn waits up to 5 seconds for fd to be readable.
func waitIn(t *testing.T, fd int) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 5000)
		if err == unix.EINTR {
			continue
		}
		if n != 1 {
			t.Fatalf("fd %d not readable after 5s: %v", fd, err)
		}
		return
	}
}

// The listen options reach the socket, and Apply changes a listening one.
func TestListenOptions(t *testing.T) {
	fd, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), ListenOpts{
		Backlog: 16, KeepAlive: true, KeepIdle: 30 * time.Minute, KeepCnt: 10,
		FastOpen: 5, RcvBuf: 64 << 10, Deferred: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	get := func(level, opt int) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 1800},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 10},
		{"TCP_FASTOPEN", unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 5},
	} {
		if got := get(c.level, c.opt); got != c.want {
			t.Errorf("%s = %d, want %d", c.name, got, c.want)
		}
	}
	if got := get(unix.SOL_SOCKET, unix.SO_RCVBUF); got < 64<<10 {
		t.Errorf("SO_RCVBUF = %d, want at least 64k (the kernel doubles it)", got)
	}
	if got := get(unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT); got == 0 {
		t.Error("TCP_DEFER_ACCEPT off")
	}
	if err := (ListenOpts{}).Apply(fd); err != nil {
		t.Fatal(err)
	}
	if get(unix.SOL_SOCKET, unix.SO_KEEPALIVE) != 0 || get(unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) != 0 {
		t.Error("Apply of no options left keepalive or deferred on")
	}
}
