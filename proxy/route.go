package proxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// What a server does with a session once admitted, beyond proxying to one
// upstream: "set" (nginx's preaccess phase, before limit_conn), "return"
// and "proxy_pass" with variables (the content phase).

// setOp is one "set" directive: the slot it writes and the value.
type setOp struct {
	slot  int
	value template
}

// buildVars makes the variable namespace of cfg: the built-in variables,
// then every variable the config defines, so that templates compiled
// afterwards (in any server, as nginx's variables are global) find them.
func buildVars(cfg *config.Config) (*varTable, error) {
	vt := newVarTable()
	for _, cs := range cfg.Stream.Servers {
		for _, st := range cs.Sets {
			if _, err := vt.settable(st.Var); err != nil {
				return nil, posError(st.Pos, err)
			}
		}
	}
	if err := defineLookups(cfg, vt); err != nil {
		return nil, err
	}
	return vt, nil
}

// newSessVars returns what a session of srv holds for variables, or nil
// when srv needs nothing beyond the record.
func (srv *server) newSessVars() *sessVars {
	if !srv.needVars {
		return nil
	}
	return &sessVars{set: make([][]byte, srv.vt.slots)}
}

// runSets runs the server's "set" directives in order.
func (s *session) runSets() {
	if len(s.srv.sets) > 0 {
		s.srv.runSets(s.sv, s.record(&s.loop.rec))
	}
}

// runSets runs srv's "set" directives, in order, for the session r
// describes, whose values sv holds (r.sv).
func (srv *server) runSets(sv *sessVars, r *record) {
	for _, op := range srv.sets {
		v := op.value.appendTo(nil, r)
		if v == nil {
			v = []byte{}
		}
		sv.set[op.slot] = v
	}
}

// routes finds the upstream a "proxy_pass $var" value names, as nginx's
// ngx_stream_proxy_handler: an upstream block by name, or an upstream a
// "proxy_pass ADDR" made by its host and port; otherwise an address with a
// port is proxied to as a one-server upstream of its own.
type routes struct {
	named  map[string]*group // "upstream NAME {}" by lower-cased name
	byAddr map[string]*group // implicit upstreams by lower-cased "host:port"

	mu    sync.Mutex
	adhoc map[string]*group // one-server groups for addresses and unix: paths, at most maxAdhoc
}

// maxAdhoc bounds the one-server groups kept for proxy_pass values that
// are addresses; beyond it each session gets its own (as nginx's, whose
// are per session).
const maxAdhoc = 1024

func newRoutes(groups map[*config.Upstream]*group) *routes {
	rt := &routes{named: map[string]*group{}, byAddr: map[string]*group{}, adhoc: map[string]*group{}}
	for u, g := range groups {
		if !u.Implicit {
			rt.named[strings.ToLower(u.Name)] = g
			continue
		}
		if strings.HasPrefix(u.Name, "unix:") {
			rt.byAddr[u.Name] = g
			continue
		}
		if a, msg := config.ParseURL(u.Name); msg == "" && !a.NoPort {
			rt.byAddr[addrKey(a)] = g
		}
	}
	return rt
}

// addrKey is how an implicit upstream is found by a value: its host,
// lower-cased, and port, as nginx compares them.
func addrKey(u config.URL) string {
	return strings.ToLower(u.Host) + ":" + strconv.Itoa(int(u.Port))
}

// routeErr is why a proxy_pass value names no upstream: nginx's log line
// text; the session ends with 500.
type routeErr string

