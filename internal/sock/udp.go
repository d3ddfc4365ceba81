package sock

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DatagramBufSize is the size of a buffer for the largest datagram, and
// one byte more: a UDP payload is at most 65,507 bytes over IPv4 and 65,527
// over IPv6, so a read into DatagramBufSize bytes never truncates, and a
// truncation (which cannot happen) shows as n == len.
const DatagramBufSize = 64<<10 + 1

// OOBSize is room for the control messages a ListenUDP socket's datagrams
// carry: an in6_pktinfo and an SO_RXQ_OVFL counter.
const OOBSize = 128

// ListenUDP binds a nonblocking UDP listening socket as nginx's "listen ...
// udp" does: SO_REUSEADDR, SO_REUSEPORT for reuseport, IPV6_V6ONLY for
// IPv6. A wildcard address also asks for the destination address of each
// datagram (IP_PKTINFO), so that replies leave from the address the client
// sent to. SO_RXQ_OVFL reports datagrams the kernel dropped because the
// receive buffer was full. ParseOOB reads both. The caller owns the
// returned fd.
func ListenUDP(ap netip.AddrPort, reusePort bool) (int, error) {
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

// DialUDP opens a nonblocking UDP socket connected to ap. A socket()
// failure is baton's own (health.LocalError tells), a connect() failure the
// route's. The caller owns the returned fd.
func DialUDP(ap netip.AddrPort) (int, error) {
	return socketTo(ap, unix.SOCK_DGRAM, false)
}

// SendUDP sends datagram b on the connected socket fd; an empty b is an
// empty datagram.
func SendUDP(fd int, b []byte) (int, error) {
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

// RecvUDP reads one datagram from fd into b (an empty datagram is n == 0);
// b must not be empty.
func RecvUDP(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// OOBInfo is what a listener learns from a datagram's control messages.
type OOBInfo struct {
	Dst     netip.Addr // the address the client sent to (IP_PKTINFO); invalid if absent
	Ifindex uint32
	Drops   uint32 // the socket's count of datagrams the kernel dropped (SO_RXQ_OVFL)
	HasDrop bool
}

// ParseOOB reads the control messages ListenUDP asked for, without
// allocating.
func ParseOOB(oob []byte) OOBInfo {
	var in OOBInfo
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
			in.Dst = netip.AddrFrom4(pi.Addr)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			in.Dst, in.Ifindex = netip.AddrFrom16(pi.Addr), pi.Ifindex
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			in.Drops, in.HasDrop = *(*uint32)(unsafe.Pointer(&data[0])), true
		}
		next := unix.CmsgSpace(n - hdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return in
}

// ReplyOOB is the control message that makes a reply leave from dst, for a
// wildcard listener (ifindex is OOBInfo.Ifindex, for IPv6).
func ReplyOOB(dst netip.Addr, ifindex uint32) []byte {
	if dst.Is4() {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: dst.As4()})
	}
	return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: dst.As16(), Ifindex: ifindex})
}

// ReusePort reports whether fd has SO_REUSEPORT set.
func ReusePort(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT)
	return err == nil && v != 0
}
