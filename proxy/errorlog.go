package proxy

import (
	"fmt"
	"io"

	"github.com/batonproxy/baton/internal/errlog"
)

// The error log is package errlog; these names keep proxy's API (Options.Log,
// Proxy.Logger) whole for callers outside this module, which cannot import
// an internal package.

// Level is an error_log severity, nginx's names and order.
type Level = errlog.Level

// The error_log levels, most verbose first.
const (
	LevelDebug  = errlog.LevelDebug
	LevelInfo   = errlog.LevelInfo
	LevelNotice = errlog.LevelNotice
	LevelWarn   = errlog.LevelWarn
	LevelError  = errlog.LevelError
	LevelCrit   = errlog.LevelCrit
	LevelAlert  = errlog.LevelAlert
	LevelEmerg  = errlog.LevelEmerg
)

// Logger writes nginx-style error_log lines (errlog.Logger).
type Logger = errlog.Logger

// ParseLevel returns the Level named s ("" is "error", nginx's default).
func ParseLevel(s string) (Level, error) {
	lv, err := errlog.ParseLevel(s)
	if err != nil {
		return 0, fmt.Errorf("proxy: unknown log level %q", s)
	}
	return lv, nil
}

// NewLogger opens path for appending (creating it 0644) and logs at level and
// above. path "" or "stderr" means standard error.
func NewLogger(path string, level Level) (*Logger, error) { return errlog.New(path, level) }

// NewWriterLogger returns a Logger writing to w, for tests and the CLI.
func NewWriterLogger(w io.Writer, level Level) *Logger { return errlog.NewWriter(w, level) }
