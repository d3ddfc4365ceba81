package proxy

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// The proxy's side of an upgrade: as the old process it is an fdpass.Source
// (listeners out, sessions quiesced at a byte boundary and shipped as plain
// data with their two sockets), as the new process an fdpass.Sink
// (listeners adopted by name, sessions imported idle, then started).
var (
	_ fdpass.Source = (*Proxy)(nil)
	_ fdpass.Sink   = sink{}
)

// sink is the Proxy as an fdpass.Sink (its Start method would clash with
// Proxy.Start).
type sink struct{ p *Proxy }

// Sink returns the proxy's fdpass.Sink, for the new process of an upgrade.
func (p *Proxy) Sink() fdpass.Sink { return sink{p} }

func (s sink) AdoptListeners(files []fdpass.NamedFile) ([]string, error) {
	return s.p.adoptListeners(files)
}
func (s sink) Import(conns []fdpass.Conn) ([]uint64, map[uint64]string) {
	return s.p.importConns(conns)
}
func (s sink) Start(ids []uint64) { s.p.startImported(ids) }

// Listeners implements fdpass.Source: duplicates of every listening socket,
// named by what they serve.
func (p *Proxy) Listeners() ([]fdpass.NamedFile, error) {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	out, err := p.udpFiles() // "udp/ADDR": the sessions follow in Quiesce
	if err != nil {
		return nil, err
	}
	fail := func(err error) ([]fdpass.NamedFile, error) {
		for _, nf := range out {
			nf.File.Close()
		}
		return nil, err
	}
	for _, ln := range p.listeners {
		f, err := sock.DupFile(ln.fd, ln.key)
		if err != nil {
			return fail(err)
		}
		out = append(out, fdpass.NamedFile{Name: ln.key, File: f})
	}
	if p.control != nil {
		f, err := fdpass.Dup(p.control, "control")
		if err != nil {
			return fail(err)
		}
		out = append(out, fdpass.NamedFile{Name: "control", File: f})
	}
	if ml, ok := p.metrics.ln.(*net.TCPListener); ok {
		f, err := fdpass.Dup(ml, "metrics")
		if err != nil {
			return fail(err)
		}
		out = append(out, fdpass.NamedFile{Name: "metrics", File: f})
	}
	return out, nil
}

// PauseAccepting implements fdpass.Source: no loop accepts once it returns;
// the listening sockets stay open, so the kernel keeps queueing. UDP
// listeners and their sessions' upstream readers stop reading at a datagram
// boundary, every datagram already read forwarded (udp_handoff.go).
func (p *Proxy) PauseAccepting() {
	p.pausedAt.Store(time.Now().UnixNano())
	p.paused.Store(true)
	p.takingTLS.Store(true)
	p.eachLoop(func(l *loop) { l.disarm() })
	for _, u := range p.udpListeners() {
		u.l.call(u.pause)
	}
}

// ResumeAccepting implements fdpass.Source.
func (p *Proxy) ResumeAccepting() {
	p.restartTLS()
	p.paused.Store(false)
	p.eachLoop(func(l *loop) { l.arm() })
	for _, u := range p.udpListeners() {
		u.l.call(u.resume)
	}
}

