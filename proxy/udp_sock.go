package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Datagram buffers. A UDP payload is at most 65,507 bytes over IPv4 and
// 65,527 over IPv6, so a dgramBig read never truncates; one byte more than
// that makes a truncation (which cannot happen) visible as n == len. Most
// datagrams are small: the listener reader copies those into a dgramSmall so
// that a queued datagram does not pin 64 KiB.
const (
	dgramBig    = 64<<10 + 1
	dgramSmall  = 2 << 10
	udpOOBSize  = 128 // room for an in6_pktinfo and an SO_RXQ_OVFL counter
	udpMsgTrunc = unix.MSG_TRUNC
)

var (
	dgramBigPool   = sync.Pool{New: func() any { b := make([]byte, dgramBig); return &b }}
	dgramSmallPool = sync.Pool{New: func() any { b := make([]byte, dgramSmall); return &b }}
)

func getDgram(size int) *[]byte {
	if size <= dgramSmall {
		return dgramSmallPool.Get().(*[]byte)
	}
	return dgramBigPool.Get().(*[]byte)
}

func putDgram(b *[]byte) {
	if cap(*b) >= dgramBig {
		dgramBigPool.Put(b)
	} else {
		dgramSmallPool.Put(b)
	}
}

// listenUDP binds a UDP listening socket as nginx's "listen ... udp" does:
// SO_REUSEADDR, SO_REUSEPORT for reuseport, IPV6_V6ONLY for IPv6 (Go sets
// it for "udp6"). A wildcard address also asks for the destination address
// of each datagram (IP_PKTINFO), so that replies leave from the address the
// client sent to. SO_RXQ_OVFL reports datagrams the kernel dropped because
// the receive buffer was full.
func listenUDP(ap netip.AddrPort, reusePort bool) (*net.UDPConn, error) {
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	wild := ap.Addr().IsUnspecified()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		set := func(fd, level, opt int, name string) {
			if err == nil {
				if e := unix.SetsockoptInt(fd, level, opt, 1); e != nil {
					err = fmt.Errorf("setsockopt(%s) %s failed %s", name, ap, errnoText(e))
				}
			}
		}
		cerr := c.Control(func(fd uintptr) {
			set(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR")
			if reusePort {
				set(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT")
			}
			set(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, "SO_RXQ_OVFL")
			if wild && network == "udp4" {
				set(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO")
			} else if wild {
				set(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO")
			}
		})
		if cerr != nil {
			return cerr
		}
		return err
	}}
	pc, err := lc.ListenPacket(context.Background(), network, ap.String())
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			return nil, fmt.Errorf("bind() to %s failed %s", ap, errnoText(errno))
		}
		return nil, err
	}
	return pc.(*net.UDPConn), nil
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
