// Package syslog sends log lines to a syslog server as nginx does
// (src/core/ngx_syslog.c): one datagram per line over UDP, or a Unix-domain
// datagram socket, each with an RFC 3164 header,
//
//	<PRI>Mmm dd hh:mm:ss hostname tag: message
//
// The socket is nonblocking and opened on the first send; a send that fails
// closes it, and the next send opens a new one. A line that cannot be sent
// is dropped: logging never blocks or stops the traffic it describes.
//
// A Peer is safe for concurrent use.
package syslog

import (
	"errors"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults, as ngx_syslog_process_conf.
const (
	DefaultFacility = 23 // local7
	DefaultSeverity = 6  // info
	DefaultTag      = "nginx"
)

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("syslog: peer closed")

// Config says where and how a Peer sends.
type Config struct {
	Addr       netip.AddrPort // the server, over UDP; ignored when Unix is set
	Unix       string         // a Unix-domain datagram socket path ("server=unix:/dev/log")
	Facility   int            // 0 (kern) to 23 (local7)
	Severity   int            // 0 (emerg) to 7 (debug): the severity of AppendHeader(b, -1, now)
	Tag        string         // at most 32 alphanumerics and underscores
	NoHostname bool           // leave the hostname out of the header
}

// Peer is one syslog server that lines are sent to.
type Peer struct {
	cfg      Config
	hostname string

	mu     sync.Mutex
	fd     int // -1 until the first send, and after a failed one
	closed bool
}

// New returns a Peer for cfg. It opens no socket: the first Send does.
func New(cfg Config) *Peer {
	return &Peer{cfg: cfg, hostname: Hostname(), fd: -1}
}

// Config returns the Peer's configuration.
func (p *Peer) Config() Config { return p.cfg }

// Hostname is the host name nginx puts in syslog headers (and $hostname):
// gethostname(2), lower-cased; "localhost" if it cannot be read.
var Hostname = sync.OnceValue(func() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return strings.ToLower(h)
})

// AppendHeader appends the syslog header for a message at severity (0-7;
// -1 for the Peer's configured severity) sent now, as
// ngx_syslog_add_header: "<PRI>Mmm dd hh:mm:ss hostname tag: ".
func (p *Peer) AppendHeader(b []byte, severity int, now time.Time) []byte {
	if severity < 0 {
		severity = p.cfg.Severity
	}
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(p.cfg.Facility*8+severity), 10)
	b = append(b, '>')
	b = now.AppendFormat(b, "Jan _2 15:04:05")
	b = append(b, ' ')
	if !p.cfg.NoHostname {
		b = append(b, p.hostname...)
		b = append(b, ' ')
	}
	b = append(b, p.cfg.Tag...)
	return append(b, ':', ' ')
}

// Send sends msg, a whole datagram (header included), without blocking.
// On an error the socket is closed, so that the next Send starts afresh
// (as ngx_syslog_send); the error is returned for the caller to report.
func (p *Peer) Send(msg []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.fd < 0 {
		fd, err := p.open()
		if err != nil {
			return err
		}
		p.fd = fd
	}
	for {
		n, err := unix.SendmsgN(p.fd, msg, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(p.fd)
			p.fd = -1
			return err
		}
		if n != len(msg) {
			return errShort{n, len(msg)}
		}
		return nil
	}
}

// errShort is a datagram sent in part (nginx: "send() to syslog has
// written only %z of %uz").
type errShort struct{ n, want int }

func (e errShort) Error() string {
	return "written only " + strconv.Itoa(e.n) + " of " + strconv.Itoa(e.want)
}

// open makes the nonblocking datagram socket and connects it to the server
// (ngx_syslog_init_peer).
func (p *Peer) open() (int, error) {
	var sa unix.Sockaddr
	family := unix.AF_INET
	switch {
	case p.cfg.Unix != "":
		family = unix.AF_UNIX
		sa = &unix.SockaddrUnix{Name: p.cfg.Unix}
	case p.cfg.Addr.Addr().Is4():
		sa = &unix.SockaddrInet4{Port: int(p.cfg.Addr.Port()), Addr: p.cfg.Addr.Addr().As4()}
	default:
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(p.cfg.Addr.Port()), Addr: p.cfg.Addr.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Close closes the socket; later Sends return ErrClosed. It is idempotent.
func (p *Peer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.fd >= 0 {
		err := unix.Close(p.fd)
		p.fd = -1
		return err
	}
	return nil
}

// String names the server as the config did: "127.0.0.1:514" or
// "unix:/dev/log".
func (p *Peer) String() string {
	if p.cfg.Unix != "" {
		return "unix:" + p.cfg.Unix
	}
	return p.cfg.Addr.String()
}
