package sock

import (
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is a net.Conn over a nonblocking socket that an event loop owns,
// for code written against net.Conn that the loop drives (the TLS record
// layer): Read and Write never block, and return unix.EAGAIN when they
// would; Close leaves the descriptor to its owner, which closes it; the
// deadlines do nothing. Local and Remote are what LocalAddr and
// RemoteAddr return (nil when nobody asks).
type Conn struct {
	FD            int
	Local, Remote net.Addr
}

// Read is read(2); io.EOF at the peer's FIN.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		n, err := Read(c.FD, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes p until it is written or the socket is full (unix.EAGAIN).
func (c *Conn) Write(p []byte) (int, error) {
	n, err := WriteAll(c.FD, p)
	if err == nil && n < len(p) {
		err = unix.EAGAIN
	}
	return n, err
}

// CloseWrite shuts the socket's sending side (a FIN).
func (c *Conn) CloseWrite() error { return unix.Shutdown(c.FD, unix.SHUT_WR) }

// Close does nothing: the loop closes the descriptor.
func (c *Conn) Close() error { return nil }

func (c *Conn) LocalAddr() net.Addr              { return c.Local }
func (c *Conn) RemoteAddr() net.Addr             { return c.Remote }
func (c *Conn) SetDeadline(time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }
