package sock

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// Listen creates, binds and listens on a nonblocking TCP socket as nginx's
// listen directive asks. The caller owns the returned fd.
func Listen(ap netip.AddrPort, backlog int, reusePort, keepalive bool) (int, error) {
	fd, err := unix.Socket(family(ap), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
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
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return -1, sysErr(err, "setsockopt(SO_REUSEPORT) %s", ap)
		}
	}
	if ap.Addr().Is6() {
		// nginx listens with ipv6only=on by default.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return -1, sysErr(err, "setsockopt(IPV6_V6ONLY) %s", ap)
		}
	}
	// Accepted sockets inherit TCP_NODELAY (nginx's tcp_nodelay on) and
	// SO_KEEPALIVE from the listener: set once here, not per connection.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return -1, sysErr(err, "setsockopt(TCP_NODELAY) %s", ap)
	}
	if keepalive {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != nil {
			return -1, sysErr(err, "setsockopt(SO_KEEPALIVE) %s", ap)
		}
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		return -1, sysErr(err, "bind() to %s", ap)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return -1, sysErr(err, "listen() to %s, backlog %d", ap, backlog)
	}
	ok = true
	return fd, nil
}
