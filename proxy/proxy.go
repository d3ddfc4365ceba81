package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/control"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

var pid = os.Getpid()

// Options are what the caller adds to a Config. The zero value is valid.
type Options struct {
	// Log is where baton's own messages go. If nil, a Logger for the
	// config's error_log is opened.
	Log *Logger

	// Loops is the number of event loops. If zero, runtime.GOMAXPROCS(0).
	// Each running loop holds a P while it waits in epoll_wait, so Start
	// raises GOMAXPROCS to one above the loops running in the process
	// (and it comes down again as they stop): see loop.wait.
	Loops int

	// Generation numbers the process in a chain of upgrades (0 for the
	// first); session ids start at Generation<<48 so that they stay unique
	// across upgrades (HANDOFF.md P20).
	Generation int

	// FileLimit is the open file limit the descriptor budget is made
	// from (fdbudget.go). If zero, the process's soft RLIMIT_NOFILE.
	FileLimit int
}

// Proxy serves every stream server of a Config.
type Proxy struct {
	log     *Logger
	ownLog  bool
	servers []*server
	groups  []*group // every upstream in use, in config order
	// byName is groups by name for the loops (rebalance.go); rbStats the
	// rebalance figures by upstream name.
	byName  atomic.Pointer[map[string]*group]
	rbStats map[string]*rebalanceStats
	// generation numbers groups that must not be kept across a reload.
	generation atomic.Uint64
	zones      map[string]*connZone // limit_conn zones by name
	// listeners is every bound TCP listener; Reload rewrites it (under
	// reloadMu and listenersMu). Loops never read it: each has its own
	// copy (loop.lns), set by Start and by a Reload's command.
	listeners []*listener
	udp       []*udpListener // "listen ... udp", each on one of the loops (udp.go)
	loops     []*loop
	logFiles  map[string]*logFile
	metrics   *metrics
	cfg       *config.Config // as given to New; Start reads baton{} settings from it

	base   time.Time
	nextID atomic.Uint64
	active atomic.Int64 // live sessions
	total  atomic.Uint64
	fds    fdBudget // descriptors sessions may hold (fdbudget.go)

	fileLimitOpt  int           // Options.FileLimit
	udpUnanswered time.Duration // how long a UDP session with no reply keeps its descriptor (udpUnansweredTimeout)

	listenersMu sync.Mutex // guards the listener fds against concurrent close
	reloadMu    sync.Mutex // one Reload at a time, and not during Shutdown

	wg           sync.WaitGroup // loop goroutines
	started      bool
	shuttingDown bool         // under reloadMu
	paused       atomic.Bool  // accepting is paused for an upgrade
	pausedAt     atomic.Int64 // when, in Unix nanoseconds
	takingTLS    atomic.Bool  // an upgrade takes back handshakes not begun, to move them (restartTLS ends it)
	carried      atomic.Int64 // pending bytes of quiesced sessions (CarriedBytes)

	// Upgrade, new process: sockets inherited from the old one, by name,
	// until Start takes them, and sessions imported but not started yet.
	inherited        map[string]int
	inheritedControl *net.UnixListener
	inheritedMetrics net.Listener
	imported         map[uint64]*session
	control          *control.Server
	closeOnce        sync.Once
	done             chan struct{}
}

