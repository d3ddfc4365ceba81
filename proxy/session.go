package proxy

import (
	"fmt"
	"github.com/batonproxy/baton/config"
	"net/netip"
	"sync"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlsrec"
	"golang.org/x/sys/unix"
)

type sessState uint8

const (
	stateHeader     sessState = iota // reading the client's PROXY protocol header
	stateConnecting                  // dialing an upstream; the client is not read
	stateProxying                    // both legs open, bytes moving
	stateQuiesced                    // stopped for an upgrade: out of the epoll set, owned by no loop's list
	stateClosed
	statePreread     // reading the client's TLS ClientHello (ssl_preread)
	stateReturning   // writing a "return" text the socket did not take at once
	stateResolving   // resolving the host name proxy_pass $var gave; the client is not read
	stateHandshake   // the TLS handshake runs on its goroutine; the session holds no socket
	stateUpHandshake // proxy_ssl: the upstream's TLS handshake runs on its goroutine
	stateTLSPending  // an upgrade took back a handshake not begun: parked, to move (tlsPending)
)

// flow is one direction of a session: bytes read from src and written to
// dst. pend holds bytes read but not yet written; while it is non-empty src
// is not read (backpressure), and it is non-nil only then.
type flow struct {
	pend   []byte
	base   []byte // the borrowed buffer pend is a tail of
	pipe   *pipe  // held while inPipe > 0 (splice)
	bulk   bool   // a read filled the whole buffer: this flow moves by splice from now on
	inPipe int    // bytes in pipe, read from src and not yet written to dst
	eof    bool   // src returned EOF
	shut   bool   // dst was shut down for writing (proxy_half_close)
	rerr   uint16 // errno src returned after the bytes in pend, reported once they are written
	n      int64  // bytes written to dst

	// The record layers of a TLS session's sides, run by the loop (tls.go):
	// in opens what src sends, out seals what goes to dst. nil: plain.
	in, out *tlsrec.Conn
}

// pending reports whether f holds bytes not yet written to its destination,
// in user space (pend), in its pipe, or sealed in dst's record layer.
func (f *flow) pending() bool {
	return f.pend != nil || f.inPipe > 0 || f.out != nil && f.out.OutPending()
}

// hold appends b to f's pending bytes, borrowing a buffer for them if f
// has none.
func (f *flow) hold(b []byte) {
	if len(b) == 0 {
		return
	}
	if f.base == nil {
		f.base = getPend()
		f.pend = f.base
	}
	f.pend = append(f.pend, b...)
}

// session is one proxied TCP connection: plain data owned by one loop, so
// that an upgrade can stop it at a byte boundary and ship it.
type session struct {
	id       uint64
	loop     *loop
	srv      *server
	group    *group         // the upstream: srv's, or what its proxy_pass $var named; nil before
	sv       *sessVars      // "set" values and preread results; nil when srv needs none
	ln       *listener      // nil for sessions not accepted by a TCP listener
	lcfg     *config.Listen // ln's listen as it was when the session began (a reload may change ln's)
	vh       *vhosts        // the virtual servers of ln's address then; nil: one server
	cfd      int
	ufd      int // -1 until a connect attempt
	state    sessState
	slot     int            // index in loop.sessions
	client   netip.AddrPort // $remote_addr: the peer, or its trusted PROXY header's source
	peerAddr netip.AddrPort // the TCP peer ($realip_remote_addr)
	ppAddr   netip.AddrPort // the PROXY header's source ($proxy_protocol_addr); invalid if none
	local    netip.AddrPort // filled lazily by localAddr

	hdr         []byte      // PROXY header being read (stateHeader only)
	early       []byte      // client bytes read with the PROXY header, sent upstream first
	ppOutLen    int64       // bytes of the PROXY header sent upstream (not client data)
	limits      []heldLimit // limit_conn counts held until the session ends
	limitStatus uint8       // $limit_conn_status

	c2u, u2c flow

	// Upstream selection.
	peer          int // index into group.peers; -1 before the first pick
	tries         int
	tried         uint64   // tried peers 0..63
	triedMore     []uint64 // tried peers 64 and up, for large upstreams
	firstTry      int64
	attemptStart  int64
	connectTime   int64 // -1 until connected
	firstByte     int64 // when the upstream's first byte came (loop.now); 0: not yet
	upstreamAddrs []byte
	usableFn      func(int) bool

	// Timers, in loop.now units: the session expires at lastActive+timeout.
	timer
	startMono int64
	endMono   int64 // when the session ended (for $session_time)

	// Registered epoll interest per descriptor.
	cEvents, uEvents uint32

	status int

	movedFrom sessState // the state it was quiesced in (an import: the state it moved in)

	x *sessExtra // what few sessions have; nil until one needs it (ext)
}

