//go:build !linux

package fdpass

import (
	"net"
	"os"
	"syscall"
)

// EnvHandoffFD names the environment variable that tells a child which
// inherited descriptor is its end of the handoff channel ("3" for ExtraFiles[0]).
const EnvHandoffFD = "BATON_HANDOFF_FD"

// Socketpair returns ErrNotSupported: baton's handoff is Linux-only.
func Socketpair() (parent *net.UnixConn, child *os.File, err error) {
	return nil, nil, ErrNotSupported
}

// Adopt returns ErrNotSupported.
func Adopt(fd uintptr) (*net.UnixConn, error) { return nil, ErrNotSupported }

// AdoptEnv returns nil, nil when $BATON_HANDOFF_FD is unset, else ErrNotSupported.
func AdoptEnv() (*net.UnixConn, error) {
	if _, ok := os.LookupEnv(EnvHandoffFD); !ok {
		return nil, nil
	}
	return nil, ErrNotSupported
}

// Dup returns ErrNotSupported.
func Dup(sc syscall.Conn, name string) (*os.File, error) { return nil, ErrNotSupported }

// Send returns ErrNotSupported.
func Send(c *net.UnixConn, rec Record, files ...*os.File) error { return ErrNotSupported }

// Receive returns ErrNotSupported.
func Receive(c *net.UnixConn) (Record, []*os.File, error) { return Record{}, nil, ErrNotSupported }

// Inspect returns ErrNotSupported.
func Inspect(f *os.File) (SocketInfo, error) { return SocketInfo{}, ErrNotSupported }

// Check returns ErrNotSupported.
func Check(f *os.File, k Kind, addr string) error { return ErrNotSupported }
