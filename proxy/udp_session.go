package proxy

import (
	"net/netip"
	"unsafe"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/internal/sock"
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
// plain data owned by its listener's loop, so that an upgrade can ship it
// with its upstream socket (HANDOFF.md §2.4 step 6).
type udpSession struct {
	timer // idle deadline: proxy_timeout, or the unanswered bound (idleTimeout)
	u     *udpListener
	id    uint64
	srv   *server // the server it started with: a reload does not move it
	key   udpKey
	fd    int // connected to the peer; -1 once closed

	client        netip.AddrPort
	sa            unix.RawSockaddrInet6 // client, for sendmsg
	salen         uint32
	local         netip.AddrPort // the address the client sent to
	oob           []byte         // IP_PKTINFO for replies, on a wildcard listener
	peer          int            // index into the group's peers; -1: none of this config's
	upstream      netip.AddrPort // the upstream socket's peer
	upstreamAddrs []byte
	startMono     int64
	connectTime   int64
	firstByte     int64 // loop.now when the upstream's first datagram came; 0: not yet

	upSent    int64 // bytes written to the upstream
	requests  int64 // datagrams from the client (nginx's u->requests)
	responses int64 // datagrams to the client (u->responses)
	received  int64 // bytes from the client ($bytes_received)
	sent      int64 // bytes to the client ($bytes_sent)

	detached    bool   // not in the table: proxy_requests reached, or quiesced
	paused      bool   // an upgrade parked it: its socket is out of the epoll set, its timer off
	stay        bool   // restored during an upgrade: not quiesced again by it
	wasIn       bool   // quiesced: it was in the table (Restore puts it back)
	failed      bool   // report a failure of the peer to passive health
	limitStatus uint8  // $limit_conn_status
	ifidx       uint32 // the interface of oob (IPv6 wildcard listeners)
	status      int
	reason      endReason

	x *udpExtra // what few sessions have; nil until one needs it
}

// udpExtra holds what only some UDP sessions have, out of the session so
// that an idle one stays small.
type udpExtra struct {
	group       *group           // what a proxy_pass $var named (srv's upstream otherwise)
	sv          *sessVars        // "set" values
	limits      []heldLimit      // limit_conn counts held until the session ends
	pend        [][]byte         // client datagrams carried over an upgrade from an older baton, sent at start
	bind        *boundAddr       // proxy_bind with variables, as evaluated at connect (upsock.go)
	pace        [2]*pacer        // proxy_upload_rate, proxy_download_rate; nil: not paced
	moved       [2]pacedState    // pacing as an old process left it, until adopt paces again
	movedLimits []heldLimitState // limit_conn counts an old process held, until adopt takes them
}

// ext returns s's udpExtra, made on first use.
func (s *udpSession) ext() *udpExtra {
	if s.x == nil {
		s.x = &udpExtra{}
	}
	return s.x
}

// grp is s's upstream group: srv's, or what its proxy_pass $var named.
func (s *udpSession) grp() *group {
	if s.x != nil && s.x.group != nil {
		return s.x.group
	}
	return s.srv.group
}

// vars is s's sessVars, nil if none.
func (s *udpSession) vars() *sessVars {
	if s.x == nil {
		return nil
	}
	return s.x.sv
}

// adoptLimits takes again, in this process's zones, the limit_conn counts
// an imported session held in the old one (loop).
func (s *udpSession) adoptLimits() {
	if s.x == nil || len(s.x.movedLimits) == 0 {
		return
	}
	s.x.limits = append(s.x.limits, s.srv.retakeLimits(s.x.movedLimits)...)
	s.x.movedLimits = nil
}

// releaseLimits gives back s's limit_conn counts.
func (s *udpSession) releaseLimits() {
	if s.x != nil {
		releaseLimits(s.x.limits)
		s.x.limits = nil
	}
}

func (s *udpSession) expire() { s.u.expire(s) }

// closeUp closes s's upstream socket and gives its descriptor back to the
// budget (fdbudget.go), once (loop).
func (s *udpSession) closeUp() {
	if s.fd < 0 {
		return
	}
	s.stopPacing()
	s.u.l.releaseUDP(s.fd)
	s.fd = -1
	s.u.p.fds.giveUDP()
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
// response to it, and applies nginx's end check (finalizeCheck).
func (u *udpListener) count(s *udpSession, n int, request bool) (detach, done bool) {
	if request {
		s.requests++
		s.received += int64(n)
	} else {
		s.responses++
		s.sent += int64(n)
		if s.responses == 1 {
			s.timeout = u.idleTimeout(s) // answered: proxy_timeout from now on
		}
	}
	// The time now, not the batch's start: a datagram read later in the
	// batch came after it, and its session must not end that much early.
	s.lastActive = u.l.clock()
	return u.finalizeCheck(s)
}

// finalizeCheck is nginx's ngx_stream_proxy_test_finalize for UDP: whether
// s leaves the table (proxy_requests reached: a new datagram from the
// client starts a new session) and whether it is done (every expected
// response has come: proxy_responses times the requests).
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

// open starts a session for a datagram d from a new client (loop).
func (u *udpListener) open(key udpKey, d []byte, name *unix.RawSockaddrInet6, ifidx uint32) {
	p, l := u.p, u.l
	if !p.fds.takeUDP() {
		u.drops.capacity.Add(1)
		if c := u.capLog.Hit(l.now); c > 0 {
			p.log.Logf(LevelAlert, "%s, %d datagrams from new clients of %s dropped", p.fds.udpCapReason(), c, u.text())
		}
		return
	}
	srv := u.srv()
	s := &udpSession{
		timer: timer{lastActive: l.now, heapIdx: -1},
		u:     u, id: p.nextID.Add(1), srv: srv, key: key, fd: -1,
		client: key.client, sa: *name, salen: unix.SizeofSockaddrInet6, local: u.bound,
		peer: -1, connectTime: -1, startMono: l.now, requests: 1, received: int64(len(d)),
	}
	if name.Family == unix.AF_INET {
		s.salen = unix.SizeofSockaddrInet4
	}
	if key.dst.IsValid() && u.wild {
		s.local = netip.AddrPortFrom(key.dst, u.bound.Port())
		s.oob = sock.ReplyOOB(key.dst, ifidx)
		s.ifidx = ifidx
	}
	p.total.Add(1)
	u.total.Add(1)
	if lg := srv.log; lg.Enabled(LevelInfo) { // ngx_stream_init_connection
		lg.Logf(LevelInfo, "*%d udp client %s connected to %s", s.id, s.client, u.bound)
	}
	if sv := srv.newSessVars(); sv != nil {
		s.ext().sv = sv
	}
	u.runSets(s)
	var status int
	if len(srv.limits) > 0 {
		held, st, ok := srv.takeLimits(l, s.record(&l.rec), s.id, "udp client")
		if !ok {
			status = 503
		}
		if len(held) > 0 {
			s.ext().limits = held
		}
		s.limitStatus = st
	}
	switch {
	case status != 0:
	case srv.cfg.NoHandler:
		status = 500 // nginx's "no handler for server"
	case srv.ret != nil:
		u.returnDatagram(s)
		u.logAccess(s, 200, l.now, s.received, s.sent)
		u.hook(udpEnd{u: u, id: s.id, status: 200, peer: -1})
		p.fds.giveUDP()
		return
	case srv.pass != nil:
		if status = u.route(s); status < 0 {
			// Its proxy_pass host name is being resolved: the datagram
			// waits, and the session opens again when the answer comes.
			s.releaseLimits()
			p.fds.giveUDP()
			p.total.Add(^uint64(0))
			u.total.Add(^uint64(0))
			v := srv.pass.appendTo(l.keyBuf[:0], s.record(&l.rec))
			u.awaitRoute(key, d, name, ifidx, string(v))
			return
		}
	}
	if status == 0 {
		status = u.connect(s)
	}
	if status == 0 && !u.watch(s) {
		status = 500
	}
	if status == 0 {
		u.startPacing(s, l.now)
		if p := s.pacer(0); p != nil {
			p.took(len(d)) // the first datagram is the first read, as nginx's
		}
	}
	if status != 0 {
		s.releaseLimits()
		p.fds.giveUDP()
		u.logAccess(s, status, l.now, s.received, 0)
		u.hook(udpEnd{u: u, id: s.id, status: status, peer: -1})
		return
	}
	p.active.Add(1)
	u.active.Add(1)
	u.live[s] = struct{}{}
	s.timeout = u.idleTimeout(s)
	l.schedule(s)
	detach, done := u.finalizeCheck(s)
	if detach {
		s.detached = true
	} else {
		u.table[key] = s
	}
	if u.send(s, d) && done {
		u.end(s, 200, endDone)
	}
}

// watch puts s's upstream socket in the loop's epoll set. On failure the
// socket is closed (its peer's count given back) and false returned.
func (u *udpListener) watch(s *udpSession) bool {
	l := u.l
	l.trackUDP(s.fd, s)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd), Pad: tagUDPSession}
	err := sock.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev)
	if err == nil {
		return true
	}
	s.srv.log.Logf(LevelAlert, "*%d epoll_ctl(ADD) failed %s while connecting to upstream, udp client: %s, server: %s",
		s.id, sock.ErrnoText(err), s.client.Addr(), s.srv.name)
	l.releaseUDP(s.fd)
	s.fd = -1
	if s.peer >= 0 {
		s.grp().peers[s.peer].active.Add(-1)
		s.timeDone(s.grp(), true, l.clock())
	}
	return false
}

