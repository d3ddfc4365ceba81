package proxy

import (
	"errors"
	"fmt"

	"github.com/batonproxy/baton/config"
)

// Errors callers can tell apart with errors.Is. A failed socket call
// unwraps to its errno (errors.Is(err, unix.EADDRINUSE)), and an error tied
// to a config line unwraps to the error it wraps.
var (
	ErrNoServers    = errors.New("proxy: no stream servers are configured")
	ErrStarted      = errors.New("proxy: already started")
	ErrNotRunning   = errors.New("proxy: not running")
	ErrUpgrading    = errors.New("proxy: an upgrade is in progress; reload refused")
	ErrClosed       = errors.New("proxy: the listener has closed")
	errBadState     = errors.New("proxy: malformed session state")
	errUDPProxyProt = errors.New(`"listen" directive "proxy_protocol" parameter is incompatible with "udp"`)
)

// confError is an error tied to a line of the configuration: "MSG in
// FILE:LINE", as nginx prints it; it unwraps to the error it wraps.
type confError struct {
	err error
	pos config.Pos
}

func (e *confError) Error() string { return fmt.Sprintf("%s in %s:%d", e.err, e.pos.File, e.pos.Line) }
func (e *confError) Unwrap() error { return e.err }

// posError ties err to pos.
func posError(pos config.Pos, err error) error { return &confError{err: err, pos: pos} }

// posErrorf ties a new error, from a format, to pos.
func posErrorf(pos config.Pos, format string, args ...any) error {
	return posError(pos, fmt.Errorf(format, args...))
}
