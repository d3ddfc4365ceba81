package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/fdpass"
)

// UDP in an upgrade (HANDOFF.md §2.4 step 6, P19): a listener and its
// sessions move together, so that a session keeps its upstream socket (the
// upstream sees the same source port) and no client gets a new one.
//
// Old process (fdpass.Source):
//   - Listeners: each listening socket, as "udp/ADDR" (a dup).
//   - PauseAccepting: the listener reader stops at a datagram boundary (a
//     read deadline in the past returns before any syscall, so nothing is
//     taken from the socket); it queues a marker behind the datagrams it
//     already read, and the pause waits until the owner has handled them
//     all, so every datagram read into user space has been forwarded. Then
//     every session's upstream reader is parked the same way (s.paused and
//     a past deadline, under s.mu, where the idle timer sets its own) and
//     the pause waits until each has returned: a reply read before the
//     pause has been written to the client. Nothing is closed.
//   - Quiesce: parked sessions leave the table and go out as one file each
//     (a dup of the connected upstream socket) and an encoded state
//     (udpMovedState). Release closes this copy and forgets them, without
//     an access-log line; Restore puts them back and starts their readers.
//   - ResumeAccepting: the listener reader and every parked reader go on.
//
// New process (fdpass.Sink): startUDP takes the inherited socket of its
// address but holds the reader; Import checks each session's socket and
// keeps it idle on its listener's owner (u.idle); Start puts it in the
// table and starts its upstream reader, carried datagrams first; the
// listener readers start with HandoffDone, once every session is in place.
// Until then datagrams from clients queue in the kernel socket, which both
// processes share: its SO_RCVBUF (net.core.rmem_default unless set) bounds
// how many survive the handoff; the kernel counts the others as drops
// (SO_RXQ_OVFL, reported by the reader as "kernel" drops).

// udpStateVersion starts a UDP session's state; TCP states start with
// stateVersion (handoff_state.go), so Import tells them apart by this byte.
const udpStateVersion = 0x81

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
}

func (m *udpMovedState) encode() []byte {
	n := 256
	for _, d := range m.pend {
		n += 4 + len(d)
	}
	w := &stateWriter{b: make([]byte, 0, n)}
	w.b = append(w.b, udpStateVersion)
	w.u64(m.id)
	w.str(m.listener)
	w.addr(m.client)
	w.addr(m.local)
	if m.dst.IsValid() {
		w.str(m.dst.String())
	} else {
		w.str("")
	}
	w.u64(uint64(m.ifidx))
	w.addr(m.upstream)
	w.str(m.upstreamAddrs)
	for _, v := range []int64{m.requests, m.responses, m.received, m.sent, m.upSent, m.age, m.idle, m.connectTime} {
		w.i64(v)
	}
	w.bool(m.detached)
	w.u64(uint64(len(m.pend)))
	for _, d := range m.pend {
		w.bytes(d)
	}
	return w.b
}

func decodeUDPState(b []byte) (*udpMovedState, error) {
	if len(b) == 0 || b[0] != udpStateVersion {
		return nil, errBadState
	}
	r := &stateReader{b: b[1:]}
	m := &udpMovedState{}
	m.id = r.u64()
	m.listener = r.str()
	m.client = r.addr()
	m.local = r.addr()
	if d := r.str(); d != "" && r.err == nil {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return nil, errBadState
		}
		m.dst = a
	}
	ifidx := r.u64()
	if ifidx > 1<<32-1 {
		return nil, errBadState
	}
	m.ifidx = uint32(ifidx)
	m.upstream = r.addr()
	m.upstreamAddrs = r.str()
	for _, v := range []*int64{&m.requests, &m.responses, &m.received, &m.sent, &m.upSent, &m.age, &m.idle, &m.connectTime} {
		*v = r.i64()
	}
	m.detached = r.bool()
	n := r.u64()
	if n > 1024 {
		return nil, errBadState
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		m.pend = append(m.pend, append([]byte(nil), r.bytes()...))
	}
	if r.err != nil || len(r.b) != 0 || !m.client.IsValid() || !m.upstream.IsValid() {
		return nil, errBadState
	}
	return m, nil
}

// do runs fn on the owner goroutine and waits. It reports false, fn not
// run, when the owner has ended.
func (u *udpListener) do(fn func()) bool {
	done := make(chan struct{})
	select {
	case u.cmds <- func() { fn(); close(done) }:
		<-done
		return true
	case <-u.ownerDone:
		return false
	}
}

// park is the reader paused for an upgrade: it queues the marker behind
// what it read, then waits for resume. It reports false when the reader
// must end (shutdown, close).
func (u *udpListener) park() bool {
	u.packets <- udpPacket{} // the owner always drains packets while the reader lives
	for {
		if u.stopping.Load() || u.closed() {
			return false
		}
		if !u.pausing.Load() {
			return true
		}
		select {
		case <-u.wake:
		case <-u.closeCh:
		}
	}
}

