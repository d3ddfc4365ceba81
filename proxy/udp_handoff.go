package proxy

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// UDP in an upgrade (HANDOFF.md §2.4 step 6, P19): a listener and its
// sessions move together, so that a session keeps its upstream socket (the
// upstream sees the same source port) and no client gets a new one.
//
// Old process (fdpass.Source); each step is a command on the listener's
// loop, which runs between two event batches, so every datagram the loop
// has read is already forwarded and every reply it read already sent:
//   - Listeners: each listening socket, as "udp/ADDR" (a dup).
//   - PauseAccepting: the listening socket and every session's upstream
//     socket leave the epoll set, and the sessions' idle timers stop. What
//     arrives from now on waits in the kernel's socket buffers, which the
//     dups share. Nothing is closed.
//   - Quiesce: parked sessions leave the table and go out as one file each
//     (a dup of the connected upstream socket) and an encoded state
//     (udpMovedState). Release closes this copy and forgets them, without
//     an access-log line; Restore puts them back to work.
//   - ResumeAccepting: the listener and every parked session are read again.
//
// New process (fdpass.Sink): newUDP takes the inherited socket of its
// address but holds it unread; Import checks each session's socket and
// keeps it idle on its listener (u.idle); Start puts it in the table and
// its socket in the loop's epoll set, carried datagrams first; the
// listeners are read from HandoffDone on, once every session is in place.
// Until then datagrams from clients queue in the kernel socket, which both
// processes share: its SO_RCVBUF (net.core.rmem_default unless set) bounds
// how many survive the handoff; the kernel counts the others as drops
// (SO_RXQ_OVFL, reported as "kernel" drops).

// udpStateVersion starts a UDP session's state; TCP states start with
// stateVersion (handoff_state.go), so Import tells them apart by this byte.
const udpStateVersion = 0x81

// udpStateVersionPaced is version 0x81 followed by the session's pacing
// (pacedState for upload and download) and its limit_conn counts, written
// only for a session that has either, so that a plain one still moves to a
// process that knows only 0x81.
const udpStateVersionPaced = 0x82

// udpMovedState is a UDP session as it travels: plain data, durations
// relative to the quiesce (HANDOFF.md P2).
type udpMovedState struct {
	id                     uint64
	listener               string // "udp/" and the listener's bound address
	client, local          netip.AddrPort
	dst                    netip.Addr // the key's local address (wildcard listeners); may be invalid
	ifidx                  uint32
	upstream               netip.AddrPort // the upstream socket's peer
	upstreamAddrs          string
	requests, responses    int64
	received, sent, upSent int64
	age, idle, connectTime int64 // nanoseconds
	detached               bool  // status: out of the table (proxy_requests reached)
	pend                   [][]byte
	pace                   [2]pacedState    // version 0x82: rate, bytes read, time since pacing began
	limits                 []heldLimitState // version 0x82: limit_conn counts it holds
}

func (m *udpMovedState) encode() []byte {
	e := fdpass.NewEncoder(maxStateLen)
	e.Uint8(udpStateVersion)
	e.Uint64(m.id)
	putStr(e, m.listener)
	putAddr(e, m.client)
	putAddr(e, m.local)
	if m.dst.IsValid() {
		putStr(e, m.dst.String())
	} else {
		putStr(e, "")
	}
	e.Uint64(uint64(m.ifidx))
	putAddr(e, m.upstream)
	putStr(e, m.upstreamAddrs)
	for _, v := range []int64{m.requests, m.responses, m.received, m.sent, m.upSent, m.age, m.idle, m.connectTime} {
		e.Uint64(uint64(v))
	}
	e.Bool(m.detached)
	e.Uint64(uint64(len(m.pend)))
	for _, p := range m.pend {
		e.Bytes(p)
	}
	paced := m.pace[0].rate > 0 || m.pace[1].rate > 0 || len(m.limits) > 0
	if paced {
		putPaced(e, m.pace)
		putLimits(e, m.limits)
	}
	b := body(e)
	if paced && len(b) > 0 {
		b[0] = udpStateVersionPaced
	}
	return b
}

