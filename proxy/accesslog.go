package proxy

import (
	"bytes"
	"compress/gzip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/syslog"
)

// logFile is a log destination that servers share and a reload keeps, by
// key (its path field): an access_log file (f, keyed by its path), an
// access_log syslog server (sys, keyed by the "syslog:..." target as
// written), or the error_log set of servers that have their own (elog,
// keyed by errorLogKey). Exactly one of f, sys and elog is set.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
	sys  *syslog.Peer
	elog *Logger

	// buffer= (and flush=, gzip=): lines wait in buf, written when the
	// next would not fit, flushEvery after the first line waits, at a
	// reopen and at close, as nginx's ngx_stream_log_write. gzip > 0
	// compresses each write as one gzip member (nginx's level; 0: plain).
	buf        []byte
	flushEvery time.Duration
	gzip       int
	flushing   *time.Timer // armed while lines wait (flushEvery > 0)
}

// openAppend opens an access_log path as nginx does: append, creating it 0644.
func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// write appends one line to an access_log file: one write(2), as nginx
// without buffer=, or into the buffer.
func (lf *logFile) write(line []byte) {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.buf == nil {
		lf.f.Write(line) // an access log that cannot be written must not stop traffic
		return
	}
	if len(lf.buf)+len(line) > cap(lf.buf) {
		lf.flushLocked()
	}
	if len(line) > cap(lf.buf) {
		lf.writeOut(line)
		return
	}
	lf.buf = append(lf.buf, line...)
	if lf.flushEvery > 0 && lf.flushing == nil {
		lf.flushing = time.AfterFunc(lf.flushEvery, lf.flush)
	}
}

// setBuffer makes lf buffered (access_log buffer=, flush=, gzip=).
func (lf *logFile) setBuffer(size int, every time.Duration, gzipLevel int) {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.buf == nil {
		lf.buf = make([]byte, 0, size)
	}
	lf.flushEvery, lf.gzip = every, gzipLevel
}

// flush writes out what waits in the buffer (flush= passing).
func (lf *logFile) flush() {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	lf.flushLocked()
}

func (lf *logFile) flushLocked() {
	if lf.flushing != nil {
		lf.flushing.Stop()
		lf.flushing = nil
	}
	if len(lf.buf) == 0 || lf.f == nil {
		return
	}
	lf.writeOut(lf.buf)
	lf.buf = lf.buf[:0]
}

// writeOut writes b to the file, as one gzip member if gzip= is set.
func (lf *logFile) writeOut(b []byte) {
	if lf.gzip == 0 {
		lf.f.Write(b)
		return
	}
	var z bytes.Buffer
	w, err := gzip.NewWriterLevel(&z, lf.gzip)
	if err != nil {
		return
	}
	w.Write(b)
	w.Close()
	lf.f.Write(z.Bytes())
}

// reopen reopens a file after logrotate (SIGUSR1); a syslog socket is
// left alone.
func (lf *logFile) reopen() error {
	switch {
	case lf.elog != nil:
		return lf.elog.Reopen()
	case lf.f == nil:
		return nil
	}
	f, err := openAppend(lf.path)
	if err != nil {
		return err
	}
	lf.mu.Lock()
	lf.flushLocked() // what waits belongs to the file being rotated away
	old := lf.f
	lf.f = f
	lf.mu.Unlock()
	return old.Close()
}

func (lf *logFile) close() error {
	switch {
	case lf.elog != nil:
		return lf.elog.Close()
	case lf.sys != nil:
		return lf.sys.Close()
	}
	lf.mu.Lock()
	defer lf.mu.Unlock()
	lf.flushLocked()
	if lf.f == nil {
		return nil
	}
	return lf.f.Close()
}

// logEscape is a log_format's escape= parameter: how variable values (not
// the format's own text) are written into a line.
type logEscape uint8

const (
	escapeDefault logEscape = iota // `"`, `\` and bytes below 0x20 or from 0x7f as \xXX (ngx_stream_log_escape)
	escapeJSON                     // as in a JSON string (ngx_escape_json)
	escapeNone                     // as they are
)

func parseEscape(s string) logEscape {
	switch s {
	case "json":
		return escapeJSON
	case "none":
		return escapeNone
	}
	return escapeDefault
}

// accessLog is one access_log directive of a server: where, in what
// format, and on what condition.
type accessLog struct {
	file   *logFile // a file, or a syslog server (file.sys); nil with path
	path   template // a path with variables: opened for each line
	format template
	escape logEscape
	cond   template // if=: nil when always
}

