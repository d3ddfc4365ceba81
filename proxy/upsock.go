package proxy

import (
	"errors"
	"net/netip"
	"os"
	"strings"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// Socket options of the upstream and client sockets: nginx's proxy_bind,
// proxy_socket_keepalive and tcp_nodelay (ngx_stream_proxy_set_local,
// ngx_event_connect_peer, ngx_stream_core_content_phase and
// ngx_stream_proxy_init_upstream). A server that sets none of them has no
// upsock: its sessions dial with sock.Dial as before (TCP_NODELAY, nothing
// evaluated, no syscall more), and its clients keep the TCP_NODELAY their
// listening socket gave them (sock.Listen).

// upsock is how a server's upstream sockets differ from sock.Dial's.
type upsock struct {
	opts     sock.DialOpts // all but DelayAck; Local when proxy_bind has no variables
	bindName string        // proxy_bind as written, for nginx's "bind(NAME) failed"
	bindT    template      // proxy_bind with variables, evaluated once per session; nil: none
}

// boundAddr is a proxy_bind with variables as evaluated for one session.
type boundAddr struct {
	ap   netip.AddrPort // invalid: bind nothing
	name string         // the value
}

// buildUpsock sets srv's upsock (nil when cs asks for nothing sock.Dial
// does not do) and its tcp_nodelay.
func (srv *server) buildUpsock(cs *config.Server, vt *varTable) error {
	srv.noDelayOff = cs.TCPNoDelayOff
	if cs.ProxyBind == "" && !cs.ProxySocketKeepalive && !cs.TCPNoDelayOff {
		return nil
	}
	up := &upsock{
		opts: sock.DialOpts{
			Local:       cs.ProxyBindAddr,
			Transparent: cs.ProxyBindTransparent,
			KeepAlive:   cs.ProxySocketKeepalive,
			NoDelay:     !cs.TCPNoDelayOff,
		},
		bindName: cs.ProxyBind,
	}
	if cs.ProxyBindVars {
		t, err := vt.compile(cs.ProxyBind)
		if err != nil {
			return posError(cs.ProxyBindPos, err)
		}
		up.bindT = t
	}
	srv.up = up
	return nil
}

// evalBind evaluates srv's proxy_bind for the session r describes, as
// nginx's ngx_stream_proxy_set_local: an empty value binds nothing, and so
// does one that is not an address, with an error logged. nginx evaluates
// it before it picks a peer, so $upstream_addr is empty here, though the
// first peer is picked by now.
func (srv *server) evalBind(r *record) *boundAddr {
	r.upstreamAddrs = nil
	b := &boundAddr{name: string(srv.up.bindT.appendTo(nil, r))}
	if b.name == "" {
		return b
	}
	ap, ok := config.ParseAddrPort(b.name)
	if !ok {
		client := "client"
		if r.udp {
			client = "udp client"
		}
		srv.log.Logf(LevelError, "*%d invalid local address \"%s\", %s: %s, server: %s",
			r.id, b.name, client, r.client.Addr(), srv.name)
		return b
	}
	b.ap = ap
	return b
}

// dialUp is session.dial's sock.Dial for a server with an upsock. A
// proxy_bind with variables is evaluated at the session's first connect
// and kept for its next tries, as nginx evaluates it once per session.
func (s *session) dialUp(addr netip.AddrPort) (int, error) {
	o, name := s.srv.dialOpts(func() **boundAddr { return &s.ext().bind }, func() *record { return s.record(&s.loop.rec) })
	o.DelayAck = s.hasOpening()
	fd, err := sock.DialWith(addr, unix.SOCK_STREAM, &o)
	return fd, localDialErr(err, name)
}

// dialUDP opens a UDP session's upstream socket: sock.DialUDP, or with
// srv's upsock if it has one (see dialUp).
func (u *udpListener) dialUDP(s *udpSession, addr netip.AddrPort) (int, error) {
	if s.srv.up == nil {
		return sock.DialUDP(addr)
	}
	o, name := s.srv.dialOpts(func() **boundAddr { return &s.ext().bind }, func() *record { return s.record(&u.l.rec) })
	fd, err := sock.DialWith(addr, unix.SOCK_DGRAM, &o)
	return fd, localDialErr(err, name)
}

// dialOpts are the socket options of srv's upsock for a session, and the
// bound address's name for messages; a proxy_bind with variables is
// evaluated once (rec) and kept where keep says (made only then).
func (srv *server) dialOpts(keep func() **boundAddr, rec func() *record) (sock.DialOpts, string) {
	up := srv.up
	o, name := up.opts, up.bindName
	if up.bindT != nil {
		bind := keep()
		if *bind == nil {
			*bind = srv.evalBind(rec())
		}
		o.Local, name = (*bind).ap, (*bind).name
	}
	return o, name
}

// upsockError is sock.DialWith's failure to set up a socket as proxy_bind
// asks, worded as nginx's line for it. Like socket(2)'s failure it is
// baton's own (health.LocalError): the session ends with 500, no other peer
// is tried and the peer is not blamed, as nginx's ngx_event_connect_peer
// returning NGX_ERROR.
type upsockError struct {
	level Level
	what  string // "bind(127.0.0.2) failed (99: Cannot assign requested address)"
	err   error
}

func (e *upsockError) Error() string { return e.what }
func (e *upsockError) Unwrap() error { return e.err }

// localDialErr words DialWith's bind and setsockopt failures as nginx does
// (bindName is the address as written or evaluated); other errors are
// returned as they are.
func localDialErr(err error, bindName string) error {
	var se *os.SyscallError
	if err == nil || !errors.As(err, &se) {
		return err
	}
	switch {
	case se.Syscall == "bind":
		return &upsockError{level: LevelCrit, what: "bind(" + bindName + ") failed " + sock.ErrnoText(se.Err), err: err}
	case strings.HasPrefix(se.Syscall, "setsockopt("):
		return &upsockError{level: LevelAlert, what: se.Syscall + " failed " + sock.ErrnoText(se.Err), err: err}
	}
	return err
}

// localFailure returns the level and text of nginx's line for a local
// failure to make an upstream socket (health.LocalError): socket(2)'s, at
// alert, or one of proxy_bind's.
func localFailure(err error) (Level, string) {
	var ue *upsockError
	if errors.As(err, &ue) {
		return ue.level, ue.what
	}
	return LevelAlert, "socket() failed " + sock.ErrnoText(sock.BareErrno(err))
}

// clientNoDelay applies tcp_nodelay to the client's socket in the content
// phase, as nginx's ngx_stream_core_content_phase, which sets TCP_NODELAY
// in every server's content phase that has it on and never clears it. An
// accepted socket already has it from its listener, so content calls this
// only for a server with tcp_nodelay off, where the session's first server
// clears it (nginx never set it), and after a "pass", where a server with
// it on sets it again. A failure is ignored: TCP_NODELAY does not fail on
// a TCP socket.
func (s *session) clientNoDelay() {
	switch first := s.x == nil || s.x.passes == 0; {
	case !s.srv.noDelayOff:
		unix.SetsockoptInt(s.cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	case first:
		unix.SetsockoptInt(s.cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 0)
	}
}
