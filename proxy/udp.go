package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// UDP: how "listen ... udp" is served.
//
// A UDP listener runs on one of the event loops that serve TCP (loop.go),
// with no goroutine of its own: the loop owns the listening socket, the
// session table and every session's connected upstream socket, all
// nonblocking and in its epoll set, and each session's idle deadline is in
// the loop's timer heap beside the TCP sessions'. When the listening socket
// is readable the loop takes up to udpBatch datagrams with one recvmmsg and
// hands each to its session (a table lookup by client address), or starts
// one: a balancer pick and a socket connected to the upstream, as nginx
// does. A client datagram goes to the upstream with one nonblocking write;
// a readable upstream socket gives one datagram per event, sent to the
// client through the listening socket with one sendmsg. An idle session
// holds its plain state and one descriptor, no goroutine, stack or buffer.
//
// Listeners are spread over the loops (udpLoop); a listener's sessions stay
// on its loop, so nothing of a session is shared between goroutines: other
// goroutines reach a listener only through loop commands (loop.call), and
// read its counters (atomics) for status and metrics.
//
// Shards: a "listen ... udp reuseport" with more than one loop gets one
// socket per loop, all bound to the address with SO_REUSEPORT, each its own
// udpListener (a shard) on its own loop, as nginx opens one per worker. The
// kernel hashes each client's address to one socket of the group, so a
// client's datagrams always reach the same shard, and its sessions live
// there. Shard 0 is named "udp/ADDR", the others "udp/ADDR#N"; an upgrade
// hands each over by name, with its sessions, so a new process with as many
// loops keeps the same group (same sockets, same hashing). Status, metrics
// and Addrs show one entry per address, the shards summed.
//
// nginx semantics mirrored (ngx_stream_proxy_module.c):
//
//   - Counting: the datagram that creates a session is request 1
//     (ngx_stream_proxy_handler: u->requests = 1); each further datagram
//     from the client is a request and each datagram to it a response
//     (ngx_stream_proxy_process: (*packets)++).
//   - Ending (ngx_stream_proxy_test_finalize, SOCK_DGRAM branch, checked
//     after every datagram either way): while proxy_requests is set and not
//     reached nothing ends; once it is reached the session leaves the table
//     (ngx_delete_udp_connection), so the client's next datagram starts a
//     new session, while this one still waits for its responses. The
//     session is done ("udp done", 200) when proxy_responses is limited and
//     responses >= proxy_responses * requests; proxy_responses 0 ends it
//     right after the datagram is sent.
//   - Idle (proxy_timeout, restarted by a datagram either way): with every
//     expected response (or proxy_responses unlimited) "udp timed out",
//     200; else "upstream timed out", 502, and the peer counts a failure
//     (pc->read->error, then NGX_PEER_FAILED in ngx_stream_proxy_finalize).
//   - Upstream errors: a send() or recv() error on the connected socket
//     (ECONNREFUSED after an ICMP port unreachable) frees the peer with
//     NGX_PEER_FAILED (ngx_stream_proxy_finalize). There is no next upstream
//     once a UDP socket is connected: proxy_next_upstream applies only when
//     the socket cannot be opened or connected (ngx_stream_proxy_connect).
//     nginx ends the session at once on a send() error (status 200); on a
//     recv() error it counts one response, stops reading the upstream and
//     lets the session run to proxy_responses or proxy_timeout. baton ends
//     it at once (nothing more can come from that socket), with the status
//     nginx would end it with, so that the client's next datagram gets a
//     new session and a healthy peer.
//
// Where baton differs on purpose: datagrams are never truncated (nginx cuts
// them at proxy_buffer_size); every datagram baton does not forward is
// counted and logged; several replies already queued on the upstream socket
// are checked against proxy_responses one by one, where nginx forwards all
// it can read before checking; on graceful shutdown live sessions still
// deliver replies until they end, where nginx ends each at its next event
// ("disconnected on shutdown"). A wildcard listener replies from the
// address the client sent to (IP_PKTINFO), as nginx does.

