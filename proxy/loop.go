package proxy

import (
	"encoding/binary"
	"github.com/batonproxy/baton/config"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// Epoll user data tags (EpollEvent.Pad): what Fd refers to.
const (
	tagSession     = 0
	tagListener    = 1
	tagWake        = 2
	tagUDPListener = 3 // Fd: the listening socket (udp.go)
	tagUDPSession  = 4 // Fd: a UDP session's upstream socket
)

const (
	readBufSize    = 64 << 10
	acceptBatch    = 64
	emfilePause    = 500 * time.Millisecond // as nginx, after accept4() fails with EMFILE/ENFILE
	capRecheck     = 50 * time.Millisecond  // while at the connection cap
	capLogEvery    = 10 * time.Second
	maxEpollWaitMs = 1000
	busyWaitMs     = 5 // under sysmon's 10 ms preemption threshold (see wait)
	// yieldEvery: a busy loop passes through the scheduler this often
	// (see run). Each pass wakes the spare P's thread (runtime.Gosched
	// calls wakep), which spins and parks again: at 2 ms that was ~1,600
	// futex calls a second, a tenth of baton's context switches under a
	// keep-alive load on 2 cores. 7 ms, plus at most 1 ms of epoll_wait
	// rounding (wait) and one batch, stays under sysmon's 10 ms.
	yieldEvery = int64(7 * time.Millisecond)
)

// loop is one event loop: an epoll set, the sessions it owns and their
// deadlines. Everything in it is touched only by its own goroutine, except
// cmds (under mu) which other goroutines use to ask it to do things.
type loop struct {
	p       *Proxy
	id      int
	rb      *rebalancer // its rebalance scans; nil until an upstream has "rebalance"
	epfd    int
	wakefd  int
	events  []unix.EpollEvent
	buf     []byte // the shared read buffer
	keyBuf  []byte
	lineBuf []byte
	rec     record // what the variables read of the session being logged or picked for

	fds      []*session          // by descriptor
	closedIn []uint64            // by descriptor: the batch in which it was last closed
	batch    uint64              // counts epoll_wait batches, from 1
	quiesced map[uint64]*session // stopped for an upgrade, waiting for Release or Restore
	pipes    []*pipe             // spare pipes for splice
	sessions []*session
	timers   timerHeap
	kicks    []kick // sessions to read again in the next pass (kick)
	spare    []kick // kicks' other buffer

	base time.Time
	now  int64 // nanoseconds since base, refreshed after every epoll_wait

	// UDP (udp.go): the listeners this loop owns, their sessions by
	// upstream descriptor, and the recvmmsg and sendmsg state.
	udps     []*udpListener
	udpCount atomic.Int32 // len(udps), and listeners on their way to it, for Proxy.udpLoop
	udpFds   []*udpSession
	udpIn    *udpBatch
	udpOut   *udpReplies

	lns           []*listener // the listeners this loop accepts on; its own copy, swapped by a command (setListeners)
	armed         bool        // lns are in this epoll set
	held          bool        // a reload is rewriting the listeners: arm nothing until setListeners
	acceptResume  int64       // when > 0: re-arm the listeners at this time
	lastCapLog    int64
	lastEMFILELog int64
	lastYield     int64
	localLog      errlog.RateLog // baton's own socket() failures (dialFailedHere)

	// load is len(sessions) plus sessions handed to this loop and not
	// yet started, for other loops' accept balancing (balanceTo).
	load atomic.Int64

	mu       sync.Mutex
	cmds     []func()
	exited   bool // run has returned (under mu)
	draining bool // stop accepting, exit when the last session ends
	stopping bool // close every session and exit
}

func newLoop(p *Proxy, id int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	l := &loop{
		p: p, id: id, epfd: epfd, wakefd: wfd,
		events:   make([]unix.EpollEvent, 256),
		buf:      make([]byte, readBufSize),
		keyBuf:   make([]byte, 0, 256),
		lineBuf:  make([]byte, 0, 512),
		base:     p.base,
		quiesced: map[uint64]*session{},
		localLog: errlog.RateLog{Every: int64(time.Second)},
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd), Pad: tagWake}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(wfd)
		unix.Close(epfd)
		return nil, err
	}
	return l, nil
}

