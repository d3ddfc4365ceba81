package proxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonproxy/baton/config"
)

// UDP: how "listen ... udp" is served.
//
// Each listener has three kinds of goroutine:
//
//   - the reader reads the listening socket and queues each datagram, with
//     its client address, on packets (bounded: a full queue drops the
//     datagram, counts it and logs at most once every 10 s);
//   - the owner is the only goroutine that touches the session table. It
//     takes queued datagrams, creates sessions (a balancer pick and a
//     connected socket to the upstream, as nginx), sends each datagram to
//     its session's upstream with one nonblocking write, and ends sessions;
//   - one upstream reader per session reads replies from the session's
//     connected socket and writes them to the client through the listening
//     socket. It also keeps the idle timer (proxy_timeout) as a read
//     deadline.
//
// Session state is one plain struct (udpSession); the counters that both
// the owner and the upstream reader change sit under its mutex. A session
// ends exactly once: whoever first sets ended decides the status; the owner
// then closes the upstream socket and writes the access-log line, either at
// once (if the owner set it) or when the upstream reader reports the end on
// ends.
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

// udpPacket is one datagram from a client, on its way to the owner. A
// packet with a nil buf is the reader's "parked" marker (udp_handoff.go):
// every datagram it read before pausing is queued ahead of it.
type udpPacket struct {
	buf    *[]byte
	n      int
	client netip.AddrPort
	dst    netip.Addr // from IP_PKTINFO on a wildcard listener; else invalid
	ifidx  uint32
}

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

const udpQueue = 256 // datagrams between the reader and the owner

// udpListener serves one "listen ... udp" address.
type udpListener struct {
	p     *Proxy
	conf  atomic.Pointer[udpConf] // the server new sessions get; Reload swaps it
	conn  *net.UDPConn
	bound netip.AddrPort
	wild  bool

	// retired: a Reload removed this address. The listener reads no more
	// datagrams and drains its sessions; it stays in Proxy.udp (so that
	// Close, Shutdown and Done still see it) until it has finished.
	retired  atomic.Bool
	finished chan struct{} // retired: closed when every goroutine has ended

	// Upgrade (udp_handoff.go). The reader starts with start, or later with
	// startReader when the socket was inherited (Proxy.HandoffDone).
	readerOnce  sync.Once
	readerStart atomic.Bool
	pausing     atomic.Bool   // the reader parks at its next read (PauseAccepting)
	dlMu        sync.Mutex    // orders the listener socket's read deadline changes
	wake        chan struct{} // pokes a parked reader (resume, shutdown, close)
	parked      chan struct{} // the owner saw the reader's parked marker
	cmds        chan func()   // run on the owner goroutine
	ownerDone   chan struct{} // closed when the owner has ended

	packets chan udpPacket   // reader → owner; closed when the reader ends
	ends    chan *udpSession // upstream readers → owner: sessions they ended
	closeCh chan struct{}    // closed by close()

	stopping  atomic.Bool
	stopOnce  sync.Once
	closeOnce sync.Once
	wg        sync.WaitGroup // reader, owner and upstream readers

	active  atomic.Int64
	total   atomic.Uint64
	drops   udpDrops
	endHook atomic.Pointer[func(udpEnd)] // called by the owner for each finished session; for tests

	// Owner only.
	table      map[udpKey]*udpSession
	live       map[*udpSession]struct{} // every session not yet finished, in the table or not
	quiesced   map[uint64]*udpSession   // handed out by Quiesce, waiting for Release or Restore
	idle       map[uint64]*udpSession   // imported, waiting for Start
	closing    bool
	tried      []bool
	pickG      *group // the group connect is picking from, for usableFn
	usableFn   func(int) bool
	keyBuf     []byte
	lineBuf    []byte
	rec        session // the log record of the session being finished
	sendLog    rateLog
	capLog     rateLog
	connLog    rateLog               // connect() failures and "no live upstreams", once a second
	localLog   rateLog               // baton's own socket() failures, once a second
	timeoutLog rateLog               // "upstream timed out", once a second
	writeFn    func(fd uintptr) bool // u.write, made once
	wbuf       []byte                // what writeFn writes
	wn         int
	werr       error
}

