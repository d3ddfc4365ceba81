package config

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// streamState is what the stream block collects before finishStream links
// and merges it.
type streamState struct {
	s         *Stream
	proxy     proxyConf
	logs      logConf
	servers   []*serverState
	upstreams map[string]*Upstream // by lower-cased name: nginx matches names case-insensitively
	implicit  map[string]*Upstream // "proxy_pass ADDR" upstreams, shared by address as nginx
	listens   map[string]bool      // "tcp/ADDR:PORT" already bound
}

type serverState struct {
	srv       *Server
	proxy     proxyConf
	logs      logConf
	hasListen bool
	hasPass   bool
	pass      *url // the parsed proxy_pass, nil when it failed
}

// proxyConf holds the proxy_* directives of one level (stream or server).
type proxyConf struct {
	set            map[string]bool
	connectTimeout time.Duration
	timeout        time.Duration
	nextUpstream   bool
	tries          int
	nextTimeout    time.Duration
	halfClose      bool
}

// logConf holds the access_log directives of one level.
type logConf struct {
	set  bool // any access_log, "off" included
	logs []*AccessLog
}

func (l *loader) stream(d *directive) {
	st := &streamState{
		s:         &Stream{Pos: d.pos, LogFormats: map[string]*LogFormat{}},
		upstreams: map[string]*Upstream{},
		implicit:  map[string]*Upstream{},
		listens:   map[string]bool{},
	}
	l.st = st
	l.cfg.Stream = st.s
	l.each(d.block, ctxStream, l.streamDirective)
}

func (l *loader) streamDirective(d *directive) {
	st := l.st
	switch d.name {
	case "server":
		if !l.check(d, true, take(0)) {
			return
		}
		ss := &serverState{srv: &Server{Pos: d.pos}}
		st.servers = append(st.servers, ss)
		st.s.Servers = append(st.s.Servers, ss.srv)
		l.each(d.block, ctxServer, func(d *directive) { l.serverDirective(d, ss) })
		if !ss.hasListen && !l.fatal {
			l.errAt(d.pos, "server", "no \"listen\" is defined for server")
		}
	case "upstream":
		l.upstream(d)
	case "log_format":
		l.logFormat(d)
	case "access_log":
		l.accessLog(d, &st.logs)
	case "error_log":
		l.innerErrorLog(d)
	default:
		if !l.proxySetting(d, &st.proxy) {
			l.refuse(d, ctxStream)
		}
	}
}

func (l *loader) serverDirective(d *directive, ss *serverState) {
	switch d.name {
	case "listen":
		l.listen(d, ss)
	case "proxy_pass":
		l.proxyPass(d, ss)
	case "access_log":
		l.accessLog(d, &ss.logs)
	case "error_log":
		l.innerErrorLog(d)
	default:
		if !l.proxySetting(d, &ss.proxy) {
			l.refuse(d, ctxServer)
		}
	}
}

func (l *loader) innerErrorLog(d *directive) {
	if _, ok := l.errorLog(d); ok {
		l.warnf(d.pos, "\"error_log\" is only honoured at the top level; this one is ignored")
	}
}

// proxySetting handles the proxy_* directives valid in stream and server,
// and reports whether d was one of them.
func (l *loader) proxySetting(d *directive, pc *proxyConf) bool {
	switch d.name {
	case "proxy_connect_timeout", "proxy_timeout", "proxy_next_upstream_timeout",
		"proxy_next_upstream", "proxy_half_close", "proxy_next_upstream_tries":
	default:
		return false
	}
	if !l.check(d, false, take(1)) {
		return true
	}
	if pc.set == nil {
		pc.set = map[string]bool{}
	}
	if pc.set[d.name] {
		l.errorf(d, "\"%s\" directive is duplicate", d.name)
		return true
	}
	pc.set[d.name] = true
	v := d.args[0]
	switch d.name {
	case "proxy_connect_timeout", "proxy_timeout", "proxy_next_upstream_timeout":
		t, err := ParseDuration(v)
		if err != nil {
			l.errorf(d, "\"%s\" directive invalid value", d.name)
			return true
		}
		switch d.name {
		case "proxy_connect_timeout":
			pc.connectTimeout = t
		case "proxy_timeout":
			pc.timeout = t
		default:
			pc.nextTimeout = t
		}
	case "proxy_next_upstream", "proxy_half_close":
		var on bool
		switch strings.ToLower(v) {
		case "on":
			on = true
		case "off":
		default:
			l.errorf(d, "invalid value \"%s\" in \"%s\" directive, it must be \"on\" or \"off\"", v, d.name)
			return true
		}
		if d.name == "proxy_next_upstream" {
			pc.nextUpstream = on
		} else {
			pc.halfClose = on
		}
	case "proxy_next_upstream_tries":
		n, ok := atoiInt(v)
		if !ok {
			l.errorf(d, "\"%s\" directive invalid number", d.name)
			return true
		}
		pc.tries = n
	}
	return true
}

