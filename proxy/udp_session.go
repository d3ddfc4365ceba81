package proxy

import (
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/lb"
	"golang.org/x/sys/unix"
)

// endReason is why a UDP session ended; it chooses the info or error line
// nginx writes for it.
type endReason uint8

const (
	endDone             endReason = iota + 1 // proxy_responses reached: "udp done"
	endTimedOut                              // idle, every expected response seen: "udp timed out"
	endUpstreamTimedOut                      // idle, responses missing: 502 and a peer failure
	endUpstreamError                         // recv() or send() on the upstream socket failed
	endClientError                           // sending a reply to the client failed
	endClosed                                // Proxy.Close
)

// udpSession is one client address's flow, as nginx's UDP "connection":
// plain data, so that an upgrade can ship it with its upstream socket
// (HANDOFF.md §2.4 step 6).
type udpSession struct {
	id            uint64
	srv           *server // the server it started with: a reload does not move it
	key           udpKey
	client        netip.AddrPort
	local         netip.AddrPort // the address the client sent to
	oob           []byte         // IP_PKTINFO for replies, on a wildcard listener
	peer          int            // index into the group's peers
	up            *net.UDPConn   // connected to the peer
	raw           syscall.RawConn
	upstreamAddrs []byte
	startMono     int64
	connectTime   int64
	timeout       int64 // proxy_timeout; 0: none

	// Owner only.
	upSent   int64         // bytes written to the upstream
	upClosed bool          // up is closed and its descriptor back in the budget
	detached bool          // not in the table: proxy_requests reached, ended, or replaced
	rdone    chan struct{} // closed when the current upstream reader has returned
	stay     bool          // restored during an upgrade: not quiesced again by it
	wasIn    bool          // quiesced: it was in the table (Restore puts it back)
	ifidx    uint32        // the interface of s.oob (IPv6 wildcard listeners)
	pend     [][]byte      // client datagrams carried over an upgrade, sent at start

	// Shared by the owner and the upstream reader.
	mu         sync.Mutex
	lastActive int64
	requests   int64 // datagrams from the client (nginx's u->requests)
	responses  int64 // datagrams to the client (u->responses)
	received   int64 // bytes from the client ($bytes_received)
	sent       int64 // bytes to the client ($bytes_sent)
	ended      bool
	paused     bool // an upgrade parks the upstream reader (udp_handoff.go)
	parkedRd   bool // the upstream reader saw paused and returned
	failed     bool // report a failure of the peer to passive health
	status     int
	reason     endReason
}

// closeUp closes s's upstream socket and gives its descriptor back to p's
// budget (fdbudget.go), once (owner).
func (s *udpSession) closeUp(p *Proxy) {
	if s.upClosed {
		return
	}
	s.upClosed = true
	s.up.Close()
	p.fds.giveUDP()
}

// claim ends s with status and reason unless it has ended already. The
// caller that gets true must see to it that the owner finishes s.
func (s *udpSession) claim(status int, reason endReason) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.ended, s.status, s.reason = true, status, reason
	return true
}

// udpEnd is what the test hook learns about a finished session.
type udpEnd struct {
	u      *udpListener
	id     uint64
	status int
	reason endReason
	failed bool
	peer   int // -1: no upstream
}

func (u *udpListener) hook(e udpEnd) {
	if h := u.endHook.Load(); h != nil {
		(*h)(e)
	}
}

// count records an n-byte datagram of s, a request from the client or a
// response to it, and applies nginx's end check (finalizeCheck); a session
// that is done ends here with 200. ok is false, and nothing is counted, if s
// had already ended.
func (u *udpListener) count(s *udpSession, n int, request bool) (detach, done, ok bool) {
	now := u.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false, false, false
	}
	if request {
		s.requests++
		s.received += int64(n)
	} else {
		s.responses++
		s.sent += int64(n)
	}
	s.lastActive = now
	detach, done = u.finalizeCheck(s)
	if done {
		s.ended, s.status, s.reason = true, 200, endDone
	}
	return detach, done, true
}