// udpDrops counts datagrams baton did not forward, by cause.
type udpDrops struct {
	queueFull atomic.Uint64 // the owner's queue was full
	truncated atomic.Uint64 // larger than the read buffer (cannot happen; counted if it does)
	kernel    atomic.Uint64 // dropped by the kernel, receive buffer full (SO_RXQ_OVFL)
	send      atomic.Uint64 // the upstream socket's send buffer was full, or the datagram was too large for it
	capacity  atomic.Uint64 // a new session was refused: worker_connections reached
}

// startUDP binds cl for srv and starts serving it. In the new process of an
// upgrade the socket inherited for cl's address is taken instead of a new
// bind, and its reader waits for Proxy.HandoffDone (HANDOFF.md P19: the
// listener is read only once its sessions are installed).
func (p *Proxy) startUDP(srv *server, cl *config.Listen) (*udpListener, error) {
	u, inherited, err := p.newUDP(srv, cl)
	if err != nil {
		return nil, err
	}
	u.start(!inherited)
	return u, nil
}

// newUDP prepares a listener for cl: its socket bound (or inherited), no
// goroutine started yet.
func (p *Proxy) newUDP(srv *server, cl *config.Listen) (u *udpListener, inherited bool, err error) {
	if cl.ProxyProtocol {
		// config rejects it already; a Config built in code may not have.
		return nil, false, errors.New(`"listen" directive "proxy_protocol" parameter is incompatible with "udp"`)
	}
	conn, err := p.inheritedUDP(cl)
	if err != nil {
		return nil, false, err
	}
	inherited = conn != nil
	if conn == nil {
		if conn, err = listenUDP(cl.Addr, cl.ReusePort); err != nil {
			return nil, false, err
		}
	}
	bound := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	u = &udpListener{
		p: p, conn: conn,
		bound:      netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()),
		wild:       cl.Addr.Addr().IsUnspecified(),
		packets:    make(chan udpPacket, udpQueue),
		ends:       make(chan *udpSession),
		closeCh:    make(chan struct{}),
		wake:       make(chan struct{}, 1),
		parked:     make(chan struct{}, 1),
		cmds:       make(chan func()),
		ownerDone:  make(chan struct{}),
		table:      map[udpKey]*udpSession{},
		live:       map[*udpSession]struct{}{},
		quiesced:   map[uint64]*udpSession{},
		idle:       map[uint64]*udpSession{},
		keyBuf:     make([]byte, 0, 256),
		lineBuf:    make([]byte, 0, 512),
		connLog:    rateLog{every: int64(time.Second)},
		localLog:   rateLog{every: int64(time.Second)},
		timeoutLog: rateLog{every: int64(time.Second)},
	}
	u.conf.Store(&udpConf{srv: srv, cl: cl})
	u.usableFn = func(i int) bool { return !u.tried[i] && u.pickG.usable(i, u.wall(u.now())) }
	u.writeFn = u.write
	return u, inherited, nil
}

// start starts the owner and, if reading, the reader.
func (u *udpListener) start(reading bool) {
	u.wg.Add(1)
	go u.run()
	if reading {
		u.startReader()
	}
}

// startReader starts the reader once (HandoffDone, shutdown and close call
// it too, so that a reader that was held still ends).
func (u *udpListener) startReader() {
	u.readerOnce.Do(func() {
		u.readerStart.Store(true)
		u.wg.Add(1)
		go u.read()
	})
}

// srv is the server new sessions get.
func (u *udpListener) srv() *server { return u.conf.Load().srv }

// text is the listen directive as written, for logs.
func (u *udpListener) text() string { return u.conf.Load().cl.Text }