// sessExtra holds what only some sessions have, out of the session so that
// a plain proxied connection stays small.
type sessExtra struct {
	ppDst  netip.AddrPort // the PROXY header's destination ($proxy_protocol_server_addr)
	ppTLV  []byte         // its TLVs, as sent ($proxy_protocol_tlv_*)
	prior  []int64        // the times of the attempts that failed before the current one
	passes int            // times "pass" moved it to another server
	vhost  string         // the server name that chose its virtual server; "" for the default

	// Set on a session imported from an old process until a loop adopts it.
	importAge, importIdle         int64
	importFirstTry, importAttempt int64
	importLimits                  []heldLimitState
	importRb                      *movedPlan

	pace  [2]*pacer     // proxy_upload_rate (c2u), proxy_download_rate (u2c); nil: not paced
	moved [2]pacedState // pacing as an old process left it, until adopt paces again

	bind *boundAddr // proxy_bind with variables, as evaluated at the first connect (upsock.go)

	rb rebalancePlan // the upstream has "rebalance" (rebalance.go)

	tls   *tlsInfo              // terminated TLS (tls.go)
	hs    *tlsrec.HandshakeConn // its handshake, while it runs: an upgrade waits for one that has begun
	sent  []byte                // the state a quiesce encoded, with its TLS secrets (tlsmove.go)
	upTLS *tlsInfo              // TLS to the upstream (proxy_ssl)
}

// ext returns s's sessExtra, made on first use.
func (s *session) ext() *sessExtra {
	if s.x == nil {
		s.x = &sessExtra{}
	}
	return s.x
}

func (s *session) String() string {
	st := [...]string{"header", "connecting", "proxying", "quiesced", "closed", "preread", "returning", "resolving", "handshake", "upstream handshake"}[s.state]
	return fmt.Sprintf("session *%d %s client=%s server=%s upstream=%s c2u=%d u2c=%d",
		s.id, st, s.client, s.srv.name, s.upstreamAddrs, s.c2u.n, s.u2c.n)
}

func (s *session) localAddr() netip.AddrPort {
	if !s.local.IsValid() && s.cfd >= 0 {
		if sa, err := unix.Getsockname(s.cfd); err == nil {
			s.local = sock.AddrPort(sa)
		}
	}
	return s.local
}

func (s *session) isTried(i int) bool {
	if i < 64 {
		return s.tried&(1<<uint(i)) != 0
	}
	j := i/64 - 1
	return j < len(s.triedMore) && s.triedMore[j]&(1<<uint(i%64)) != 0
}

func (s *session) markTried(i int) {
	if i < 64 {
		s.tried |= 1 << uint(i)
		return
	}
	j := i/64 - 1
	for len(s.triedMore) <= j {
		s.triedMore = append(s.triedMore, 0)
	}
	s.triedMore[j] |= 1 << uint(i%64)
}

// connectNext picks the next upstream peer and starts a nonblocking connect
// to it, trying further peers as proxy_next_upstream allows when a connect
// fails at once. It returns with the session connecting, proxying or closed.
func (s *session) connectNext() {
	l, srv := s.loop, s.srv
	g := s.group
	for {
		if s.tries == 0 {
			s.firstTry = l.now
		}
		if !srv.mayTry(g, s.tries, l.now-s.firstTry) {
			s.finish(502)
			return
		}
		t0 := l.clock()
		key := s.pickKey()
		i, ok := g.pick(key, s.usableFn)
		l.p.metrics.pick.Observe(float64(l.clock()-t0) / 1e9)
		if !ok {
			s.srv.log.Logf(LevelError, "*%d no live upstreams while connecting to upstream, client: %s, server: %s, upstream: %q",
				s.id, s.client.Addr(), srv.name, g.name)
			s.upstreamAddrs = g.noLive(s.upstreamAddrs)
			s.finish(502)
			return
		}
		s.upstreamAddrs = g.attempt(i, l.wall(), s.upstreamAddrs)
		if s.tries > 0 {
			// The failed attempt's time, for $upstream_session_time
			// ("0.002, 0.010" as nginx lists every attempt).
			x := s.ext()
			x.prior = append(x.prior, l.now-s.attemptStart)
		}
		s.peer = i
		if g.cfg != nil && g.cfg.Rebalance != nil {
			x := s.ext()
			x.rb.key = append(x.rb.key[:0], key...)
		}
		s.markTried(i)
		s.tries++
		p := g.peers[i]
		s.attemptStart = l.now

		err := s.dial(p)
		if s.ufd < 0 {
			if health.LocalError(err) {
				s.dialFailedHere(err)
				return
			}
			s.connectFailed(err)
			continue
		}
		if err == unix.EINPROGRESS && s.hasOpening() && srv.ptls == nil {
			// On loopback and near upstreams the handshake is often done
			// by the time connect returns. Sending the opening now says
			// which: it goes out with the handshake's last ACK (delayed
			// for it, see dial), or the socket is still connecting
			// (EAGAIN), or the connect failed.
			err = s.sendOpening()
		}
		switch err {
		case nil:
			s.connected()
			return
		case unix.EINPROGRESS, unix.EAGAIN:
			s.state = stateConnecting
			s.uEvents = l.setInterest(s.ufd, parked, unix.EPOLLOUT)
			if s.cEvents&parked != 0 {
				// Watch the client while connecting (clientWhileConnecting).
				// The registration connected() would make anyway, made
				// earlier: it costs nothing more when nothing comes.
				s.cEvents = l.setInterest(s.cfd, s.cEvents, unix.EPOLLIN|unix.EPOLLRDHUP)
			}
			s.lastActive, s.timeout = l.now, srv.connectTimeout
			l.schedule(s)
			return
		}
		s.connectFailed(err)
	}
}