// find returns the group value names.
func (rt *routes) find(value string) (*group, routeErr) {
	if path, ok := strings.CutPrefix(value, "unix:"); ok {
		if path == "" {
			return nil, routeErr(fmt.Sprintf("no path in the unix domain socket in upstream %q", value))
		}
		if g := rt.byAddr[value]; g != nil {
			return g, ""
		}
		return rt.adhocGroup(value, &config.UpstreamServer{Name: value, Unix: path, Weight: 1, MaxFails: 1, FailTimeout: 10e9})
	}
	u, msg := config.ParseURL(value)
	switch {
	case msg != "":
		return nil, routeErr(fmt.Sprintf("%s in upstream %q", msg, value))
	case u.NoPort:
		if g := rt.named[strings.ToLower(u.Host)]; g != nil {
			return g, ""
		}
		return nil, routeErr(fmt.Sprintf("no port in upstream %q", value))
	}
	if g := rt.byAddr[addrKey(u)]; g != nil {
		return g, ""
	}
	if !u.Addr.IsValid() {
		return nil, routeNeedsDNS
	}
	ap := netip.AddrPortFrom(u.Addr.Unmap(), u.Port)
	return rt.adhocGroup(ap.String(), &config.UpstreamServer{
		Name: value, Addrs: []netip.AddrPort{ap}, Weight: 1, MaxFails: 1, FailTimeout: 10e9,
	})
}

// adhocGroup returns the one-server group of a proxy_pass value that names
// no upstream, made once (up to maxAdhoc of them are kept).
func (rt *routes) adhocGroup(key string, us *config.UpstreamServer) (*group, routeErr) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if g := rt.adhoc[key]; g != nil {
		return g, ""
	}
	u := &config.Upstream{Name: us.Name, Implicit: true, Servers: []*config.UpstreamServer{us}}
	g, gerr := newGroup(u, builtinVars)
	if gerr != nil {
		return nil, routeErr(gerr.Error())
	}
	if len(rt.adhoc) < maxAdhoc {
		rt.adhoc[key] = g
	}
	return g, ""
}

// route evaluates the server's "proxy_pass $var" and makes what it names
// the session's group. On failure the session ends with 500, as nginx's.
func (s *session) route() bool {
	l := s.loop
	v := s.srv.pass.appendTo(l.keyBuf[:0], s.record(&l.rec))
	g, why := s.srv.routes.find(string(v))
	if why == routeNeedsDNS {
		if s.srv.resolver != nil {
			s.resolveRoute(string(v))
			return false
		}
		why = noResolver(string(v))
	}
	if g == nil {
		s.srv.log.Logf(LevelError, "*%d %s, client: %s, server: %s", s.id, why, s.client.Addr(), s.srv.name)
		s.finish(500)
		return false
	}
	s.group = g.current()
	return true
}

// content runs the server's content handler: "return", or proxying.
func (s *session) content() {
	if s.srv.noDelayOff || (s.x != nil && s.x.passes > 0) {
		s.clientNoDelay() // tcp_nodelay (upsock.go)
	}
	switch {
	case s.srv.cfg.NoHandler:
		s.srv.log.Logf(LevelDebug, "*%d no handler for server", s.id)
		s.finish(500)
	case s.srv.ret != nil:
		s.returnText()
	case s.srv.passT != nil || s.srv.passAddr.IsValid():
		s.passOn()
	case s.srv.pass != nil:
		if s.route() {
			s.connectNext()
		}
	default:
		s.connectNext()
	}
}

// returnTimeout bounds how long "return" waits for a client that does not
// take the text: 5 s, as nginx's ngx_stream_return_write_handler.
const returnTimeout = 5e9

// returnText sends the evaluated "return" value to the client and ends
// the session (200), as ngx_stream_return_module: at once when the text is
// empty or fits the socket, else when the rest has gone (stateReturning).
func (s *session) returnText() {
	l := s.loop
	text := s.srv.ret.appendTo(l.lineBuf[:0], s.record(&l.rec))
	if len(text) == 0 {
		s.finish(200)
		return
	}
	w, err := s.writeClient(text)
	if w > 0 {
		s.u2c.n += int64(w)
	}
	switch {
	case w == len(text) && !s.clientOutPending():
		s.finish(200)
		return
	case err != nil && err != unix.EAGAIN:
		s.ioError(writeOp(&s.u2c), err, s.cfd)
		return
	}
	s.u2c.hold(text[max(w, 0):])
	s.state = stateReturning
	s.cEvents = l.setInterest(s.cfd, s.cEvents, unix.EPOLLOUT)
	s.lastActive, s.timeout = l.now, returnTimeout
	l.schedule(s)
}