// server is a stream server block, ready to serve.
type server struct {
	name           string // first listen address, for logs
	group          *group
	connectTimeout int64
	proxyTimeout   int64
	nextUpstream   bool
	nextTries      int
	nextTimeout    int64
	halfClose      bool
	accessLogs     []accessLog
	log            *Logger // its sessions' error log: its own error_log, or the proxy's
	listens        []*config.Listen
	cfg            *config.Server // the whole server block, for what only UDP reads

	// UDP sessions (udp.go): proxy_responses (-1: not limited) and
	// proxy_requests (0: not limited).
	proxyResponses int
	proxyRequests  int

	// PROXY protocol: out ("proxy_protocol on|v2": 1 or 2) and the bound on
	// reading a client's header (proxy_protocol_timeout).
	ppOut     int
	ppTimeout int64

	// limit_conn, in directive order.
	limits        []limitRef
	limitLogLevel Level
	limitDryRun   bool

	// Routing (route.go, preread.go): the config's variables, "set" in
	// order, "return" (nil when proxying), "proxy_pass" with variables
	// (nil: group) and the upstreams it may name, ssl_preread.
	vt             *varTable
	sets           []setOp
	ret            template
	pass           template
	passT          template       // "pass" with variables
	passAddr       netip.AddrPort // "pass ADDRESS"
	routes         *routes
	resolver       *routeResolver // resolves the host names proxy_pass $var gives; nil without "resolver"
	tls            *serverTLS     // TLS termination ("listen ... ssl"); nil without certificates
	tlsReject      bool           // ssl_reject_handshake
	ptls           *upstreamTLS   // proxy_ssl; nil: plain upstreams
	preread        bool
	prereadMax     int
	prereadTimeout int64
	needVars       bool               // sessions hold a sessVars ("set", ssl_preread)
	serverName     string             // $server_name: the first server_name as nginx prints it
	bufSize        int                // proxy_buffer_size; 0: not set (reads of readBufSize)
	upRate         template           // proxy_upload_rate; nil: not paced
	downRate       template           // proxy_download_rate; nil: not paced
	vhosts         map[string]*vhosts // the virtual servers of the sockets it owns, by listener key
	up             *upsock            // proxy_bind, proxy_socket_keepalive, tcp_nodelay off (upsock.go); nil: sock.Dial's socket
	noDelayOff     bool               // tcp_nodelay off
}

// upstreamName is what status shows as a server's upstream.
func (srv *server) upstreamName() string {
	switch {
	case srv.group != nil:
		return srv.group.name
	case srv.ret != nil:
		return "(return)"
	}
	return srv.cfg.ProxyPass
}

// listener is one bound listening socket.
type listener struct {
	fd   int
	name string // as written in the config
	addr net.Addr
	key  string // what identifies it across reloads: "tcp/" and the bound address
	srv  *server
	cfg  *config.Listen

	accepted atomic.Uint64
	active   atomic.Int64
}

// bindListener binds cl's socket for srv, or takes the socket inherited
// from an old process for that address. Errors name cl's file and line.
func (p *Proxy) bindListener(srv *server, cl *config.Listen) (*listener, error) {
	if cl.Unix != "" {
		return p.bindUnixListener(srv, cl)
	}
	fd, ok := p.inherited["tcp/"+cl.Addr.String()]
	if ok {
		delete(p.inherited, "tcp/"+cl.Addr.String())
		// Apply this config's options to the inherited socket (envoy PR #23189).
		unix.Listen(fd, cl.Backlog)
		listenOpts(cl).Apply(fd)
	} else {
		var err error
		if fd, err = sock.Listen(cl.Addr, listenOpts(cl)); err != nil {
			return nil, posError(cl.Pos, err)
		}
	}
	sa, _ := unix.Getsockname(fd)
	ap := sock.AddrPort(sa)
	return &listener{
		fd: fd, name: cl.Text, srv: srv, cfg: cl, key: "tcp/" + ap.String(), // the bound address: the configured one, but for port 0
		addr: &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port())},
	}, nil
}

// listenKey is what identifies a TCP listen across reloads and upgrades:
// "tcp/" and its address, or "unix:" and its path.
func listenKey(cl *config.Listen) string {
	if cl.Unix != "" {
		return "unix:" + cl.Unix
	}
	return "tcp/" + cl.Addr.String()
}

// bindUnixListener binds "listen unix:PATH", or takes the socket an old
// process handed over.
func (p *Proxy) bindUnixListener(srv *server, cl *config.Listen) (*listener, error) {
	key := listenKey(cl)
	fd, ok := p.inherited[key]
	if ok {
		delete(p.inherited, key)
		unix.Listen(fd, cl.Backlog)
	} else {
		var err error
		if fd, err = sock.ListenUnix(cl.Unix, cl.Backlog); err != nil {
			return nil, posError(cl.Pos, err)
		}
	}
	return &listener{fd: fd, name: cl.Text, srv: srv, cfg: cl, key: key, addr: &net.UnixAddr{Name: cl.Unix, Net: "unix"}}, nil
}