// hasOpening reports whether something must go upstream before anything
// else once connected: baton's PROXY header not yet sent, or client bytes
// read before the upstream was connected.
func (s *session) hasOpening() bool {
	return len(s.early) > 0 || (s.srv.ppOut > 0 && s.ppOutLen == 0)
}

// appendOpening appends the opening (PROXY header, then early client
// bytes) to b.
func (s *session) appendOpening(b []byte) []byte {
	if v := s.srv.ppOut; v > 0 && s.ppOutLen == 0 {
		b = append(b, s.proxyHeaderOut(v)...)
	}
	return append(b, s.early...)
}

// openingTaken records that the opening, n bytes, has left s.early and
// the PROXY header: written, or moved into c2u's pending bytes.
func (s *session) openingTaken(n int) {
	if s.srv.ppOut > 0 && s.ppOutLen == 0 {
		s.ppOutLen = int64(n - len(s.early))
	}
	s.early = nil
}

// sendOpening writes the opening to an upstream socket that may still be
// connecting. It returns nil once any of it is written (connected; the rest
// is pending), EAGAIN if the socket is not connected yet (nothing sent), or
// the connect's error.
func (s *session) sendOpening() error {
	l := s.loop
	b := s.appendOpening(l.buf[:0])
	w, err := sock.WriteAll(s.ufd, b)
	if w <= 0 {
		if err == nil {
			return unix.EAGAIN
		}
		return err
	}
	s.openingTaken(len(b))
	f := &s.c2u
	f.n += int64(w)
	if w < len(b) {
		f.hold(b[w:])
	}
	return nil
}

// readEarly reads what the client sent before its upstream is chosen, so
// that it goes out with the upstream handshake (see sendOpening) instead of
// after another trip through epoll. Nothing read (EAGAIN), EOF and errors
// are left for the first read after the upstream connects, as nginx sees
// them. At most earlyMax bytes: the rest waits in the socket, as it would.
func (s *session) readEarly() {
	l := s.loop
	n, _ := sock.Read(s.cfd, l.buf[:earlyMax])
	if n > 0 {
		s.early = append([]byte(nil), l.buf[:n]...)
	}
}

const earlyMax = 16 << 10

// pickKey evaluates the balancing key for this session's upstream.
func (s *session) pickKey() []byte {
	return s.group.pickKey(s.loop.keyBuf[:0], s, &s.loop.rec, s.client.Addr())
}

// record fills r with what the variables read of s.
func (s *session) record(r *record) *record {
	*r = record{
		id: s.id, client: s.client, peer: s.peerAddr, pp: s.ppAddr, local: s.local, cfd: s.cfd,
		upstreamAddrs: s.upstreamAddrs,
		sent:          s.u2c.n, received: s.c2u.n - s.ppOutLen, upSent: s.c2u.n, upReceived: s.u2c.n,
		sessionTime: s.endMono - s.startMono, connectTime: s.connectTime, status: s.status,
		firstByteTime: -1, upSessionTime: -1, sv: s.sv, limitStatus: s.limitStatus,
	}
	if s.srv != nil {
		r.serverName = s.srv.serverName
	}
	if s.ln != nil {
		r.unixPath = s.lcfg.Unix
	}
	if x := s.x; x != nil {
		r.prior, r.ppDst, r.tlv, r.tls = x.prior, x.ppDst, x.ppTLV, x.tls
	}
	if sv := s.sv; sv != nil && sv.caps != nil {
		r.capSrc, r.caps, r.capNames = sv.capSrc, sv.caps, sv.capNames
	}
	if s.firstByte > 0 {
		r.firstByteTime = s.firstByte - s.attemptStart
	}
	if s.peer >= 0 && s.endMono > 0 {
		r.upSessionTime = s.endMono - s.attemptStart
	}
	return r
}