func decodeUDPState(b []byte) (*udpMovedState, error) {
	if len(b) == 0 || (b[0] != udpStateVersion && b[0] != udpStateVersionPaced) {
		return nil, errBadState
	}
	d := newStateDecoder(b[1:])
	m := &udpMovedState{}
	m.id = d.Uint64()
	m.listener = d.str()
	m.client = d.addr()
	m.local = d.addr()
	if s := d.str(); s != "" && d.Err() == nil {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, errBadState
		}
		m.dst = a
	}
	ifidx := d.Uint64()
	if ifidx > 1<<32-1 {
		return nil, errBadState
	}
	m.ifidx = uint32(ifidx)
	m.upstream = d.addr()
	m.upstreamAddrs = d.str()
	for _, v := range []*int64{&m.requests, &m.responses, &m.received, &m.sent, &m.upSent, &m.age, &m.idle, &m.connectTime} {
		*v = d.i64()
	}
	m.detached = d.Bool()
	for n := d.count(1024); n > 0 && d.Err() == nil; n-- {
		m.pend = append(m.pend, d.bytes())
	}
	if b[0] == udpStateVersionPaced {
		m.pace = d.paced()
		m.limits = d.limits()
	}
	if !d.done() || !m.client.IsValid() || !m.upstream.IsValid() {
		return nil, errBadState
	}
	return m, nil
}

// pause parks the listener and its sessions (PauseAccepting, loop).
func (u *udpListener) pause() {
	u.paused = true
	u.disarm()
	for s := range u.live {
		u.park(s)
	}
}

// park takes s's socket out of the epoll set and stops its timer (loop).
func (u *udpListener) park(s *udpSession) {
	if s.paused {
		return
	}
	s.paused = true
	sock.EpollCtl(u.l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	u.l.timers.remove(s)
	s.stopPacing() // a rest ends: unpark watches it again
}

// unpark undoes park (loop). It reports false, s ended, if its socket
// cannot be watched again.
func (u *udpListener) unpark(s *udpSession) bool {
	if !s.paused {
		return true
	}
	s.paused = false
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd), Pad: tagUDPSession}
	if err := sock.EpollCtl(u.l.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		s.srv.log.Logf(LevelAlert, "*%d epoll_ctl(ADD) failed %s while proxying connection, udp client: %s, server: %s",
			s.id, sock.ErrnoText(err), s.client.Addr(), s.srv.name)
		u.end(s, 500, endClosed)
		return false
	}
	u.l.schedule(s)
	return true
}

// resume undoes pause (ResumeAccepting, loop).
func (u *udpListener) resume() {
	u.paused = false
	u.arm()
	for s := range u.live {
		s.stay = false
		u.unpark(s)
	}
}

// quiesce takes up to n parked sessions out of service (loop) and returns
// them.
func (u *udpListener) quiesce(n int) (conns []fdpass.Conn, err error) {
	now := u.l.clock()
	for s := range u.live {
		if len(conns) >= n {
			break
		}
		if !s.paused || s.stay {
			continue
		}
		f, derr := sock.DupFile(s.fd, "conn/udp/"+s.client.String())
		if derr != nil {
			return conns, derr
		}
		st := u.exportUDP(s, now)
		delete(u.live, s)
		s.wasIn = !s.detached
		if !s.detached {
			delete(u.table, s.key)
			s.detached = true
		}
		u.quiesced[s.id] = s
		conns = append(conns, fdpass.Conn{ID: s.id, Files: []*os.File{f}, State: st.encode()})
	}
	return conns, nil
}

// exportUDP is s's state.
func (u *udpListener) exportUDP(s *udpSession, now int64) *udpMovedState {
	m := &udpMovedState{
		id: s.id, listener: u.key(), client: s.client, local: s.local,
		dst: s.key.dst, ifidx: s.ifidx, upstream: s.upstream, upstreamAddrs: string(s.upstreamAddrs),
		requests: s.requests, responses: s.responses, received: s.received, sent: s.sent,
		upSent: s.upSent, age: now - s.startMono, idle: now - s.lastActive,
		connectTime: s.connectTime, detached: s.detached,
	}
	if s.x != nil {
		m.pend = s.x.pend
		for _, h := range s.x.limits {
			m.limits = append(m.limits, heldLimitState{h.zone.name, h.key})
		}
		m.pace = pacedStates(s.x.pace, now)
	}
	return m
}

