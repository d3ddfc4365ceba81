package sock

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// ListenOpts are the listen directive's options for a TCP socket.
type ListenOpts struct {
	Backlog             int
	ReusePort           bool
	IPv6Only            bool // IPV6_V6ONLY on an IPv6 address (nginx's default on)
	Multipath           bool // MPTCP (IPPROTO_MPTCP)
	KeepAlive           bool // SO_KEEPALIVE, inherited by accepted sockets
	KeepIdle, KeepIntvl time.Duration
	KeepCnt             int
	FastOpen            int // TCP_FASTOPEN queue length; 0: off
	RcvBuf, SndBuf      int // 0: the system's
	Deferred            bool
}

// Listen creates, binds and listens on a nonblocking TCP socket as nginx's
// listen directive asks. The caller owns the returned fd.
func Listen(ap netip.AddrPort, o ListenOpts) (int, error) {
	proto := 0
	if o.Multipath {
		proto = unix.IPPROTO_MPTCP
	}
	fd, err := unix.Socket(family(ap), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, sysErr(err, "socket() %s", ap)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return -1, sysErr(err, "setsockopt(SO_REUSEADDR) %s", ap)
	}
	if o.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return -1, sysErr(err, "setsockopt(SO_REUSEPORT) %s", ap)
		}
	}
	if ap.Addr().Is6() {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, b2i(o.IPv6Only)); err != nil {
			return -1, sysErr(err, "setsockopt(IPV6_V6ONLY) %s", ap)
		}
	}
	// Accepted sockets inherit TCP_NODELAY (nginx's tcp_nodelay on) and
	// SO_KEEPALIVE from the listener: set once here, not per connection.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return -1, sysErr(err, "setsockopt(TCP_NODELAY) %s", ap)
	}
	if err := o.Apply(fd); err != nil {
		return -1, sysErr(err, "%s", ap)
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		return -1, sysErr(err, "bind() to %s", ap)
	}
	if err := unix.Listen(fd, o.Backlog); err != nil {
		return -1, sysErr(err, "listen() to %s, backlog %d", ap, o.Backlog)
	}
	ok = true
	return fd, nil
}

// Apply sets the options a listening socket can change at any time (a new
// config for a socket kept across a reload or inherited in an upgrade):
// keepalive and its timers, TCP_FASTOPEN, the buffers, TCP_DEFER_ACCEPT.
// The backlog is applied by listen(2) itself.
func (o ListenOpts) Apply(fd int) error {
	set := func(level, opt, v int, name string) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("setsockopt(%s) failed: %w", name, err)
		}
		return nil
	}
	if err := set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, b2i(o.KeepAlive), "SO_KEEPALIVE"); err != nil {
		return err
	}
	for _, k := range []struct {
		v    int
		opt  int
		name string
	}{
		{int(o.KeepIdle / time.Second), unix.TCP_KEEPIDLE, "TCP_KEEPIDLE"},
		{int(o.KeepIntvl / time.Second), unix.TCP_KEEPINTVL, "TCP_KEEPINTVL"},
		{o.KeepCnt, unix.TCP_KEEPCNT, "TCP_KEEPCNT"},
		{o.FastOpen, unix.TCP_FASTOPEN, "TCP_FASTOPEN"},
	} {
		if k.v > 0 {
			if err := set(unix.IPPROTO_TCP, k.opt, k.v, k.name); err != nil {
				return err
			}
		}
	}
	if o.RcvBuf > 0 {
		if err := set(unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf, "SO_RCVBUF"); err != nil {
			return err
		}
	}
	if o.SndBuf > 0 {
		if err := set(unix.SOL_SOCKET, unix.SO_SNDBUF, o.SndBuf, "SO_SNDBUF"); err != nil {
			return err
		}
	}
	// nginx's deferred: accept only once data has come (1 s, as nginx
	// sets; the kernel rounds it to its retransmission steps); off: 0.
	return set(unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, b2i(o.Deferred), "TCP_DEFER_ACCEPT")
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