// listen parses "listen ADDR [params]". A host name binds every address it
// resolves to, one Listen each, as nginx.
func (l *loader) listen(d *directive, ss *serverState) {
	if !l.check(d, false, atLeast(1)) {
		return
	}
	ss.hasListen = true
	text := d.args[0]
	if strings.HasPrefix(text, "unix:") {
		l.errorf(d, "\"listen\" on a unix: socket is not supported yet")
		return
	}
	u, msg := parseURL(text, true)
	if msg != "" {
		l.errorf(d, "%s in \"%s\" of the \"listen\" directive", msg, text)
		return
	}
	if u.noPort {
		l.errorf(d, "no port in \"%s\" of the \"listen\" directive", text)
		return
	}
	proto := Listen{Pos: d.pos, Text: text, Backlog: 511}
	for _, p := range d.args[1:] {
		name, val, hasVal := strings.Cut(p, "=")
		switch {
		case p == "udp":
			proto.UDP = true
			l.errorf(d, "the \"udp\" parameter of the \"listen\" directive is not supported yet")
		case p == "reuseport":
			proto.ReusePort = true
		case name == "backlog" && hasVal:
			n, ok := atoiInt(val)
			if !ok || n == 0 {
				l.errorf(d, "invalid backlog \"%s\"", p)
				return
			}
			proto.Backlog = n
		case name == "so_keepalive" && hasVal:
			switch val {
			case "on":
				proto.SoKeepalive = true
			case "off":
				proto.SoKeepalive = false
			default:
				if !validKeepalive(val) {
					l.errorf(d, "invalid so_keepalive value: \"%s\"", val)
					return
				}
				l.errorf(d, "the \"so_keepalive=%s\" parameter of the \"listen\" directive is not supported yet (only on or off)", val)
			}
		case p == "bind" || p == "ssl" || p == "proxy_protocol" || p == "deferred" ||
			(hasVal && (name == "fastopen" || name == "setfib" || name == "rcvbuf" ||
				name == "sndbuf" || name == "accept_filter" || name == "ipv6only")):
			l.errorf(d, "the \"%s\" parameter of the \"listen\" directive is not supported yet", name)
		default:
			l.errorf(d, "the invalid \"%s\" parameter", p)
			return
		}
	}
	addrs := []netip.Addr{u.addr}
	if !u.addr.IsValid() {
		if addrs = l.lookupHost(u.host); len(addrs) == 0 {
			l.errorf(d, "host not found in \"%s\" of the \"listen\" directive", text)
			return
		}
	}
	for _, a := range addrs {
		ln := proto
		ln.Addr = netip.AddrPortFrom(a, u.port)
		key := "tcp/" + ln.Addr.String()
		if ln.UDP {
			key = "udp/" + ln.Addr.String()
		}
		if l.st.listens[key] {
			l.errorf(d, "duplicate \"%s\" address and port pair", ln.Addr)
			continue
		}
		l.st.listens[key] = true
		ss.srv.Listen = append(ss.srv.Listen, &ln)
	}
}

// validKeepalive reports whether v is nginx's "idle:intvl:cnt" form.
func validKeepalive(v string) bool {
	parts := strings.Split(v, ":")
	if len(parts) > 3 {
		return false
	}
	any := false
	for i, p := range parts {
		if p == "" {
			continue
		}
		any = true
		var err error
		if i < 2 {
			_, err = ParseSeconds(p)
		} else if _, ok := atoi(p); !ok {
			err = errInvalidValue
		}
		if err != nil {
			return false
		}
	}
	return any
}

func (l *loader) proxyPass(d *directive, ss *serverState) {
	if !l.check(d, false, take(1)) {
		return
	}
	if ss.hasPass {
		l.errorf(d, "\"proxy_pass\" directive is duplicate")
		return
	}
	ss.hasPass = true
	text := d.args[0]
	ss.srv.ProxyPass, ss.srv.ProxyPassPos = text, d.pos
	switch {
	case strings.HasPrefix(text, "unix:"):
		l.errorf(d, "\"proxy_pass\" to a unix: socket is not supported yet")
		return
	case hasVariable(text):
		l.errorf(d, "\"proxy_pass\" with variables is not supported yet")
		return
	}
	u, msg := parseURL(text, false)
	if msg != "" {
		l.errorf(d, "%s in upstream \"%s\"", msg, text)
		return
	}
	ss.pass = &u
}

func (l *loader) logFormat(d *directive) {
	if !l.check(d, false, atLeast(2)) {
		return
	}
	st := l.st
	name, rest := d.args[0], d.args[1:]
	if _, dup := st.s.LogFormats[name]; dup {
		l.errorf(d, "duplicate \"log_format\" name \"%s\"", name)
		return
	}
	lf := &LogFormat{Pos: d.pos, Name: name, Escape: "default"}
	if esc, ok := strings.CutPrefix(rest[0], "escape="); ok {
		switch esc {
		case "default", "json", "none":
			lf.Escape = esc
		default:
			l.errorf(d, "unknown log format escaping \"%s\"", esc)
			return
		}
		rest = rest[1:]
		if len(rest) == 0 {
			l.errorf(d, "invalid number of arguments in \"log_format\" directive")
			return
		}
	}
	lf.Format = strings.Join(rest, "")
	st.s.LogFormats[name] = lf
}

