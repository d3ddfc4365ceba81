package sock

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// DupFile returns a close-on-exec duplicate of fd as a file named name; fd
// and its blocking mode are untouched (HANDOFF.md P3). The caller owns the
// file and still owns fd.
func DupFile(fd int, name string) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", name, err)
	}
	return os.NewFile(uintptr(d), name), nil
}

// TakeFD takes the descriptor out of f: a nonblocking close-on-exec
// duplicate the caller owns; f is closed. It never calls f.Fd(), which could
// switch the shared open file description to blocking mode.
func TakeFD(f *os.File) (int, error) {
	defer f.Close()
	return DupConn(f)
}

// DupConn returns a nonblocking close-on-exec duplicate of c's descriptor
// (a file, or a net.Conn the runtime polls), which the caller owns; c is
// untouched.
func DupConn(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	d := -1
	var derr error
	raw.Control(func(fd uintptr) { d, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if derr != nil {
		return -1, derr
	}
	if err := unix.SetNonblock(d, true); err != nil {
		unix.Close(d)
		return -1, err
	}
	return d, nil
}

// CloseFD closes fd if it is open (not negative) and returns -1, for
// fd = CloseFD(fd).
func CloseFD(fd int) int {
	if fd >= 0 {
		unix.Close(fd)
	}
	return -1
}

// IsStream reports whether fd is a stream socket that is not listening (a
// connect may still be under way).
func IsStream(fd int) bool {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return false
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && acc == 0
}

// IsConnectedStream reports whether fd is a connected (not listening)
// stream socket.
func IsConnectedStream(fd int) bool {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return false
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || acc != 0 {
		return false
	}
	_, err = unix.Getpeername(fd)
	return err == nil
}