// pause stops the reader and every session's upstream reader at a datagram
// boundary and returns when they have stopped (PauseAccepting).
func (u *udpListener) pause() {
	select { // a marker left by a reader that parked without a waiter
	case <-u.parked:
	default:
	}
	u.dlMu.Lock()
	if u.stopping.Load() {
		u.dlMu.Unlock()
		return
	}
	u.pausing.Store(true)
	u.conn.SetReadDeadline(time.Unix(1, 0))
	u.dlMu.Unlock()
	if u.readerStart.Load() {
		select {
		case <-u.parked:
		case <-u.closeCh:
		case <-u.ownerDone:
		}
	}
	var waits []chan struct{}
	past := time.Unix(1, 0)
	u.do(func() {
		for s := range u.live {
			s.mu.Lock()
			if !s.ended && !s.paused {
				s.paused = true
				s.up.SetReadDeadline(past)
			}
			s.mu.Unlock()
			if s.rdone != nil {
				waits = append(waits, s.rdone)
			}
		}
	})
	for _, w := range waits {
		<-w // every reader returns: parked, or ending its session
	}
}

// resume undoes pause (ResumeAccepting).
func (u *udpListener) resume() {
	u.dlMu.Lock()
	u.pausing.Store(false)
	if !u.stopping.Load() {
		u.conn.SetReadDeadline(time.Time{})
	}
	u.dlMu.Unlock()
	u.poke()
	u.do(func() {
		for s := range u.live {
			s.stay = false
			u.unpause(s)
		}
	})
}

// unpause lets s's upstream reader go on, starting it again if it had
// parked (owner).
func (u *udpListener) unpause(s *udpSession) {
	s.mu.Lock()
	restart := s.parkedRd && !s.ended
	s.paused, s.parkedRd = false, false
	s.mu.Unlock()
	if restart {
		u.startUpstreamReader(s)
	}
}

// quiesce takes up to n parked sessions out of service (owner) and returns
// them, and how many are still on their way to parking.
func (u *udpListener) quiesce(n int) (conns []fdpass.Conn, transitional int, err error) {
	now := u.now()
	for s := range u.live {
		if len(conns) >= n {
			break
		}
		s.mu.Lock()
		ok := s.parkedRd && !s.ended && !s.stay
		if s.paused && !s.parkedRd && !s.ended {
			transitional++
		}
		var st *udpMovedState
		if ok {
			st = u.exportUDP(s, now)
		}
		s.mu.Unlock()
		if !ok {
			continue
		}
		f, derr := fdpass.Dup(s.up, "conn/udp/"+s.client.String())
		if derr != nil {
			return conns, transitional, derr
		}
		delete(u.live, s)
		s.wasIn = !s.detached
		if !s.detached {
			delete(u.table, s.key)
			s.detached = true
		}
		u.quiesced[s.id] = s
		conns = append(conns, fdpass.Conn{ID: s.id, Files: []*os.File{f}, State: st.encode()})
	}
	return conns, transitional, nil
}

// exportUDP is s's state, with s.mu held.
func (u *udpListener) exportUDP(s *udpSession, now int64) *udpMovedState {
	m := &udpMovedState{
		id: s.id, listener: u.key(), client: s.client, local: s.local,
		dst: s.key.dst, ifidx: s.ifidx, upstreamAddrs: string(s.upstreamAddrs),
		requests: s.requests, responses: s.responses, received: s.received, sent: s.sent,
		upSent: s.upSent, age: now - s.startMono, idle: now - s.lastActive,
		connectTime: s.connectTime, detached: s.detached, pend: s.pend,
	}
	if ra, ok := s.up.RemoteAddr().(*net.UDPAddr); ok {
		ap := ra.AddrPort()
		m.upstream = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return m
}

// release forgets quiesced sessions that live on in the new process
// (owner): this copy of the socket is closed, counts released, no log line.
func (u *udpListener) release(ids map[uint64]bool) {
	for id := range ids {
		if s := u.quiesced[id]; s != nil {
			delete(u.quiesced, id)
			u.drop(s)
		}
	}
}

// drop forgets s (owner): it was quiesced and lives on elsewhere.
func (u *udpListener) drop(s *udpSession) {
	s.closeUp(u.p)
	if s.peer >= 0 {
		s.srv.group.peers[s.peer].active.Add(-1)
	}
	u.p.active.Add(-1)
	u.active.Add(-1)
}

// restore puts quiesced sessions back to work here (owner).
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
		s.stay = u.pausing.Load() // the upgrade goes on: do not offer it again
		u.unpause(s)
	}
}