// finalizeCheck is nginx's ngx_stream_proxy_test_finalize for UDP, with
// s.mu held: whether s leaves the table (proxy_requests reached: a new
// datagram from the client starts a new session) and whether it is done
// (every expected response has come: proxy_responses times the requests).
func (u *udpListener) finalizeCheck(s *udpSession) (detach, done bool) {
	req, resp := s.srv.proxyRequests, s.srv.proxyResponses
	if req > 0 && s.requests < int64(req) {
		return false, false
	}
	detach = req > 0
	if resp < 0 || s.responses < int64(resp)*s.requests {
		return detach, false
	}
	return detach, true
}

// open starts a session for a datagram from a new client (owner).
func (u *udpListener) open(key udpKey, pk udpPacket) {
	p := u.p
	now := u.now()
	if !p.fds.takeUDP() {
		u.drops.capacity.Add(1)
		if c := u.capLog.hit(now); c > 0 {
			p.log.Logf(LevelAlert, "%s, %d datagrams from new clients of %s dropped", p.fds.udpCapReason(), c, u.text())
		}
		return
	}
	srv := u.srv()
	s := &udpSession{
		id: p.nextID.Add(1), srv: srv, key: key, client: pk.client, local: u.bound,
		peer: -1, connectTime: -1, startMono: now, lastActive: now,
		timeout: srv.proxyTimeout, requests: 1, received: int64(pk.n),
	}
	if pk.dst.IsValid() && u.wild {
		s.local = netip.AddrPortFrom(pk.dst, u.bound.Port())
		s.oob = replyOOB(pk.dst, pk.ifidx)
		s.ifidx = pk.ifidx
	}
	p.total.Add(1)
	u.total.Add(1)
	if status := u.connect(s); status != 0 {
		p.fds.giveUDP()
		u.logAccess(s, status, u.now(), s.received, 0)
		u.hook(udpEnd{u: u, id: s.id, status: status, peer: -1})
		return
	}
	p.active.Add(1)
	u.active.Add(1)
	u.live[s] = struct{}{}
	detach, done := u.finalizeCheck(s)
	if done {
		s.ended, s.status, s.reason = true, 200, endDone
	}
	if detach {
		s.detached = true
	} else {
		u.table[key] = s
	}
	if !done {
		u.startUpstreamReader(s)
	}
	u.send(s, (*pk.buf)[:pk.n], done)
}

