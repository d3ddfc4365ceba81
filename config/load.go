package config

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
)

// Loader reads configurations. Its zero value is ready to use: each nil seam
// falls back to the real system, so tests can run without DNS or files.
type Loader struct {
	// LookupHost resolves host names in "listen", upstream "server" and
	// "proxy_pass". If nil, net.DefaultResolver is used.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)

	// ReadFile reads a config file. If nil, a regular file is read from disk
	// (at most 64 MiB); anything else, a FIFO or a device, is refused without
	// being opened. Either way one Load reads at most 64 MiB in all.
	ReadFile func(name string) ([]byte, error)

	// Glob expands an "include" pattern. If nil, filepath.Glob is used, with
	// its results sorted and filtered as glob(3) sorts and filters them.
	Glob func(pattern string) ([]string, error)
}

// Load reads the file at path and everything it includes, and returns the
// validated Config. On failure it returns a nil Config and an ErrorList.
func Load(path string) (*Config, error) { return (&Loader{}).Load(path) }

// Parse is Load for config text already in memory; name is used in
// positions, and relative includes resolve against its directory.
func Parse(name string, src []byte) (*Config, error) { return (&Loader{}).Parse(name, src) }

// Load reads the file at path and everything it includes.
func (ld *Loader) Load(path string) (*Config, error) {
	l := ld.newLoader(path)
	src, err := l.readFile(path)
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: openError(path, err)}}
	}
	return l.run(path, src)
}

// Parse is Load for config text already in memory.
func (ld *Loader) Parse(name string, src []byte) (*Config, error) {
	return ld.newLoader(name).run(name, src)
}

// loader holds the state of one Load.
type loader struct {
	ld     *Loader
	prefix string // directory of the main file: nginx's conf_prefix
	cfg    *Config
	errs   ErrorList
	fatal  bool     // a syntax error: stop reading
	stack  []string // files being read, for cycle detection
	seen   map[string]bool
	nfiles int
	nbytes int64 // read so far, of maxTotalSize

	// main-context state
	pidSet, rlimitSet, shutdownSet, eventsSet, connsSet, batonSet bool

	st *streamState
}

func (ld *Loader) newLoader(name string) *loader {
	return &loader{
		ld:     ld,
		prefix: filepath.Dir(name),
		cfg:    &Config{Baton: Baton{ControlSocket: DefaultControlSocket, UpgradeTimeout: DefaultUpgradeTimeout}},
		seen:   map[string]bool{},
	}
}

func (l *loader) run(name string, src []byte) (*Config, error) {
	l.cfg.Files = append(l.cfg.Files, name)
	l.seen[name] = true
	dirs, perr := parseFile(name, src)
	if perr != nil {
		return nil, ErrorList{perr}
	}
	l.stack = append(l.stack, filepath.Clean(name))
	l.each(dirs, ctxMain, l.mainDirective)
	if l.fatal {
		return nil, l.errs
	}
	if l.st != nil {
		l.finishStream()
	}
	if len(l.errs) > 0 {
		return nil, l.errs
	}
	if len(l.cfg.ErrorLogs) == 0 {
		l.cfg.ErrorLogs = []ErrorLog{{Level: "error"}} // standard error
	}
	l.cfg.ErrorLog = l.cfg.ErrorLogs[0]
	return l.cfg, nil
}

func (l *loader) errorf(d *directive, format string, a ...any) {
	l.errAt(d.pos, d.name, format, a...)
}

func (l *loader) errAt(pos Pos, name, format string, a ...any) {
	l.errs = append(l.errs, &Error{Pos: pos, Directive: name, Msg: fmt.Sprintf(format, a...)})
}

func (l *loader) warnf(pos Pos, format string, a ...any) {
	l.cfg.Warnings = append(l.cfg.Warnings, Warning{Pos: pos, Msg: fmt.Sprintf(format, a...)})
}

// each calls fn for every directive of dirs in order, reading "include"
// directives in place. It stops once a syntax error has been found. In a
// block of entries (ctxEntries) fn gets "include" lines too: each module
// reads them its own way, as nginx's map, geo and split_clients do.
func (l *loader) each(dirs []*directive, ctx scope, fn func(*directive)) {
	for _, d := range dirs {
		if l.fatal {
			return
		}
		if d.name == "include" && ctx != ctxEntries {
			if l.check(d, false, take(1)) {
				l.include(d, ctx, fn)
			}
			continue
		}
		fn(d)
	}
}