// inheritedUDP takes the socket an old process handed over for cl's
// address, if there is one (new process of an upgrade).
func (p *Proxy) inheritedUDP(cl *config.Listen) (*net.UDPConn, error) {
	name := "udp/" + cl.Addr.String()
	fd, ok := p.inherited[name]
	if !ok {
		return nil, nil
	}
	delete(p.inherited, name)
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := fdpass.Check(f, fdpass.UDPListener, ""); err != nil {
		return nil, fmt.Errorf("inherited %s: %w", name, err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("inherited %s: %w", name, err)
	}
	c, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("inherited %s: not a UDP socket", name)
	}
	la, _ := c.LocalAddr().(*net.UDPAddr)
	if la == nil || netip.AddrPortFrom(la.AddrPort().Addr().Unmap(), la.AddrPort().Port()) != netip.AddrPortFrom(cl.Addr.Addr().Unmap(), cl.Addr.Port()) {
		c.Close()
		return nil, fmt.Errorf("inherited %s is bound to %v", name, c.LocalAddr())
	}
	return c, nil
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
// checked and it waits idle on its listener's owner for Start. It returns
// why not, or "".
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
	pc, err := net.FilePacketConn(c.Files[0])
	c.Files[0].Close()
	if err != nil {
		return err.Error()
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return "not a UDP socket"
	}
	ra, _ := conn.RemoteAddr().(*net.UDPAddr)
	if ra == nil || netip.AddrPortFrom(ra.AddrPort().Addr().Unmap(), ra.AddrPort().Port()) != m.upstream {
		conn.Close()
		return fmt.Sprintf("the socket is connected to %v, not %s", conn.RemoteAddr(), m.upstream)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return err.Error()
	}
	srv := u.srv()
	now := u.now()
	s := &udpSession{
		id: m.id, srv: srv, key: udpKey{client: m.client, dst: m.dst}, client: m.client, local: m.local,
		peer: -1, up: conn, raw: raw, upstreamAddrs: []byte(m.upstreamAddrs),
		startMono: now - m.age, lastActive: now - m.idle, connectTime: m.connectTime,
		timeout: srv.proxyTimeout, upSent: m.upSent, detached: m.detached, ifidx: m.ifidx, pend: m.pend,
		requests: m.requests, responses: m.responses, received: m.received, sent: m.sent,
	}
	if m.dst.IsValid() && u.wild {
		s.oob = replyOOB(m.dst, m.ifidx)
	}
	for i := range srv.group.peers {
		if srv.group.peers[i].addr == m.upstream {
			s.peer = i
			break
		}
	}
	if !p.fds.takeUDP() {
		conn.Close()
		return p.fds.capReason()
	}
	if !u.do(func() { u.idle[s.id] = s }) {
		s.closeUp(p)
		return "the listener has closed"
	}
	return ""
}

// startImportedUDP starts the imported sessions among ids (Start): each
// goes into its listener's table, sends what it carried, and reads its
// upstream again.
func (p *Proxy) startImportedUDP(ids map[uint64]bool) {
	for _, u := range p.udpListeners() {
		u.do(func() {
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

// adoptUDP makes an imported session u's (owner).
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
		s.srv.group.peers[s.peer].active.Add(1)
	}
	pend := s.pend
	s.pend = nil
	u.startUpstreamReader(s)
	for _, b := range pend {
		u.send(s, b, false)
	}
}

// HandoffDone ends the new process's side of an upgrade: the inherited UDP
// listeners start reading, now that every session moved with them is in
// place (HANDOFF.md P19). Call it when fdpass.Takeover's Done runs (before
// the PID file), and also when Takeover returns an error (the old process
// died or the handoff broke): otherwise the inherited UDP listeners are
// never read. Sessions imported but never started (no Start: the old
// process may have resumed them) are closed here, without a log line. It
// is idempotent, and a no-op for a process that was not upgraded into.
func (p *Proxy) HandoffDone() {
	for _, u := range p.udpListeners() {
		dropped := 0
		u.do(func() {
			for id, s := range u.idle {
				delete(u.idle, id)
				s.closeUp(u.p)
				dropped++
			}
		})
		if dropped > 0 {
			p.log.Logf(LevelWarn, "upgrade: %d UDP sessions of %s were imported but never started; closed", dropped, u.text())
		}
		u.startReader()
	}
}

// quiesceUDP is Quiesce's UDP part: up to n sessions of paused listeners.
func (p *Proxy) quiesceUDP(n int) (conns []fdpass.Conn, transitional int, errs []error) {
	for _, u := range p.udpListeners() {
		if len(conns) >= n {
			break
		}
		var got []fdpass.Conn
		var tr int
		var err error
		want := n - len(conns)
		if !u.do(func() { got, tr, err = u.quiesce(want) }) {
			continue
		}
		conns = append(conns, got...)
		transitional += tr
		if err != nil {
			errs = append(errs, err)
		}
	}
	return conns, transitional, errs
}

// udpFiles are Listeners' UDP part: a dup of each listening socket.
func (p *Proxy) udpFiles() ([]fdpass.NamedFile, error) {
	var out []fdpass.NamedFile
	for _, u := range p.currentUDP() {
		f, err := fdpass.Dup(u.conn, u.key())
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
func udpStateKind(state []byte) bool { return len(state) > 0 && state[0] == udpStateVersion }
