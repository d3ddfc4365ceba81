package config

import (
	"net/netip"
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
		switch strings.ToLower(v) {
		case "on":
			pc.sslPreread = true
		case "off":
		default:
			l.errorf(d, "invalid value \"%s\" in \"%s\" directive, it must be \"on\" or \"off\"", v, d.name)
			return true
		}
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