// listenOpts are cl's socket options.
func listenOpts(cl *config.Listen) sock.ListenOpts {
	return sock.ListenOpts{
		Backlog: cl.Backlog, ReusePort: cl.ReusePort, IPv6Only: cl.IPv6Only, Multipath: cl.Multipath,
		KeepAlive: cl.SoKeepalive, KeepIdle: cl.KeepIdle, KeepIntvl: cl.KeepIntvl, KeepCnt: cl.KeepCnt,
		FastOpen: cl.FastOpen, RcvBuf: cl.RcvBuf, SndBuf: cl.SndBuf, Deferred: cl.Deferred,
	}
}

// New checks cfg against what the proxy can serve and prepares every server,
// upstream and log. It binds nothing: Start does. Errors name the config
// file and line.
func New(cfg *config.Config, opts Options) (*Proxy, error) {
	if cfg.Stream == nil || len(cfg.Stream.Servers) == 0 {
		return nil, ErrNoServers
	}
	p := &Proxy{
		log:      opts.Log,
		logFiles: map[string]*logFile{},
		base:     time.Now(),
		done:     make(chan struct{}),
		metrics:  newMetrics(),
		cfg:      cfg,
		imported: map[uint64]*session{},
	}
	p.nextID.Store(uint64(opts.Generation) << 48)
	p.metrics.reg.MustRegister(collector{p}, p.metrics.pick)
	p.fileLimitOpt = opts.FileLimit
	p.udpUnanswered = udpUnansweredTimeout
	if p.log == nil {
		targets, err := errorTargets(topErrorLogs(cfg))
		if err != nil {
			return nil, err
		}
		if p.log, err = errlog.Open(targets...); err != nil {
			return nil, err
		}
		p.ownLog = true
	}
	ok := false
	defer func() {
		if !ok {
			p.closeLogs()
		}
	}()
	servers, groups, zones, opened, err := p.build(cfg)
	if err != nil {
		return nil, err
	}
	p.servers, p.groups, p.zones = servers, groups, zones
	for _, lf := range opened {
		p.logFiles[lf.path] = lf
	}
	if err := p.attachMonitors(servers); err != nil {
		p.closeLogs()
		return nil, err
	}
	n := opts.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	for i := 0; i < n; i++ {
		l, err := newLoop(p, i)
		if err != nil {
			for _, l := range p.loops {
				l.closeFds()
			}
			return nil, fmt.Errorf("proxy: event loop: %w", err)
		}
		p.loops = append(p.loops, l)
	}
	p.publishGroups()
	p.setBudget(cfg)
	ok = true
	return p, nil
}

