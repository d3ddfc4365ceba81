package proxy

import (
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dgramBig is the largest datagram, and one byte more: a UDP payload is at
// most 65,507 bytes over IPv4 and 65,527 over IPv6, so a dgramBig read never
// truncates, and a truncation (which cannot happen) shows as n == len.
const (
	dgramBig   = 64<<10 + 1
	udpOOBSize = 128 // room for an in6_pktinfo and an SO_RXQ_OVFL counter
)

// listenUDP binds a nonblocking UDP listening socket as nginx's "listen ...
// udp" does: SO_REUSEADDR, SO_REUSEPORT for reuseport, IPV6_V6ONLY for
// IPv6. A wildcard address also asks for the destination address of each
// datagram (IP_PKTINFO), so that replies leave from the address the client
// sent to. SO_RXQ_OVFL reports datagrams the kernel dropped because the
// receive buffer was full. The caller owns the returned fd.
func listenUDP(ap netip.AddrPort, reusePort bool) (int, error) {
	fd, err := unix.Socket(family(ap), unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, sysErr(err, "socket() %s", ap)
	}
	set := func(level, opt int, name string) error {
		if e := unix.SetsockoptInt(fd, level, opt, 1); e != nil {
			return sysErr(e, "setsockopt(%s) %s", name, ap)
		}
		return nil
	}
	wild, v6 := ap.Addr().IsUnspecified(), ap.Addr().Is6()
	err = set(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR")
	if err == nil && reusePort {
		err = set(unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT")
	}
	if err == nil {
		err = set(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, "SO_RXQ_OVFL")
	}
	if err == nil && v6 {
		err = set(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY")
	}
	if err == nil && wild && !v6 {
		err = set(unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO")
	} else if err == nil && wild {
		err = set(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO")
	}
	if err == nil {
		if e := unix.Bind(fd, sockaddr(ap)); e != nil {
			err = sysErr(e, "bind() to %s", ap)
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// udpDial opens a nonblocking UDP socket connected to ap. A socket()
// failure is baton's own (health.LocalError tells), a connect() failure the
// route's.
func udpDial(ap netip.AddrPort) (int, error) {
	return rawSocketTo(ap, unix.SOCK_DGRAM, false)
}

// udpSend sends datagram b on the connected socket fd; an empty b is an
// empty datagram.
func udpSend(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)), 0, 0, 0)
		if e == 0 {
			return int(n), nil
		}
		if e != unix.EINTR {
			return 0, e
		}
	}
}

// udpRecv reads one datagram from fd into b (an empty datagram is n == 0).
func udpRecv(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// oobInfo is what the listener learns from a datagram's control messages.
type oobInfo struct {
	dst     netip.Addr // the address the client sent to (IP_PKTINFO); invalid if absent
	ifindex uint32
	drops   uint32 // the socket's count of datagrams the kernel dropped (SO_RXQ_OVFL)
	hasDrop bool
}

// parseOOB reads the control messages the listener asked for, without
// allocating.
func parseOOB(oob []byte) oobInfo {
	var in oobInfo
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		n := int(h.Len)
		if n < hdr || n > len(oob) {
			break
		}
		data := oob[hdr:n]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			in.dst = netip.AddrFrom4(pi.Addr)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			in.dst, in.ifindex = netip.AddrFrom16(pi.Addr), pi.Ifindex
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			in.drops, in.hasDrop = *(*uint32)(unsafe.Pointer(&data[0])), true
		}
		next := unix.CmsgSpace(n - hdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return in
}

// replyOOB is the control message that makes a reply leave from dst, for a
// wildcard listener.
func replyOOB(dst netip.Addr, ifindex uint32) []byte {
	if dst.Is4() {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: dst.As4()})
	}
	return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: dst.As16(), Ifindex: ifindex})
}

// errnoIn returns the errno inside err, or 0.
func errnoIn(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}