func (l *loop) closeFds() {
	unix.Close(l.wakefd)
	unix.Close(l.epfd)
}

// wait blocks in epoll_wait until events are ready or the next deadline
// passes, and returns how many events are in l.events.
//
// It blocks the loop's OS thread through RawSyscall, so the runtime sees a
// running goroutine, not a syscall: its P is never handed to another
// thread, and a wake-up is the kernel's alone, as for nginx's workers. (A
// loop that parked in Go's poller instead paid a netpoll, a futex wake
// and a scheduler pass per wake-up, and, since that poller's epoll nests
// this one, every loop was woken for every new connection: EPOLLEXCLUSIVE
// holds only for threads waiting in epoll_wait itself.) The price is one P
// per loop: reserveProcs keeps one more for the rest of the process. A
// signal (the runtime's preemption, or a stop-the-world for GC) ends the
// wait with EINTR, so the loop still reaches a safe point at once.
//
// A loop with nothing to do for busyWaitMs goes on waiting through Syscall
// instead: a goroutine that seems to run for 10 ms is preempted by signal,
// so an idle loop blocked in RawSyscall would be woken by the runtime about
// a hundred times a second, and would keep sysmon from sleeping. Through
// Syscall the runtime knows the thread is blocked, and leaves it alone; the
// first event after the lull costs that one wake-up its exitsyscall.
//
// The RawSyscall wait also ends when the loop's next yield is due (see
// run), so that a loop that goes quiet just before it still yields in time;
// the wait then returns no events, and the next one starts afresh.
func (l *loop) wait() int {
	now := l.clock()
	ms := l.waitMs(now)
	if ms < 0 {
		ms = maxEpollWaitMs
	}
	first := min(ms, busyWaitMs)
	yieldDue := false
	if left := l.lastYield + yieldEvery - now; left < int64(first)*int64(time.Millisecond) {
		first = max(0, int((left+int64(time.Millisecond)-1)/int64(time.Millisecond)))
		yieldDue = true
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), uintptr(first), 0, 0)
	if e != 0 {
		return 0 // EINTR: look again
	}
	if n > 0 || ms == first || yieldDue {
		return int(n)
	}
	n, _, e = unix.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), uintptr(ms-first), 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}

// Loops hold a P each while they wait (see wait). loopProcs counts the
// loops running in this process, and GOMAXPROCS is kept at least one
// above it, so that everything else (the control socket, health checks,
// UDP readers, the upgrade protocol, the GC) always has a P.
var (
	loopProcsMu   sync.Mutex
	loopProcs     int
	loopProcsBase int // GOMAXPROCS before the first loop started
)

func reserveProcs(n int) {
	loopProcsMu.Lock()
	defer loopProcsMu.Unlock()
	if loopProcs == 0 {
		loopProcsBase = runtime.GOMAXPROCS(0)
	}
	loopProcs += n
	if want := loopProcs + 1; runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
}

func releaseProcs(n int) {
	loopProcsMu.Lock()
	defer loopProcsMu.Unlock()
	loopProcs -= n
	if want := max(loopProcsBase, loopProcs+1); runtime.GOMAXPROCS(0) > want {
		runtime.GOMAXPROCS(want)
	}
}

// do asks the loop to run fn on its own goroutine. It returns false, and fn
// never runs, if the loop has already ended.
func (l *loop) do(fn func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exited {
		return false
	}
	l.cmds = append(l.cmds, fn)
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	unix.Write(l.wakefd, one[:]) // under mu: the eventfd is closed only after exited is set
	return true
}

// call runs fn on the loop's goroutine and waits for it. It reports false,
// fn not run, if the loop has already ended. Never from the loop itself.
func (l *loop) call(fn func()) bool {
	done := make(chan struct{})
	if !l.do(func() { fn(); close(done) }) {
		return false
	}
	<-done
	return true
}

