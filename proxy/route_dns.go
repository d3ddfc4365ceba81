package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/dnsres"
)

// "proxy_pass $var" whose value is a host name and port is resolved at run
// time through the server's "resolver", as nginx's
// ngx_stream_proxy_resolve_handler: the session waits (its client not
// read) while a goroutine asks the resolver, then connects to the
// addresses, round robin with the next one tried on failure. Answers are
// cached for their TTL (or valid=), so a popular name costs one query per
// TTL, not one per session.

// routeNeedsDNS is find's answer for a value with a host name: the caller
// resolves it (resolveRoute), or reports that no resolver is defined.
const routeNeedsDNS routeErr = "\x00dns"

// noResolver is nginx's error for a host name with no resolver.
func noResolver(value string) routeErr {
	u, _ := config.ParseURL(value)
	return routeErr(fmt.Sprintf("no resolver defined to resolve %s", u.Host))
}

// routeResolver is a server's resolver for proxy_pass values.
type routeResolver struct {
	cache   *dnsres.Cache
	timeout time.Duration
}

func newRouteResolver(r *config.Resolver) *routeResolver {
	res := dnsres.New(dnsres.Config{Servers: r.Addrs, Valid: r.Valid, IPv4: r.IPv4, IPv6: r.IPv6, Timeout: r.Timeout})
	return &routeResolver{cache: dnsres.NewCache(res, 0), timeout: r.Timeout}
}

// resolvedGroup is the group of value's host name answered ans (or err):
// one made for the addresses, or nil with the log text and status (502:
// not resolved, 500: no group could be made).
func (srv *server) resolvedGroup(value string, ans dnsres.Answer, err error) (*group, string, int) {
	u, _ := config.ParseURL(value)
	if err == nil && len(ans.Addrs) == 0 {
		err = fmt.Errorf("%s could not be resolved (3: Host not found)", u.Host)
	}
	if err != nil {
		return nil, err.Error(), 502
	}
	addrs := make([]netip.AddrPort, len(ans.Addrs))
	key := value
	for i, a := range ans.Addrs {
		addrs[i] = netip.AddrPortFrom(a.Addr, u.Port)
		key += "|" + addrs[i].String()
	}
	g, why := srv.routes.adhocGroup(key, &config.UpstreamServer{
		Name: value, Addrs: addrs, Weight: 1, MaxFails: 1, FailTimeout: 10e9,
	})
	if g == nil {
		return nil, string(why), 500
	}
	return g.current(), "", 0
}

// lookupRoute resolves value's host name in a goroutine of its own and
// hands the answer to fn on loop l.
func (srv *server) lookupRoute(l *loop, value string, fn func(dnsres.Answer, error)) {
	u, _ := config.ParseURL(value)
	rr := srv.resolver
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), rr.timeout)
		ans, err := rr.cache.LookupHost(ctx, u.Host)
		cancel()
		l.do(func() { fn(ans, err) })
	}()
}

// resolveRoute routes session s to value's host name: at once when the
// answer is cached, else s waits in stateResolving (its client not read)
// until the answer comes back to its loop or resolver_timeout passes.
func (s *session) resolveRoute(value string) {
	l := s.loop
	u, _ := config.ParseURL(value)
	if ans, ok, err := s.srv.resolver.cache.CachedHost(u.Host); ok {
		s.routeResolved(value, ans, err)
		return
	}
	if s.cEvents&parked == 0 {
		s.park(s.cfd)
	}
	s.state = stateResolving
	s.lastActive, s.timeout = l.now, int64(s.srv.resolver.timeout)+int64(time.Second)
	l.schedule(s)
	id := s.id
	s.srv.lookupRoute(l, value, func(ans dnsres.Answer, err error) {
		if s.id == id && s.state == stateResolving && s.loop == l {
			s.routeResolved(value, ans, err)
		}
	})
}

// routeResolved goes on with a session whose proxy_pass host name has
// been resolved: to its addresses, or, when it could not be, ends it with
// 502 as nginx.
func (s *session) routeResolved(value string, ans dnsres.Answer, err error) {
	g, why, status := s.srv.resolvedGroup(value, ans, err)
	if g == nil {
		s.srv.log.Logf(LevelError, "*%d %s, client: %s, server: %s", s.id, why, s.client.Addr(), s.srv.name)
		s.finish(status)
		return
	}
	s.group = g
	if s.state == stateResolving {
		s.timeout = 0
		s.loop.timers.remove(s)
	}
	s.connectNext()
}

// resolveTimedOut ends a session whose resolver did not answer in time.
func (s *session) resolveTimedOut() {
	s.srv.log.Logf(LevelError, "*%d proxy_pass host name could not be resolved (110: Operation timed out), client: %s, server: %s",
		s.id, s.client.Addr(), s.srv.name)
	s.finish(502)
}

// udpWait holds the datagrams of a new UDP client while the host name its
// proxy_pass gave is resolved; the session opens when the answer comes.
type udpWait struct {
	held  [][]byte
	size  int
	name  unix.RawSockaddrInet6
	ifidx uint32
}

// maxUDPWait bounds what a waiting client may hold: datagrams past it are
// dropped, as a full socket buffer would.
const (
	maxUDPWaitDatagrams = 16
	maxUDPWaitBytes     = 64 << 10
	maxUDPWaiting       = 1024 // clients waiting per listener; past it new ones are dropped
)

// routeUDP routes a UDP session to value's host name: 0 when the answer
// is cached (the session's group is set), a status when it cannot be, or
// -1 when the lookup is under way: the caller gives the session up and
// the datagram waits (awaitRoute).
func (u *udpListener) routeUDP(s *udpSession, value string) int {
	host, _ := config.ParseURL(value)
	ans, ok, err := s.srv.resolver.cache.CachedHost(host.Host)
	if !ok {
		return -1
	}
	g, why, status := s.srv.resolvedGroup(value, ans, err)
	if g == nil {
		s.srv.log.Logf(LevelError, "*%d %s, udp client: %s, server: %s", s.id, why, s.client.Addr(), s.srv.name)
		return status
	}
	s.ext().group = g
	return 0
}

// awaitRoute holds datagram d of a new client while value's host name is
// resolved, then opens the session with the datagrams held meanwhile.
func (u *udpListener) awaitRoute(key udpKey, d []byte, name *unix.RawSockaddrInet6, ifidx uint32, value string) {
	if u.waiting == nil {
		u.waiting = map[udpKey]*udpWait{}
	}
	if len(u.waiting) >= maxUDPWaiting {
		u.drops.capacity.Add(1)
		return
	}
	w := &udpWait{name: *name, ifidx: ifidx}
	u.waiting[key] = w
	w.hold(d)
	l := u.l
	u.srv().lookupRoute(l, value, func(dnsres.Answer, error) {
		// The answer is cached now (or the failure is, for a second): the
		// datagrams go through the usual path, which finds it.
		if u.waiting[key] != w {
			return
		}
		delete(u.waiting, key)
		for _, d := range w.held {
			if s := u.table[key]; s != nil {
				u.forward(s, d)
			} else {
				u.open(key, d, &w.name, w.ifidx)
			}
		}
	})
}

// hold keeps a copy of d, within the bounds.
func (w *udpWait) hold(d []byte) {
	if len(w.held) >= maxUDPWaitDatagrams || w.size+len(d) > maxUDPWaitBytes {
		return
	}
	w.held = append(w.held, slices.Clone(d))
	w.size += len(d)
}
