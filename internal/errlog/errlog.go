// Package errlog writes baton's error log: nginx's error_log lines, at
// nginx's levels, to a file that can be reopened after logrotate or
// repointed on a reload. RateLog keeps an event that can repeat thousands of
// times a second (a full socket buffer, accept at the file limit) to one
// line per period, which counts the events it stands for.
//
// A Logger is safe for concurrent use; a RateLog is owned by one goroutine.
package errlog

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
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

// Logger writes nginx-style error_log lines:
//
//	2026/11/21 14:40:00 [error] 1234#0: *7 connect() failed (111: Connection refused) while connecting to upstream, ...
//
// It is safe for concurrent use. A Logger whose path is "" or "stderr" writes
// to standard error and Reopen does nothing. A nil *Logger logs nothing.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	f     *os.File // non-nil when the Logger opened a file
	path  string
	level Level
	pid   int
}

// New opens path for appending (creating it 0644) and logs at level and
// above. path "" or "stderr" means standard error.
func New(path string, level Level) (*Logger, error) {
	l := &Logger{path: path, level: level, pid: os.Getpid(), w: os.Stderr}
	if path != "" && path != "stderr" {
		f, err := openAppend(path)
		if err != nil {
			return nil, err
		}
		l.f, l.w = f, f
	}
	return l, nil
}

// NewWriter returns a Logger writing to w, for tests and the CLI.
func NewWriter(w io.Writer, level Level) *Logger {
	return &Logger{w: w, level: level, pid: os.Getpid()}
}

func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// Reopen reopens the log file (SIGUSR1, after logrotate moved it).
func (l *Logger) Reopen() error {
	if l == nil || l.f == nil {
		return nil
	}
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f, l.w = f, f
	l.mu.Unlock()
	return old.Close()
}

// Reconfigure points the Logger at path and level (a reload). It keeps the
// old file when the new one cannot be opened.
func (l *Logger) Reconfigure(path string, level Level) error {
	var f *os.File
	var w io.Writer = os.Stderr
	if path != "" && path != "stderr" {
		var err error
		if f, err = openAppend(path); err != nil {
			return err
		}
		w = f
	}
	l.mu.Lock()
	old := l.f
	l.f, l.w, l.path, l.level = f, w, path, level
	l.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// Close closes the log file, if the Logger opened one.
func (l *Logger) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w = io.Discard
	return l.f.Close()
}

// Enabled reports whether lines at lv are written.
func (l *Logger) Enabled(lv Level) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return lv >= l.level
}

// Logf writes one line at lv.
func (l *Logger) Logf(lv Level, format string, args ...any) {
	if !l.Enabled(lv) {
		return
	}
	var b strings.Builder
	b.WriteString(time.Now().Format("2006/01/02 15:04:05"))
	fmt.Fprintf(&b, " [%s] %d#0: ", lv, l.pid)
	fmt.Fprintf(&b, format, args...)
	b.WriteByte('\n')
	l.mu.Lock()
	io.WriteString(l.w, b.String())
	l.mu.Unlock()
}
