package sock

import (
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read and Write are read(2) and write(2) on nonblocking sockets, through
// RawSyscall: they never block, so the scheduler need not be told
// (entering and leaving a Syscall costs more than the syscall on loopback).
func Read(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Write is write(2) on a nonblocking socket; see Read.
func Write(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Send is send(2) with flags, through RawSyscall as Write.
func Send(fd int, p []byte, flags int) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// WriteAll writes b to the nonblocking fd until it is all written or the
// socket buffer is full. It returns how much was written; err is nil when the
// socket merely would block.
func WriteAll(fd int, b []byte) (int, error) { return SendAll(fd, b, 0) }

// SendAll is WriteAll with send(2) flags (none: write(2)).
func SendAll(fd int, b []byte, flags int) (int, error) {
	done := 0
	for done < len(b) {
		var n int
		var err error
		if flags == 0 {
			n, err = Write(fd, b[done:])
		} else {
			n, err = Send(fd, b[done:], flags)
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
// reason as Read: none of them can block on a nonblocking TCP socket
// (close without SO_LINGER does not wait either). Through Syscall, one that
// takes longer than a sysmon tick (close and connect on loopback do, as
// they run the peer's TCP receive inline) lets the runtime hand the loop's
// P to another thread and wake it: two context switches per call. unix's
// Accept4 also asks the socket for its protocol on every IPv4 accept.

// Accept4 is accept4(2), nonblocking and close-on-exec, with the peer's
// address. The caller owns the returned fd.
func Accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unsafe.Sizeof(rsa))
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), RawAddrPort(&rsa), nil
}

// Dial opens a nonblocking TCP socket with TCP_NODELAY (and without
// TCP_QUICKACK if delayAck) and starts connecting it to ap. It returns the
// socket with a nil error (connected) or EINPROGRESS, or -1 and the error
// with nothing left open. The caller owns the returned fd. DialWith takes
// nginx's proxy_bind, proxy_socket_keepalive and tcp_nodelay off.
func Dial(ap netip.AddrPort, delayAck bool) (int, error) {
	return socketTo(ap, unix.SOCK_STREAM, delayAck)
}

// socketTo opens a nonblocking socket of type typ and connects it to ap:
// Dial's and DialUDP's common part. A TCP socket gets TCP_NODELAY, and
// TCP_QUICKACK off if delayAck.
func socketTo(ap netip.AddrPort, typ int, delayAck bool) (int, error) {
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
	return connectTo(fd, ap)
}

// connectTo starts connecting the new socket fd to ap: fd and a nil error
// (connected) or EINPROGRESS, or -1 and the error with fd closed.
func connectTo(fd int, ap netip.AddrPort) (int, error) {
	var e unix.Errno
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
	Close(fd)
	return -1, e
}

// Close is close(2). Its error is ignored: Linux releases the descriptor
// even when close fails.
func Close(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// EpollCtl is epoll_ctl(2).
func EpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