// dial opens the upstream socket and starts connecting. It returns nil when
// connected at once, EINPROGRESS when the connect is under way, or the
// error, with no socket left open (s.ufd is -1). The socket is tracked but
// not yet in the epoll set. With an opening to send, the handshake's last
// ACK is delayed (TCP_QUICKACK off, as HAProxy's tcp-smart-connect) so
// that it goes out with the opening, which is written the moment the
// socket is connected; the kernel turns quick ACKs back on once the
// handshake is done.
func (s *session) dial(p *peer) error {
	var fd int
	var err error
	switch {
	case p.unix != "":
		fd, err = sock.DialUnix(p.unix)
	case s.srv.up == nil:
		fd, err = sock.Dial(p.addr, s.hasOpening())
	default:
		fd, err = s.dialUp(p.addr) // proxy_bind, proxy_socket_keepalive, tcp_nodelay off
	}
	if fd < 0 {
		return err
	}
	s.ufd = fd
	s.uEvents = parked
	s.loop.track(fd, s)
	return err
}

// connectFailed handles a failed attempt: the upstream socket is closed and
// the next peer is tried by the caller (connectNext's loop) or, from an
// event, here.
func (s *session) connectFailed(err error) {
	l := s.loop
	what := "connect() failed " + sock.ErrnoText(err)
	if err == unix.ETIMEDOUT {
		what = "upstream timed out (110: Connection timed out)"
	}
	s.attemptFailed(what, "connecting to upstream")
	if s.ufd >= 0 {
		l.release(s.ufd)
		s.ufd = -1
		s.uEvents = 0
	}
}

// attemptFailed counts a failed attempt against its peer (nginx's
// free_peer with NGX_PEER_FAILED) and logs it, what having happened while
// doing phase.
func (s *session) attemptFailed(what, phase string) {
	g := s.group
	p := g.peers[s.peer]
	p.active.Add(-1)
	disabled := g.peerFailed(s.peer, s.loop.wall())
	g.timeFailed(s.peer)
	s.peer = -1
	s.srv.log.Logf(LevelError, "*%d %s while %s, client: %s, server: %s, upstream: \"%s\"",
		s.id, what, phase, s.client.Addr(), s.srv.name, p)
	if disabled {
		s.srv.log.Logf(LevelWarn, "*%d upstream server temporarily disabled while %s, client: %s, server: %s, upstream: \"%s\"",
			s.id, phase, s.client.Addr(), s.srv.name, p)
	}
}

// dialFailedHere ends the session when baton could not make the upstream
// socket at all (socket(): EMFILE, ENOBUFS...), or bind it where
// proxy_bind asks (localFailure words both). As nginx's
// ngx_stream_proxy_connect on NGX_ERROR: 500, no next upstream, and no
// failure counted against the peer, which did nothing wrong (the review
// that found this saw healthy servers "temporarily disabled" 3,006 times
// each and their baton_upstream_server_up at 0). The line is logged at most
// once a second per loop.
func (s *session) dialFailedHere(err error) {
	l := s.loop
	p := s.group.peers[s.peer]
	p.active.Add(-1)
	s.group.timeFailed(s.peer)
	s.peer = -1
	if c := l.localLog.Hit(l.now); c > 0 {
		lv, what := localFailure(err)
		s.srv.log.Logf(lv, "*%d %s while connecting to upstream, client: %s, server: %s, upstream: \"%s\"%s",
			s.id, what, s.client.Addr(), s.srv.name, p, errlog.TimesText(c))
	}
	s.finish(500)
}

// onConnectEvent completes a nonblocking connect. Writable without an
// error or hang-up means connected (Linux); only then is SO_ERROR skipped.
func (s *session) onConnectEvent(ev uint32) {
	var err error
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 || ev&unix.EPOLLOUT == 0 {
		errno, gerr := unix.GetsockoptInt(s.ufd, unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case gerr != nil:
			err = gerr
		case errno != 0:
			err = unix.Errno(errno)
		case ev&unix.EPOLLOUT == 0:
			return // not an answer to the connect yet
		}
	}
	if err != nil {
		s.connectFailed(err)
		s.connectNext()
		return
	}
	s.connected()
}