func (l *loader) mainDirective(d *directive) {
	switch d.name {
	case "stream":
		if !l.check(d, true, take(0)) {
			return
		}
		if l.st != nil {
			l.errorf(d, "\"stream\" directive is duplicate")
			return
		}
		l.stream(d)
	case "events":
		if !l.check(d, true, take(0)) {
			return
		}
		if l.eventsSet {
			l.errorf(d, "\"events\" directive is duplicate")
			return
		}
		l.eventsSet = true
		l.each(d.block, ctxEvents, l.eventsDirective)
	case "baton":
		if !l.check(d, true, take(0)) {
			return
		}
		if l.batonSet {
			l.errorf(d, "\"baton\" directive is duplicate")
			return
		}
		l.batonSet = true
		l.cfg.Baton.Pos = d.pos
		bs := &batonState{}
		l.each(d.block, ctxBaton, func(d *directive) { l.batonDirective(d, bs) })
	case "pid":
		if !l.check(d, false, take(1)) {
			return
		}
		if l.pidSet {
			l.errorf(d, "\"pid\" directive is duplicate")
			return
		}
		l.pidSet = true
		l.cfg.Pid = d.args[0]
	case "error_log":
		// Every error_log is used, each at its own level, as nginx's.
		if el, ok := l.errorLog(d); ok {
			l.cfg.ErrorLogs = append(l.cfg.ErrorLogs, el)
		}
	case "worker_rlimit_nofile":
		if !l.check(d, false, take(1)) {
			return
		}
		if l.rlimitSet {
			l.errorf(d, "\"worker_rlimit_nofile\" directive is duplicate")
			return
		}
		l.rlimitSet = true
		n, ok := atoiInt(d.args[0])
		if !ok {
			l.errorf(d, "\"worker_rlimit_nofile\" directive invalid number")
			return
		}
		l.cfg.WorkerRlimitNofile = n
	case "worker_shutdown_timeout":
		if !l.check(d, false, take(1)) {
			return
		}
		if l.shutdownSet {
			l.errorf(d, "\"worker_shutdown_timeout\" directive is duplicate")
			return
		}
		l.shutdownSet = true
		t, err := ParseDuration(d.args[0])
		if err != nil {
			l.errorf(d, "\"worker_shutdown_timeout\" directive invalid value")
			return
		}
		l.cfg.WorkerShutdownTimeout = t
	case "user":
		if l.check(d, false, take(1, 2)) {
			l.warnf(d.pos, "\"user\" directive is ignored: baton does not drop privileges; "+
				"run it as an unprivileged user with CAP_NET_BIND_SERVICE")
		}
	default:
		block, ok := ignoredMain[d.name]
		if !ok {
			l.refuse(d, ctxMain)
			return
		}
		if !l.check(d, block, func(int) bool { return true }) {
			return
		}
		if block {
			l.warnf(d.pos, "\"%s\" block is ignored by baton, with everything in it", d.name)
			return
		}
		l.warnf(d.pos, "\"%s\" directive is ignored by baton", d.name)
	}
}

func (l *loader) eventsDirective(d *directive) {
	if d.name == "worker_connections" {
		if !l.check(d, false, take(1)) {
			return
		}
		if l.connsSet {
			l.errorf(d, "\"worker_connections\" directive is duplicate")
			return
		}
		l.connsSet = true
		n, ok := atoiInt(d.args[0])
		if !ok {
			l.errorf(d, "invalid number \"%s\"", d.args[0])
			return
		}
		l.cfg.WorkerConnections = n
		return
	}
	if !ignoredEvents[d.name] {
		l.refuse(d, ctxEvents)
		return
	}
	if l.check(d, false, func(int) bool { return true }) {
		l.warnf(d.pos, "\"%s\" directive is ignored by baton", d.name)
	}
}

var logLevels = map[string]bool{
	"debug": true, "info": true, "notice": true, "warn": true, "error": true,
	"crit": true, "alert": true, "emerg": true,
	"debug_core": true, "debug_alloc": true, "debug_mutex": true, "debug_event": true,
	"debug_http": true, "debug_mail": true, "debug_stream": true,
}

// errorLog checks an "error_log FILE|stderr|syslog:... [LEVEL...]"
// directive, at any level (ngx_log_set_log).
func (l *loader) errorLog(d *directive) (ErrorLog, bool) {
	if !l.check(d, false, atLeast(1)) {
		return ErrorLog{}, false
	}
	el := ErrorLog{Pos: d.pos, Path: d.args[0], Level: "error"}
	switch {
	case strings.HasPrefix(el.Path, "memory:"):
		l.errorf(d, "\"error_log\" to \"memory:\" is not supported yet")
		return ErrorLog{}, false
	case strings.HasPrefix(el.Path, "syslog:"):
		if el.Syslog = l.syslog(d, el.Path); el.Syslog == nil {
			return ErrorLog{}, false
		}
	case el.Path == "stderr":
		el.Path = ""
	}
	for i, lv := range d.args[1:] {
		if !logLevels[lv] {
			l.errorf(d, "invalid log level \"%s\"", lv)
			return ErrorLog{}, false
		}
		if i == 0 {
			el.Level = lv
		}
	}
	return el, true
}

// lookupHost resolves host through the seam, IPv4 addresses first as nginx's
// ngx_inet_resolve_host orders them.
func (l *loader) lookupHost(host string) []netip.Addr {
	lookup := l.ld.LookupHost
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil
	}
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, a)
		} else if a.IsValid() {
			v6 = append(v6, a)
		}
	}
	return append(v4, v6...)
}