// release forgets quiesced sessions that live on in the new process
// (loop): this copy of the socket is closed, counts released, no log line.
func (u *udpListener) release(ids map[uint64]bool) {
	for id := range ids {
		if s := u.quiesced[id]; s != nil {
			delete(u.quiesced, id)
			u.drop(s)
		}
	}
	u.maybeDone()
}

// drop forgets s (loop): it was quiesced and lives on elsewhere.
func (u *udpListener) drop(s *udpSession) {
	s.closeUp()
	s.releaseLimits()
	if s.peer >= 0 {
		s.grp().peers[s.peer].active.Add(-1)
	}
	u.p.active.Add(-1)
	u.active.Add(-1)
}

// restore puts quiesced sessions back to work here (loop).
func (u *udpListener) restore(ids map[uint64]bool) {
	for id := range ids {
		s := u.quiesced[id]
		if s == nil {
			continue
		}
		delete(u.quiesced, id)
		u.live[s] = struct{}{}
		if s.wasIn && u.table[s.key] == nil {
			u.table[s.key] = s
			s.detached = false
		}
		s.stay = u.paused // the upgrade goes on: do not offer it again
		u.unpark(s)
	}
	u.maybeDone()
}

// inheritedUDP takes the socket an old process handed over by name (a
// listener's key), if there is one (new process of an upgrade), which must
// be bound to ap; -1 if none.
func (p *Proxy) inheritedUDP(name string, ap netip.AddrPort) (int, error) {
	ifd, ok := p.inherited[name]
	if !ok {
		return -1, nil
	}
	delete(p.inherited, name)
	f := os.NewFile(uintptr(ifd), name)
	if err := fdpass.Check(f, fdpass.UDPListener, ""); err != nil {
		f.Close()
		return -1, fmt.Errorf("inherited %s: %w", name, err)
	}
	fd, err := sock.TakeFD(f)
	if err != nil {
		return -1, fmt.Errorf("inherited %s: %w", name, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil || sock.AddrPort(sa) != netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) {
		unix.Close(fd)
		return -1, fmt.Errorf("inherited %s is bound to %v", name, sock.AddrPort(sa))
	}
	return fd, nil
}

// udpListeners returns the UDP listeners this config serves (not those a
// reload retired).
func (p *Proxy) udpListeners() []*udpListener {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	return p.currentUDP()
}

// currentUDP is udpListeners with p.reloadMu held.
func (p *Proxy) currentUDP() []*udpListener {
	var out []*udpListener
	for _, u := range p.udp {
		if !u.retired.Load() {
			out = append(out, u)
		}
	}
	return out
}

// importUDP takes one UDP session (Import, p.reloadMu held): its socket is
// checked and it waits idle on its listener for Start. It returns why not,
// or "".
func (p *Proxy) importUDP(c fdpass.Conn) string {
	reject := func(why string) string {
		for _, f := range c.Files {
			f.Close()
		}
		return why
	}
	m, err := decodeUDPState(c.State)
	if err != nil || len(c.Files) != 1 || m.id != c.ID {
		return reject("malformed state")
	}
	var u *udpListener
	for _, l := range p.currentUDP() {
		if l.key() == m.listener {
			u = l
		}
	}
	if u == nil {
		return reject(fmt.Sprintf("listener %s is not in the new configuration", m.listener))
	}
	if err := fdpass.Check(c.Files[0], fdpass.UDPConn, ""); err != nil {
		return reject(err.Error())
	}
	fd, err := sock.TakeFD(c.Files[0])
	if err != nil {
		return err.Error()
	}
	if sa, err := unix.Getpeername(fd); err != nil || sock.AddrPort(sa) != m.upstream {
		unix.Close(fd)
		return fmt.Sprintf("the socket is connected to %v, not %s", sock.AddrPort(sa), m.upstream)
	}
	if !p.fds.takeUDP() {
		unix.Close(fd)
		return p.fds.capReason()
	}
	srv := u.srv()
	s := &udpSession{
		u: u, id: m.id, srv: srv, key: udpKey{client: m.client, dst: m.dst}, fd: fd,
		client: m.client, local: m.local, peer: -1, upstream: m.upstream, upstreamAddrs: []byte(m.upstreamAddrs),
		connectTime: m.connectTime, upSent: m.upSent, detached: m.detached, ifidx: m.ifidx,
		requests: m.requests, responses: m.responses, received: m.received, sent: m.sent,
		timer: timer{heapIdx: -1},
	}
	s.salen = sock.RawSockaddr(&s.sa, m.client)
	if m.dst.IsValid() && u.wild {
		s.oob = sock.ReplyOOB(m.dst, m.ifidx)
	}
	if len(m.pend) > 0 {
		s.ext().pend = m.pend
	}
	if m.pace[0].rate > 0 || m.pace[1].rate > 0 {
		s.ext().moved = m.pace
	}
	if len(m.limits) > 0 {
		s.ext().movedLimits = m.limits
	}
	if g := s.grp(); g != nil { // nil: the server's proxy_pass has variables
		if cur := g.current(); cur != g {
			g = cur
			s.ext().group = g
		}
		for i := range g.peers {
			if g.peers[i].addr == m.upstream {
				s.peer = i
				break
			}
		}
	}
	age, idle := m.age, m.idle
	if !u.l.call(func() {
		now := u.l.clock()
		s.startMono, s.lastActive = now-age, now-idle
		u.idle[s.id] = s
	}) {
		unix.Close(fd)
		p.fds.giveUDP()
		return ErrClosed.Error()
	}
	return ""
}

// startImportedUDP starts the imported sessions among ids (Start): each
// goes into its listener's table, sends what it carried, and reads its
// upstream again.
func (p *Proxy) startImportedUDP(ids map[uint64]bool) {
	for _, u := range p.udpListeners() {
		u.l.call(func() {
			for id := range ids {
				s := u.idle[id]
				if s == nil {
					continue
				}
				delete(u.idle, id)
				u.adoptUDP(s)
			}
		})
	}
}

// adoptUDP makes an imported session u's (loop).
func (u *udpListener) adoptUDP(s *udpSession) {
	if !s.detached {
		if u.table[s.key] != nil {
			s.detached = true // cannot happen before HandoffDone
		} else {
			u.table[s.key] = s
		}
	}
	u.live[s] = struct{}{}
	u.p.active.Add(1)
	u.active.Add(1)
	if s.peer >= 0 {
		s.grp().peers[s.peer].active.Add(1)
	}
	s.timeout = u.idleTimeout(s)
	if !u.watch(s) {
		s.fd = -1
		u.p.fds.giveUDP()
		u.end(s, 500, endClosed)
		return
	}
	u.l.schedule(s)
	u.resumePacing(s, u.l.now)
	s.adoptLimits()
	var pend [][]byte
	if s.x != nil {
		pend, s.x.pend = s.x.pend, nil
	}
	for _, b := range pend {
		if !u.send(s, b) {
			return
		}
	}
}

// quiesceUDP is Quiesce's UDP part: up to n sessions of paused listeners.
func (p *Proxy) quiesceUDP(n int) (conns []fdpass.Conn, errs []error) {
	for _, u := range p.udpListeners() {
		if len(conns) >= n {
			break
		}
		var got []fdpass.Conn
		var err error
		want := n - len(conns)
		if !u.l.call(func() { got, err = u.quiesce(want) }) {
			continue
		}
		conns = append(conns, got...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return conns, errs
}

// udpFiles are Listeners' UDP part: a dup of each listening socket.
func (p *Proxy) udpFiles() ([]fdpass.NamedFile, error) {
	var out []fdpass.NamedFile
	for _, u := range p.currentUDP() { // Listeners holds p.reloadMu
		var f *os.File
		err := ErrClosed
		u.l.call(func() {
			if !u.closed {
				f, err = sock.DupFile(u.fd, u.key())
			}
		})
		if err != nil {
			for _, nf := range out {
				nf.File.Close()
			}
			return nil, err
		}
		out = append(out, fdpass.NamedFile{Name: u.key(), File: f})
	}
	return out, nil
}

// udpStateKind reports whether an fdpass.Conn's state is a UDP session's.
func udpStateKind(state []byte) bool {
	return len(state) > 0 && (state[0] == udpStateVersion || state[0] == udpStateVersionPaced)
}