func (s *session) connected() {
	l := s.loop
	pr := s.group.peers[s.peer]
	pr.total.Add(1)
	// nginx (1.27.4+) clears a peer's failures once a TCP connect to it
	// succeeds (ngx_stream_upstream_notify_round_robin_peer), not only when
	// the session ends: the other clients of a peer tried again after
	// fail_timeout go to it at once.
	s.group.health.Peer(s.peer).Succeeded(l.wall())
	s.connectTime = l.now - s.attemptStart
	s.group.timeConnected(s.peer, s.connectTime)
	if s.srv.ptls != nil && (s.x == nil || s.x.upTLS == nil) {
		s.startUpstreamTLS() // proxy_ssl: the handshake before any byte
		return
	}
	s.proxyingStarts()
}

// proxyingStarts begins moving bytes on a connected session: the opening
// goes out, and both sockets are watched.
func (s *session) proxyingStarts() {
	l := s.loop
	pr := s.group.peers[s.peer]
	s.state = stateProxying
	s.startPacing(s.startMono)
	if lg := s.srv.log; lg.Enabled(LevelInfo) { // ngx_stream_proxy_init_upstream
		if s.x != nil && s.x.upTLS != nil {
			// Asked at the handshake: s.ufd may be crypto/tls's socketpair
			// end (TLS 1.2 CBC).
			lg.Logf(LevelInfo, "*%d proxy %s connected to %s", s.id, s.x.upTLS.local, pr)
		} else if sa, err := unix.Getsockname(s.ufd); err == nil {
			lg.Logf(LevelInfo, "*%d proxy %s connected to %s", s.id, sock.AddrPort(sa), pr)
		}
	}
	s.lastActive, s.timeout = l.now, s.srv.proxyTimeout
	l.schedule(s)
	if s.hasOpening() {
		// Connected before the opening could be sent (an EPOLLOUT event,
		// or a session imported while connecting): send it now.
		f := &s.c2u
		f.base = getPend()
		f.pend = s.appendOpening(f.base)
		s.openingTaken(len(f.pend))
		if !s.flush(f, s.ufd) || !f.pending() {
			return // ended, or fully written (flush set the interest)
		}
	}
	s.updateInterest()
}

// clientWhileConnecting handles an event on the client's socket while the
// upstream connect is under way. A client that goes away (a reset: epoll
// reports an error or hang-up) ends the session at once, as nginx does,
// instead of holding it until proxy_connect_timeout. Bytes or a FIN it
// sends are read once connected, as before; until then its interest is
// 0, where epoll still reports an error or hang-up but nothing this state
// would ignore: a descriptor in the set with an event nobody handles makes
// the loop spin.
func (s *session) clientWhileConnecting(ev uint32) {
	l := s.loop
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		s.cEvents = l.setInterest(s.cfd, s.cEvents, 0)
		return
	}
	s.srv.log.Logf(LevelInfo, "*%d client closed connection while connecting to upstream, client: %s, server: %s, upstream: \"%s\"",
		s.id, s.client.Addr(), s.srv.name, s.upstreamAddrs)
	s.finish(200)
}