// returning writes more of the "return" text once the client's socket
// takes it.
func (s *session) returning() {
	f := &s.u2c
	w, err := s.writeClient(f.pend)
	if w > 0 {
		f.n += int64(w)
		f.pend = f.pend[w:]
		s.lastActive = s.loop.now
	}
	switch {
	case len(f.pend) == 0 && !s.clientOutPending():
		putPend(f.base)
		f.pend, f.base = nil, nil
		s.finish(200)
	case err != nil && err != unix.EAGAIN:
		s.ioError(writeOp(&s.u2c), err, s.cfd)
	}
}

// exportRouted is what s carries to a new process beyond version 2's
// state, or nil when it has nothing of routing.
func (s *session) exportRouted() *routedState {
	var none sessExtra
	x := s.x
	if x == nil {
		x = &none
	}
	if s.sv == nil && (s.group.origin() == s.srv.group || s.group == nil) && !x.ppDst.IsValid() && len(x.ppTLV) == 0 && x.vhost == "" &&
		x.pace[0] == nil && x.pace[1] == nil && len(x.prior) == 0 && x.rb.key == nil {
		return nil
	}
	r := &routedState{ppDst: x.ppDst, ppTLV: x.ppTLV, vhost: x.vhost, prior: x.prior}
	r.pace = pacedStates(x.pace, s.loop.now)
	if x.rb.key != nil {
		now := s.loop.now
		r.rb = &movedPlan{key: x.rb.key, planned: x.rb.at > 0, atIn: x.rb.at - now, endIn: x.rb.end - now, owner: x.rb.owner}
	}
	if s.group != nil && s.group.origin() != s.srv.group {
		r.group = s.group.name
	}
	if sv := s.sv; sv != nil {
		for name, d := range s.srv.vt.defs {
			if d.slot >= 0 && d.slot < len(sv.set) && sv.set[d.slot] != nil {
				r.sets = append(r.sets, name, string(sv.set[d.slot]))
			}
		}
		r.sni, r.alpn, r.proto, r.prereadDone = sv.sni, sv.alpn, sv.proto, sv.prereadDone
	}
	return r
}

// importRouted takes what a session moved from an old process carries of
// routing: its "set" values (by name: slots differ between configs), what
// it preread, and the upstream its proxy_pass $var named, found again in
// this config (a name it no longer has leaves the session without one: a
// session still connecting is then refused, one proxying goes on).
func (s *session) importRouted(m *movedState) {
	s.sv = s.srv.newSessVars()
	r := m.routed
	if r == nil {
		return
	}
	if r.ppDst.IsValid() || len(r.ppTLV) > 0 {
		s.ext().ppDst, s.ext().ppTLV = r.ppDst, r.ppTLV
	}
	if r.pace[0].rate > 0 || r.pace[1].rate > 0 {
		s.ext().moved = r.pace
	}
	if len(r.prior) > 0 {
		s.ext().prior = r.prior
	}
	if r.rb != nil {
		s.ext().importRb = r.rb
	}
	if r.vhost != "" && s.ln != nil {
		if v := s.vh; v != nil {
			if srv := v.find(r.vhost); srv != nil {
				s.srv, s.group = srv, srv.group.current()
				s.ext().vhost = r.vhost
			}
		}
	}
	if r.group != "" {
		s.group = nil
		if s.srv.routes != nil {
			g, _ := s.srv.routes.find(r.group)
			s.group = g.current()
		}
	}
	if s.sv == nil {
		s.sv = &sessVars{set: make([][]byte, s.srv.vt.slots)}
	}
	for i := 0; i+1 < len(r.sets); i += 2 {
		if d := s.srv.vt.defs[r.sets[i]]; d != nil && d.slot >= 0 && d.slot < len(s.sv.set) {
			s.sv.set[d.slot] = []byte(r.sets[i+1])
		}
	}
	s.sv.sni, s.sv.alpn, s.sv.proto, s.sv.prereadDone = r.sni, r.alpn, r.proto, r.prereadDone
	s.sv.prereadRan = r.prereadDone && len(r.proto) > 0 // a hello parsed (a declined one has no version)
}