// connect picks a peer and opens a connected socket to it, trying further
// peers as proxy_next_upstream allows when the socket cannot be connected
// (for UDP, connect() fails only on routes, e.g. ENETUNREACH). It returns
// 0 once connected, 502 when no peer is left, and 500 when baton could not
// make a socket at all (socket(): EMFILE, ENOBUFS...): as nginx's
// ngx_event_connect_peer, a local failure is not the peer's, so it counts
// no failure against it and tries no other.
func (u *udpListener) connect(s *udpSession) int {
	srv := s.srv
	g := srv.group
	if len(u.tried) < len(g.peers) {
		u.tried = make([]bool, len(g.peers))
	}
	u.tried = u.tried[:len(g.peers)]
	clear(u.tried)
	u.pickG = g
	var key []byte
	if g.key != nil {
		key = g.key.appendTo(u.keyBuf[:0], u.record(s))
	} else {
		key = appendAddrKey(u.keyBuf[:0], s.client.Addr())
	}
	u.keyBuf = key[:0]
	first := u.now()
	for tries := 0; ; tries++ {
		if tries > 0 && (!srv.nextUpstream ||
			(srv.nextTries > 0 && tries >= srv.nextTries) ||
			(srv.nextTimeout > 0 && u.now()-first >= srv.nextTimeout)) {
			return 502
		}
		if tries >= len(g.peers) {
			return 502
		}
		i, err := g.bal.Pick(key, u.usableFn)
		if err != nil {
			g.health.ResetFails() // as nginx, so that the peers come back at once
			if c := u.connLog.hit(u.now()); c > 0 {
				u.p.log.Logf(LevelError, "*%d no live upstreams while connecting to upstream, udp client: %s, server: %s, upstream: %q%s",
					s.id, s.client.Addr(), srv.name, g.name, timesText(c))
			}
			return 502
		}
		start := u.now()
		g.health.Peer(i).Picked(u.wall(start))
		u.tried[i] = true
		pr := &g.peers[i]
		pr.active.Add(1)
		if len(s.upstreamAddrs) > 0 {
			s.upstreamAddrs = append(s.upstreamAddrs, ", "...)
		}
		s.upstreamAddrs = pr.addr.AppendTo(s.upstreamAddrs)
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(pr.addr))
		if err == nil {
			raw, rerr := c.SyscallConn()
			if rerr == nil {
				s.peer, s.up, s.raw = i, c, raw
				s.connectTime = u.now() - start
				pr.total.Add(1)
				return 0
			}
			c.Close()
			err = rerr
		}
		pr.active.Add(-1)
		if health.LocalError(err) {
			if c := u.localLog.hit(u.now()); c > 0 {
				u.p.log.Logf(LevelAlert, "*%d socket() failed %s while connecting to upstream, udp client: %s, server: %s, upstream: \"%s\"%s",
					s.id, errnoText(bareErrno(err)), s.client.Addr(), srv.name, pr.addr, timesText(c))
			}
			return 500
		}
		pr.fails.Add(1)
		if f, ok := g.bal.(lb.Failer); ok {
			f.Failed(i, pr.maxFails)
		}
		disabled := g.health.Peer(i).Failed(u.wall(u.now()))
		if c := u.connLog.hit(u.now()); c > 0 {
			u.p.log.Logf(LevelError, "*%d connect() failed %s while connecting to upstream, udp client: %s, server: %s, upstream: \"%s\"%s",
				s.id, errnoText(bareErrno(err)), s.client.Addr(), srv.name, pr.addr, timesText(c))
		}
		if disabled {
			u.p.log.Logf(LevelWarn, "*%d upstream server temporarily disabled while connecting to upstream, udp client: %s, server: %s, upstream: \"%s\"",
				s.id, s.client.Addr(), srv.name, pr.addr)
		}
	}
}

// write is u.writeFn: one nonblocking write of u.wbuf to fd (owner).
func (u *udpListener) write(fd uintptr) bool {
	for {
		u.wn, u.werr = unix.Write(int(fd), u.wbuf)
		if u.werr != unix.EINTR {
			return true
		}
	}
}

// bareErrno returns the errno inside err if there is one, for errnoText.
func bareErrno(err error) error {
	if e := errnoIn(err); e != 0 {
		return e
	}
	return err
}

// forward sends a client datagram to s's upstream (owner). It reports false,
// sending nothing, when s has ended.
func (u *udpListener) forward(s *udpSession, b []byte) bool {
	detach, done, ok := u.count(s, len(b), true)
	if !ok {
		return false
	}
	if detach && !s.detached {
		delete(u.table, s.key)
		s.detached = true
	}
	u.send(s, b, done)
	return true
}

// send writes b to s's upstream with one nonblocking write (owner). A full
// socket buffer drops the datagram, counted and logged; an error of the
// upstream (ECONNREFUSED: a port unreachable came back) ends s and counts a
// failure of the peer, as nginx's ngx_udp_send error does. claimed says
// the owner has already ended s: it is finished here.
func (u *udpListener) send(s *udpSession, b []byte, claimed bool) {
	u.wbuf = b
	err := s.raw.Write(u.writeFn)
	n, werr := u.wn, u.werr
	u.wbuf, u.werr = nil, nil
	if err == nil {
		err = werr
	}
	switch errno := errnoIn(err); {
	case err == nil:
		s.upSent += int64(n)
	case errno == unix.EAGAIN || errno == unix.ENOBUFS || errno == unix.EMSGSIZE:
		u.drops.send.Add(1)
		if c := u.sendLog.hit(u.now()); c > 0 {
			u.p.log.Logf(LevelWarn, "%d datagrams from clients of %s were not sent to the upstream, the last: send() failed %s, udp client: %s, upstream: \"%s\"",
				c, u.text(), errnoText(errno), s.client.Addr(), s.upstreamAddrs)
		}
	default:
		s.mu.Lock()
		first := !s.ended
		if first {
			s.ended, s.status, s.reason = true, 200, endUpstreamError
		}
		s.failed = true
		s.mu.Unlock()
		u.p.log.Logf(LevelError, "*%d send() failed %s while proxying and sending to upstream, udp client: %s, server: %s, upstream: \"%s\"",
			s.id, errnoText(bareErrno(err)), s.client.Addr(), s.srv.name, s.upstreamAddrs)
		if first || claimed {
			u.finish(s)
		}
		return
	}
	if claimed {
		u.finish(s)
	}
}

