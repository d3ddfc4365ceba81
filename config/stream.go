package config

import (
	"net/netip"
	"slices"
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
	shm       map[string]*shmZone  // shared memory zone names, as ngx_shared_memory_add
	limits    []pendingLimit       // limit_conn directives, linked to zones at the end
	preread   prereadConf
	logBufs   map[string][3]int64 // access_log paths: buffer=, flush=, gzip= as first defined
	mapHash   map[string]bool     // map_hash_bucket_size, map_hash_max_size seen
}

type serverState struct {
	srv       *Server
	proxy     proxyConf
	logs      logConf
	hasListen bool
	hasPass   bool
	pass      *url // the parsed proxy_pass, nil when it failed
	hc        *HealthCheck
	hcMatch   string          // health_check match=NAME, linked at the end
	listens   map[string]bool // this server's "tcp/ADDR" and "udp/ADDR"
	unixPass  string          // "proxy_pass unix:PATH"
	handler   string          // the content directive that came last: "proxy_pass" or "return", as nginx's cscf->handler
	preread   prereadConf
}

// proxyConf holds the settings of one level (stream or server) that a
// server inherits from stream when it sets none: the proxy_* directives and
// the other modules' stream/server directives.
type proxyConf struct {
	set            map[string]bool // scalar directives seen, for "is duplicate" and merging
	connectTimeout time.Duration
	timeout        time.Duration
	nextUpstream   bool
	tries          int
	nextTimeout    time.Duration
	halfClose      bool
	responses      int
	requests       int
	protocol       int
	ppTimeout      time.Duration // proxy_protocol_timeout
	hcTimeout      time.Duration // health_check_timeout
	limitLogLevel  string
	limitDryRun    bool
	bufferSize     int    // proxy_buffer_size
	uploadRate     string // proxy_upload_rate as written
	downloadRate   string
	bind           *bindConf // proxy_bind; nil: off
	keepalive      bool      // proxy_socket_keepalive
	noDelay        bool      // tcp_nodelay
	res            resolverConf
	tls            tlsConf
	ptls           proxyTLSConf

	// Array directives: as nginx's merge, a server inherits the stream's
	// only when it has none of its own.
	realIP     []netip.Prefix
	realIPUnix bool // set_real_ip_from unix:
	access     []*AccessRule
	limits     []*LimitConn
}

// logConf holds the access_log and error_log directives of one level.
type logConf struct {
	set       bool // any access_log, "off" included
	logs      []*AccessLog
	errorLogs []ErrorLog
}

func (l *loader) stream(d *directive) {
	st := &streamState{
		s: &Stream{Pos: d.pos, LogFormats: map[string]*LogFormat{},
			Matches: map[string]*Match{}, LimitConnZones: map[string]*LimitConnZone{}},
		upstreams: map[string]*Upstream{},
		implicit:  map[string]*Upstream{},
		listens:   map[string]bool{},
		shm:       map[string]*shmZone{},
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
		l.innerErrorLog(d, &st.logs)
	case "limit_conn_zone":
		l.limitConnZone(d)
	case "match":
		l.match(d)
	case "map":
		l.mapBlock(d)
	case "map_hash_bucket_size", "map_hash_max_size", "server_names_hash_bucket_size", "server_names_hash_max_size":
		l.mapHashSize(d)
	case "geo":
		l.geoBlock(d)
	case "split_clients":
		l.splitClients(d)
	default:
		if !l.levelSetting(d, &st.proxy) && !l.prereadSetting(d, &st.preread) {
			l.refuse(d, ctxStream)
		}
	}
}