func (l *loader) accessLog(d *directive, lc *logConf) {
	if !l.check(d, false, atLeast(1)) {
		return
	}
	lc.set = true
	path := d.args[0]
	if path == "off" {
		if len(d.args) > 1 {
			l.errorf(d, "invalid parameter \"%s\"", d.args[1])
		}
		return
	}
	switch {
	case strings.HasPrefix(path, "syslog:"):
		l.errorf(d, "\"access_log\" to syslog is not supported yet")
		return
	case hasVariable(path):
		l.errorf(d, "\"access_log\" with variables in the path is not supported yet")
		return
	case len(d.args) < 2:
		l.errorf(d, "log format is not specified")
		return
	}
	lf := l.st.s.LogFormats[d.args[1]]
	if lf == nil {
		l.errorf(d, "unknown log format \"%s\"", d.args[1])
		return
	}
	for _, p := range d.args[2:] {
		name, _, _ := strings.Cut(p, "=")
		switch name {
		case "buffer", "gzip", "flush", "if":
			l.errorf(d, "the \"%s\" parameter of the \"access_log\" directive is not supported yet", name)
		default:
			l.errorf(d, "invalid parameter \"%s\"", p)
		}
		return
	}
	lc.logs = append(lc.logs, &AccessLog{Pos: d.pos, Path: path, Format: lf})
}

// finishStream links every proxy_pass to its upstream and fills each
// server's settings, inherited from stream where the server has none.
func (l *loader) finishStream() {
	st := l.st
	for _, ss := range st.servers {
		srv := ss.srv
		if !ss.hasPass {
			l.errAt(srv.Pos, "server", "no handler for server")
		} else if ss.pass != nil {
			srv.Upstream = l.passUpstream(srv, ss.pass)
		}
		merge := func(name string) *proxyConf {
			if ss.proxy.set[name] {
				return &ss.proxy
			}
			if st.proxy.set[name] {
				return &st.proxy
			}
			return nil
		}
		srv.ProxyConnectTimeout = 60 * time.Second
		if pc := merge("proxy_connect_timeout"); pc != nil {
			srv.ProxyConnectTimeout = pc.connectTimeout
		}
		srv.ProxyTimeout = 10 * time.Minute
		if pc := merge("proxy_timeout"); pc != nil {
			srv.ProxyTimeout = pc.timeout
		}
		srv.ProxyNextUpstream = true
		if pc := merge("proxy_next_upstream"); pc != nil {
			srv.ProxyNextUpstream = pc.nextUpstream
		}
		if pc := merge("proxy_next_upstream_tries"); pc != nil {
			srv.ProxyNextUpstreamTries = pc.tries
		}
		if pc := merge("proxy_next_upstream_timeout"); pc != nil {
			srv.ProxyNextUpstreamTimeout = pc.nextTimeout
		}
		if pc := merge("proxy_half_close"); pc != nil {
			srv.ProxyHalfClose = pc.halfClose
		}
		logs := ss.logs
		if !logs.set {
			logs = st.logs
		}
		srv.AccessLogs = append([]*AccessLog(nil), logs.logs...)
	}
}

// passUpstream finds or makes the upstream "proxy_pass" names, as nginx's
// ngx_stream_upstream_add and ngx_stream_upstream_init_round_robin.
func (l *loader) passUpstream(srv *Server, u *url) *Upstream {
	st := l.st
	pos, text := srv.ProxyPassPos, srv.ProxyPass
	named := st.upstreams[strings.ToLower(u.host)]
	if u.noPort {
		if named == nil {
			l.errAt(pos, "proxy_pass", "no port in upstream \"%s\"", text)
		}
		return named
	}
	if named != nil {
		l.errAt(pos, "proxy_pass", "upstream \"%s\" may not have port %d", u.host, u.port)
		return nil
	}
	key := strings.ToLower(u.host) + ":" + strconv.Itoa(int(u.port))
	if up := st.implicit[key]; up != nil {
		return up
	}
	addrs := []netip.Addr{u.addr}
	if !u.addr.IsValid() {
		if addrs = l.lookupHost(u.host); len(addrs) == 0 {
			l.errAt(pos, "proxy_pass", "host not found in upstream \"%s\"", u.host)
			return nil
		}
	}
	us := newUpstreamServer(pos, text)
	for _, a := range addrs {
		us.Addrs = append(us.Addrs, netip.AddrPortFrom(a, u.port))
	}
	up := &Upstream{Pos: pos, Name: text, Implicit: true, Servers: []*UpstreamServer{us}}
	st.implicit[key] = up
	return up
}