// Quiesce implements fdpass.Source. Sessions, TCP and UDP, move in
// whatever phase they are in, each stopped by its loop between two event
// batches, so Quiesce never waits for one to reach a boundary; only a
// TLS handshake under way is waited for (handshakeWait), to move the
// session once it is done.
func (p *Proxy) Quiesce(max int) ([]fdpass.Conn, bool, error) {
	var conns []fdpass.Conn
	var errs []error
	waiting := false
	for _, l := range p.loops {
		if len(conns) >= max {
			break
		}
		want := max - len(conns)
		var got []fdpass.Conn
		var err error
		var w bool
		if !l.call(func() { got, w, err = l.quiesce(want) }) {
			continue
		}
		waiting = waiting || w
		conns = append(conns, got...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(conns) < max {
		got, uerrs := p.quiesceUDP(max - len(conns))
		conns = append(conns, got...)
		errs = append(errs, uerrs...)
	}
	if len(conns) > 0 || len(errs) > 0 {
		return conns, false, errors.Join(errs...)
	}
	if waiting && time.Since(time.Unix(0, p.pausedAt.Load())) < p.handshakeWait() {
		// TLS handshakes under way: they move once done. Not longer
		// than handshakeWait; those not begun stay here (as any
		// session that cannot move, served until it ends).
		time.Sleep(5 * time.Millisecond)
		return nil, false, nil
	}
	p.restartTLS() // those taken back and not moved
	return nil, true, nil
}

// takeHandshakeBack stops s's TLS handshake if it has not begun, and
// reports whether it is stopped (its socket comes back to the loop).
func (s *session) takeHandshakeBack() bool {
	return s.state == stateHandshake && s.x != nil && s.x.hs != nil && s.x.hs.Stop()
}

// handshakeBegun reports whether s is in a TLS handshake that has begun
// (the upstream's has once it is in that state): it can move once that
// is done.
func (s *session) handshakeBegun() bool {
	return s.state == stateUpHandshake || s.state == stateHandshake && s.x != nil && s.x.hs != nil && s.x.hs.Started()
}

// handshakeWait is how long an upgrade waits for TLS handshakes: half of
// upgrade_timeout (the new process waits that long for each step), at
// most 3 s.
func (p *Proxy) handshakeWait() time.Duration {
	return min(p.cfg.Baton.UpgradeTimeout/2, 3*time.Second)
}

// quiesce stops up to n sessions of this loop, in whatever phase: they
// leave the epoll set and the timers, keep their sockets, and wait in
// l.quiesced for Release or Restore. It returns them, and whether a
// session it left is in a TLS handshake that has begun (in the same look,
// so that one done meanwhile is not missed: it moves in the next).
func (l *loop) quiesce(n int) (conns []fdpass.Conn, waiting bool, err error) {
	for i := 0; i < len(l.sessions); {
		s := l.sessions[i]
		if len(conns) >= n {
			break
		}
		// Every session moves in the phase it is in: a connect under way
		// is a socket too, and a PROXY header half read is bytes.
		if s.hasTLS() && !s.tlsMovable() {
			// A TLS session sends its record states with its sockets
			// (tlsmove.go); what cannot move stays here. A handshake not
			// begun is taken back, and moves as a plain session once its
			// socket is back (tlsPending). Every such session in this
			// pass, not only the first.
			begun := s.handshakeBegun() || s.takeHandshakeBack()
			waiting = waiting || begun
			i++
			continue
		}
		files, mt, upTLS, err := s.takeSockets()
		if err != nil {
			return conns, waiting, err
		}
		if s.ufd >= 0 {
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.ufd, nil)
		}
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.cfd, nil) // ENOENT when parked: harmless
		// No event may reach it while it is quiesced; resume maps it again.
		for _, fd := range []int{s.cfd, s.ufd} {
			if fd >= 0 && fd < len(l.fds) {
				l.fds[fd] = nil
			}
		}
		s.movedFrom = s.state
		// Bytes held in a splice pipe travel as pending bytes.
		s.drainPipe(&s.c2u)
		s.drainPipe(&s.u2c)
		s.cEvents, s.uEvents = parked, parked
		l.timers.remove(s)
		s.pausePacing() // kept: its allowance goes to the new process, or on here after a Restore
		s.state = stateQuiesced
		l.detach(s) // s moves out of l.sessions; l.sessions[i] is now another session
		l.quiesced[s.id] = s
		l.p.carried.Add(int64(len(s.c2u.pend) + len(s.u2c.pend)))
		m := s.exportState(l.now)
		m.tls, m.upTLS = mt, upTLS
		state := m.encode()
		if mt != nil || upTLS != nil {
			if mt != nil {
				clear(mt.rec)
			}
			clear(upTLS)
			s.x.sent = state // holds secrets: cleared once the session is released or restored
		}
		conns = append(conns, fdpass.Conn{ID: s.id, Files: files, State: state})
	}
	return conns, waiting, nil
}