func (l *loader) serverDirective(d *directive, ss *serverState) {
	switch d.name {
	case "listen":
		l.listen(d, ss)
	case "server_name":
		l.serverName(d, ss)
	case "proxy_pass":
		l.proxyPass(d, ss)
	case "access_log":
		l.accessLog(d, &ss.logs)
	case "error_log":
		l.innerErrorLog(d, &ss.logs)
	case "health_check":
		l.healthCheck(d, ss)
	default:
		if !l.levelSetting(d, &ss.proxy) && !l.prereadSetting(d, &ss.preread) && !l.routeDirective(d, ss) {
			l.refuse(d, ctxServer)
		}
	}
}

// levelSetting handles the directives valid in both stream and server, and
// reports whether d was one of them.
func (l *loader) levelSetting(d *directive, pc *proxyConf) bool {
	switch d.name {
	case "allow", "deny":
		l.accessRule(d, pc)
	case "set_real_ip_from":
		l.realIPFrom(d, pc)
	case "open_log_file_cache":
		l.openLogFileCache(d, pc)
	case "limit_conn":
		l.limitConn(d, pc)
	case "proxy_bind":
		l.proxyBind(d, pc)
	case "resolver", "resolver_timeout":
		l.resolverSetting(d, &pc.res)
	default:
		if l.tlsSetting(d, pc) || l.proxyTLSSetting(d, pc) {
			return true
		}
		return l.proxySetting(d, pc)
	}
	return true
}

// once records that pc's level has d, a directive that may appear once
// there; a second is an error, nginx's "is duplicate", and false.
func (l *loader) once(d *directive, pc *proxyConf) bool {
	if pc.set == nil {
		pc.set = map[string]bool{}
	}
	if pc.set[d.name] {
		l.errorf(d, "\"%s\" directive is duplicate", d.name)
		return false
	}
	pc.set[d.name] = true
	return true
}

// innerErrorLog takes an error_log of stream or server: the sessions of
// the servers it applies to log there instead of the top-level logs
// (ngx_stream_core_error_log; a server inherits the stream's when it has
// none).
func (l *loader) innerErrorLog(d *directive, lc *logConf) {
	if el, ok := l.errorLog(d); ok {
		lc.errorLogs = append(lc.errorLogs, el)
	}
}

