package config

import (
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"
)

// The directives that choose what a server does with a connection once
// admitted: "set" (ngx_stream_set_module), "return"
// (ngx_stream_return_module), "ssl_preread" with "preread_buffer_size" and
// "preread_timeout" (ngx_stream_ssl_preread_module and the core module's
// preread phase), and "proxy_pass" with variables.

// Set is one "set $VAR VALUE" directive of a server.
type Set struct {
	Pos   Pos
	Var   string // the name without "$", lower-cased as nginx
	Value string // a template: text with variables
}

// Return is a server's "return VALUE": the server sends the evaluated value
// to the client and closes, instead of proxying.
type Return struct {
	Pos   Pos
	Value string // a template
}

// prereadConf holds the preread settings of one level (stream or server).
type prereadConf struct {
	sslPreread    bool
	sslPrereadSet bool
	bufferSize    int
	bufferSizeSet bool
	timeout       time.Duration
	timeoutSet    bool
}

// routeDirective handles the server-only routing directives and reports
// whether d was one of them.
func (l *loader) routeDirective(d *directive, ss *serverState) bool {
	switch d.name {
	case "set":
		if !l.check(d, false, take(2)) {
			return true
		}
		name := d.args[0]
		if !strings.HasPrefix(name, "$") {
			l.errorf(d, "invalid variable name \"%s\"", name)
			return true
		}
		if name == "$" {
			l.errorf(d, "invalid variable name \"$\"")
			return true
		}
		ss.srv.Sets = append(ss.srv.Sets, &Set{Pos: d.pos, Var: strings.ToLower(name[1:]), Value: d.args[1]})
	case "pass":
		if !l.check(d, false, take(1)) {
			return true
		}
		if ss.srv.Pass != "" {
			l.errorf(d, "\"pass\" directive is duplicate")
			return true
		}
		ss.handler = "pass"
		ss.srv.Pass, ss.srv.PassPos = d.args[0], d.pos
		if hasVariable(d.args[0]) {
			ss.srv.PassVars = true
			return true
		}
		u, msg := parseURL(d.args[0], false)
		switch {
		case msg != "":
			l.errorf(d, "%s in \"%s\" of the \"pass\" directive", msg, d.args[0])
		case !u.addr.IsValid():
			l.errorf(d, "\"pass\" directive has no addresses")
		case u.noPort:
			l.errorf(d, "\"pass\" directive has no port")
		default:
			ss.srv.PassAddr = netip.AddrPortFrom(u.addr, u.port)
		}
	case "return":
		if !l.check(d, false, take(1)) {
			return true
		}
		if ss.srv.Return != nil {
			l.errorf(d, "\"return\" directive is duplicate")
			return true
		}
		ss.srv.Return = &Return{Pos: d.pos, Value: d.args[0]}
		ss.handler = "return"
	default:
		return false
	}
	return true
}

// prereadSetting handles ssl_preread, preread_buffer_size and
// preread_timeout (stream and server) and reports whether d was one.
func (l *loader) prereadSetting(d *directive, pc *prereadConf) bool {
	switch d.name {
	case "ssl_preread", "preread_buffer_size", "preread_timeout":
	default:
		return false
	}
	if !l.check(d, false, take(1)) {
		return true
	}
	v := d.args[0]
	switch d.name {
	case "ssl_preread":
		if pc.sslPrereadSet {
			l.errorf(d, "\"%s\" directive is duplicate", d.name)
			return true
		}
		on, ok := l.flagArg(d)
		if !ok {
			return true
		}
		pc.sslPreread = on
		pc.sslPrereadSet = true
	case "preread_buffer_size":
		if pc.bufferSizeSet {
			l.errorf(d, "\"%s\" directive is duplicate", d.name)
			return true
		}
		n, err := ParseSize(v)
		if err != nil {
			l.errorf(d, "\"%s\" directive invalid value", d.name)
			return true
		}
		pc.bufferSize, pc.bufferSizeSet = int(n), true
	case "preread_timeout":
		if pc.timeoutSet {
			l.errorf(d, "\"%s\" directive is duplicate", d.name)
			return true
		}
		t, err := ParseDuration(v)
		if err != nil {
			l.errorf(d, "\"%s\" directive invalid value", d.name)
			return true
		}
		pc.timeout, pc.timeoutSet = t, true
	}
	return true
}