// exit marks the loop ended; do refuses work from then on. Commands
// queued after the loop's last batch still run here, on the stopped loop:
// a caller waiting for one, as Reload's eachLoop does under reloadMu, is
// never left waiting. They find it stopping, so none starts anything: a
// connection handed over by another loop's accept is closed (newSession),
// a session to resume or adopt is dropped (resume), no listener is armed.
func (l *loop) exit() {
	l.mu.Lock()
	l.exited = true
	l.mu.Unlock()
	l.stopping = true
	l.runCmds()
}

func (l *loop) clock() int64 { return int64(time.Since(l.base)) }

// wall is the loop's cached time as a time.Time, for health accounting.
func (l *loop) wall() time.Time { return l.base.Add(time.Duration(l.now)) }

// run is the loop's goroutine.
func (l *loop) run() {
	defer releaseProcs(1)
	defer l.exit()
	l.now = l.clock()
	l.arm()
	for _, u := range l.udps {
		u.arm()
	}
	for {
		n := l.wait()
		l.now = l.clock()
		l.batch++
		woken := false
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			switch ev.Pad {
			case tagSession:
				// An event for a descriptor closed earlier in this batch is
				// stale: its number may already belong to a new socket.
				// Dropping it loses nothing (epoll is level-triggered, so a
				// new socket's readiness is reported again).
				fd := int(ev.Fd)
				if fd < len(l.fds) && l.fds[fd] != nil && l.closedIn[fd] != l.batch {
					l.fds[fd].onEvent(fd, ev.Events)
				}
			case tagListener:
				// A listener event fetched in the same batch as a command
				// that disarmed the listeners is stale.
				if l.armed && int(ev.Fd) < len(l.lns) {
					l.accept(l.lns[ev.Fd])
				}
			case tagUDPSession:
				fd := int(ev.Fd)
				if fd < len(l.udpFds) && l.udpFds[fd] != nil && l.closedIn[fd] != l.batch {
					s := l.udpFds[fd]
					s.u.upstreamReadable(s)
				}
			case tagUDPListener:
				for _, u := range l.udps {
					if u.fd == int(ev.Fd) && u.armed {
						u.readable()
						break
					}
				}
			case tagWake:
				var b [8]byte
				unix.Read(l.wakefd, b[:])
				woken = true
			}
		}
		if l.udpOut != nil && l.udpOut.n > 0 {
			l.udpOut.flush()
		}
		// Commands run between batches, never inside one: a command that
		// takes a session away (quiesce) must not leave later events of the
		// same batch pointing at it.
		if woken {
			// A command may start a session another loop accepted while
			// this batch ran (balanceTo): it picks its upstream at the
			// time it runs, not at this batch's start (a peer's
			// fail_timeout may have passed in between).
			woken = false
			l.now = l.clock()
			l.runCmds()
		}
		l.runTimers()
		l.runKicks()
		if l.acceptResume > 0 && l.now >= l.acceptResume {
			l.acceptResume = 0
			l.arm()
		}
		if l.now-l.lastYield >= yieldEvery {
			// A loop under load may never park. Yielding now and then
			// keeps the runtime's sysmon from preempting it by signal
			// every 10 ms, which also keeps sysmon polling every 20 µs.
			l.lastYield = l.now
			runtime.Gosched()
		}
		if l.stopping {
			for len(l.sessions) > 0 {
				l.sessions[len(l.sessions)-1].finish(200)
			}
			for id, s := range l.quiesced {
				delete(l.quiesced, id)
				s.drop()
			}
			for len(l.udps) > 0 {
				l.udps[len(l.udps)-1].closeAll()
			}
			l.closePipes()
			return
		}
		// None live, none handed over and not started, and every UDP
		// listener stopped and drained.
		if l.draining && l.load.Load() == 0 && len(l.udps) == 0 {
			l.closePipes()
			return
		}
	}
}

// kick is a read that epoll will not report: a TLS record layer holds
// bytes its socket no longer has (tlsloop.go).
type kick struct {
	s  *session
	fd int
}

// kick has s read fd in the loop's next pass, as if epoll said it is
// readable; the wait before it does not block.
func (l *loop) kick(s *session, fd int) { l.kicks = append(l.kicks, kick{s, fd}) }