// connect picks a peer and opens a connected socket to it, trying further
// peers as proxy_next_upstream allows when the socket cannot be connected
// (for UDP, connect() fails only on routes, e.g. ENETUNREACH). It returns
// 0 once connected, 502 when no peer is left, and 500 when baton could not
// make a socket at all (socket(): EMFILE, ENOBUFS...) or bind it where
// proxy_bind asks: as nginx's ngx_event_connect_peer, a local failure is
// not the peer's, so it counts no failure against it and tries no other.
func (u *udpListener) connect(s *udpSession) int {
	l, srv := u.l, s.srv
	g := s.grp()
	if cur := g.current(); cur != g {
		// A resolved name changed: the session keeps the generation it
		// picks from, whose peer indexes it holds.
		g = cur
		s.ext().group = g
	}
	if len(u.tried) < len(g.peers) {
		u.tried = make([]bool, len(g.peers))
	}
	u.tried = u.tried[:len(g.peers)]
	clear(u.tried)
	u.pickG = g
	key := g.pickKey(l.keyBuf[:0], s, &l.rec, s.client.Addr())
	l.keyBuf = key[:0]
	first := l.clock()
	for tries := 0; ; tries++ {
		if !srv.mayTry(g, tries, l.clock()-first) {
			return 502
		}
		i, ok := g.pick(key, u.usableFn)
		if !ok {
			s.upstreamAddrs = g.noLive(s.upstreamAddrs)
			if c := u.connLog.Hit(l.now); c > 0 {
				s.srv.log.Logf(LevelError, "*%d no live upstreams while connecting to upstream, udp client: %s, server: %s, upstream: %q%s",
					s.id, s.client.Addr(), srv.name, g.name, errlog.TimesText(c))
			}
			return 502
		}
		start := l.clock()
		s.upstreamAddrs = g.attempt(i, l.wall(), s.upstreamAddrs)
		u.tried[i] = true
		pr := g.peers[i]
		fd, err := u.dialUDP(s, pr.addr)
		if err == nil {
			s.peer, s.fd, s.upstream = i, fd, pr.addr
			s.connectTime = l.clock() - start
			g.timeConnected(i, s.connectTime)
			pr.total.Add(1)
			if lg := srv.log; lg.Enabled(LevelInfo) { // ngx_stream_proxy_init_upstream
				if sa, err := unix.Getsockname(fd); err == nil {
					lg.Logf(LevelInfo, "*%d udp proxy %s connected to %s", s.id, sock.AddrPort(sa), pr.addr)
				}
			}
			return 0
		}
		pr.active.Add(-1)
		g.timeFailed(i)
		if health.LocalError(err) {
			if c := u.localLog.Hit(l.now); c > 0 {
				lv, what := localFailure(err)
				s.srv.log.Logf(lv, "*%d %s while connecting to upstream, udp client: %s, server: %s, upstream: \"%s\"%s",
					s.id, what, s.client.Addr(), srv.name, pr.addr, errlog.TimesText(c))
			}
			return 500
		}
		disabled := g.peerFailed(i, l.wall())
		if c := u.connLog.Hit(l.now); c > 0 {
			s.srv.log.Logf(LevelError, "*%d connect() failed %s while connecting to upstream, udp client: %s, server: %s, upstream: \"%s\"%s",
				s.id, sock.ErrnoText(sock.BareErrno(err)), s.client.Addr(), srv.name, pr.addr, errlog.TimesText(c))
		}
		if disabled {
			s.srv.log.Logf(LevelWarn, "*%d upstream server temporarily disabled while connecting to upstream, udp client: %s, server: %s, upstream: \"%s\"",
				s.id, s.client.Addr(), srv.name, pr.addr)
		}
	}
}