// buildRouting compiles srv's "set", "return", "proxy_pass $var" and takes
// its preread settings.
func (srv *server) buildRouting(cs *config.Server, vt *varTable) error {
	srv.vt = vt
	for _, st := range cs.Sets {
		t, err := vt.compile(st.Value)
		if err != nil {
			return posError(st.Pos, err)
		}
		srv.sets = append(srv.sets, setOp{slot: vt.defs[st.Var].slot, value: t})
	}
	switch {
	case cs.Return != nil:
		t, err := vt.compile(cs.Return.Value)
		if err != nil {
			return posError(cs.Return.Pos, err)
		}
		if t == nil {
			t = template{} // "return '';" answers nothing and closes
		}
		srv.ret = t
	case cs.Pass != "":
		srv.passAddr = cs.PassAddr
		if cs.PassVars {
			t, err := vt.compile(cs.Pass)
			if err != nil {
				return posError(cs.PassPos, err)
			}
			srv.passT = t
		}
	case cs.ProxyPassVars:
		t, err := vt.compile(cs.ProxyPass)
		if err != nil {
			return posError(cs.ProxyPassPos, err)
		}
		srv.pass = t
		if r := cs.Resolver; r != nil {
			srv.resolver = newRouteResolver(r)
		}
		if cs.HealthCheck != nil {
			return posErrorf(cs.HealthCheck.Pos, "\"health_check\" needs \"proxy_pass\" without variables")
		}
	}
	srv.preread = cs.SSLPreread
	stls, err := newServerTLS(cs.TLS, vt, srv.log)
	if err != nil {
		return posError(cs.Pos, err)
	}
	srv.tls = stls
	srv.tlsReject = cs.TLS != nil && cs.TLS.RejectHandshake
	ptls, err := newUpstreamTLS(cs.ProxyTLS, vt)
	if err != nil {
		return posError(cs.Pos, err)
	}
	srv.ptls = ptls
	srv.prereadMax = cs.PrereadBufferSize
	srv.prereadTimeout = int64(cs.PrereadTimeout)
	for _, r := range []struct {
		text string
		t    *template
	}{{cs.ProxyUploadRate, &srv.upRate}, {cs.ProxyDownloadRate, &srv.downRate}} {
		if r.text == "" || r.text == "0" {
			continue
		}
		t, err := vt.compile(r.text)
		if err != nil {
			return posError(cs.Pos, err)
		}
		*r.t = t
	}
	srv.bufSize = cs.ProxyBufferSize
	srv.needVars = len(srv.sets) > 0 || srv.preread
	if len(cs.ServerNames) > 0 {
		sn := cs.ServerNames[0]
		switch {
		case sn.Regexp != nil:
			srv.serverName = "~" + sn.Name
		default:
			srv.serverName = strings.TrimPrefix(sn.Name, ".")
		}
	}
	return nil
}

// definesAny reports whether text reads a variable the config defines
// (not a built-in one).
func (vt *varTable) definesAny(text string) bool {
	for _, name := range varNames(text) {
		if d := vt.defs[name]; d != nil && d.changeable {
			return true
		}
	}
	return false
}

// runSets runs the server's "set" directives for a UDP session.
func (u *udpListener) runSets(s *udpSession) {
	if len(s.srv.sets) > 0 {
		s.srv.runSets(s.x.sv, s.record(&u.l.rec))
	}
}