// build prepares every server of cfg. Upstreams are taken from reuse (by
// name) when their definition is unchanged, so that a reload keeps their
// balancer position, health state and live counts. Access-log files are
// taken from p.logFiles by path or opened; opened lists those newly opened.
func (p *Proxy) build(cfg *config.Config) (servers []*server, groups []*group, zones map[string]*connZone, opened []*logFile, err error) {
	defer func() {
		if err != nil {
			for _, lf := range opened {
				lf.close()
			}
			opened = nil
		}
	}()
	reuse := map[string]*group{}
	for _, g := range p.groups {
		reuse[g.name+"\x00"+g.sig] = g
	}
	vt, err := buildVars(cfg)
	if err != nil {
		return nil, nil, nil, opened, err
	}
	if zones, err = p.buildZones(cfg, vt); err != nil {
		return nil, nil, nil, opened, err
	}
	// An upstream's signature covers its active health check too (the
	// first server block's that proxies to it, as attachMonitors takes):
	// a reload that adds, changes or removes a check builds a new group
	// with its own monitor, and never touches the live one.
	checks := map[*config.Upstream]*config.HealthCheck{}
	for _, cs := range cfg.Stream.Servers {
		if u := cs.Upstream; u != nil && cs.HealthCheck != nil && checks[u] == nil {
			checks[u] = cs.HealthCheck
		}
	}
	sigs := map[*config.Upstream]string{}
	sig := func(u *config.Upstream) string {
		s := upstreamSig(u) + healthSig(checks[u])
		if u.HashKey != "" && vt.definesAny(u.HashKey) {
			// Its key reads variables this config defines (map, set):
			// never kept across a reload, which may change them.
			s += fmt.Sprintf("|gen%d", p.generation.Add(1))
		}
		return s
	}
	for _, cs := range cfg.Stream.Servers {
		if u := cs.Upstream; u != nil {
			sigs[u] = sig(u)
		}
	}
	for _, u := range cfg.Stream.Upstreams {
		if _, ok := sigs[u]; !ok {
			sigs[u] = sig(u)
		}
	}
	byCfg := map[*config.Upstream]*group{}
	for _, cs := range cfg.Stream.Servers {
		srv, err := p.newServer(cs, vt, byCfg, reuse, sigs, zones, &opened)
		if err != nil {
			return nil, nil, nil, opened, err
		}
		servers = append(servers, srv)
	}
	// Upstreams no server names directly: a proxy_pass $var may name them,
	// as nginx initialises every upstream block.
	for _, u := range cfg.Stream.Upstreams {
		if byCfg[u] == nil {
			if _, err := p.groupFor(u, vt, byCfg, reuse, sigs); err != nil {
				return nil, nil, nil, opened, err
			}
		}
	}
	vhostsOf(servers)
	rt := newRoutes(byCfg)
	for _, srv := range servers {
		srv.routes = rt
	}
	for _, al := range cfg.Stream.AccessLogs {
		// Opened (and checked) even when every server has its own, as nginx.
		if _, err := p.newAccessLog(al, vt, &opened); err != nil {
			return nil, nil, nil, opened, err
		}
	}
	seen := map[*group]bool{}
	for _, srv := range servers {
		if srv.group != nil && !seen[srv.group] {
			seen[srv.group] = true
			groups = append(groups, srv.group)
		}
	}
	for _, u := range cfg.Stream.Upstreams {
		if g := byCfg[u]; !seen[g] {
			seen[g] = true
			groups = append(groups, g)
		}
	}
	return servers, groups, zones, opened, nil
}

// groupFor returns u's group: made once per build, or kept from before a
// reload when u's signature is unchanged.
func (p *Proxy) groupFor(u *config.Upstream, vt *varTable, groups map[*config.Upstream]*group, reuse map[string]*group, sigs map[*config.Upstream]string) (*group, error) {
	if g, ok := groups[u]; ok {
		return g, nil
	}
	g := reuse[u.Name+"\x00"+sigs[u]]
	if g == nil {
		var err error
		var prev *group
		for _, o := range p.groups {
			if o.name == u.Name && o.res != nil {
				prev = o.current()
			}
		}
		if g, err = newGroupFrom(u, vt, prev); err != nil {
			pos := u.Pos
			if u.MethodPos.Line > 0 {
				pos = u.MethodPos
			}
			return nil, posError(pos, err)
		}
		g.sig = sigs[u]
	}
	groups[u] = g
	return g, nil
}