// forward sends a client datagram to s's upstream (loop).
func (u *udpListener) forward(s *udpSession, d []byte) {
	if p := s.pacer(0); p != nil {
		if p.allow(len(d)) == 0 {
			u.drops.rate.Add(1) // proxy_upload_rate: it came while the client rests
			return
		}
		p.took(len(d))
	}
	detach, done := u.count(s, len(d), true)
	if detach && !s.detached {
		delete(u.table, s.key)
		s.detached = true
	}
	if u.send(s, d) && done {
		u.end(s, 200, endDone)
	}
}

// send writes b to s's upstream with one nonblocking send. A full socket
// buffer drops the datagram, counted and logged; an error of the upstream
// (ECONNREFUSED: a port unreachable came back) ends s and counts a failure
// of the peer, as nginx's ngx_udp_send error does. It reports whether s
// lives on.
func (u *udpListener) send(s *udpSession, b []byte) bool {
	n, err := sock.SendUDP(s.fd, b)
	switch err {
	case nil:
		s.upSent += int64(n)
	case unix.EAGAIN, unix.ENOBUFS, unix.EMSGSIZE:
		u.drops.send.Add(1)
		if c := u.sendLog.Hit(u.l.now); c > 0 {
			u.p.log.Logf(LevelWarn, "%d datagrams from clients of %s were not sent to the upstream, the last: send() failed %s, udp client: %s, upstream: \"%s\"",
				c, u.text(), sock.ErrnoText(err), s.client.Addr(), s.upstreamAddrs)
		}
	default:
		s.failed = true
		s.srv.log.Logf(LevelError, "*%d send() failed %s while proxying and sending to upstream, udp client: %s, server: %s, upstream: \"%s\"",
			s.id, sock.ErrnoText(err), s.client.Addr(), s.srv.name, s.upstreamAddrs)
		u.end(s, 200, endUpstreamError)
		return false
	}
	return true
}

