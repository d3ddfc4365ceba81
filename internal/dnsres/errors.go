package dnsres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/miekg/dns"
)

// ErrTimeout is what an *Error wraps when no server answered in time:
// errors.Is(err, ErrTimeout) tells a timeout.
var ErrTimeout = errors.New("operation timed out")

// errCNAMEChain is the failure of a CNAME chain longer than maxCNAME.
var errCNAMEChain = fmt.Errorf("CNAME chain longer than %d", maxCNAME)

// errNoServers is the failure of a Resolver without servers.
var errNoServers = errors.New("no resolver configured")

// etimedout is the errno nginx shows for a timeout (ETIMEDOUT on Linux).
const etimedout = 110

// rcodeText is ngx_resolver_strerror: the texts nginx gives DNS rcodes.
var rcodeText = map[int]string{
	dns.RcodeFormatError:    "Format error",
	dns.RcodeServerFailure:  "Server failure",
	dns.RcodeNameError:      "Host not found",
	dns.RcodeNotImplemented: "Unimplemented",
	dns.RcodeRefused:        "Operation refused",
}

// Error is a failed resolution.
type Error struct {
	Name  string // the name that could not be resolved, without trailing dot
	Rcode int    // the DNS rcode of the answer (dns.RcodeServerFailure...), 0 when no server answered with one
	Err   error  // what went wrong when Rcode is 0: ErrTimeout, a network error, a malformed reply...
}

// Error is nginx's message: "NAME could not be resolved (CODE: TEXT)".
func (e *Error) Error() string {
	switch {
	case e.Rcode != 0:
		text, ok := rcodeText[e.Rcode]
		if !ok {
			text = "Unknown error"
		}
		return fmt.Sprintf("%s could not be resolved (%d: %s)", e.Name, e.Rcode, text)
	case errors.Is(e.Err, ErrTimeout):
		return fmt.Sprintf("%s could not be resolved (%d: Operation timed out)", e.Name, etimedout)
	default:
		return fmt.Sprintf("%s could not be resolved (%v)", e.Name, e.Err)
	}
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether no server answered in time.
func (e *Error) Timeout() bool { return errors.Is(e.Err, ErrTimeout) }

// ctxError is the failure of a lookup of name whose context is done:
// a timeout when its deadline passed, else its cancellation.
func ctxError(ctx context.Context, name string) *Error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{Name: name, Err: ErrTimeout}
	}
	return &Error{Name: name, Err: context.Cause(ctx)}
}

// isTimeout reports whether err is an expired deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}