func (p *Proxy) newServer(cs *config.Server, vt *varTable, groups map[*config.Upstream]*group, reuse map[string]*group, sigs map[*config.Upstream]string, zones map[string]*connZone, opened *[]*logFile) (*server, error) {
	srv := &server{
		connectTimeout: int64(cs.ProxyConnectTimeout),
		proxyTimeout:   int64(cs.ProxyTimeout),
		nextUpstream:   cs.ProxyNextUpstream,
		nextTries:      cs.ProxyNextUpstreamTries,
		nextTimeout:    int64(cs.ProxyNextUpstreamTimeout),
		halfClose:      cs.ProxyHalfClose,
		listens:        cs.Listen,
		cfg:            cs,
		proxyResponses: cs.ProxyResponses,
		proxyRequests:  cs.ProxyRequests,
		ppOut:          cs.ProxyProtocol,
		ppTimeout:      int64(cs.ProxyProtocolTimeout),
		limitDryRun:    cs.LimitConnDryRun,
	}
	lv, err := ParseLevel(cs.LimitConnLogLevel)
	if err != nil {
		lv = LevelError
	}
	srv.limitLogLevel = lv
	for _, lc := range cs.LimitConns {
		z := zones[lc.Zone.Name]
		if z == nil {
			return nil, posErrorf(lc.Pos, "zero size shared memory zone %q", lc.Zone.Name)
		}
		srv.limits = append(srv.limits, limitRef{zone: z, n: lc.N})
	}
	if len(cs.Listen) > 0 {
		srv.name = cs.Listen[0].Text
	}
	srv.log = p.log
	if len(cs.ErrorLogs) > 0 {
		lf, err := p.serverErrorLog(cs.ErrorLogs, opened)
		if err != nil {
			return nil, err
		}
		srv.log = lf.elog
	}
	if err := srv.buildRouting(cs, vt); err != nil {
		return nil, err
	}
	if err := srv.buildUpsock(cs, vt); err != nil {
		return nil, err
	}
	if srv.ret == nil && srv.pass == nil && srv.passT == nil && !srv.passAddr.IsValid() && !cs.NoHandler {
		u := cs.Upstream
		if u == nil {
			return nil, posErrorf(cs.Pos, "no handler for server")
		}
		g, err := p.groupFor(u, vt, groups, reuse, sigs)
		if err != nil {
			return nil, err
		}
		srv.group = g
		if g.hasUnix() {
			for _, cl := range cs.Listen {
				if cl.UDP {
					return nil, posErrorf(cs.ProxyPassPos, "proxy_pass to unix: sockets from a udp listen is not supported yet")
				}
			}
			if cs.HealthCheck != nil && cs.HealthCheck.UDP {
				return nil, posErrorf(cs.HealthCheck.Pos, "\"health_check udp\" of unix: servers is not supported yet")
			}
		}
	}
	for _, al := range cs.AccessLogs {
		a, err := p.newAccessLog(al, vt, opened)
		if err != nil {
			return nil, err
		}
		srv.accessLogs = append(srv.accessLogs, a)
	}
	return srv, nil
}

// Start binds every listen address and starts the event loops. On error
// nothing stays bound.
func (p *Proxy) Start() error {
	if p.started {
		return ErrStarted
	}
	for _, srv := range p.servers {
		for _, cl := range srv.listens {
			if cl.Vhost {
				continue // another server's listen binds it (vhosts)
			}
			if cl.UDP {
				us, err := p.newUDPs(srv, cl)
				if err != nil {
					p.closeListeners()
					p.closeUDP()
					return posError(cl.Pos, err)
				}
				p.udp = append(p.udp, us...)
				continue
			}
			ln, err := p.bindListener(srv, cl)
			if err != nil {
				p.closeListeners()
				p.closeUDP()
				return err
			}
			p.listeners = append(p.listeners, ln)
		}
	}
	if addr := p.cfg.Baton.Metrics; addr != "" {
		if err := p.serveMetrics(addr); err != nil {
			p.closeListeners()
			p.closeUDP()
			return posError(p.cfg.Baton.Pos, err)
		}
	}
	p.started = true
	p.startMonitors(p.groups)
	awaitResolved(p.groups, firstResolveWait)
	for _, u := range p.udp {
		u.place(p.loopFor(u)) // before the loops start
	}
	reserveProcs(len(p.loops))
	for _, l := range p.loops {
		l.lns = slices.Clone(p.listeners) // before its goroutine starts
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			l.run()
		}()
	}
	go func() {
		p.wg.Wait()
		p.stopMetrics()
		p.reloadMu.Lock()
		stopMonitors(p.groups)
		p.reloadMu.Unlock()
		p.closeListeners()
		for _, l := range p.loops {
			l.closeFds()
		}
		p.closeLogs()
		close(p.done)
	}()
	return nil
}