// key names the listener across reloads and upgrades: "udp/" and the bound
// address.
func (u *udpListener) key() string { return "udp/" + u.bound.String() }

// addr is the bound address.
func (u *udpListener) addr() net.Addr { return net.UDPAddrFromAddrPort(u.bound) }

// shutdown stops taking new datagrams: the reader stops at once (a read
// deadline in the past; the socket stays open so that live sessions still
// send their replies from it). Live sessions end on their own
// (proxy_timeout, proxy_responses).
func (u *udpListener) shutdown() {
	u.stopOnce.Do(func() {
		u.dlMu.Lock()
		u.stopping.Store(true)
		u.conn.SetReadDeadline(time.Unix(1, 0))
		u.dlMu.Unlock()
		u.poke()
		u.startReader() // a held reader must still end, closing packets
	})
}

// retire stops a listener a reload removed: no new datagrams, live sessions
// drain; finished closes when it is over.
func (u *udpListener) retire() {
	u.retired.Store(true)
	u.finished = make(chan struct{})
	u.shutdown()
	go func() {
		u.wait()
		close(u.finished)
	}()
}

// close ends every session and stops at once.
func (u *udpListener) close() {
	u.closeOnce.Do(func() {
		close(u.closeCh)
		u.poke()
		u.startReader()
	})
}

// poke wakes a parked reader.
func (u *udpListener) poke() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *udpListener) closed() bool {
	select {
	case <-u.closeCh:
		return true
	default:
		return false
	}
}

// wait returns when every goroutine of u has ended.
func (u *udpListener) wait() { u.wg.Wait() }

// status reports the listener for Proxy.Status.
func (u *udpListener) status() ListenerStatus {
	return ListenerStatus{
		Addr: u.bound.String(), Protocol: "udp", Upstream: u.srv().group.name,
		Active: u.active.Load(), Total: u.total.Load(),
	}
}

// dropCounts returns how many client datagrams were not forwarded, by
// cause, for metrics.
func (u *udpListener) dropCounts() map[string]uint64 {
	return map[string]uint64{
		"queue_full": u.drops.queueFull.Load(),
		"truncated":  u.drops.truncated.Load(),
		"kernel":     u.drops.kernel.Load(),
		"send":       u.drops.send.Load(),
		"capacity":   u.drops.capacity.Load(),
	}
}

func (u *udpListener) now() int64 { return int64(time.Since(u.p.base)) }

func (u *udpListener) wall(mono int64) time.Time { return u.p.base.Add(time.Duration(mono)) }