func (s *session) exportState(now int64) *movedState {
	m := &movedState{
		id: s.id, client: s.client, peerAddr: s.peerAddr, ppAddr: s.ppAddr,
		upstreamAddrs: string(s.upstreamAddrs),
		c2uEOF:        s.c2u.eof, c2uShut: s.c2u.shut, u2cEOF: s.u2c.eof, u2cShut: s.u2c.shut,
		c2uN: s.c2u.n, u2cN: s.u2c.n, ppOutLen: s.ppOutLen,
		age: now - s.startMono, idle: now - s.lastActive, connectTime: s.connectTime,
		c2uPend: s.c2u.pend, u2cPend: s.u2c.pend,
		hdr: s.hdr, early: s.early, tries: int64(s.tries),
		firstTryAge: now - s.firstTry, attemptAge: now - s.attemptStart,
	}
	switch s.movedFrom {
	case stateHeader:
		m.phase = phaseHeader
	case stateConnecting:
		m.phase = phaseConnecting
	case statePreread:
		m.phase = phasePreread
	case stateReturning:
		m.phase = phaseReturning
	case stateResolving:
		m.phase = phaseResolving
	case stateTLSPending:
		m.phase = phaseHandshake
	}
	if s.state == stateHeader || s.movedFrom == stateHeader {
		m.phase = phaseHeader
	}
	if g := s.group; g != nil {
		for i := range g.peers {
			if s.isTried(i) {
				m.tried = append(m.tried, g.peers[i].String())
			}
		}
		if s.peer >= 0 {
			m.upstream = g.peers[s.peer].addr
		}
	}
	if s.ln != nil {
		m.listener = s.ln.key
	}
	m.routed = s.exportRouted()
	if m.phase == phaseResolving && m.routed == nil {
		m.routed = &routedState{} // the phase exists in version 3 only
	}
	for _, h := range s.limits {
		m.limits = append(m.limits, heldLimitState{h.zone.name, h.key})
	}
	return m
}

// CarriedBytes returns how many pending bytes (read, not yet written) the
// sessions quiesced since the last call carried, and starts counting anew.
func (p *Proxy) CarriedBytes() int64 { return p.carried.Swap(0) }

// Release implements fdpass.Source: the new process owns these sessions;
// forget them and close this process's copies of their sockets (no FIN: the
// other process still holds them). No access-log line: they go on there.
func (p *Proxy) Release(ids []uint64) {
	p.takeQuiesced(ids, (*session).drop, (*udpListener).release)
}

// takeQuiesced hands each quiesced session among ids, on its own loop's
// goroutine, to tcp, and the ids to every UDP listener's udp, on its owner.
func (p *Proxy) takeQuiesced(ids []uint64, tcp func(*session), udp func(*udpListener, map[uint64]bool)) {
	want := idSet(ids)
	p.eachLoop(func(l *loop) {
		for id := range want {
			if s := l.quiesced[id]; s != nil {
				delete(l.quiesced, id)
				tcp(s)
			}
		}
	})
	for _, u := range p.udpListeners() {
		u.l.call(func() { udp(u, want) })
	}
}

// drop forgets a quiesced session that lives on elsewhere: its sockets are
// closed here and its counts released, without a log line.
func (s *session) drop() {
	s.settleTLS(false)
	l := s.loop
	for _, fd := range []int{s.cfd, s.ufd} {
		if fd >= 0 {
			l.release(fd)
		}
	}
	s.cfd, s.ufd = -1, -1
	s.letGo()
	l.p.active.Add(-1)
	s.state = stateClosed
}

// Restore implements fdpass.Source: the sessions go on here, from where
// they were quiesced.
func (p *Proxy) Restore(ids []uint64) {
	p.takeQuiesced(ids, func(s *session) { s.loop.resume(s) }, (*udpListener).restore)
}