// Addrs returns the bound listen addresses: TCP in config order, then UDP.
func (p *Proxy) Addrs() []net.Addr {
	var a []net.Addr
	for _, ln := range p.listeners {
		a = append(a, ln.addr)
	}
	for _, u := range p.udp {
		if u.retired.Load() || u.shard > 0 {
			continue // removed by a reload, still draining; or one address's shard
		}
		a = append(a, u.addr())
	}
	return a
}

// Done is closed when every loop has ended and every socket is closed.
func (p *Proxy) Done() <-chan struct{} { return p.done }

// Stats are the proxy's counters.
type Stats struct {
	Active int64  // live sessions
	Total  uint64 // sessions accepted since start
}

// Stats returns the current counters.
func (p *Proxy) Stats() Stats {
	return Stats{Active: p.active.Load(), Total: p.total.Load()}
}

// Shutdown stops accepting (the listening sockets are closed, so new
// connections are refused, as nginx does on SIGQUIT) and waits for live
// sessions to end. When ctx ends first, the remaining sessions are closed
// and ctx's error is returned.
func (p *Proxy) Shutdown(ctx context.Context) error {
	if !p.started {
		return p.Close()
	}
	p.reloadMu.Lock()
	p.shuttingDown = true
	p.reloadMu.Unlock()
	var wg sync.WaitGroup
	for _, l := range p.loops {
		wg.Add(1)
		ok := l.do(func() {
			l.disarm()
			l.draining = true
			for _, u := range slices.Clone(l.udps) {
				u.stop() // no new datagrams; live sessions still reply
			}
			wg.Done()
		})
		if !ok {
			wg.Done() // already ended
		}
	}
	wg.Wait()
	// No loop watches the listeners now; closing them refuses new clients.
	p.closeListeners()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.Close()
		<-p.done
		return ctx.Err()
	}
}

// Close closes every session and listener at once. It is idempotent and
// waits until everything is closed.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		if !p.started {
			for _, l := range p.loops {
				l.closeFds()
			}
			p.closeLogs()
			close(p.done)
			return
		}
		for _, l := range p.loops {
			l.do(func() {
				l.disarm()
				l.stopping = true // UDP listeners close with the loop's sessions
			})
		}
	})
	<-p.done
	return nil
}

// RemoveUnixSockets removes the socket files of the unix: listeners, as
// nginx does when it exits, unless a new binary took them over: call it
// only when this process's listeners die with it.
func (p *Proxy) RemoveUnixSockets() {
	p.listenersMu.Lock()
	defer p.listenersMu.Unlock()
	for _, ln := range p.listeners {
		if path := ln.cfg.Unix; path != "" {
			if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
				os.Remove(path)
			}
		}
	}
}

// closeUDP closes the UDP listeners Start already bound, for its error paths.
func (p *Proxy) closeUDP() {
	for _, u := range p.udp {
		u.discard()
	}
	p.udp = nil
}

func (p *Proxy) closeListeners() {
	p.listenersMu.Lock()
	defer p.listenersMu.Unlock()
	for _, ln := range p.listeners {
		if ln.fd >= 0 {
			unix.Close(ln.fd)
			ln.fd = -1
		}
	}
}

func (p *Proxy) closeLogs() {
	for _, lf := range p.logFiles {
		lf.close()
	}
	if p.ownLog {
		p.log.Close()
	}
}

// ReopenLogs reopens the error log and every access log (SIGUSR1).
func (p *Proxy) ReopenLogs() error {
	var errs []error
	if p.ownLog {
		errs = append(errs, p.log.Reopen())
	}
	for _, lf := range p.logFiles {
		errs = append(errs, lf.reopen())
	}
	return errors.Join(errs...)
}

// Logger returns the proxy's error log.
func (p *Proxy) Logger() *Logger { return p.log }
