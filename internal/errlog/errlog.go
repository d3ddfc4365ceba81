// Package errlog writes baton's error log: nginx's error_log lines, at
// nginx's levels, to files (reopened after logrotate, repointed on a
// reload), standard error or syslog servers. RateLog keeps an event that can repeat thousands of
// times a second (a full socket buffer, accept at the file limit) to one
// line per period, which counts the events it stands for.
//
// A Logger is safe for concurrent use; a RateLog is owned by one goroutine.
package errlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonproxy/baton/internal/syslog"
)

// Level is an error_log severity, nginx's names and order.
type Level int

// The error_log levels, most verbose first.
const (
	LevelDebug Level = iota
	LevelInfo
	LevelNotice
	LevelWarn
	LevelError
	LevelCrit
	LevelAlert
	LevelEmerg
)

var levelNames = [...]string{"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return fmt.Sprintf("level(%d)", int(l))
	}
	return levelNames[l]
}

// ParseLevel returns the Level named s ("" is "error", nginx's default).
func ParseLevel(s string) (Level, error) {
	if s == "" {
		return LevelError, nil
	}
	for i, n := range levelNames {
		if n == s {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("errlog: unknown log level %q", s)
}

// Target is one error_log: a file, standard error or a syslog server, and
// the lowest level written there.
type Target struct {
	Path   string         // a file; "" or "stderr" means standard error. Unused when Syslog is set
	Syslog *syslog.Config // lines go to this syslog server, each at its level's severity
	Level  Level
}

// Logger writes nginx-style error_log lines:
//
//	2026/11/21 14:40:00 [error] 1234#0: *7 connect() failed (111: Connection refused) while connecting to upstream, ...
//
// to each of its targets whose level the line reaches, as nginx's list of
// error_log directives. A syslog target gets the same text, without the
// newline, after a syslog header whose severity is the line's level
// (ngx_syslog_writer).
//
// It is safe for concurrent use. A nil *Logger logs nothing.
type Logger struct {
	mu    sync.Mutex
	sinks []sink
	min   atomic.Int32 // the lowest level a sink writes; above LevelEmerg when none does
	pid   int
}

// sink is one target, opened.
type sink struct {
	level Level
	w     io.Writer
	f     *os.File // non-nil when the Logger opened a file
	path  string
	sys   *syslog.Peer
}

// New opens path for appending (creating it 0644) and logs at level and
// above. path "" or "stderr" means standard error.
func New(path string, level Level) (*Logger, error) {
	return Open(Target{Path: path, Level: level})
}

// Open returns a Logger writing to every target: files are opened for
// appending (created 0644) now, syslog sockets on their first line. With
// no target, it logs nothing.
func Open(targets ...Target) (*Logger, error) {
	l := &Logger{pid: os.Getpid()}
	sinks, err := openSinks(targets)
	if err != nil {
		return nil, err
	}
	l.set(sinks)
	return l, nil
}

// NewWriter returns a Logger writing to w, for tests and the CLI.
func NewWriter(w io.Writer, level Level) *Logger {
	l := &Logger{pid: os.Getpid()}
	l.set([]sink{{level: level, w: w}})
	return l
}

func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// openSinks opens targets; on an error it closes what it opened.
func openSinks(targets []Target) ([]sink, error) {
	var sinks []sink
	for _, t := range targets {
		s := sink{level: t.Level, w: os.Stderr, path: t.Path}
		switch {
		case t.Syslog != nil:
			s.w, s.path, s.sys = nil, "", syslog.New(*t.Syslog)
		case t.Path != "" && t.Path != "stderr":
			f, err := openAppend(t.Path)
			if err != nil {
				closeSinks(sinks)
				return nil, err
			}
			s.f, s.w = f, f
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
}

func closeSinks(sinks []sink) error {
	var errs []error
	for _, s := range sinks {
		if s.f != nil {
			errs = append(errs, s.f.Close())
		}
		if s.sys != nil {
			errs = append(errs, s.sys.Close())
		}
	}
	return errors.Join(errs...)
}

// set installs sinks (with l.mu held, or before l is shared).
func (l *Logger) set(sinks []sink) {
	l.sinks = sinks
	lowest := LevelEmerg + 1
	for _, s := range sinks {
		lowest = min(lowest, s.level)
	}
	l.min.Store(int32(lowest))
}

// Reopen reopens the log files (SIGUSR1, after logrotate moved them). A
// file that cannot be reopened stays as it was.
func (l *Logger) Reopen() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for i := range l.sinks {
		s := &l.sinks[i]
		if s.f == nil {
			continue
		}
		f, err := openAppend(s.path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, s.f.Close())
		s.f, s.w = f, f
	}
	return errors.Join(errs...)
}

// Reconfigure points the Logger at path and level (a reload). It keeps the
// old file when the new one cannot be opened.
func (l *Logger) Reconfigure(path string, level Level) error {
	return l.Retarget(Target{Path: path, Level: level})
}

// Retarget points the Logger at targets (a reload). It keeps the old
// targets when one of the new cannot be opened.
func (l *Logger) Retarget(targets ...Target) error {
	sinks, err := openSinks(targets)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.sinks
	l.set(sinks)
	l.mu.Unlock()
	return closeSinks(old)
}

// Close closes the files and syslog sockets the Logger opened; it logs
// nothing after.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.sinks
	l.set(nil)
	return closeSinks(old)
}

// Enabled reports whether lines at lv are written to any target. It costs
// an atomic load: callers on the data path ask it before building a line.
func (l *Logger) Enabled(lv Level) bool {
	return l != nil && int32(lv) >= l.min.Load()
}

// Logf writes one line at lv to each target whose level lv reaches.
func (l *Logger) Logf(lv Level, format string, args ...any) {
	if !l.Enabled(lv) {
		return
	}
	now := time.Now()
	b := make([]byte, 0, 256)
	b = now.AppendFormat(b, "2006/01/02 15:04:05")
	b = fmt.Appendf(b, " [%s] %d#0: ", lv, l.pid)
	b = fmt.Appendf(b, format, args...)
	b = append(b, '\n')
	var msg []byte
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.sinks {
		if lv < s.level {
			continue
		}
		if s.sys == nil {
			s.w.Write(b)
			continue
		}
		// nginx's severity is its level less one (ngx_syslog_writer):
		// emerg 0 ... debug 7. A line that cannot be sent is dropped.
		msg = s.sys.AppendHeader(msg[:0], int(LevelEmerg-lv), now)
		msg = append(msg, b[:len(b)-1]...)
		s.sys.Send(msg)
	}
}