// resume puts a quiesced or imported session (its sockets not in the epoll
// set) back to work in l.
func (l *loop) resume(s *session) {
	s.loop = l
	if l.stopping { // the loop stops (Close, exit): as it drops what is quiesced
		s.drop()
		return
	}
	l.attach(s)
	s.settleTLS(true)
	fail := func(what string, err error) {
		s.srv.log.Logf(LevelAlert, "*%d resuming: epoll_ctl(ADD) %s socket failed %s", s.id, what, sock.ErrnoText(err))
	}
	// The phases that wait on the client alone.
	clientOnly := func(st sessState, events uint32, timeout int64) {
		s.state, s.cEvents, s.timeout = st, events, timeout
		if err := l.register(s.cfd, s.cEvents, s); err != nil {
			fail("client", err)
		}
	}
	switch s.movedFrom {
	case stateHeader:
		clientOnly(stateHeader, unix.EPOLLIN|unix.EPOLLRDHUP, s.srv.ppTimeout)
	case stateConnecting:
		s.state = stateConnecting
		s.cEvents, s.uEvents = unix.EPOLLIN|unix.EPOLLRDHUP, unix.EPOLLOUT
		if err := l.register(s.cfd, s.cEvents, s); err != nil {
			fail("client", err)
		}
		if err := l.register(s.ufd, s.uEvents, s); err != nil {
			fail("upstream", err)
		}
		s.timeout = s.srv.connectTimeout
	case statePreread:
		clientOnly(statePreread, unix.EPOLLIN|unix.EPOLLRDHUP, s.srv.prereadTimeout)
	case stateReturning:
		clientOnly(stateReturning, unix.EPOLLOUT, returnTimeout)
	case stateTLSPending:
		// A TLS handshake not begun: it begins here, with what the
		// client sent meanwhile.
		s.state = stateTLSPending
		s.afterAccess()
		return
	case stateResolving:
		// Routed again here: the answer may be cached, or asked anew.
		s.state, s.cEvents = stateResolving, parked
		if s.route() {
			s.connectNext()
		}
		return
	default:
		s.state = stateProxying
		s.cEvents, s.uEvents = 0, 0
		if err := l.register(s.cfd, 0, s); err != nil {
			fail("client", err)
		}
		if err := l.register(s.ufd, 0, s); err != nil {
			fail("upstream", err)
		}
		s.updateInterest()
	}
	l.schedule(s)
}