// proxySetting handles the one-argument directives valid in stream and
// server (proxy_*, health_check_timeout, limit_conn_log_level,
// limit_conn_dry_run and tcp_nodelay), and reports whether d was one of
// them.
func (l *loader) proxySetting(d *directive, pc *proxyConf) bool {
	switch d.name {
	case "proxy_connect_timeout", "proxy_timeout", "proxy_next_upstream_timeout",
		"proxy_next_upstream", "proxy_half_close", "proxy_next_upstream_tries",
		"proxy_responses", "proxy_requests", "proxy_protocol", "proxy_protocol_timeout",
		"health_check_timeout", "limit_conn_log_level", "limit_conn_dry_run",
		"proxy_upload_rate", "proxy_download_rate", "proxy_buffer_size", "proxy_socket_keepalive", "tcp_nodelay":
	default:
		return false
	}
	if !l.check(d, false, take(1)) {
		return true
	}
	if !l.once(d, pc) {
		return true
	}
	v := d.args[0]
	switch d.name {
	case "proxy_buffer_size":
		n, err := ParseSize(v)
		if err != nil {
			l.errorf(d, "\"%s\" directive invalid value", d.name)
			return true
		}
		pc.bufferSize = int(n)
	case "proxy_upload_rate", "proxy_download_rate":
		// A size, or text with variables evaluated per session (nginx
		// 1.27.0+); 0 is no limit.
		if !hasVariable(v) {
			if _, err := ParseSize(v); err != nil {
				l.errorf(d, "\"%s\" directive invalid value", d.name)
				return true
			}
		}
		if d.name == "proxy_upload_rate" {
			pc.uploadRate = v
		} else {
			pc.downloadRate = v
		}
	case "proxy_connect_timeout", "proxy_timeout", "proxy_next_upstream_timeout",
		"proxy_protocol_timeout", "health_check_timeout":
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
		case "proxy_protocol_timeout":
			pc.ppTimeout = t
		case "health_check_timeout":
			pc.hcTimeout = t
		default:
			pc.nextTimeout = t
		}
	case "proxy_protocol":
		// "v2" is baton's extension: nginx's proxy_protocol is a flag and
		// sends version 1 only.
		versions := []string{"off", "on", "v2"} // the version sent, by index
		if v, ok := l.enumArg(d, "on", "off", "v2"); ok {
			pc.protocol = slices.Index(versions, v)
		}
	case "limit_conn_log_level":
		// ngx_conf_set_enum_slot: case-insensitive.
		switch lv := strings.ToLower(v); lv {
		case "info", "notice", "warn", "error":
			pc.limitLogLevel = lv
		default:
			l.errorf(d, "invalid value \"%s\"", v)
		}
	case "proxy_responses", "proxy_requests":
		n, ok := atoiInt(v)
		if !ok {
			l.errorf(d, "\"%s\" directive invalid number", d.name)
			return true
		}
		if d.name == "proxy_responses" {
			pc.responses = n
		} else {
			pc.requests = n
		}
	case "proxy_next_upstream", "proxy_half_close", "limit_conn_dry_run", "proxy_socket_keepalive", "tcp_nodelay":
		on, ok := l.flagArg(d)
		if !ok {
			return true
		}
		switch d.name {
		case "proxy_next_upstream":
			pc.nextUpstream = on
		case "proxy_half_close":
			pc.halfClose = on
		case "proxy_socket_keepalive":
			pc.keepalive = on
		case "tcp_nodelay":
			pc.noDelay = on
		default:
			pc.limitDryRun = on
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

// bindConf is one "proxy_bind" that is not "off".
type bindConf struct {
	pos         Pos
	text        string
	vars        bool
	addr        netip.AddrPort // without variables
	transparent bool
}

// proxyBind parses "proxy_bind ADDRESS [transparent] | off" as nginx's
// ngx_stream_proxy_bind: "off" (case-sensitive) only alone, and the
// address (with an optional port) checked here unless it has variables.
func (l *loader) proxyBind(d *directive, pc *proxyConf) {
	if !l.check(d, false, take(1, 2)) {
		return
	}
	if !l.once(d, pc) {
		return
	}
	v := d.args[0]
	if len(d.args) == 1 && v == "off" {
		return
	}
	b := &bindConf{pos: d.pos, text: v}
	if hasVariable(v) {
		if msg := complexValueError(v); msg != "" {
			l.errorf(d, "%s", msg)
			return
		}
		b.vars = true
	} else {
		ap, ok := ParseAddrPort(v)
		if !ok {
			l.errorf(d, "invalid address \"%s\"", v)
			return
		}
		b.addr = ap
	}
	if len(d.args) == 2 {
		if d.args[1] != "transparent" {
			l.errorf(d, "invalid parameter \"%s\"", d.args[1])
			return
		}
		b.transparent = true
	}
	pc.bind = b
}

// listen parses "listen ADDR [params]". A host name binds every address it
// resolves to, one Listen each, as nginx.
func (l *loader) listen(d *directive, ss *serverState) {
	if !l.check(d, false, atLeast(1)) {
		return
	}
	ss.hasListen = true
	text := d.args[0]
	if path, ok := strings.CutPrefix(text, "unix:"); ok {
		l.listenUnix(d, ss, path)
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
	proto := Listen{Pos: d.pos, Text: text, Backlog: 511, IPv6Only: true}
	nerrs := len(l.errs)
	var backlogSet, keepaliveSet, fastopenSet, deferredSet, multipathSet bool
	for _, p := range d.args[1:] {
		name, val, hasVal := strings.Cut(p, "=")
		switch {
		case p == "udp":
			proto.UDP = true
		case p == "proxy_protocol":
			proto.ProxyProtocol = true
		case p == "reuseport":
			proto.ReusePort = true
			proto.optsSet = true
		case p == "default_server":
			proto.DefaultServer = true
		case name == "backlog" && hasVal:
			n, ok := atoiInt(val)
			if !ok || n == 0 {
				l.errorf(d, "invalid backlog \"%s\"", p)
				return
			}
			proto.Backlog = n
			backlogSet = true
			proto.optsSet = true
		case name == "so_keepalive" && hasVal:
			keepaliveSet = true
			proto.optsSet = true
			switch val {
			case "on":
				proto.SoKeepalive = true
			case "off":
				proto.SoKeepalive = false
			default:
				idle, intvl, cnt, ok := parseKeepalive(val)
				if !ok {
					l.errorf(d, "invalid so_keepalive value: \"%s\"", val)
					return
				}
				proto.SoKeepalive = true
				proto.KeepIdle, proto.KeepIntvl, proto.KeepCnt = idle, intvl, cnt
			}
		case p == "bind":
			proto.optsSet = true // each listen is bound on its own already
		case name == "fastopen" && hasVal:
			n, ok := atoiInt(val)
			if !ok {
				l.errorf(d, "invalid fastopen \"%s\"", p)
				return
			}
			proto.FastOpen, fastopenSet, proto.optsSet = n, true, true
		case (name == "rcvbuf" || name == "sndbuf") && hasVal:
			n, err := ParseSize(val)
			if err != nil {
				l.errorf(d, "invalid %s \"%s\"", name, p)
				return
			}
			if name == "rcvbuf" {
				proto.RcvBuf = int(n)
			} else {
				proto.SndBuf = int(n)
			}
			proto.optsSet = true
		case name == "accept_filter" && hasVal:
			l.warnf(d.pos, "accept filters \"%s\" are not supported on this platform, ignored", p)
		case p == "deferred":
			proto.Deferred, deferredSet, proto.optsSet = true, true, true
		case strings.HasPrefix(p, "ipv6only=o"):
			switch p[len("ipv6only=o"):] {
			case "n":
				proto.IPv6Only = true
			case "ff":
				proto.IPv6Only = false
			default:
				l.errorf(d, "invalid ipv6only flags \"%s\"", p[len("ipv6only="):])
				return
			}
			proto.optsSet = true
		case p == "multipath":
			proto.Multipath, multipathSet, proto.optsSet = true, true, true
		case p == "ssl":
			proto.SSL = true
		default:
			l.errorf(d, "the invalid \"%s\" parameter", p)
			return
		}
	}
	if len(l.errs) > nerrs {
		return
	}
	if proto.UDP {
		// As ngx_stream_core_listen, in its order; the message is nginx's
		// "\"listen\" directive " followed by the handler's returned text.
		for _, c := range []struct {
			set  bool
			name string
		}{{fastopenSet, "fastopen"}, {backlogSet, "backlog"}, {deferredSet, "deferred"}, {multipathSet, "multipath"},
			{keepaliveSet, "so_keepalive"}, {proto.SSL, "ssl"}, {proto.ProxyProtocol, "proxy_protocol"}} {
			if c.set {
				l.errorf(d, "\"listen\" directive \"%s\" parameter is incompatible with \"udp\"", c.name)
				return
			}
		}
	}
	addrs := []netip.Addr{u.addr}
	if !u.addr.IsValid() {
		if addrs = l.lookupHost(u.host); len(addrs) == 0 {
			l.errorf(d, "host not found in \"%s\" of the \"listen\" directive", text)
			return
		}
	}
	last := u.port
	if u.lastPort != 0 {
		last = u.lastPort // a port range: a socket for each, as nginx 1.27.3
	}
	for i := 0; i <= int(last-u.port); i++ {
		for _, a := range addrs {
			l.listenOn(d, ss, proto, netip.AddrPortFrom(a, u.port+uint16(i)), u.lastPort != 0)
		}
	}
}

// listenOn records one address of a listen directive (one of a host's
// addresses, one port of a range).
func (l *loader) listenOn(d *directive, ss *serverState, proto Listen, ap netip.AddrPort, ranged bool) {
	ln := proto
	ln.Addr = ap
	if ranged {
		ln.Text = ap.String() // each port of a range is named by itself
	}
	if ln.UDP {
		l.addListen(d, ss, &ln, "udp/"+ap.String(), ap.String())
	} else {
		l.addListen(d, ss, &ln, "tcp/"+ap.String(), ap.String())
	}
}

// addListen records ln, keyed key (shown as in messages), for ss: a second
// listen of one server on it is nginx's "a duplicate listen"; several
// servers may share a TCP or unix: one (virtual servers, linked at the end)
// but not a UDP one, which has no server name to choose by.
func (l *loader) addListen(d *directive, ss *serverState, ln *Listen, key, shown string) {
	if ss.listens[key] {
		l.errorf(d, "a duplicate listen %s", shown)
		return
	}
	if ss.listens == nil {
		ss.listens = map[string]bool{}
	}
	ss.listens[key] = true
	if ln.UDP && l.st.listens[key] {
		l.errorf(d, "duplicate \"%s\" address and port pair", shown)
		return
	}
	l.st.listens[key] = true
	ss.srv.Listen = append(ss.srv.Listen, ln)
}

// parseKeepalive reads nginx's "[keepidle][:[keepintvl][:[keepcnt]]]"
// (times in seconds, with units; 0 or empty: the system's value), as
// ngx_stream_core_listen: at least one must be set.
func parseKeepalive(v string) (idle, intvl time.Duration, cnt int, ok bool) {
	parts := strings.SplitN(v, ":", 3)
	for i, p := range parts {
		if p == "" {
			continue
		}
		switch i {
		case 0, 1:
			t, err := ParseSeconds(p)
			if err != nil {
				return 0, 0, 0, false
			}
			if i == 0 {
				idle = t
			} else {
				intvl = t
			}
		default:
			n, ok := atoiInt(p)
			if !ok {
				return 0, 0, 0, false
			}
			cnt = n
		}
	}
	return idle, intvl, cnt, idle != 0 || intvl != 0 || cnt != 0
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
	ss.handler = "proxy_pass"
	text := d.args[0]
	ss.srv.ProxyPass, ss.srv.ProxyPassPos = text, d.pos
	switch {
	case hasVariable(text):
		// Evaluated per session (proxy): an upstream's name or an address.
		ss.srv.ProxyPassVars = true
		return
	case strings.HasPrefix(text, "unix:"):
		if text == "unix:" {
			l.errorf(d, "no path in the unix domain socket in upstream \"%s\"", text)
			return
		}
		ss.unixPass = text
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
	al := &AccessLog{Pos: d.pos, Path: path}
	switch {
	case strings.HasPrefix(path, "syslog:"):
		if al.Syslog = l.syslog(d, path); al.Syslog == nil {
			return
		}
	case hasVariable(path):
		if msg := complexValueError(path); msg != "" {
			l.errorf(d, "%s", msg)
			return
		}
		al.PathVars = true
	}
	if len(d.args) < 2 {
		l.errorf(d, "log format is not specified")
		return
	}
	if al.Format = l.st.s.LogFormats[d.args[1]]; al.Format == nil {
		l.errorf(d, "unknown log format \"%s\"", d.args[1])
		return
	}
	for _, p := range d.args[2:] {
		name, _, hasValue := strings.Cut(p, "=")
		switch {
		case strings.HasPrefix(p, "if="):
			// nginx compiles the condition as a complex value: an empty
			// one is the constant "", which never logs, as "0" does.
			if al.If = p[len("if="):]; al.If == "" {
				al.If = "0"
			}
		case name == "buffer" && hasValue:
			v := p[len("buffer="):]
			n, err := ParseSize(v)
			if err != nil || n == 0 {
				l.errorf(d, "invalid buffer size \"%s\"", v)
				return
			}
			al.Buffer = int(n)
		case name == "flush" && hasValue:
			v := p[len("flush="):]
			t, err := ParseDuration(v)
			if err != nil || t == 0 {
				l.errorf(d, "invalid flush time \"%s\"", v)
				return
			}
			al.Flush = t
		case p == "gzip" || strings.HasPrefix(p, "gzip="):
			if al.Buffer == 0 {
				al.Buffer = 64 << 10
			}
			al.Gzip = 1
			if v, ok := strings.CutPrefix(p, "gzip="); ok {
				n, ok := atoiInt(v)
				if !ok || n < 1 || n > 9 {
					l.errorf(d, "invalid compression level \"%s\"", v)
					return
				}
				al.Gzip = n
			}
		default:
			l.errorf(d, "invalid parameter \"%s\"", p)
			return
		}
	}
	switch {
	case al.Flush > 0 && al.Buffer == 0:
		l.errorf(d, "no buffer is defined for access_log \"%s\"", path)
		return
	case al.Buffer > 0 && al.PathVars:
		l.errorf(d, "buffered logs cannot have variables in name")
		return
	case al.Buffer > 0 && al.Syslog != nil:
		l.errorf(d, "logs to syslog cannot be buffered")
		return
	}
	if al.Buffer > 0 {
		// One file, one buffer: every buffered access_log naming it must
		// agree (an unbuffered one shares the buffer, as nginx).
		if l.st.logBufs == nil {
			l.st.logBufs = map[string][3]int64{}
		}
		params := [3]int64{int64(al.Buffer), int64(al.Flush), int64(al.Gzip)}
		if prev, ok := l.st.logBufs[path]; ok && prev != params {
			l.errorf(d, "access_log \"%s\" already defined with conflicting parameters", path)
			return
		}
		l.st.logBufs[path] = params
	}
	lc.logs = append(lc.logs, al)
}

// finishStream links every proxy_pass to its upstream and fills each
// server's settings, inherited from stream where the server has none.
func (l *loader) finishStream() {
	st := l.st
	l.finishResolve(&st.proxy.res)
	for _, ss := range st.servers {
		srv := ss.srv
		switch {
		case ss.handler == "":
			// Accepted, as nginx 1.25.5+ (a virtual server may only choose
			// certificates): its sessions end with 500 (NoHandler).
			srv.NoHandler = true
		case ss.handler == "return":
			// The last content directive wins, as nginx's cscf->handler.
			srv.ProxyPass, srv.ProxyPassVars, srv.Pass = "", false, ""
		case ss.handler == "pass":
			srv.ProxyPass, srv.ProxyPassVars, srv.Return = "", false, nil
		default:
			srv.Return, srv.Pass = nil, ""
			if ss.pass != nil {
				srv.Upstream = l.passUpstream(srv, ss.pass)
			} else if ss.unixPass != "" {
				srv.Upstream = l.unixUpstream(srv, ss.unixPass)
			}
		}
		finishPreread(srv, &ss.preread, &st.preread)
		srv.Resolver = mergeResolver(&ss.proxy.res, &st.proxy.res)
		srv.ProxyTLS = l.finishProxyTLS(srv, &ss.proxy, &st.proxy)
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
		srv.ProxyResponses = -1 // nginx: NGX_MAX_INT_T_VALUE, not limited
		if pc := merge("proxy_responses"); pc != nil {
			srv.ProxyResponses = pc.responses
		}
		if pc := merge("proxy_requests"); pc != nil {
			srv.ProxyRequests = pc.requests
		}
		if pc := merge("proxy_protocol"); pc != nil {
			srv.ProxyProtocol = pc.protocol
		}
		srv.ProxyProtocolTimeout = 30 * time.Second
		if pc := merge("proxy_protocol_timeout"); pc != nil {
			srv.ProxyProtocolTimeout = pc.ppTimeout
		}
		srv.LimitConnLogLevel = "error"
		if pc := merge("limit_conn_log_level"); pc != nil {
			srv.LimitConnLogLevel = pc.limitLogLevel
		}
		if pc := merge("limit_conn_dry_run"); pc != nil {
			srv.LimitConnDryRun = pc.limitDryRun
		}
		if pc := merge("proxy_buffer_size"); pc != nil {
			srv.ProxyBufferSize = pc.bufferSize
		}
		if pc := merge("proxy_upload_rate"); pc != nil {
			srv.ProxyUploadRate = pc.uploadRate
		}
		if pc := merge("proxy_download_rate"); pc != nil {
			srv.ProxyDownloadRate = pc.downloadRate
		}
		if pc := merge("proxy_bind"); pc != nil && pc.bind != nil {
			b := pc.bind
			srv.ProxyBind, srv.ProxyBindPos, srv.ProxyBindVars = b.text, b.pos, b.vars
			srv.ProxyBindAddr, srv.ProxyBindTransparent = b.addr, b.transparent
		}
		if pc := merge("proxy_socket_keepalive"); pc != nil {
			srv.ProxySocketKeepalive = pc.keepalive
		}
		if pc := merge("tcp_nodelay"); pc != nil {
			srv.TCPNoDelayOff = !pc.noDelay
		}
		srv.SetRealIPFrom = inherit(ss.proxy.realIP, st.proxy.realIP)
		srv.SetRealIPFromUnix = ss.proxy.realIPUnix
		if len(ss.proxy.realIP) == 0 && !ss.proxy.realIPUnix {
			srv.SetRealIPFromUnix = st.proxy.realIPUnix
		}
		srv.Access = inherit(ss.proxy.access, st.proxy.access)
		srv.LimitConns = inherit(ss.proxy.limits, st.proxy.limits)
		if hc := ss.hc; hc != nil {
			hc.Timeout = 5 * time.Second
			if pc := merge("health_check_timeout"); pc != nil {
				hc.Timeout = pc.hcTimeout
			}
			if ss.hcMatch != "" {
				if hc.Match = st.s.Matches[ss.hcMatch]; hc.Match == nil {
					l.errAt(hc.Pos, "health_check", "unknown match \"%s\"", ss.hcMatch)
				}
			}
			srv.HealthCheck = hc
		}
		logs := ss.logs
		if !logs.set {
			logs = st.logs
		}
		srv.AccessLogs = append([]*AccessLog(nil), logs.logs...)
		srv.ErrorLogs = inherit(ss.logs.errorLogs, st.logs.errorLogs)
		if len(srv.SetRealIPFrom) == 0 {
			var last *Listen
			for _, ln := range srv.Listen {
				if ln.ProxyProtocol && (last == nil || last.Pos != ln.Pos || last.Text != ln.Text) {
					l.warnf(ln.Pos, "the PROXY header of clients of %s is not trusted for $remote_addr: no \"set_real_ip_from\"", ln.Text)
					last = ln
				}
			}
		}
	}
	st.s.AccessLogs = st.logs.logs
	l.linkLimitConns()
	l.linkVirtualServers()
	// TLS once the virtual servers are linked: a server sharing an address
	// whose socket is "ssl" may be chosen by the client's server name.
	shared := map[*Server]bool{}
	for _, ss := range st.servers {
		for _, ln := range ss.srv.Listen {
			if ln.SSL {
				for _, v := range ln.Vhosts {
					shared[v] = true
				}
			}
		}
	}
	for _, ss := range st.servers {
		ss.srv.TLS = l.finishTLS(ss.srv, &ss.proxy, &st.proxy, shared[ss.srv])
	}
}

// inherit is nginx's merge of an array directive: the server's own list, or
// the stream's when the server has none. The result is a fresh slice.
func inherit[T any](own, parent []T) []T {
	if len(own) == 0 {
		own = parent
	}
	return append([]T(nil), own...)
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