// finishPreread fills srv's preread settings, inherited from stream where
// the server sets none: ssl_preread off, a 16k buffer and 30s by default,
// as nginx.
func finishPreread(srv *Server, own, parent *prereadConf) {
	srv.SSLPreread = own.sslPreread
	if !own.sslPrereadSet {
		srv.SSLPreread = parent.sslPreread
	}
	srv.PrereadBufferSize = 16 << 10
	switch {
	case own.bufferSizeSet:
		srv.PrereadBufferSize = own.bufferSize
	case parent.bufferSizeSet:
		srv.PrereadBufferSize = parent.bufferSize
	}
	srv.PrereadTimeout = 30 * time.Second
	switch {
	case own.timeoutSet:
		srv.PrereadTimeout = own.timeout
	case parent.timeoutSet:
		srv.PrereadTimeout = parent.timeout
	}
}

// ServerName is one name of a "server_name" directive: a host name (lower
// case), a wildcard ("*.example.com", ".example.com", "www.example.*"), or
// a regex ("~^db\d+\.example\.com$", Regexp set).
type ServerName struct {
	Pos    Pos
	Name   string
	Regexp *regexp.Regexp
}

// serverName parses "server_name NAME..." as ngx_stream_core_server_name.
func (l *loader) serverName(d *directive, ss *serverState) {
	if !l.check(d, false, atLeast(1)) {
		return
	}
	for _, v := range d.args {
		if (v[0] == '*' && (len(v) < 3 || v[1] != '.')) || (v[0] == '.' && len(v) < 2) {
			l.errorf(d, "server name \"%s\" is invalid", v)
			return
		}
		if strings.Contains(v, "/") {
			l.warnf(d.pos, "server name \"%s\" has suspicious symbols", v)
		}
		sn := &ServerName{Pos: d.pos, Name: v}
		switch {
		case strings.EqualFold(v, "$hostname"):
			h, _ := os.Hostname()
			sn.Name = strings.ToLower(h)
		case v[0] != '~':
			sn.Name = strings.ToLower(v)
		default:
			if len(v) == 1 {
				l.errorf(d, "empty regex in server name \"%s\"", v)
				return
			}
			pat := v[1:]
			if strings.ContainsAny(pat, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
				pat = "(?i)" + pat // nginx: an upper-case letter makes it caseless
			}
			re, err := regexp.Compile(pat)
			if err != nil {
				l.errorf(d, "%s in server name \"%s\"", err, v)
				return
			}
			sn.Name, sn.Regexp = v[1:], re
		}
		ss.srv.ServerNames = append(ss.srv.ServerNames, sn)
	}
}

// linkVirtualServers makes every TCP address that several servers listen
// on one socket, as nginx's ngx_stream_add_addresses: the first server
// (or the one whose listen says default_server) owns it; the others are
// virtual servers chosen by name (server_name) once the client's TLS server
// name is known. The listen options of the listens are merged; options set
// on two of them are an error.
func (l *loader) linkVirtualServers() {
	type addrState struct {
		optsSet    bool
		defaultSet bool
		servers    []*Server
		listens    []*Listen
	}
	byKey := map[string]*addrState{}
	var order []string
	for _, srv := range l.st.s.Servers {
		for _, ln := range srv.Listen {
			if ln.UDP {
				continue
			}
			key := ln.Addr.String()
			if ln.Unix != "" {
				key = "unix:" + ln.Unix
			}
			a := byKey[key]
			if a == nil {
				a = &addrState{}
				byKey[key] = a
				order = append(order, key)
			}
			a.servers = append(a.servers, srv)
			a.listens = append(a.listens, ln)
			if ln.optsSet {
				if a.optsSet {
					l.errAt(ln.Pos, "listen", "duplicate listen options for %s", ln.Addr)
					continue
				}
				a.optsSet = true
			}
			if ln.DefaultServer {
				if a.defaultSet {
					l.errAt(ln.Pos, "listen", "a duplicate default server for %s", ln.Addr)
					continue
				}
				a.defaultSet = true
			}
		}
	}
	for _, key := range order {
		a := byKey[key]
		if len(a.listens) < 2 {
			continue
		}
		def := 0
		for i, ln := range a.listens {
			if ln.DefaultServer {
				def = i
			}
		}
		p := a.listens[def]
		pp := false
		for _, ln := range a.listens {
			pp = pp || ln.ProxyProtocol
			if ln.optsSet && ln != p {
				p.Backlog, p.ReusePort, p.SoKeepalive = ln.Backlog, ln.ReusePort, ln.SoKeepalive
			}
		}
		if pp != p.ProxyProtocol || anyDiffers(a.listens) {
			l.warnf(p.Pos, "protocol options redefined for %s", p.Addr)
		}
		p.ProxyProtocol = pp
		for _, ln := range a.listens {
			p.SSL = p.SSL || ln.SSL // "ssl" on any listen of the address makes its socket TLS, as nginx
		}
		p.Vhosts = a.servers
		for _, ln := range a.listens {
			if ln != p {
				ln.Vhost = true
			}
		}
	}
}

