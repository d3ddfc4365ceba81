package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"
)

// LocalError reports whether err is this process's failure to make a
// socket (socket(2) failed: EMFILE, ENFILE, ENOBUFS...) or to bind it
// where proxy_bind asks (bind(2) or its setsockopt(2) calls, as
// sock.DialWith reports them), which says nothing about the target it was
// meant for.
func LocalError(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && (se.Syscall == "socket" || se.Syscall == "bind" || strings.HasPrefix(se.Syscall, "setsockopt("))
}

// ErrNoMatch means the backend answered, or closed, without sending what the
// match block expects.
var ErrNoMatch = errors.New("health: response does not match")

// A Checker runs one active health check against addr ("host:port"). It
// returns nil if the check passed. It must give up when ctx is done.
type Checker interface {
	Check(ctx context.Context, addr string) error
}

// CheckerFunc adapts a function to a Checker.
type CheckerFunc func(ctx context.Context, addr string) error

// Check calls f(ctx, addr).
func (f CheckerFunc) Check(ctx context.Context, addr string) error { return f(ctx, addr) }

// DefaultTimeout is nginx Plus's health_check_timeout default, used by the
// checkers when ctx carries no deadline.
const DefaultTimeout = 5 * time.Second

// maxResponse bounds what a TCP check reads while waiting for Expect; a
// backend that sends more without matching fails the check.
const maxResponse = 64 << 10

// udpDefaultSend is what nginx Plus sends in a UDP check without a match
// block ("health_check udp"): the absence of ICMP port unreachable is then
// expected in reply.
const udpDefaultSend = "nginx health check"

// Match is a "match NAME { send ...; expect ...; }" block. The zero value
// sends nothing and expects nothing.
type Match struct {
	// Name is the block's name, for messages.
	Name string
	// Send is written to the backend once connected ("send"), after the
	// config's escapes (\x80) have been decoded.
	Send []byte
	// Expect, if non-empty, must appear in what the backend sends
	// ("expect STRING"). At most one of Expect and ExpectRegexp is set.
	Expect []byte
	// ExpectRegexp, if non-nil, must match what the backend sends
	// ("expect ~ REGEX").
	ExpectRegexp *regexp.Regexp
}

// expects reports whether m waits for data from the backend.
func (m *Match) expects() bool {
	return m != nil && (len(m.Expect) > 0 || m.ExpectRegexp != nil)
}

// matches reports whether data satisfies m's expect.
func (m *Match) matches(data []byte) bool {
	if m.ExpectRegexp != nil {
		return m.ExpectRegexp.Match(data)
	}
	return bytes.Contains(data, m.Expect)
}

// TCPChecker is nginx Plus's default stream health check. It passes when a
// TCP connection is established and, with a Match, Send was written and the
// bytes read before the backend closed or the timeout matched Expect. The
// zero value connects and closes.
type TCPChecker struct {
	// Match is the "match=NAME" block; nil means only connect.
	Match *Match
	// Timeout bounds the whole check when ctx has no earlier deadline. If
	// zero, DefaultTimeout.
	Timeout time.Duration
	// Dialer dials the backend; nil means a zero net.Dialer.
	Dialer *net.Dialer
}

var (
	_ Checker = (*TCPChecker)(nil)
	_ Checker = (*UDPChecker)(nil)
)

// Check implements Checker.
func (c *TCPChecker) Check(ctx context.Context, addr string) error {
	ctx, cancel := withTimeout(ctx, c.Timeout)
	defer cancel()
	network, a := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, a = "unix", path // "server unix:PATH"
	}
	conn, err := dialer(c.Dialer).DialContext(ctx, network, a)
	if err != nil {
		return fmt.Errorf("health: connect to %s: %w", addr, err)
	}
	defer conn.Close()
	if c.Match == nil {
		return nil
	}
	return exchange(ctx, conn, c.Match, addr, false)
}

// UDPChecker is nginx Plus's "health_check udp": it sends a datagram (Send,
// or "nginx health check" without one) and then, with Expect or
// ExpectRegexp set, passes only on a matching reply; without them it passes
// unless the backend refuses (ICMP port unreachable) before the timeout, so
// a silent backend passes after the whole timeout, as in nginx Plus.
type UDPChecker struct {
	// Match is the "match=NAME" block; nil sends nginx's default datagram.
	Match *Match
	// Timeout bounds the whole check when ctx has no earlier deadline. If
	// zero, DefaultTimeout.
	Timeout time.Duration
	// Dialer dials the backend; nil means a zero net.Dialer.
	Dialer *net.Dialer
}

// Check implements Checker.
func (c *UDPChecker) Check(ctx context.Context, addr string) error {
	ctx, cancel := withTimeout(ctx, c.Timeout)
	defer cancel()
	conn, err := dialer(c.Dialer).DialContext(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("health: udp check of %s: %w", addr, err)
	}
	defer conn.Close()
	m := c.Match
	if m == nil || len(m.Send) == 0 {
		mm := Match{Send: []byte(udpDefaultSend)}
		if m != nil {
			mm.Expect, mm.ExpectRegexp = m.Expect, m.ExpectRegexp
		}
		m = &mm
	}
	return exchange(ctx, conn, m, addr, true)
}

// exchange writes m.Send on conn and then, for TCP, reads until m's expect
// matches what has arrived; for UDP it judges the first datagram. Both run
// under ctx's deadline, and a cancelled ctx cuts them short at once.
func exchange(ctx context.Context, conn net.Conn, m *Match, addr string, udp bool) error {
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if len(m.Send) > 0 {
		if _, err := conn.Write(m.Send); err != nil {
			return fmt.Errorf("health: send to %s: %w", addr, readErr(ctx, err))
		}
	}
	if udp {
		return udpReply(ctx, conn, m, addr)
	}
	if !m.expects() {
		return nil
	}
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxResponse {
				return fmt.Errorf("health: %s sent %d bytes: %w", addr, len(buf), ErrNoMatch)
			}
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 && m.matches(buf) {
			return nil
		}
		if err != nil {
			err = readErr(ctx, err)
			if len(buf) > 0 {
				return fmt.Errorf("health: %s sent %q, then %v: %w", addr, truncate(buf), err, ErrNoMatch)
			}
			return fmt.Errorf("health: read from %s: %w", addr, err)
		}
	}
}

// udpReply waits for one datagram. Without an expect, any reply passes, and
// so does silence until the deadline (no ICMP port unreachable: nginx Plus's
// rule); a refusal fails either way.
func udpReply(ctx context.Context, conn net.Conn, m *Match, addr string) error {
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if !m.expects() && errors.As(err, &ne) && ne.Timeout() && ctx.Err() != context.Canceled {
			return nil
		}
		return fmt.Errorf("health: read from %s: %w", addr, readErr(ctx, err))
	}
	if !m.expects() || m.matches(buf[:n]) {
		return nil
	}
	return fmt.Errorf("health: %s replied %q: %w", addr, truncate(buf[:n]), ErrNoMatch)
}

// readErr reports a read or write cut short by cancellation as ctx's error
// rather than as the past deadline that did the cutting.
func readErr(ctx context.Context, err error) error {
	if ctx.Err() == context.Canceled {
		return ctx.Err()
	}
	return err
}

// truncate shortens a response for an error message.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func dialer(d *net.Dialer) *net.Dialer {
	if d == nil {
		return &net.Dialer{}
	}
	return d
}

// withTimeout applies d (or DefaultTimeout) unless ctx already ends sooner.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(ctx, d)
}