// upstreamReadable takes one datagram from s's upstream socket and queues
// it for s's client (loop). More waiting are reported by the next
// epoll_wait. Replies go out together (udpReplies.flush), at the latest at
// the end of the loop's event batch.
func (u *udpListener) upstreamReadable(s *udpSession) {
	p := s.pacer(1)
	if p != nil && p.allow(1) == 0 {
		return // proxy_download_rate: rests (out of the interest until its timer)
	}
	out := u.replies()
	i := out.n
	n, err := sock.RecvUDP(s.fd, out.bufs[i])
	switch err {
	case nil:
	case unix.EAGAIN, unix.EINTR:
		return
	default:
		u.upstreamFailed(s, err)
		return
	}
	if p != nil {
		p.took(n)
	}
	if s.firstByte == 0 && s.responses == 0 { // not a session that came from an older baton
		s.firstByte = u.l.now
		s.grp().timeFirstByte(s.peer, s.firstByte-s.startMono)
	}
	_, done := u.count(s, n, false)
	out.add(s, n)
	if done {
		// Its reply is queued (the batch holds s's address); its socket,
		// timer and table entry go now.
		u.end(s, 200, endDone)
	}
}

// replies returns the loop's reply batch, ready for a reply to u's
// clients: flushed first if it holds another listener's or is full.
func (u *udpListener) replies() *udpReplies {
	l := u.l
	if l.udpOut == nil {
		l.udpOut = newUDPReplies()
	}
	out := l.udpOut
	if out.u != u || out.n == udpBatchSize {
		out.flush()
		out.u = u
	}
	return out
}

// replyFailed handles a reply the listening socket did not take (loop).
func (u *udpListener) replyFailed(s *udpSession, err error) {
	switch err {
	case unix.EAGAIN, unix.ENOBUFS:
		u.drops.reply.Add(1)
		if c := u.replyLog.Hit(u.l.now); c > 0 {
			u.p.log.Logf(LevelWarn, "%d replies to clients of %s were dropped, the last: sendmsg() failed %s, udp client: %s, upstream: \"%s\"",
				c, u.text(), sock.ErrnoText(err), s.client.Addr(), s.upstreamAddrs)
		}
	default:
		s.srv.log.Logf(LevelError, "*%d sendmsg() failed %s while proxying and sending to client, udp client: %s, server: %s, upstream: \"%s\"",
			s.id, sock.ErrnoText(err), s.client.Addr(), s.srv.name, s.upstreamAddrs)
		if s.fd >= 0 { // not ended already (proxy_responses reached)
			u.end(s, 200, endClientError)
		}
	}
}