// finish closes s's upstream socket, releases its peer, reports the peer's
// health and writes the access-log line (owner; once per session, after
// whoever ended it).
func (u *udpListener) finish(s *udpSession) {
	s.mu.Lock()
	status, reason, failed := s.status, s.reason, s.failed
	reqs, resps, recv, sent := s.requests, s.responses, s.received, s.sent
	s.mu.Unlock()
	s.closeUp(u.p)
	if !s.detached {
		delete(u.table, s.key)
		s.detached = true
	}
	delete(u.live, s)
	end := u.now()
	g := s.srv.group
	var pr *peer
	if s.peer >= 0 { // -1: imported, its upstream not in this config's group
		pr = &g.peers[s.peer]
		pr.active.Add(-1)
		pr.sent.Add(uint64(s.upSent))
		pr.received.Add(uint64(sent))
	}
	log := u.p.log
	switch reason {
	case endDone, endTimedOut:
		what := "udp done"
		if reason == endTimedOut {
			what = "udp timed out"
		}
		log.Logf(LevelInfo, "*%d %s, packets from/to client:%d/%d, bytes from/to client:%d/%d, bytes from/to upstream:%d/%d",
			s.id, what, reqs, resps, recv, sent, s.upSent, sent)
	case endUpstreamTimedOut:
		if c := u.timeoutLog.hit(end); c > 0 {
			log.Logf(LevelError, "*%d upstream timed out (110: Connection timed out) while proxying connection, udp client: %s, server: %s, upstream: \"%s\"%s",
				s.id, s.client.Addr(), s.srv.name, s.upstreamAddrs, timesText(c))
		}
	}
	if pr == nil {
		// no peer of this group to account to
	} else if failed {
		// nginx's ngx_stream_proxy_finalize: a UDP upstream socket with a
		// read or write error is freed with NGX_PEER_FAILED.
		pr.fails.Add(1)
		if f, ok := g.bal.(lb.Failer); ok {
			f.Failed(s.peer, pr.maxFails)
		}
		if g.health.Peer(s.peer).Failed(u.wall(end)) {
			log.Logf(LevelWarn, "*%d upstream server temporarily disabled while proxying connection, udp client: %s, server: %s, upstream: \"%s\"",
				s.id, s.client.Addr(), s.srv.name, s.upstreamAddrs)
		}
	} else {
		g.health.Peer(s.peer).Succeeded(u.wall(end))
	}
	u.p.active.Add(-1)
	u.active.Add(-1)
	u.logAccess(s, status, end, recv, sent)
	u.hook(udpEnd{u: u, id: s.id, status: status, reason: reason, failed: failed, peer: s.peer})
}

// record fills the owner's log record for s, for the access log and the
// hash key.
func (u *udpListener) record(s *udpSession) *session {
	u.rec = session{
		id: s.id, srv: s.srv, cfd: -1, ufd: -1, client: s.client, local: s.local,
		peer: -1, connectTime: s.connectTime, upstreamAddrs: s.upstreamAddrs,
		startMono: s.startMono, heapIdx: -1, udp: true,
	}
	return &u.rec
}

// logAccess writes s's access-log lines (owner): recv and sent are the
// bytes from and to the client.
func (u *udpListener) logAccess(s *udpSession, status int, end, recv, sent int64) {
	if len(s.srv.accessLogs) == 0 {
		return
	}
	rec := u.record(s)
	rec.status, rec.endMono = status, end
	rec.c2u.n, rec.u2c.n = recv, sent
	for _, al := range s.srv.accessLogs {
		line := al.format.appendTo(u.lineBuf[:0], rec)
		line = append(line, '\n')
		al.file.write(line)
		u.lineBuf = line[:0]
	}
}