// anyDiffers reports whether the listens disagree on proxy_protocol.
func anyDiffers(lns []*Listen) bool {
	for _, ln := range lns[1:] {
		if ln.ProxyProtocol != lns[0].ProxyProtocol {
			return true
		}
	}
	return false
}

// openLogFileCache checks "open_log_file_cache max=N [inactive=T]
// [min_uses=N] [valid=T] | off" as nginx and accepts it: baton opens a
// variable access_log path for each line, which is what the cache saves
// nginx, and nothing a peer or the file sees differs.
func (l *loader) openLogFileCache(d *directive, pc *proxyConf) {
	if !l.check(d, false, atLeast(1)) {
		return
	}
	if !l.once(d, pc) {
		return
	}
	max, off := 0, false
	for _, v := range d.args {
		var err error
		switch {
		case strings.HasPrefix(v, "max="):
			var ok bool
			if max, ok = atoiInt(v[4:]); !ok {
				err = errInvalidValue
			}
		case strings.HasPrefix(v, "inactive="):
			_, err = ParseSeconds(v[9:])
		case strings.HasPrefix(v, "min_uses="):
			if _, ok := atoiInt(v[9:]); !ok {
				err = errInvalidValue
			}
		case strings.HasPrefix(v, "valid="):
			_, err = ParseSeconds(v[6:])
		case v == "off":
			off = true
		default:
			err = errInvalidValue
		}
		if err != nil {
			l.errorf(d, "invalid \"open_log_file_cache\" parameter \"%s\"", v)
			return
		}
	}
	if !off && max == 0 {
		l.errorf(d, "\"open_log_file_cache\" must have \"max\" parameter")
	}
}

// listenUnix reads "listen unix:PATH [params]": a Unix-domain stream
// socket. Of the parameters, backlog, default_server, proxy_protocol and
// bind mean something there; udp is not supported yet.
func (l *loader) listenUnix(d *directive, ss *serverState, path string) {
	if path == "" {
		l.errorf(d, "no path in the unix domain socket in \"%s\" of the \"listen\" directive", d.args[0])
		return
	}
	ln := &Listen{Pos: d.pos, Text: d.args[0], Backlog: 511, Unix: path}
	for _, p := range d.args[1:] {
		name, val, hasVal := strings.Cut(p, "=")
		switch {
		case p == "proxy_protocol":
			ln.ProxyProtocol = true
		case p == "default_server":
			ln.DefaultServer = true
		case p == "bind":
		case name == "backlog" && hasVal:
			n, ok := atoiInt(val)
			if !ok || n == 0 {
				l.errorf(d, "invalid backlog \"%s\"", p)
				return
			}
			ln.Backlog = n
		case p == "udp":
			l.errorf(d, "\"listen unix:... udp\" is not supported yet")
			return
		default:
			l.errorf(d, "the invalid \"%s\" parameter", p)
			return
		}
	}
	l.addListen(d, ss, ln, "unix:"+path, d.args[0])
}

// unixUpstream is the implicit upstream of "proxy_pass unix:PATH", shared
// by the servers that name the same path.
func (l *loader) unixUpstream(srv *Server, text string) *Upstream {
	key := strings.ToLower(text)
	if up := l.st.implicit[key]; up != nil {
		return up
	}
	us := newUpstreamServer(srv.ProxyPassPos, text)
	us.Unix = strings.TrimPrefix(text, "unix:")
	up := &Upstream{Pos: srv.ProxyPassPos, Name: text, Implicit: true, Servers: []*UpstreamServer{us}}
	l.st.implicit[key] = up
	return up
}