// logAccess writes srv's access-log lines for the session r describes, as
// ngx_stream_log_handler: a log whose if= condition evaluates to "" or
// "0" is skipped; a syslog line gets the syslog header (severity= of the
// target, info by default) and no newline. buf is scratch space; it is
// returned, emptied, for the next call.
func (srv *server) logAccess(buf []byte, r *record) []byte {
	for i := range srv.accessLogs {
		al := &srv.accessLogs[i]
		if al.cond != nil {
			buf = al.cond.appendTo(buf[:0], r)
			if len(buf) == 0 || len(buf) == 1 && buf[0] == '0' {
				continue
			}
		}
		if al.path != nil {
			buf = al.writeByPath(buf[:0], r, srv)
			continue
		}
		sys := al.file.sys
		if sys == nil {
			buf = al.format.appendLog(buf[:0], r, al.escape)
			buf = append(buf, '\n')
			al.file.write(buf)
			continue
		}
		buf = sys.AppendHeader(buf[:0], -1, time.Now())
		buf = al.format.appendLog(buf, r, al.escape)
		if err := sys.Send(buf); err != nil {
			// As nginx, at warn: below the default error_log level, so a
			// syslog server that is away does not flood the error log.
			srv.log.Logf(LevelWarn, "*%d send() to syslog failed %s, syslog: %s, client: %s, server: %s",
				r.id, sock.ErrnoText(err), sys, r.client.Addr(), srv.name)
		}
	}
	return buf[:0]
}

// appendLog evaluates t as an access-log line: the format's text as it
// is, each variable's value escaped as esc says (ngx_stream_log_variable,
// ngx_stream_log_json_variable, ngx_stream_log_unescaped_variable). A
// value is escaped in place, where it was appended: a line with nothing to
// escape costs nothing more than appendTo, and allocates nothing when b
// has room.
func (t template) appendLog(b []byte, r *record, esc logEscape) []byte {
	for _, seg := range t {
		if seg.v == nil {
			b = append(b, seg.lit...)
			continue
		}
		start := len(b)
		r.nf = false
		b = seg.v(b, r)
		switch esc {
		case escapeDefault:
			if r.nf && len(b) == start {
				b = append(b, '-') // nginx: a variable not found
				continue
			}
			b = escapeValue(b, start)
		case escapeJSON:
			b = escapeJSONValue(b, start)
		}
	}
	return b
}

const upperHex = "0123456789ABCDEF"

// needsEscape is ngx_stream_log_escape's table: control bytes, `"`, `\`,
// DEL and every byte from 0x80.
func needsEscape(c byte) bool {
	return c < 0x20 || c == '"' || c == '\\' || c >= 0x7f
}

// escapeValue rewrites b[start:] as ngx_stream_log_escape does: each byte
// needsEscape names becomes \xXX (upper-case hex).
func escapeValue(b []byte, start int) []byte {
	n := 0
	for _, c := range b[start:] {
		if needsEscape(c) {
			n++
		}
	}
	if n == 0 {
		return b
	}
	// Grow by 3 bytes per escape and fill from the end, so that no byte
	// is overwritten before it is read.
	end := len(b)
	b = slices.Grow(b, 3*n)[:end+3*n]
	w := len(b)
	for i := end - 1; i >= start; i-- {
		c := b[i]
		if needsEscape(c) {
			w -= 4
			b[w], b[w+1], b[w+2], b[w+3] = '\\', 'x', upperHex[c>>4], upperHex[c&0xf]
		} else {
			w--
			b[w] = c
		}
	}
	return b
}

// jsonExtra is how many bytes ngx_escape_json adds for c.
func jsonExtra(c byte) int {
	switch {
	case c == '\\' || c == '"':
		return 1
	case c > 0x1f:
		return 0
	case c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
		return 1
	}
	return len(`\u001F`) - 1
}

// escapeJSONValue rewrites b[start:] as ngx_escape_json does: `\` and `"`
// backslashed, \n \r \t \b \f by name, other control bytes as \u00XX;
// everything else, bytes from 0x7f included, as it is.
func escapeJSONValue(b []byte, start int) []byte {
	n := 0
	for _, c := range b[start:] {
		n += jsonExtra(c)
	}
	if n == 0 {
		return b
	}
	end := len(b)
	b = slices.Grow(b, n)[:end+n]
	w := len(b)
	for i := end - 1; i >= start; i-- {
		c := b[i]
		switch jsonExtra(c) {
		case 0:
			w--
			b[w] = c
		case 1:
			w -= 2
			b[w] = '\\'
			switch c {
			case '\n':
				c = 'n'
			case '\r':
				c = 'r'
			case '\t':
				c = 't'
			case '\b':
				c = 'b'
			case '\f':
				c = 'f'
			}
			b[w+1] = c
		default:
			w -= 6
			copy(b[w:], `\u00`)
			b[w+4], b[w+5] = upperHex[c>>4], upperHex[c&0xf]
		}
	}
	return b
}