// udpReplies is a loop's batch of replies to the clients of one listener,
// sent with one sendmmsg. Each slot has a buffer that holds the largest
// datagram, read into straight from the upstream socket.
type udpReplies struct {
	u        *udpListener // the listener whose socket they leave by
	n        int
	flushing bool // in flush: a session it ends does not flush again
	ss       [udpBatchSize]*udpSession
	hdrs     [udpBatchSize]unix.Mmsghdr
	iovs     [udpBatchSize]unix.Iovec
	bufs     [udpBatchSize][]byte
}

func newUDPReplies() *udpReplies {
	r := &udpReplies{}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, sock.DatagramBufSize)
	}
	return r
}

// add queues the n bytes in slot r.n for s's client.
func (r *udpReplies) add(s *udpSession, n int) {
	i := r.n
	r.ss[i] = s
	r.iovs[i] = unix.Iovec{}
	if n > 0 {
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(n)
	}
	h := &r.hdrs[i].Hdr
	*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&s.sa)), Namelen: s.salen, Iov: &r.iovs[i]}
	h.SetIovlen(1)
	if len(s.oob) > 0 {
		h.Control = &s.oob[0]
		h.SetControllen(len(s.oob))
	}
	r.n++
}

// flush sends the queued replies. A reply the socket refuses is dropped
// and handled (replyFailed); the rest still go.
func (r *udpReplies) flush() {
	r.flushing = true
	defer func() { r.flushing = false }()
	for off := 0; off < r.n; {
		k, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(r.u.fd), uintptr(unsafe.Pointer(&r.hdrs[off])), uintptr(r.n-off), 0, 0, 0)
		switch {
		case e == unix.EINTR:
		case e != 0:
			r.u.replyFailed(r.ss[off], e) // the first one failed
			off++
		default:
			off += int(k)
		}
	}
	for i := 0; i < r.n; i++ {
		r.ss[i] = nil
		r.hdrs[i].Hdr.Name, r.hdrs[i].Hdr.Control = nil, nil
	}
	r.n = 0
	r.u = nil
}

// expire ends s when nothing moved for its idle timeout, as nginx's timer
// does: 200 when every expected response has come, else "upstream timed
// out", 502 and a peer failure (loop).
func (u *udpListener) expire(s *udpSession) {
	if resp := s.srv.proxyResponses; resp < 0 || s.responses >= int64(resp)*s.requests {
		u.end(s, 200, endTimedOut)
		return
	}
	s.failed = true
	u.end(s, 502, endUpstreamTimedOut)
}

// idleTimeout is how long s may go without a datagram either way:
// proxy_timeout, and while no reply has come, no longer than the
// unanswered bound (udpUnansweredTimeout), so that a flood of one datagram
// from each of many sources holds its descriptors briefly.
func (u *udpListener) idleTimeout(s *udpSession) int64 {
	t := s.srv.proxyTimeout
	if un := int64(u.p.udpUnanswered); s.responses == 0 && un > 0 && (t <= 0 || un < t) {
		t = un
	}
	return t
}

// upstreamFailed ends s on a recv() error of its upstream socket, typically
// ECONNREFUSED after an ICMP port unreachable. nginx counts the error as a
// response, stops reading the upstream and frees the peer with
// NGX_PEER_FAILED when the session ends; baton ends the session at once
// (nothing more can come from that socket), with the status nginx's
// session would end with.
func (u *udpListener) upstreamFailed(s *udpSession, err error) {
	s.failed = true
	status := 200
	if resp := s.srv.proxyResponses; resp >= 0 && s.responses+1 < int64(resp)*s.requests {
		status = 502
	}
	s.srv.log.Logf(LevelError, "*%d recv() failed %s while proxying and reading from upstream, udp client: %s, server: %s, upstream: \"%s\"",
		s.id, sock.ErrnoText(err), s.client.Addr(), s.srv.name, s.upstreamAddrs)
	u.end(s, status, endUpstreamError)
}