// udpConf is what a listener serves: swapped whole by Reload. Sessions keep
// the server they started with (udpSession.srv).
type udpConf struct {
	srv *server
	cl  *config.Listen
}

// udpKey identifies a session as nginx does: client address and port, and
// the local address it sent to (which only varies on a wildcard listener).
type udpKey struct {
	client netip.AddrPort
	dst    netip.Addr
}

// udpListener serves one "listen ... udp" address on its loop.
type udpListener struct {
	p     *Proxy
	l     *loop                   // owner: the socket, the sessions and every field under "loop only"
	conf  atomic.Pointer[udpConf] // the server new sessions get; Reload swaps it
	fd    int                     // the listening socket
	bound netip.AddrPort
	wild  bool
	shard int // index in its address's SO_REUSEPORT group (newUDPs); 0 if unsharded
	group int // how many shards its address has; 1 if unsharded

	// retired: a Reload removed this address. The listener reads no more
	// datagrams and drains its sessions; it stays in Proxy.udp (so that
	// Status and Metrics still see it) until it has finished.
	retired  atomic.Bool
	finished chan struct{} // closed when the socket is closed and no session is left

	active  atomic.Int64
	total   atomic.Uint64
	drops   udpDrops
	endHook atomic.Pointer[func(udpEnd)] // called for each finished session; for tests

	// Loop only.
	armed    bool // the socket is in the loop's epoll set
	held     bool // inherited in an upgrade: not read until HandoffDone
	paused   bool // an upgrade's PauseAccepting: not read, sessions parked
	stopped  bool // shutdown or retired: never read again; done when the last session ends
	closed   bool // the socket is closed (finished)
	table    map[udpKey]*udpSession
	waiting  map[udpKey]*udpWait      // new clients whose proxy_pass host name is being resolved (route_dns.go)
	live     map[*udpSession]struct{} // every session not yet finished, in the table or not
	quiesced map[uint64]*udpSession   // handed out by Quiesce, waiting for Release or Restore
	idle     map[uint64]*udpSession   // imported, waiting for Start
	tried    []bool
	pickG    *group // the group connect is picking from, for usableFn
	usableFn func(int) bool

	kernelSeen uint32
	sendLog    errlog.RateLog // client datagrams not sent upstream (full socket buffer)
	replyLog   errlog.RateLog // replies not sent to clients (full socket buffer)
	capLog     errlog.RateLog
	connLog    errlog.RateLog // connect() failures and "no live upstreams", once a second
	localLog   errlog.RateLog // baton's own socket() failures, once a second
	timeoutLog errlog.RateLog // "upstream timed out", once a second
	truncLog   errlog.RateLog
	errLog     errlog.RateLog
	kernelLog  errlog.RateLog
}

// udpDrops counts datagrams baton did not forward, by cause.
type udpDrops struct {
	truncated atomic.Uint64 // larger than the read buffer (cannot happen; counted if it does)
	kernel    atomic.Uint64 // dropped by the kernel, receive buffer full (SO_RXQ_OVFL)
	send      atomic.Uint64 // the upstream socket's send buffer was full, or the datagram was too large for it
	reply     atomic.Uint64 // a reply found the listening socket's send buffer full
	capacity  atomic.Uint64 // a new session was refused: worker_connections reached
	rate      atomic.Uint64 // came while proxy_upload_rate rested the session (nginx drops it too)
}