// runKicks runs the kicks of the last pass; those they make run in the next.
func (l *loop) runKicks() {
	if len(l.kicks) == 0 {
		return
	}
	ks := l.kicks
	l.kicks = l.spare[:0]
	for _, k := range ks {
		if k.fd < len(l.fds) && l.fds[k.fd] == k.s {
			k.s.onEvent(k.fd, unix.EPOLLIN)
		}
	}
	clear(ks)
	l.spare = ks[:0]
}

func (l *loop) runCmds() {
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, fn := range cmds {
		fn()
	}
}

// waitMs is epoll_wait's timeout: from now until the earliest deadline.
func (l *loop) waitMs(now int64) int {
	if len(l.kicks) > 0 {
		return 0
	}
	next := int64(-1)
	if len(l.timers) > 0 {
		next = l.timers[0].tm().heapAt
	}
	if l.acceptResume > 0 && (next < 0 || l.acceptResume < next) {
		next = l.acceptResume
	}
	if next < 0 {
		return -1
	}
	d := next - now
	if d <= 0 {
		return 0
	}
	ms := (d + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	if ms > maxEpollWaitMs {
		ms = maxEpollWaitMs
	}
	return int(ms)
}

// arm adds the listeners to this loop's epoll set. EPOLLEXCLUSIVE wakes one
// loop per incoming connection instead of all of them. Each loop arms its
// own copy of the listener set (lns), which only its own goroutine reads
// and only a command changes: a reload rewrites Proxy.listeners while this
// loop may be due to re-arm (acceptResume), and a loop that armed from the
// shared slice then raced it and could index past its end.
func (l *loop) arm() {
	if l.armed || l.held || l.draining || l.stopping || l.p.paused.Load() {
		return
	}
	for i, ln := range l.lns {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(i), Pad: tagListener}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
			l.p.log.Logf(LevelAlert, "epoll_ctl(ADD) listener %s failed %s", ln.name, sock.ErrnoText(err))
		}
	}
	l.armed = true
}

// disarm removes the listeners from this loop's epoll set.
func (l *loop) disarm() {
	if !l.armed {
		return
	}
	for _, ln := range l.lns {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, ln.fd, nil)
	}
	l.armed = false
}

// hold disarms the loop for a reload: nothing re-arms it, not even a
// pause that comes due (acceptResume), until setListeners.
func (l *loop) hold() {
	l.disarm()
	l.held = true
}

// setListeners gives the loop its listener set (a copy of lns) and arms it.
func (l *loop) setListeners(lns []*listener) {
	l.disarm()
	l.lns = slices.Clone(lns)
	l.held = false
	l.arm()
}

// pauseAccept disarms the listeners until d from now. Accept backs off; it
// never spins on a condition it cannot clear.
func (l *loop) pauseAccept(d time.Duration) {
	l.disarm()
	l.acceptResume = l.now + int64(d)
}

func (l *loop) accept(ln *listener) {
	p := l.p
	for i := 0; i < acceptBatch; i++ {
		// The session's two descriptors are taken before the first is
		// made (fdbudget.go): its connect never meets EMFILE, and
		// worker_connections is never exceeded, however many loops accept.
		if !p.fds.take(tcpSessionFDs) && !l.makeRoom() {
			if l.now-l.lastCapLog >= int64(capLogEvery) || l.lastCapLog == 0 {
				l.lastCapLog = l.now
				// nginx logs "worker_connections are not enough" at alert.
				p.log.Logf(LevelAlert, "%s, not accepting new connections until some close", p.fds.capReason())
			}
			l.pauseAccept(capRecheck)
			return
		}
		if p.fds.starved.Load() {
			p.fds.starved.Store(false) // room again: pipes may be made
		}
		fd, client, err := sock.Accept4(ln.fd)
		if err != nil {
			p.fds.give(tcpSessionFDs)
		}
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			if l.now-l.lastEMFILELog >= int64(capLogEvery) || l.lastEMFILELog == 0 {
				l.lastEMFILELog = l.now
				p.log.Logf(LevelCrit, "accept4() on %s failed %s, pausing accept for %s", ln.name, sock.ErrnoText(err), emfilePause)
			}
			l.pauseAccept(emfilePause)
			return
		default:
			p.log.Logf(LevelAlert, "accept4() on %s failed %s", ln.name, sock.ErrnoText(err))
			return
		}
		// Read here, where a reload holds the loop: the session started on
		// another loop by a command must not read the listener itself.
		srv, lcfg := ln.srv, ln.cfg
		if t := l.balanceTo(); t != nil {
			t.load.Add(1)
			if t.do(func() { t.load.Add(-1); t.newSession(ln, srv, lcfg, fd, client) }) {
				continue
			}
			t.load.Add(-1)
		}
		l.newSession(ln, srv, lcfg, fd, client)
	}
}