// read is the listener's reader goroutine.
func (u *udpListener) read() {
	defer u.wg.Done()
	defer close(u.packets)
	var truncLog, queueLog, errLog, kernelLog rateLog
	var kernelSeen uint32
	big := getDgram(dgramBig)
	oob := make([]byte, udpOOBSize)
	for {
		n, oobn, flags, from, err := u.conn.ReadMsgUDPAddrPort(*big, oob)
		now := u.now()
		if u.stopping.Load() {
			// Checked after a successful read too: a read that was waiting
			// when shutdown set the deadline can still return a datagram
			// that came in afterwards (the poller's readiness wins over the
			// deadline's wake-up). Like those left in the socket, it is
			// not taken.
			break
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || u.closed() {
				break
			}
			if u.pausing.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				// Paused for an upgrade: a read with a deadline in the past
				// returns before any syscall, so no datagram is taken; one
				// read before the pause (readiness won) went on as usual.
				if !u.park() {
					break
				}
				continue
			}
			if c := errLog.hit(now); c > 0 {
				u.p.log.Logf(LevelAlert, "recvmsg() on %s failed %s (%d times)", u.text(), errnoText(bareErrno(err)), c)
			}
			continue
		}
		in := parseOOB(oob[:oobn])
		if in.hasDrop && in.drops != kernelSeen {
			d := in.drops - kernelSeen
			kernelSeen = in.drops
			u.drops.kernel.Add(uint64(d))
			if c := kernelLog.add(now, uint64(d)); c > 0 {
				u.p.log.Logf(LevelWarn, "the kernel dropped %d datagrams to %s: the socket's receive buffer was full", c, u.text())
			}
		}
		if flags&udpMsgTrunc != 0 || n >= dgramBig {
			u.drops.truncated.Add(1)
			if c := truncLog.hit(now); c > 0 {
				u.p.log.Logf(LevelError, "%d datagrams to %s were dropped: larger than %d bytes, client: %s", c, u.text(), dgramBig-1, from.Addr())
			}
			continue
		}
		pk := udpPacket{buf: big, n: n, client: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), dst: in.dst.Unmap(), ifidx: in.ifindex}
		if n <= dgramSmall {
			pk.buf = getDgram(n)
			copy(*pk.buf, (*big)[:n])
		} else {
			big = getDgram(dgramBig)
		}
		select {
		case u.packets <- pk:
		default:
			putDgram(pk.buf)
			u.drops.queueFull.Add(1)
			if c := queueLog.hit(now); c > 0 {
				u.p.log.Logf(LevelWarn, "%d datagrams to %s were dropped: the session queue (%d) is full", c, u.text(), udpQueue)
			}
		}
	}
	putDgram(big)
	if c := queueLog.flush(); c > 0 {
		u.p.log.Logf(LevelWarn, "%d datagrams to %s were dropped: the session queue (%d) is full", c, u.text(), udpQueue)
	}
}

// run is the owner goroutine: the only one that touches table and live.
// It ends when the reader has ended and no session is left.
func (u *udpListener) run() {
	defer u.wg.Done()
	defer close(u.ownerDone)
	packets, closeCh := u.packets, u.closeCh
	for packets != nil || len(u.live) > 0 || len(u.quiesced) > 0 || len(u.idle) > 0 {
		select {
		case pk, ok := <-packets:
			if !ok {
				packets = nil
				continue
			}
			if pk.buf == nil { // the reader parked: every datagram before it is handled
				select {
				case u.parked <- struct{}{}:
				default:
				}
				continue
			}
			u.handle(pk)
			putDgram(pk.buf)
		case s := <-u.ends:
			u.finish(s)
		case fn := <-u.cmds:
			fn()
		case <-closeCh:
			closeCh = nil
			u.closeAll()
		}
	}
	u.conn.Close()
	if c := u.sendLog.flush(); c > 0 {
		u.p.log.Logf(LevelWarn, "%d datagrams from clients of %s were not sent to the upstream", c, u.text())
	}
}

// closeAll ends every session now (close).
func (u *udpListener) closeAll() {
	u.closing = true
	u.conn.Close() // the reader ends; so do the writes of replies
	for s := range u.live {
		if s.claim(200, endClosed) {
			u.finish(s)
		}
	}
	// Quiesced and imported-but-not-started sessions may live on in the
	// other process: forget them without a log line.
	for id, s := range u.quiesced {
		delete(u.quiesced, id)
		u.drop(s)
	}
	for id, s := range u.idle {
		delete(u.idle, id)
		s.closeUp(u.p)
	}
}

// handle passes one client datagram to its session, or starts one.
func (u *udpListener) handle(pk udpPacket) {
	if u.closing {
		return
	}
	key := udpKey{client: pk.client, dst: pk.dst}
	if s := u.table[key]; s != nil {
		if u.forward(s, (*pk.buf)[:pk.n]) {
			return
		}
		// The session is ending: as in nginx, where it is already gone, the
		// datagram starts a new one.
		delete(u.table, key)
		s.detached = true
	}
	u.open(key, pk)
}

// deadline converts a monotonic time to a deadline.
func (u *udpListener) deadline(mono int64) time.Time { return u.wall(mono) }