// end ends s with status and reason (loop).
func (u *udpListener) end(s *udpSession, status int, reason endReason) {
	s.status, s.reason = status, reason
	u.finish(s)
}

// finish closes s's upstream socket, releases its peer, reports the peer's
// health and writes the access-log line (loop; once per session).
func (u *udpListener) finish(s *udpSession) {
	l := u.l
	status, reason, failed := s.status, s.reason, s.failed
	reqs, resps, recv, sent := s.requests, s.responses, s.received, s.sent
	s.closeUp()
	l.timers.remove(s)
	if !s.detached {
		delete(u.table, s.key)
		s.detached = true
	}
	delete(u.live, s)
	s.releaseLimits()
	end := l.clock()
	g := s.grp()
	var pr *peer
	if s.peer >= 0 { // -1: imported, its upstream not in this config's group
		pr = g.peers[s.peer]
		pr.active.Add(-1)
		pr.sent.Add(uint64(s.upSent))
		pr.received.Add(uint64(sent))
	}
	log := s.srv.log
	switch reason {
	case endDone, endTimedOut:
		what := "udp done"
		if reason == endTimedOut {
			what = "udp timed out"
		}
		log.Logf(LevelInfo, "*%d %s, packets from/to client:%d/%d, bytes from/to client:%d/%d, bytes from/to upstream:%d/%d",
			s.id, what, reqs, resps, recv, sent, s.upSent, sent)
	case endUpstreamTimedOut:
		if c := u.timeoutLog.Hit(end); c > 0 {
			log.Logf(LevelError, "*%d upstream timed out (110: Connection timed out) while proxying connection, udp client: %s, server: %s, upstream: \"%s\"%s",
				s.id, s.client.Addr(), s.srv.name, s.upstreamAddrs, errlog.TimesText(c))
		}
	}
	if pr == nil {
		// no peer of this group to account to
	} else if failed {
		// nginx's ngx_stream_proxy_finalize: a UDP upstream socket with a
		// read or write error is freed with NGX_PEER_FAILED.
		if g.peerFailed(s.peer, l.wall()) {
			log.Logf(LevelWarn, "*%d upstream server temporarily disabled while proxying connection, udp client: %s, server: %s, upstream: \"%s\"",
				s.id, s.client.Addr(), s.srv.name, s.upstreamAddrs)
		}
	} else {
		g.health.Peer(s.peer).Succeeded(l.wall())
	}
	if pr != nil && g.lt != nil {
		s.timeDone(g, failed, end)
	}
	u.p.active.Add(-1)
	u.active.Add(-1)
	if log.Enabled(LevelDebug) {
		log.Logf(LevelDebug, "*%d finalize stream session: %d", s.id, status) // as nginx's debug build
	}
	u.logAccess(s, status, end, recv, sent)
	u.hook(udpEnd{u: u, id: s.id, status: status, reason: reason, failed: failed, peer: s.peer})
	u.maybeDone()
}

// record fills r with what the variables read of s.
func (s *udpSession) record(r *record) *record {
	*r = record{
		id: s.id, udp: true, client: s.client, local: s.local, cfd: -1, upstreamAddrs: s.upstreamAddrs,
		sent: s.sent, received: s.received, upSent: s.upSent, upReceived: s.sent,
		sessionTime: s.u.l.now - s.startMono, connectTime: s.connectTime, status: s.status,
		firstByteTime: -1, upSessionTime: -1, sv: s.vars(), limitStatus: s.limitStatus,
		serverName: s.srv.serverName,
	}
	if s.firstByte > 0 {
		r.firstByteTime = s.firstByte - s.startMono
	}
	return r
}

// logAccess writes s's access-log lines (loop): recv and sent are the
// bytes from and to the client.
func (u *udpListener) logAccess(s *udpSession, status int, end, recv, sent int64) {
	if len(s.srv.accessLogs) == 0 {
		return
	}
	l := u.l
	rec := s.record(&l.rec)
	rec.status, rec.sessionTime = status, end-s.startMono
	if s.connectTime >= 0 {
		rec.upSessionTime = end - s.startMono
	}
	rec.received, rec.sent, rec.upReceived = recv, sent, sent
	l.lineBuf = s.srv.logAccess(l.lineBuf, rec)
}