// onEvent dispatches one epoll event on fd, one of the session's sockets.
func (s *session) onEvent(fd int, ev uint32) {
	switch s.state {
	case stateHeader:
		s.readProxyHeader()
		return
	case statePreread:
		s.readPreread()
		return
	case stateReturning:
		s.returning()
		return
	case stateResolving, stateHandshake, stateTLSPending:
		return // parked: no event comes
	case stateUpHandshake:
		if fd == s.cfd {
			s.clientWhileConnecting(ev)
		}
		return
	}
	if s.state == stateConnecting {
		if fd == s.ufd {
			s.onConnectEvent(ev)
		} else {
			s.clientWhileConnecting(ev)
		}
		return
	}
	var in, out *flow // in: the flow read from fd; out: the flow written to fd
	var other int
	if fd == s.cfd {
		in, out, other = &s.c2u, &s.u2c, s.ufd
	} else {
		in, out, other = &s.u2c, &s.c2u, s.cfd
	}
	if ev&unix.EPOLLOUT != 0 && out.pending() {
		if !s.flush(out, fd) {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !in.eof && !in.pending() {
		s.pump(in, fd, other, ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0)
		return
	}
	if s.state == stateClosed {
		return
	}
	if ev&unix.EPOLLERR != 0 {
		// An error on a socket we are not reading: nothing more can be
		// delivered through it.
		errno, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		s.ioError("socket", unix.Errno(errno), fd)
		return
	}
	if ev&unix.EPOLLHUP != 0 {
		if !in.eof && (in.pending() || s.resting(in)) {
			// The peer has closed, but what it sent before is still to be
			// read once the other side takes our pending bytes. epoll
			// reports HUP whatever the interest, so leave the set until then.
			s.park(fd)
			return
		}
		s.logDisconnected(fd == s.ufd)
		s.finish(200)
	}
}

// logDisconnected writes nginx's info line for a session that ends because
// a side closed: which side, and the bytes each way
// (ngx_stream_proxy_test_finalize).
func (s *session) logDisconnected(fromUpstream bool) {
	lg := s.srv.log
	if !lg.Enabled(LevelInfo) {
		return
	}
	side := "client"
	if fromUpstream {
		side = "upstream"
	}
	lg.Logf(LevelInfo, "*%d %s disconnected, bytes from/to client:%d/%d, bytes from/to upstream:%d/%d",
		s.id, side, s.c2u.n-s.ppOutLen, s.u2c.n, s.u2c.n, s.c2u.n)
}

// parked marks a descriptor taken out of the epoll set by park.
const parked = 1 << 31

// park removes fd from the epoll set; updateInterest adds it back.
func (s *session) park(fd int) {
	var ev unix.EpollEvent
	sock.EpollCtl(s.loop.epfd, unix.EPOLL_CTL_DEL, fd, &ev)
	if fd == s.cfd {
		s.cEvents = parked
	} else {
		s.uEvents = parked
	}
}

// pump reads from src and writes to dst until src would block, dst would
// block (the rest goes to f.pend), or EOF. A read shorter than the buffer
// has drained the socket, so pump stops there, unless the event said the
// peer has closed (hup): then it reads on to the EOF now, as nginx does with
// EPOLLRDHUP, and the session ends in this pass instead of the next. That
// also makes baton, not its client, the side that closes first after a
// server's last reply, as nginx is: the TIME_WAIT stays here instead of
// slowing the client's next connect.
// Small messages (requests, responses, keep-alive chatter) are cheapest
// through read and write; splice has a higher fixed cost per call and wins
// only on bulk. A flow therefore starts copying and switches to splice for
// good once a read fills the whole buffer.
func (s *session) pump(f *flow, src, dst int, hup bool) {
	if f.in != nil || f.out != nil {
		s.pumpRec(f, src, dst)
		return
	}
	if f.bulk && s.pumpSplice(f, src, dst) {
		return
	}
	l := s.loop
	buf, p, capped, ok := s.readBuf(f) // capped: no splice
	if !ok {
		return // resting: out of the interest until its timer
	}
	if p != nil {
		hup = false
	}
	for round := 0; round < 4; round++ {
		n, err := sock.Read(src, buf)
		if n > 0 {
			s.took(src, n, p)
			flags := 0
			var rerr unix.Errno // the peer's reset, found looking for its EOF
			more := false       // the look found bytes: the EOF may still follow
			if hup && n < len(buf) {
				// The peer has closed: if this is its last message, it
				// and our FIN can leave in one segment. MSG_MORE holds
				// the bytes in the socket until flowDone's close or
				// shutdown sends the FIN, which takes them along (a
				// partial write is pushed by the rest's plain write).
				m, err := sock.Read(src, l.buf[n:])
				switch {
				case m > 0:
					n += m
					more = true
				case err == unix.EINTR:
					more = true
				case err == nil:
					f.eof = true
					flags = unix.MSG_MORE
				case err != unix.EAGAIN:
					rerr = err.(unix.Errno)
				}
			}
			w, werr := sock.SendAll(dst, l.buf[:n], flags)
			f.n += int64(w)
			if werr != nil {
				s.ioError("send()", werr, dst)
				return
			}
			if w < n {
				f.hold(l.buf[w:n])
				f.rerr = uint16(rerr)
				s.updateInterest()
				return
			}
			if rerr != 0 {
				s.ioError("recv()", rerr, src)
				return
			}
			if f.eof {
				s.flowDone(f, dst)
				return
			}
			if n < len(buf) || p != nil || capped {
				if more {
					continue
				}
				return
			}
			f.bulk = true
			if s.pumpSplice(f, src, dst) {
				return
			}
			continue
		}
		switch err {
		case nil: // n == 0: EOF
			f.eof = true
			s.flowDone(f, dst)
			return
		case unix.EAGAIN:
			return
		case unix.EINTR:
			continue
		default:
			s.ioError("recv()", err, src)
			return
		}
	}
}

// readBuf is the buffer a read of f's source may fill: the loop's, cut to
// proxy_buffer_size (capped) and to f's rate allowance (p, when paced). ok
// is false when the source must rest first.
func (s *session) readBuf(f *flow) (buf []byte, p *pacer, capped, ok bool) {
	buf = s.loop.buf
	if n := s.srv.bufSize; n > 0 && n < len(buf) {
		buf, capped = buf[:n], true
	}
	if s.x != nil {
		if p = s.pacerOf(f); p != nil {
			n := p.allow(len(buf))
			if n == 0 {
				return nil, p, capped, false
			}
			buf = buf[:n]
		}
	}
	return buf, p, capped, true
}

// took counts n bytes read from src: the session's activity, the
// upstream's first byte, and the rate's allowance (p).
func (s *session) took(src, n int, p *pacer) {
	l := s.loop
	s.lastActive = l.now
	if s.firstByte == 0 && src == s.ufd {
		s.firstByte = l.now
		s.group.timeFirstByte(s.peer, l.now-s.attemptStart)
	}
	if p != nil {
		p.took(n)
	}
}

// flush writes f's pending bytes to dst. It returns false if the session ended.
func (s *session) flush(f *flow, dst int) bool {
	if f.out != nil {
		return s.flushRec(f, dst)
	}
	if f.pipe != nil {
		before := f.inPipe
		if err := f.flushPipe(dst); err != nil {
			s.ioError("splice()", err, dst)
			return false
		}
		if f.inPipe < before {
			s.lastActive = s.loop.now
		}
		if f.inPipe > 0 {
			return true
		}
		s.loop.putPipe(f.pipe)
		f.pipe = nil
		return s.flushed(f, dst)
	}
	w, err := sock.WriteAll(dst, f.pend)
	f.n += int64(w)
	if err != nil {
		s.ioError("send()", err, dst)
		return false
	}
	if w > 0 {
		s.lastActive = s.loop.now
	}
	if w < len(f.pend) {
		f.pend = f.pend[w:]
		return true
	}
	putPend(f.base)
	f.pend, f.base = nil, nil
	return s.flushed(f, dst)
}

// flushed goes on once everything f held has gone to dst: the error its
// source returned after those bytes is reported now, or its end passed
// on, or its source is read again. It returns false if the session ended.
func (s *session) flushed(f *flow, dst int) bool {
	if f.rerr != 0 {
		src := s.cfd
		if f == &s.u2c {
			src = s.ufd
		}
		s.ioError("recv()", unix.Errno(f.rerr), src)
		return false
	}
	if f.eof {
		s.flowDone(f, dst)
		return s.state != stateClosed
	}
	s.updateInterest()
	return true
}

// flowDone is called when f's source reached EOF and everything read from it
// was written. As nginx: without proxy_half_close the session ends now; with
// it, dst is shut down for writing and the session ends when both
// directions are done.
func (s *session) flowDone(f *flow, dst int) {
	other := &s.c2u
	if f == &s.c2u {
		other = &s.u2c
	}
	if !s.srv.halfClose || other.shut {
		// The session is over. Its log line is written before the sockets
		// close, and closing sends the last FIN (both sides have reached
		// EOF, so nothing unread turns it into a reset).
		s.logDisconnected(f == &s.u2c)
		s.finish(200)
		return
	}
	if !f.shut {
		f.shut = true
		if f.out != nil {
			f.out.CloseWrite() // close_notify, then the FIN
		} else {
			unix.Shutdown(dst, unix.SHUT_WR)
		}
	}
	s.updateInterest()
}

// sideOf names the side of fd in a session's log lines.
func (s *session) sideOf(fd int) string {
	if fd == s.ufd {
		return "upstream"
	}
	return "client"
}

func (s *session) ioError(op string, err error, fd int) {
	side := s.sideOf(fd)
	lv := LevelError
	if err == unix.ECONNRESET || err == unix.EPIPE {
		lv = LevelInfo // a peer that resets is routine, as nginx logs it
	}
	s.srv.log.Logf(lv, "*%d %s failed %s while proxying connection, %s side, client: %s, server: %s, upstream: \"%s\"",
		s.id, op, sock.ErrnoText(err), side, s.client.Addr(), s.srv.name, s.upstreamAddrs)
	s.finish(200)
}

// updateInterest sets each socket's epoll interest from the flows: read a
// source whose flow has no pending bytes and no EOF; watch for writability
// of a destination with pending bytes.
func (s *session) updateInterest() {
	if s.state != stateProxying {
		return
	}
	var c, u uint32
	if !s.c2u.eof && !s.c2u.pending() && !s.resting(&s.c2u) {
		c |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if !s.u2c.eof && !s.u2c.pending() && !s.resting(&s.u2c) {
		u |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if s.u2c.pending() {
		c |= unix.EPOLLOUT
	}
	if s.c2u.pending() {
		u |= unix.EPOLLOUT
	}
	if c != s.cEvents {
		s.cEvents = s.loop.setInterest(s.cfd, s.cEvents, c)
	}
	if u != s.uEvents {
		s.uEvents = s.loop.setInterest(s.ufd, s.uEvents, u)
	}
	if s.x != nil {
		s.kickRec(&s.c2u, s.cfd)
		s.kickRec(&s.u2c, s.ufd)
	}
}

// expire is called by the loop's timer when the session's deadline passed.
func (s *session) expire() {
	switch s.state {
	case stateHeader:
		s.srv.log.Logf(LevelError, "*%d client timed out (110: Connection timed out) while reading PROXY protocol, client: %s, server: %s",
			s.id, s.peerAddr.Addr(), s.srv.name)
		s.finish(400)
	case stateConnecting:
		s.connectFailed(unix.ETIMEDOUT)
		s.connectNext()
	case stateProxying:
		s.srv.log.Logf(LevelInfo, "*%d timed out (110: Connection timed out) while proxying connection, client: %s, server: %s, upstream: \"%s\"",
			s.id, s.client.Addr(), s.srv.name, s.upstreamAddrs)
		s.finish(200)
	case statePreread:
		s.prereadTimedOut()
	case stateReturning:
		s.srv.log.Logf(LevelInfo, "*%d connection timed out (110: Connection timed out) while returning text, client: %s, server: %s",
			s.id, s.client.Addr(), s.srv.name)
		s.finish(200)
	case stateResolving:
		s.resolveTimedOut()
	case stateUpHandshake:
		s.srv.log.Logf(LevelError, "*%d upstream timed out (110: Connection timed out) while SSL handshaking to upstream, client: %s, server: %s, upstream: \"%s\"",
			s.id, s.client.Addr(), s.srv.name, s.upstreamAddrs)
		s.finish(502)
	case stateHandshake, stateTLSPending:
		s.srv.log.Logf(LevelInfo, "*%d SSL handshake timed out (110: Connection timed out) while SSL handshaking, client: %s, server: %s",
			s.id, s.client.Addr(), s.srv.name)
		s.finish(200)
	}
}

// finish ends the session: both sockets closed, pending buffers returned,
// the peer's count released and one access-log line written. It is
// idempotent.
func (s *session) finish(status int) {
	if s.state == stateClosed {
		return
	}
	l := s.loop
	s.status = status
	s.endMono = l.now
	if lg := s.srv.log; lg.Enabled(LevelDebug) {
		lg.Logf(LevelDebug, "*%d finalize stream session: %d", s.id, status) // as nginx's debug build
	}
	if len(s.srv.accessLogs) > 0 {
		// $server_addr looks the address up itself, and only if a format
		// uses it: the client socket is still open here.
		l.lineBuf = s.srv.logAccess(l.lineBuf, s.record(&l.rec))
	}
	s.state = stateClosed
	if s.x != nil {
		for _, t := range []*tlsInfo{s.x.tls, s.x.upTLS} {
			if t != nil {
				if t.rec != nil {
					t.rec.Close() // close_notify, if the socket takes it now
				}
				t.drop()
			}
		}
	}
	// The client's FIN first: a client waiting for it closes after baton.
	if s.cfd >= 0 {
		l.release(s.cfd)
	}
	s.cfd = -1
	if s.ufd >= 0 {
		l.release(s.ufd)
		s.ufd = -1
	}
	if s.peer >= 0 {
		g := s.group
		pr := g.peers[s.peer]
		pr.sent.Add(uint64(s.c2u.n))
		pr.received.Add(uint64(s.u2c.n))
		if s.connectTime >= 0 {
			// nginx reports a connected session's success when it ends
			// (ngx_stream_proxy_finalize): a success clears max_fails.
			g.health.Peer(s.peer).Succeeded(l.wall())
		}
		if g.lt != nil {
			s.timeDone()
		}
	}
	s.letGo()
	l.remove(s)
}

// letGo gives back what a session holds in this process besides its
// sockets: pending buffers and pipes, its peer's live count, its limit_conn
// counts and its listener's live count. finish and drop (a session that
// moved to a new process) share it.
func (s *session) letGo() {
	for _, f := range []*flow{&s.c2u, &s.u2c} {
		if f.base != nil {
			putPend(f.base)
			f.pend, f.base = nil, nil
		}
		if f.pipe != nil { // it holds bytes nobody will take: not for reuse
			s.loop.closePipe(f.pipe)
			f.pipe, f.inPipe = nil, 0
		}
	}
	s.stopPacing()
	s.loop.p.fds.give(tcpSessionFDs)
	if s.peer >= 0 {
		s.group.peers[s.peer].active.Add(-1)
		s.peer = -1
	}
	s.releaseLimits()
	if s.ln != nil {
		s.ln.active.Add(-1)
	}
}

// Pending buffers are borrowed only while a destination would block.
const pendSize = 64 << 10

var pendPool = sync.Pool{New: func() any { b := make([]byte, 0, pendSize); return &b }}

func getPend() []byte { return (*pendPool.Get().(*[]byte))[:0] }

func putPend(b []byte) {
	if cap(b) == 0 {
		return // none was borrowed (a flow whose bytes its record layer took)
	}
	b = b[:0]
	pendPool.Put(&b)
}