// balanceSlack is how many more sessions than another loop a loop may
// hold before it hands new connections over. With 4, 50 keep-alive clients
// settled as 27 and 23: one loop, and its clients' latency, carried 17 %
// more than the other. A handover costs an eventfd write and a command.
const balanceSlack = 1

// balanceTo returns the loop a connection this loop just accepted should
// go to instead, or nil to keep it. The loop woken for a listener accepts
// up to acceptBatch connections at once, so without this a burst (50
// keep-alive clients connecting together) lands on one loop, one core,
// whose clients then wait on each other while the other loop idles.
func (l *loop) balanceTo() *loop {
	var best *loop
	least := l.load.Load() - balanceSlack
	for _, o := range l.p.loops {
		if n := o.load.Load(); o != l && n < least {
			best, least = o, n
		}
	}
	return best
}

// newSession starts a session for a connection accepted on ln, which
// belonged to srv and took PROXY headers (pp) when it was accepted: read
// there, by the accepting loop while its listeners were armed, since a
// reload rewrites them once every loop has disarmed, and a handed-over
// connection starts on another loop later (balanceTo).
func (l *loop) newSession(ln *listener, srv *server, lcfg *config.Listen, fd int, client netip.AddrPort) {
	pp := lcfg.ProxyProtocol
	p := l.p
	if l.stopping {
		sock.Close(fd) // handed over as this loop stops (Close, exit)
		p.fds.give(tcpSessionFDs)
		return
	}
	s := &session{
		id:          p.nextID.Add(1),
		loop:        l,
		srv:         srv,
		ln:          ln,
		lcfg:        lcfg,
		vh:          srv.vhosts[ln.key],
		cfd:         fd,
		ufd:         -1,
		client:      client,
		peer:        -1,
		peerAddr:    client,
		connectTime: -1,
		startMono:   l.now,
		timer:       timer{heapIdx: -1},
	}
	s.group = srv.group.current()
	s.sv = srv.newSessVars()
	s.usableFn = func(i int) bool { return !s.isTried(i) && s.group.usable(i, l.wall()) }
	// The client socket joins the epoll set only when there is something to
	// read from it: its PROXY header, or data once the upstream is connected.
	l.track(fd, s)
	s.cEvents = parked
	l.attach(s)
	p.active.Add(1)
	p.total.Add(1)
	ln.accepted.Add(1)
	ln.active.Add(1)
	if lg := srv.log; lg.Enabled(LevelInfo) { // ngx_stream_init_connection
		lg.Logf(LevelInfo, "*%d client %s connected to %s", s.id, client, ln.addr)
	}
	if pp {
		s.state = stateHeader
		s.cEvents = l.setInterest(fd, parked, unix.EPOLLIN|unix.EPOLLRDHUP)
		s.lastActive, s.timeout = l.now, srv.ppTimeout
		l.schedule(s)
		return
	}
	if srv.upRate == nil { // a paced upload reads the client at its rate only
		s.readEarly()
	}
	s.admit()
}

// attach adds s to l.sessions.
func (l *loop) attach(s *session) {
	s.slot = len(l.sessions)
	l.sessions = append(l.sessions, s)
	l.load.Add(1)
}

// detach takes s out of l.sessions.
func (l *loop) detach(s *session) {
	l.load.Add(-1)
	last := l.sessions[len(l.sessions)-1]
	l.sessions[s.slot] = last
	last.slot = s.slot
	l.sessions[len(l.sessions)-1] = nil
	l.sessions = l.sessions[:len(l.sessions)-1]
}