// newUDPs prepares cl's listeners (newUDP): one per loop with "reuseport"
// and more than one loop (shards, bound to shard 0's address, so that port 0
// gives them one port), else one.
func (p *Proxy) newUDPs(srv *server, cl *config.Listen) ([]*udpListener, error) {
	first, err := p.newUDP(srv, cl, 0, cl.Addr)
	if err != nil {
		return nil, err
	}
	out := []*udpListener{first}
	n := 1
	if cl.ReusePort && len(p.loops) > 1 {
		n = len(p.loops)
	}
	if n > 1 && first.held {
		// Inherited: keep the old process's group as it was, so that the
		// kernel sends every client to the socket its session moved with.
		// A socket added to the group would take some clients to a shard
		// where they have no session (and one bound without SO_REUSEPORT
		// could not be joined at all). More shards take a restart.
		have := 1
		for have < n && sock.ReusePort(first.fd) {
			if _, ok := p.inherited[udpKeyOf(cl.Addr, have)]; !ok {
				break
			}
			have++
		}
		n = have
	}
	for i := 1; i < n; i++ {
		u, err := p.newUDP(srv, cl, i, first.bound)
		if err != nil {
			for _, o := range out {
				o.discard()
			}
			return nil, err
		}
		out = append(out, u)
	}
	for _, u := range out {
		u.group = len(out)
	}
	return out, nil
}