func idSet(ids []uint64) map[uint64]bool {
	m := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// adoptListeners is fdpass.Sink's AdoptListeners: listening sockets are
// matched to this config by name; the ones this config does not have are
// closed; then Start binds what is new and serves.
func (p *Proxy) adoptListeners(files []fdpass.NamedFile) ([]string, error) {
	p.inherited = map[string]int{}
	var adopted []string
	for _, nf := range files {
		switch {
		case strings.HasPrefix(nf.Name, "tcp/"), strings.HasPrefix(nf.Name, "udp/"), strings.HasPrefix(nf.Name, "unix:"):
			// UDP: startUDP takes it, and holds its reader until HandoffDone.
			fd, err := sock.TakeFD(nf.File)
			if err != nil {
				p.closeInherited()
				return nil, fmt.Errorf("adopting %s: %w", nf.Name, err)
			}
			p.inherited[nf.Name] = fd
		case nf.Name == "control" || nf.Name == "metrics":
			ln, err := net.FileListener(nf.File)
			nf.File.Close()
			if err != nil {
				p.closeInherited()
				return nil, fmt.Errorf("adopting %s: %w", nf.Name, err)
			}
			if nf.Name == "control" {
				p.inheritedControl = ln.(*net.UnixListener)
			} else {
				p.inheritedMetrics = ln
			}
			adopted = append(adopted, nf.Name)
		default:
			nf.File.Close()
		}
	}
	for name := range p.inherited {
		adopted = append(adopted, name)
	}
	if err := p.Start(); err != nil {
		p.closeInherited()
		return nil, err
	}
	p.closeInherited() // what the new config does not listen on
	return adopted, nil
}

// closeInherited closes inherited sockets that no listener took.
func (p *Proxy) closeInherited() {
	for name, fd := range p.inherited {
		unix.Close(fd)
		delete(p.inherited, name)
	}
	if p.inheritedMetrics != nil && p.metrics.ln != p.inheritedMetrics {
		p.inheritedMetrics.Close()
		p.inheritedMetrics = nil
	}
}

// importConns is fdpass.Sink's Import: sessions are checked and kept idle.
func (p *Proxy) importConns(conns []fdpass.Conn) ([]uint64, map[uint64]string) {
	var accepted []uint64
	rejected := map[uint64]string{}
	reject := func(c fdpass.Conn, fds []int, why string) {
		for _, f := range c.Files {
			f.Close()
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		rejected[c.ID] = why
	}
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	for _, c := range conns {
		if udpStateKind(c.State) {
			if why := p.importUDP(c); why != "" {
				rejected[c.ID] = why
			} else {
				accepted = append(accepted, c.ID)
			}
			continue
		}
		m, err := decodeState(c.State)
		want := 2
		if m != nil && m.phase != phaseProxying && m.phase != phaseConnecting {
			want = 1 // no upstream socket yet, or none at all
		}
		if err != nil || len(c.Files) != want || m.id != c.ID {
			reject(c, nil, "malformed state")
			continue
		}
		var ln *listener
		for _, l := range p.listeners {
			if l.key == m.listener {
				ln = l
			}
		}
		if ln == nil {
			reject(c, nil, fmt.Sprintf("listener %s is not in the new configuration", m.listener))
			continue
		}
		cfd, err := sock.TakeFD(c.Files[0])
		if err != nil {
			reject(c, nil, err.Error())
			continue
		}
		ufd := -1
		if want == 2 {
			if ufd, err = sock.TakeFD(c.Files[1]); err != nil {
				reject(c, []int{cfd}, err.Error())
				continue
			}
		}
		upOK := ufd < 0 || sock.IsConnectedStream(ufd) || (m.phase == phaseConnecting && sock.IsStream(ufd))
		if !sock.IsConnectedStream(cfd) || !upOK {
			fds := []int{cfd}
			if ufd >= 0 {
				fds = append(fds, ufd)
			}
			reject(c, fds, "not a connected TCP socket")
			continue
		}
		s := importedSession(ln, m, cfd, ufd)
		if s.movedFrom == stateConnecting && s.peer < 0 {
			reject(c, []int{cfd, ufd}, fmt.Sprintf("upstream %s is not in the new configuration", m.upstream))
			continue
		}
		if m.tls != nil || m.upTLS != nil {
			if why := p.importTLS(s, m.tls, m.upTLS); why != "" {
				reject(c, []int{s.cfd, s.ufd}, "TLS: "+why)
				continue
			}
		}
		if !p.fds.take(tcpSessionFDs) {
			s.wipeTLS()
			reject(c, []int{s.cfd, s.ufd}, p.fds.capReason())
			continue
		}
		p.imported[c.ID] = s
		accepted = append(accepted, c.ID)
	}
	return accepted, rejected
}

func importedSession(ln *listener, m *movedState, cfd, ufd int) *session {
	s := &session{
		id: m.id, srv: ln.srv, ln: ln, lcfg: ln.cfg, vh: ln.srv.vhosts[ln.key], cfd: cfd, ufd: ufd, state: stateQuiesced,
		client: m.client, peerAddr: m.peerAddr, ppAddr: m.ppAddr,
		peer: -1, timer: timer{heapIdx: -1}, connectTime: m.connectTime,
		upstreamAddrs: []byte(m.upstreamAddrs), ppOutLen: m.ppOutLen,
		cEvents: parked, uEvents: parked,
	}
	s.c2u = flow{eof: m.c2uEOF, shut: m.c2uShut, n: m.c2uN}
	s.u2c = flow{eof: m.u2cEOF, shut: m.u2cShut, n: m.u2cN}
	s.c2u.hold(m.c2uPend)
	s.u2c.hold(m.u2cPend)
	s.group = ln.srv.group.current()
	s.importRouted(m)
	s.usableFn = func(i int) bool { return !s.isTried(i) && s.group.usable(i, s.loop.wall()) }
	x := s.ext()
	x.importAge, x.importIdle = m.age, m.idle
	x.importLimits = m.limits
	s.hdr, s.early, s.tries = m.hdr, m.early, int(m.tries)
	x.importFirstTry, x.importAttempt = m.firstTryAge, m.attemptAge
	if g := s.group; g != nil {
		for i := range g.peers {
			if g.peers[i].unix == "" && g.peers[i].addr == m.upstream || g.peers[i].unix != "" && !m.upstream.IsValid() && strings.HasSuffix(m.upstreamAddrs, g.peers[i].String()) {
				s.peer = i
				break
			}
		}
		for _, a := range m.tried {
			for i := range g.peers {
				if g.peers[i].String() == a {
					s.markTried(i)
				}
			}
		}
	}
	switch m.phase {
	case phaseHeader:
		s.movedFrom = stateHeader
	case phaseConnecting:
		s.movedFrom = stateConnecting
	case phasePreread:
		s.movedFrom = statePreread
	case phaseReturning:
		s.movedFrom = stateReturning
	case phaseResolving:
		s.movedFrom = stateResolving
	case phaseHandshake:
		s.movedFrom = stateTLSPending
	default:
		s.movedFrom = stateProxying
	}
	return s
}

// startImported is fdpass.Sink's Start: the imported sessions go to the
// loops, in turn, and move bytes again, pending bytes first.
func (p *Proxy) startImported(ids []uint64) {
	p.reloadMu.Lock()
	var ss []*session
	others := map[uint64]bool{}
	for _, id := range ids {
		if s := p.imported[id]; s != nil {
			ss = append(ss, s)
			delete(p.imported, id)
		} else {
			others[id] = true
		}
	}
	p.reloadMu.Unlock()
	if len(others) > 0 {
		p.startImportedUDP(others)
	}
	// Spread them over the loops, one command per loop.
	per := make([][]*session, len(p.loops))
	for i, s := range ss {
		per[i%len(p.loops)] = append(per[i%len(p.loops)], s)
	}
	for i, l := range p.loops {
		mine := per[i]
		if len(mine) == 0 {
			continue
		}
		if !l.do(func() {
			for _, s := range mine {
				l.adopt(s)
			}
		}) {
			for _, s := range mine {
				s.cfd, s.ufd = sock.CloseFD(s.cfd), sock.CloseFD(s.ufd)
				p.fds.give(tcpSessionFDs)
			}
		}
	}
}

// adopt makes an imported session this loop's.
func (l *loop) adopt(s *session) {
	p := l.p
	s.loop = l
	x := s.ext()
	s.startMono = l.now - x.importAge
	s.lastActive = l.now - x.importIdle
	s.firstTry = l.now - x.importFirstTry
	s.attemptStart = l.now - x.importAttempt
	if s.peer >= 0 {
		s.group.peers[s.peer].active.Add(1)
	}
	s.limits = append(s.limits, s.srv.retakeLimits(x.importLimits)...)
	x.importLimits = nil
	if m := x.importRb; m != nil {
		// The rebalance goes on with the old process's plan.
		x.rb = rebalancePlan{key: m.key, owner: m.owner}
		if m.planned {
			x.rb.at, x.rb.end = max(l.now+m.atIn, 1), l.now+m.endIn
		}
		x.importRb = nil
	}
	p.active.Add(1)
	s.ln.active.Add(1)
	if s.movedFrom == stateProxying {
		s.resumePacing(l.now)
	}
	l.resume(s)
}

// HandoffDone ends the new process's side of an upgrade: the inherited UDP
// listeners start reading, now that every session moved with them is in
// place (HANDOFF.md P19). Call it when fdpass.Takeover's Done runs (before
// the PID file), and also when Takeover returns an error (the old process
// died or the handoff broke): otherwise the inherited UDP listeners are
// never read. Sessions imported but never started (no Start: the old
// process may have resumed them) are closed here, TCP and UDP, with one
// warning. It is idempotent, and a no-op for a process that was not
// upgraded into.
func (p *Proxy) HandoffDone() {
	p.reloadMu.Lock()
	unstarted := p.imported
	p.imported = map[uint64]*session{}
	p.reloadMu.Unlock()
	for _, s := range unstarted {
		s.wipeTLS()
		s.cfd, s.ufd = sock.CloseFD(s.cfd), sock.CloseFD(s.ufd)
		p.fds.give(tcpSessionFDs)
	}
	if len(unstarted) > 0 {
		p.log.Logf(LevelWarn, "upgrade: %d TCP connections were imported but never started; closed", len(unstarted))
	}
	for _, u := range p.udpListeners() {
		dropped := 0
		u.l.call(func() {
			for id, s := range u.idle {
				delete(u.idle, id)
				s.closeUp()
				dropped++
			}
			u.held = false
			u.arm()
			u.maybeDone()
		})
		if dropped > 0 {
			p.log.Logf(LevelWarn, "upgrade: %d UDP sessions of %s were imported but never started; closed", dropped, u.text())
		}
	}
}