// remove forgets a finished session.
func (l *loop) remove(s *session) {
	l.timers.remove(s)
	l.detach(s)
	l.p.active.Add(-1)
	if l.acceptResume > 0 && l.lastCapLog > 0 {
		// Paused at the budget, and descriptors came free: accept again
		// now rather than at the next recheck.
		l.acceptResume = l.now
	}
}

func (l *loop) register(fd int, events uint32, s *session) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: tagSession}
	if err := sock.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	l.track(fd, s)
	return nil
}

// track maps fd to s for events, whether or not fd is in the epoll set yet.
func (l *loop) track(fd int, s *session) {
	l.grow(fd)
	l.fds[fd] = s
}

// trackUDP maps fd to the UDP session s for events. The table grows only
// on a loop that serves UDP.
func (l *loop) trackUDP(fd int, s *udpSession) {
	l.grow(fd)
	if fd >= len(l.udpFds) {
		l.udpFds = append(l.udpFds, make([]*udpSession, len(l.fds)-len(l.udpFds))...)
	}
	l.udpFds[fd] = s
}

// grow makes the TCP descriptor table and closedIn hold fd.
func (l *loop) grow(fd int) {
	if fd < len(l.fds) {
		return
	}
	n := max(fd+1, 2*len(l.fds)+64)
	l.fds = append(l.fds, make([]*session, n-len(l.fds))...)
	l.closedIn = append(l.closedIn, make([]uint64, n-len(l.closedIn))...)
}

// releaseUDP forgets a UDP session's descriptor and closes it, as release.
func (l *loop) releaseUDP(fd int) {
	if fd < len(l.udpFds) {
		l.udpFds[fd] = nil
		l.closedIn[fd] = l.batch
	}
	sock.Close(fd)
}

// setInterest changes fd's epoll interest from cur to want and returns the
// new registered state. A parked descriptor (see session.park) stays out of
// the set while want is 0, and is added back when it is not.
func (l *loop) setInterest(fd int, cur, want uint32) uint32 {
	op := unix.EPOLL_CTL_MOD
	if cur&parked != 0 {
		if want == 0 {
			return cur
		}
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: want, Fd: int32(fd), Pad: tagSession}
	if err := sock.EpollCtl(l.epfd, op, fd, &ev); err != nil {
		l.p.log.Logf(LevelAlert, "epoll_ctl(%d, %d) failed %s", op, fd, sock.ErrnoText(err))
	}
	return want
}

// release forgets a session's descriptor and closes it now, so that the
// FIN goes out at once: after a server's last reply baton, not its client,
// is the side that closes first (as nginx), and the TIME_WAIT stays here.
// Its number may be reused by a socket accepted later in the same batch;
// closedIn lets the loop drop the closed socket's stale events of this
// batch. No EPOLL_CTL_DEL: close removes a descriptor from the epoll set,
// and a session's descriptors are never duplicated outside a quiesce,
// which takes them out of the set itself.
func (l *loop) release(fd int) {
	if fd < len(l.fds) {
		l.fds[fd] = nil
		l.closedIn[fd] = l.batch
	}
	sock.Close(fd)
}

// forget is release for a descriptor that leaves the loop open, handed to
// another owner: its number may be closed and reused at any time now.
func (l *loop) forget(fd int) {
	if fd < len(l.fds) {
		l.fds[fd] = nil
		l.closedIn[fd] = l.batch
	}
}

// schedule makes sure s's deadline (lastActive+timeout) is in the heap.
// Deadlines are lazy: activity only moves lastActive, and an entry that comes
// due early is pushed back to the real deadline when it pops.
func (l *loop) schedule(s timed) {
	t := s.tm()
	if t.timeout <= 0 {
		l.timers.remove(s)
		return
	}
	t.heapAt = t.lastActive + t.timeout
	if t.heapIdx >= 0 {
		l.timers.fix(t.heapIdx)
		return
	}
	l.timers.push(s)
}

func (l *loop) runTimers() {
	for len(l.timers) > 0 {
		s := l.timers[0]
		t := s.tm()
		if t.heapAt > l.now {
			return
		}
		if at := t.lastActive + t.timeout; at > l.now && t.timeout > 0 {
			t.heapAt = at
			l.timers.fix(0)
			continue
		}
		l.timers.remove(s)
		s.expire()
	}
}