// newUDP prepares shard i of cl's listeners, bound to ap: its socket bound
// (or inherited in an upgrade, then held unread until HandoffDone:
// HANDOFF.md P19), on no loop yet (startUDP).
func (p *Proxy) newUDP(srv *server, cl *config.Listen, shard int, ap netip.AddrPort) (*udpListener, error) {
	if cl.ProxyProtocol {
		// config rejects it already; a Config built in code may not have.
		return nil, errUDPProxyProt
	}
	fd, err := p.inheritedUDP(udpKeyOf(cl.Addr, shard), ap)
	if err != nil {
		return nil, err
	}
	inherited := fd >= 0
	if !inherited {
		if fd, err = sock.ListenUDP(ap, cl.ReusePort); err != nil {
			return nil, err
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	u := &udpListener{
		p: p, fd: fd, bound: sock.AddrPort(sa), held: inherited, shard: shard, group: 1,
		wild:       cl.Addr.Addr().IsUnspecified(),
		finished:   make(chan struct{}),
		table:      map[udpKey]*udpSession{},
		live:       map[*udpSession]struct{}{},
		quiesced:   map[uint64]*udpSession{},
		idle:       map[uint64]*udpSession{},
		connLog:    errlog.RateLog{Every: int64(time.Second)},
		localLog:   errlog.RateLog{Every: int64(time.Second)},
		timeoutLog: errlog.RateLog{Every: int64(time.Second)},
	}
	u.conf.Store(&udpConf{srv: srv, cl: cl})
	u.usableFn = func(i int) bool { return !u.tried[i] && u.pickG.usable(i, u.l.wall()) }
	return u, nil
}

// udpKeyOf names shard i of a listener on ap: "udp/ADDR", "udp/ADDR#1", ...
func udpKeyOf(ap netip.AddrPort, shard int) string {
	if shard == 0 {
		return "udp/" + ap.String()
	}
	return "udp/" + ap.String() + "#" + strconv.Itoa(shard)
}

// udpLoop is the loop a new UDP listener goes to: the one with the fewest.
func (p *Proxy) udpLoop() *loop {
	best := p.loops[0]
	for _, l := range p.loops[1:] {
		if l.udpCount.Load() < best.udpCount.Load() {
			best = l
		}
	}
	return best
}

// loopFor is the loop u goes to: shard i of a group to loop i, so that the
// shards of an address are on different loops; others to udpLoop.
func (p *Proxy) loopFor(u *udpListener) *loop {
	if u.group > 1 {
		return p.loops[u.shard%len(p.loops)]
	}
	return p.udpLoop()
}

// place gives u to loop l before l runs (Start).
func (u *udpListener) place(l *loop) {
	u.l = l
	l.udpCount.Add(1)
	l.udps = append(l.udps, u)
}

// start gives u to its loop, which reads it from then on (Reload). It
// reports false, u closed, if the loop has ended.
func (u *udpListener) start(l *loop) bool {
	u.l = l
	l.udpCount.Add(1)
	if !l.do(func() {
		if l.stopping {
			u.closeSocket()
			return
		}
		l.udps = append(l.udps, u)
		u.arm()
	}) {
		l.udpCount.Add(-1)
		u.discard()
		return false
	}
	return true
}

// discard closes a listener that never reached a loop (Start's and
// Reload's error paths).
func (u *udpListener) discard() {
	unix.Close(u.fd)
	close(u.finished)
}

// srv is the server new sessions get.
func (u *udpListener) srv() *server { return u.conf.Load().srv }

// text is the listen directive as written, for logs.
func (u *udpListener) text() string { return u.conf.Load().cl.Text }

// key names the listener across reloads and upgrades: "udp/" and the bound
// address, and "#N" for shard N > 0 (udpKeyOf).
func (u *udpListener) key() string { return udpKeyOf(u.bound, u.shard) }

// addrKey names the listener's address, the same for all its shards.
func (u *udpListener) addrKey() string { return udpKeyOf(u.bound, 0) }

// addr is the bound address.
func (u *udpListener) addr() net.Addr { return net.UDPAddrFromAddrPort(u.bound) }

// arm puts the socket in the loop's epoll set if it is to be read (loop).
func (u *udpListener) arm() {
	if u.armed || u.held || u.paused || u.stopped || u.closed || u.l.stopping {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(u.fd), Pad: tagUDPListener}
	if err := sock.EpollCtl(u.l.epfd, unix.EPOLL_CTL_ADD, u.fd, &ev); err != nil {
		u.p.log.Logf(LevelAlert, "epoll_ctl(ADD) listener %s failed %s", u.text(), sock.ErrnoText(err))
		return
	}
	u.armed = true
}

// disarm takes the socket out of the loop's epoll set (loop).
func (u *udpListener) disarm() {
	if u.armed {
		sock.EpollCtl(u.l.epfd, unix.EPOLL_CTL_DEL, u.fd, nil)
		u.armed = false
	}
}

// stop reads no more datagrams: live sessions still send their replies
// from the socket and end on their own (proxy_timeout, proxy_responses);
// the socket closes after the last (loop).
func (u *udpListener) stop() {
	u.stopped = true
	u.disarm()
	u.maybeDone()
}

// maybeDone closes a stopped listener once it has no session left (loop).
func (u *udpListener) maybeDone() {
	if u.stopped && !u.closed && len(u.live) == 0 && len(u.quiesced) == 0 && len(u.idle) == 0 {
		u.closeSocket()
	}
}

// closeSocket closes the listening socket and leaves the loop (loop).
func (u *udpListener) closeSocket() {
	if u.closed {
		return
	}
	if r := u.l.udpOut; r != nil && r.u == u && !r.flushing {
		r.flush() // replies already counted go out first
	}
	u.disarm()
	u.closed = true
	unix.Close(u.fd)
	if c := u.sendLog.Flush(); c > 0 {
		u.p.log.Logf(LevelWarn, "%d datagrams from clients of %s were not sent to the upstream", c, u.text())
	}
	l := u.l
	for i, o := range l.udps {
		if o == u {
			l.udps = append(l.udps[:i], l.udps[i+1:]...)
			break
		}
	}
	l.udpCount.Add(-1)
	close(u.finished)
}

// closeAll ends every session now and closes the socket (Close, loop).
func (u *udpListener) closeAll() {
	u.stopped = true
	for s := range u.live {
		u.end(s, 200, endClosed)
	}
	// Quiesced and imported-but-not-started sessions may live on in the
	// other process: forget them without a log line.
	for id, s := range u.quiesced {
		delete(u.quiesced, id)
		u.drop(s)
	}
	for id, s := range u.idle {
		delete(u.idle, id)
		s.closeUp()
	}
	u.closeSocket()
}

// retire stops a listener a reload removed: no new datagrams, live sessions
// drain; finished closes when it is over.
func (u *udpListener) retire() {
	u.retired.Store(true)
	u.l.do(u.stop)
}

// status reports the listener for Proxy.Status.
func (u *udpListener) status() ListenerStatus {
	return ListenerStatus{
		Addr: u.bound.String(), Protocol: "udp", Upstream: u.srv().upstreamName(),
		Active: u.active.Load(), Total: u.total.Load(),
	}
}

// dropCounts returns how many datagrams were not forwarded, by cause, for
// metrics.
func (u *udpListener) dropCounts() map[string]uint64 {
	return map[string]uint64{
		"truncated": u.drops.truncated.Load(),
		"kernel":    u.drops.kernel.Load(),
		"send":      u.drops.send.Load(),
		"reply":     u.drops.reply.Load(),
		"capacity":  u.drops.capacity.Load(),
		"rate":      u.drops.rate.Load(),
	}
}

// udpBatchSize is how many datagrams one recvmmsg takes.
const udpBatchSize = 32

// udpBatch is a loop's recvmmsg state, made when it first serves UDP. Each
// slot has a buffer that holds the largest datagram, so none is ever
// truncated; only the pages a datagram touches are ever resident.
type udpBatch struct {
	hdrs  [udpBatchSize]unix.Mmsghdr
	iovs  [udpBatchSize]unix.Iovec
	names [udpBatchSize]unix.RawSockaddrInet6
	oobs  [udpBatchSize][sock.OOBSize]byte
	bufs  [udpBatchSize][]byte
}

func newUDPBatch() *udpBatch {
	b := &udpBatch{}
	for i := range b.hdrs {
		b.bufs[i] = make([]byte, sock.DatagramBufSize)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(sock.DatagramBufSize)
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control = &b.oobs[i][0]
	}
	return b
}

// recv takes up to udpBatchSize datagrams from fd.
func (b *udpBatch) recv(fd int) (int, error) {
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(sock.OOBSize)
		h.Flags = 0
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])), udpBatchSize, 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// readable takes the datagrams waiting on the listening socket, a few
// batches at most per event, so that sessions' replies are not starved
// (loop).
func (u *udpListener) readable() {
	l := u.l
	if l.udpIn == nil {
		l.udpIn = newUDPBatch()
	}
	b := l.udpIn
	for round := 0; round < 4 && u.armed; round++ {
		n, err := b.recv(u.fd)
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.EINTR:
			continue
		default:
			if c := u.errLog.Hit(l.now); c > 0 {
				u.p.log.Logf(LevelAlert, "recvmsg() on %s failed %s (%d times)", u.text(), sock.ErrnoText(err), c)
			}
			return
		}
		for i := 0; i < n; i++ {
			h := &b.hdrs[i]
			u.datagram(b.bufs[i][:h.Len], int(h.Hdr.Flags), &b.names[i], b.oobs[i][:h.Hdr.Controllen])
		}
		if n < udpBatchSize {
			return
		}
	}
}

