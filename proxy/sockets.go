package proxy

import (
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddr converts ap for connect(2) and bind(2). It returns a new value
// each call: a unix.Sockaddr caches its raw form inside itself, so one shared
// between loops would be a data race.
func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func family(ap netip.AddrPort) int {
	if ap.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// addrPort converts what accept(2) and getsockname(2) return.
func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// errnoText formats err as nginx does in its logs: "(111: Connection refused)".
func errnoText(err error) string {
	if e, ok := err.(unix.Errno); ok {
		return fmt.Sprintf("(%d: %s)", int(e), capitalize(e.Error()))
	}
	return "(" + err.Error() + ")"
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// listenSocket creates, binds and listens on a nonblocking TCP socket as
// nginx's listen directive asks. The caller owns the returned fd.
func listenSocket(ap netip.AddrPort, backlog int, reusePort, keepalive bool) (int, error) {
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

// rawRead and rawWrite are read(2) and write(2) on nonblocking sockets,
// through RawSyscall: they never block, so the scheduler need not be told
// (entering and leaving a Syscall costs more than the syscall on loopback).
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawSend is send(2) with flags, through RawSyscall as rawWrite.
func rawSend(fd int, p []byte, flags int) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// writeAll writes b to the nonblocking fd until it is all written or the
// socket buffer is full. It returns how much was written; err is nil when the
// socket merely would block.
func writeAll(fd int, b []byte) (int, error) { return sendAll(fd, b, 0) }

// sendAll is writeAll with send(2) flags (none: write(2)).
func sendAll(fd int, b []byte, flags int) (int, error) {
	done := 0
	for done < len(b) {
		var n int
		var err error
		if flags == 0 {
			n, err = rawWrite(fd, b[done:])
		} else {
			n, err = rawSend(fd, b[done:], flags)
		}
		if n > 0 {
			done += n
		}
		switch err {
		case nil:
		case unix.EAGAIN:
			return done, nil
		case unix.EINTR:
			continue
		default:
			return done, err
		}
	}
	return done, nil
}

// The data path's other socket calls, through RawSyscall for the same
// reason as rawRead: none of them can block on a nonblocking TCP socket
// (close without SO_LINGER does not wait either). Through Syscall, one that
// takes longer than a sysmon tick (close and connect on loopback do, as
// they run the peer's TCP receive inline) lets the runtime hand the loop's
// P to another thread and wake it: two context switches per call. unix's
// Accept4 also asks the socket for its protocol on every IPv4 accept.

// rawAccept4 is accept4(2), nonblocking and close-on-exec, with the peer's
// address.
func rawAccept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unsafe.Sizeof(rsa))
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), rawAddrPort(&rsa), nil
}

// rawAddrPort reads an AF_INET or AF_INET6 address; anything else is the
// zero AddrPort.
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), getPort(&a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), getPort(&a.Port))
	}
	return netip.AddrPort{}
}

// rawDial opens a nonblocking TCP socket with TCP_NODELAY (and without
// TCP_QUICKACK if delayAck) and starts connecting it to ap. It returns the
// socket with a nil error (connected) or EINPROGRESS, or -1 and the error
// with nothing left open.
func rawDial(ap netip.AddrPort, delayAck bool) (int, error) {
	return rawSocketTo(ap, unix.SOCK_STREAM, delayAck)
}

// rawSocketTo opens a nonblocking socket of type typ and connects it to ap:
// rawDial's and udpDial's common part. A TCP socket gets TCP_NODELAY, and
// TCP_QUICKACK off if delayAck.
func rawSocketTo(ap netip.AddrPort, typ int, delayAck bool) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family(ap)), uintptr(typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC), 0)
	if e != 0 {
		// baton's own failure, not the peer's: health.LocalError tells.
		return -1, os.NewSyscallError("socket", e)
	}
	fd := int(r)
	if typ == unix.SOCK_STREAM {
		one := int32(1)
		unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
		if delayAck {
			zero := int32(0)
			unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, uintptr(unsafe.Pointer(&zero)), 4, 0)
		}
	}
	if ap.Addr().Is4() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		putPort(&sa.Port, ap.Port())
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
		putPort(&sa.Port, ap.Port())
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	switch e {
	case 0:
		return fd, nil
	case unix.EINPROGRESS:
		return fd, unix.EINPROGRESS
	}
	rawClose(fd)
	return -1, e
}

// getPort and putPort read and write a sockaddr's port, which is in
// network byte order.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