// route evaluates a UDP session's "proxy_pass $var": 0, or 500 when the
// value names no upstream.
func (u *udpListener) route(s *udpSession) int {
	l := u.l
	v := s.srv.pass.appendTo(l.keyBuf[:0], s.record(&l.rec))
	g, why := s.srv.routes.find(string(v))
	if why == routeNeedsDNS {
		if s.srv.resolver != nil {
			return u.routeUDP(s, string(v))
		}
		why = noResolver(string(v))
	}
	if g == nil {
		s.srv.log.Logf(LevelError, "*%d %s, udp client: %s, server: %s", s.id, why, s.client.Addr(), s.srv.name)
		return 500
	}
	s.ext().group = g.current()
	return 0
}

// returnDatagram answers a UDP client with the server's "return" text, one
// datagram, as ngx_stream_return_module does over UDP (nothing for an
// empty text).
func (u *udpListener) returnDatagram(s *udpSession) {
	l := u.l
	text := s.srv.ret.appendTo(l.lineBuf[:0], s.record(&l.rec))
	l.lineBuf = text[:0]
	if len(text) == 0 || len(text) > sock.DatagramBufSize {
		return
	}
	out := u.replies()
	n := copy(out.bufs[out.n], text)
	out.add(s, n)
	s.sent = int64(n)
	s.responses = 1
}

// maxPasses bounds how often one connection is passed between servers
// (nginx's NGX_STREAM_PASS_MAX_PASSES).
const maxPasses = 10

// passOn runs "pass": the connection goes to the server of this process's
// TCP listener on the address, as if accepted there (its PROXY header,
// set, limits, access, preread and content), as ngx_stream_pass_module.
// Bytes already read (a preread) go with it, as nginx's peeked bytes stay
// in the socket. A wildcard listener on the port takes an address it does
// not list itself.
func (s *session) passOn() {
	l := s.loop
	addr := s.srv.passAddr
	if s.srv.passT != nil {
		v := string(s.srv.passT.appendTo(l.keyBuf[:0], s.record(&l.rec)))
		u, why := config.ParseURL(v)
		switch {
		case why != "":
			why += " in pass"
		case !u.Addr.IsValid():
			why = "no addresses in pass"
		case u.NoPort:
			why = "no port in pass"
		}
		if why != "" { // nginx's ngx_stream_pass_handler errors
			s.srv.log.Logf(LevelError, "*%d %s %q, client: %s, server: %s", s.id, why, v, s.client.Addr(), s.srv.name)
			s.finish(500)
			return
		}
		addr = netip.AddrPortFrom(u.Addr.Unmap(), u.Port)
	}
	if x := s.ext(); x.passes >= maxPasses {
		s.srv.log.Logf(LevelError, "*%d stream pass cycle, client: %s, server: %s", s.id, s.client.Addr(), s.srv.name)
		s.finish(500)
		return
	} else {
		x.passes++
	}
	var to *listener
	for _, ln := range l.lns {
		b := ln.cfg.Addr
		if b.Port() != addr.Port() {
			continue
		}
		if b.Addr() == addr.Addr() {
			to = ln
			break
		}
		if b.Addr().IsUnspecified() && b.Addr().Is4() == addr.Addr().Is4() && to == nil {
			to = ln
		}
	}
	if to == nil {
		s.srv.log.Logf(LevelError, "*%d port not found for \"%s\", client: %s, server: %s", s.id, addr, s.client.Addr(), s.srv.name)
		s.finish(200)
		return
	}
	if s.ln != nil {
		s.ln.active.Add(-1)
	}
	to.accepted.Add(1)
	to.active.Add(1)
	srv := to.srv
	s.ln, s.lcfg, s.vh, s.srv, s.group, s.local = to, to.cfg, srv.vhosts[to.key], srv, srv.group.current(), addr
	if s.sv == nil || srv.needVars {
		s.sv = srv.newSessVars()
	}
	if to.cfg.ProxyProtocol {
		s.hdr, s.early = s.early, nil
		s.state = stateHeader
		s.cEvents = l.setInterest(s.cfd, s.cEvents, unix.EPOLLIN|unix.EPOLLRDHUP)
		s.lastActive, s.timeout = l.now, srv.ppTimeout
		l.schedule(s)
		s.readProxyHeader()
		return
	}
	s.admit()
}
