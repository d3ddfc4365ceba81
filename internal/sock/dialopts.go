package sock

import (
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// DialOpts is what nginx's proxy_bind, proxy_socket_keepalive and
// tcp_nodelay ask of an upstream socket. Its zero value is a plain socket:
// no bind, no SO_KEEPALIVE and, unlike Dial's, no TCP_NODELAY.
type DialOpts struct {
	// Local is the address to bind to before connecting (proxy_bind); the
	// zero AddrPort binds nothing. With port 0 the port is chosen at
	// connect, with the peer known (IP_BIND_ADDRESS_NO_PORT), so that
	// many sockets bound to one address need not each hold a port of
	// their own.
	Local netip.AddrPort

	// Transparent sets IP_TRANSPARENT (IPV6_TRANSPARENT for an IPv6 Local)
	// before the bind, so that Local may be an address this host does not
	// have, such as the client's (proxy_bind ... transparent). It needs
	// CAP_NET_ADMIN or CAP_NET_RAW, and routing that brings the replies
	// back to this host. Without Local it does nothing, as nginx's.
	Transparent bool

	KeepAlive bool // SO_KEEPALIVE (proxy_socket_keepalive on)
	NoDelay   bool // TCP_NODELAY (tcp_nodelay on); TCP only
	DelayAck  bool // TCP_QUICKACK off, as Dial's delayAck; TCP only
}

// DialWith opens a nonblocking socket of type typ (unix.SOCK_STREAM or
// unix.SOCK_DGRAM) with o's options and starts connecting it to ap. It
// returns as Dial does: the socket with a nil error (connected) or
// EINPROGRESS, or -1 and the error with nothing left open. The caller owns
// the returned fd.
//
// The options are set in the order of nginx's ngx_event_connect_peer:
// SO_KEEPALIVE (its failure ignored, as nginx's), then, to bind, the
// transparent option, IP_BIND_ADDRESS_NO_PORT for port 0 (ignored where the
// kernel lacks it), SO_REUSEADDR for a UDP socket bound to a port, and
// bind(2). A failure of one of those last three, like socket(2)'s, is
// baton's own and says nothing of the peer: it is an *os.SyscallError
// naming the call ("setsockopt(IP_TRANSPARENT)", "setsockopt(SO_REUSEADDR)",
// "bind"), which health.LocalError recognises.
func DialWith(ap netip.AddrPort, typ int, o *DialOpts) (int, error) {
	fd, err := unix.Socket(family(ap), typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := o.apply(fd, typ); err != nil {
		Close(fd)
		return -1, err
	}
	return connectTo(fd, ap)
}

func (o *DialOpts) apply(fd, typ int) error {
	if o.KeepAlive {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	}
	if typ == unix.SOCK_STREAM {
		if o.NoDelay {
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		}
		if o.DelayAck {
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
		}
	}
	if !o.Local.IsValid() {
		return nil
	}
	if o.Transparent {
		level, opt, name := unix.IPPROTO_IP, unix.IP_TRANSPARENT, "setsockopt(IP_TRANSPARENT)"
		if !o.Local.Addr().Is4() {
			level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, "setsockopt(IPV6_TRANSPARENT)"
		}
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			return os.NewSyscallError(name, err)
		}
	}
	if o.Local.Port() == 0 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	} else if typ == unix.SOCK_DGRAM {
		// As nginx on Linux: several sessions' sockets may share the
		// port, each connected to its own peer.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt(SO_REUSEADDR)", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(o.Local)); err != nil {
		return os.NewSyscallError("bind", err)
	}
	return nil
}
