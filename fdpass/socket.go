package fdpass

import (
	"fmt"
	"net/netip"
)

// Kind is what a received descriptor is claimed to be; Check verifies the claim
// before the receiver converts the descriptor (HANDOFF.md §2.4 steps 3 and 5, F6c).
type Kind int

// Kinds of socket baton hands off.
const (
	TCPListener  Kind = iota + 1 // SOCK_STREAM, AF_INET or AF_INET6, listening
	TCPConn                      // SOCK_STREAM, AF_INET or AF_INET6, not listening
	UDPListener                  // SOCK_DGRAM, AF_INET or AF_INET6, no peer
	UDPConn                      // SOCK_DGRAM, AF_INET or AF_INET6, connected (a session socket)
	UnixListener                 // SOCK_STREAM, AF_UNIX, listening (the control socket)
)

func (k Kind) String() string {
	switch k {
	case TCPListener:
		return "TCP listener"
	case TCPConn:
		return "TCP connection"
	case UDPListener:
		return "UDP listener"
	case UDPConn:
		return "connected UDP socket"
	case UnixListener:
		return "Unix listener"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// SocketInfo is what the kernel says about a socket descriptor.
type SocketInfo struct {
	Family    int    // SO_DOMAIN: syscall.AF_INET, AF_INET6, AF_UNIX
	Type      int    // SO_TYPE: syscall.SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	Listening bool   // SO_ACCEPTCONN
	Connected bool   // getpeername succeeded
	Addr      string // getsockname: "ip:port", "[ip6]:port", a path, "@abstract", or ""
}

// sameAddr reports whether the socket's own address got equals the claimed
// one. IP addresses compare as netip.AddrPort, so "[::ffff:1.2.3.4]:80" and
// an AF_INET6 socket bound to that mapped address agree; a zone in claimed is
// ignored (getsockname reports an index, not a name). Anything that is not an
// ip:port (a Unix path) compares as a string.
func sameAddr(got, claimed string) bool {
	c, err := netip.ParseAddrPort(claimed)
	if err != nil {
		return got == claimed
	}
	g, err := netip.ParseAddrPort(got)
	if err != nil {
		return false
	}
	return g == netip.AddrPortFrom(c.Addr().WithZone(""), c.Port())
}