// errorTargets turns error_log directives into the error log's targets.
func errorTargets(els []config.ErrorLog) ([]errlog.Target, error) {
	var ts []errlog.Target
	for _, el := range els {
		lv, err := ParseLevel(el.Level)
		if err != nil {
			return nil, err
		}
		t := errlog.Target{Path: el.Path, Level: lv}
		if el.Syslog != nil {
			sc := syslogConfig(el.Syslog)
			t.Syslog = &sc
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// errorLogKey identifies a server's set of error_log directives among the
// logs a reload keeps. A path never holds a NUL.
func errorLogKey(els []config.ErrorLog) string {
	var b strings.Builder
	b.WriteString("\x00error_log")
	for _, el := range els {
		b.WriteString("\x00" + el.Path + " " + el.Level)
	}
	return b.String()
}

func syslogConfig(s *config.Syslog) syslog.Config {
	return syslog.Config{
		Addr: s.Server, Unix: s.Unix, Facility: s.Facility, Severity: s.Severity,
		Tag: s.Tag, NoHostname: s.NoHostname,
	}
}

// topErrorLogs is cfg's top-level error_log directives; a Config built by
// hand, with ErrorLogs unset, has the one in ErrorLog.
func topErrorLogs(cfg *config.Config) []config.ErrorLog {
	if len(cfg.ErrorLogs) > 0 {
		return cfg.ErrorLogs
	}
	return []config.ErrorLog{cfg.ErrorLog}
}

// sharedLog returns the log keyed key that this build opened or p already
// has, or nil.
func (p *Proxy) sharedLog(key string, opened *[]*logFile) *logFile {
	for _, o := range *opened {
		if o.path == key {
			return o
		}
	}
	return p.logFiles[key]
}

// newAccessLog prepares an access_log directive: its format and condition
// compiled, its file or syslog server taken from p or this build, or
// opened (and added to opened).
func (p *Proxy) newAccessLog(al *config.AccessLog, vt *varTable, opened *[]*logFile) (accessLog, error) {
	if al.Format == nil {
		return accessLog{}, posErrorf(al.Pos, `"access_log" needs a log format`)
	}
	t, err := vt.compile(al.Format.Format)
	if err != nil {
		return accessLog{}, posError(al.Format.Pos, err)
	}
	a := accessLog{format: t, escape: parseEscape(al.Format.Escape)}
	if al.If != "" {
		if a.cond, err = vt.compile(al.If); err != nil {
			return accessLog{}, posError(al.Pos, err)
		}
	}
	if al.PathVars {
		if a.path, err = vt.compile(al.Path); err != nil {
			return accessLog{}, posError(al.Pos, err)
		}
		return a, nil
	}
	if a.file = p.sharedLog(al.Path, opened); a.file != nil {
		if al.Buffer > 0 {
			a.file.setBuffer(al.Buffer, al.Flush, al.Gzip)
		}
		return a, nil
	}
	lf := &logFile{path: al.Path}
	if al.Syslog != nil {
		lf.sys = syslog.New(syslogConfig(al.Syslog)) // its socket is opened by the first line
	} else if lf.f, err = openAppend(al.Path); err != nil {
		return accessLog{}, posErrorf(al.Pos, "open() %q failed (%w)", al.Path, err)
	}
	if al.Buffer > 0 {
		lf.setBuffer(al.Buffer, al.Flush, al.Gzip)
	}
	*opened = append(*opened, lf)
	a.file = lf
	return a, nil
}

// writeByPath writes a line to the file its evaluated path names: opened,
// written and closed, as nginx's ngx_stream_log_script_write without
// open_log_file_cache. A file that cannot be opened is logged (error) and
// the line lost. buf is scratch space, returned emptied.
func (al *accessLog) writeByPath(buf []byte, r *record, srv *server) []byte {
	buf = al.path.appendTo(buf, r)
	path := string(buf)
	buf = al.format.appendLog(buf[:0], r, al.escape)
	buf = append(buf, '\n')
	f, err := openAppend(path)
	if err != nil {
		srv.log.Logf(LevelError, "*%d open() \"%s\" failed (%v), client: %s, server: %s", r.id, path, err, r.client.Addr(), srv.name)
		return buf[:0]
	}
	f.Write(buf)
	f.Close()
	return buf[:0]
}

// serverErrorLog returns the error log of a server with error_log
// directives of its own (or inherited from stream), taken from p or this
// build when another server has the same, or opened (and added to opened).
func (p *Proxy) serverErrorLog(els []config.ErrorLog, opened *[]*logFile) (*logFile, error) {
	key := errorLogKey(els)
	if lf := p.sharedLog(key, opened); lf != nil {
		return lf, nil
	}
	targets, err := errorTargets(els)
	if err != nil {
		return nil, posError(els[0].Pos, err)
	}
	lg, err := errlog.Open(targets...)
	if err != nil {
		return nil, posErrorf(els[0].Pos, "error_log: %w", err)
	}
	lf := &logFile{path: key, elog: lg}
	*opened = append(*opened, lf)
	return lf, nil
}