// datagram handles one client datagram (loop).
func (u *udpListener) datagram(d []byte, flags int, name *unix.RawSockaddrInet6, oob []byte) {
	l := u.l
	in := sock.ParseOOB(oob)
	if in.HasDrop && in.Drops != u.kernelSeen {
		n := in.Drops - u.kernelSeen
		u.kernelSeen = in.Drops
		u.drops.kernel.Add(uint64(n))
		if c := u.kernelLog.Add(l.now, uint64(n)); c > 0 {
			u.p.log.Logf(LevelWarn, "the kernel dropped %d datagrams to %s: the socket's receive buffer was full", c, u.text())
		}
	}
	client := sock.RawAddrPort((*unix.RawSockaddrAny)(unsafe.Pointer(name)))
	if flags&unix.MSG_TRUNC != 0 || len(d) >= sock.DatagramBufSize {
		u.drops.truncated.Add(1)
		if c := u.truncLog.Hit(l.now); c > 0 {
			u.p.log.Logf(LevelError, "%d datagrams to %s were dropped: larger than %d bytes, client: %s", c, u.text(), sock.DatagramBufSize-1, client.Addr())
		}
		return
	}
	key := udpKey{client: client, dst: in.Dst.Unmap()}
	if s := u.table[key]; s != nil {
		u.forward(s, d)
		return
	}
	if w := u.waiting[key]; w != nil {
		w.hold(d)
		return
	}
	u.open(key, d, name, in.Ifindex)
}
