package sock

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// DialUnix opens a nonblocking Unix-domain stream socket and starts
// connecting it to path: the fd and nil (connected) or EINPROGRESS (or
// EAGAIN: the listener's backlog is full, as nginx's ngx_event_connect_peer
// treats it), or -1 and the error.
func DialUnix(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.EINPROGRESS), errors.Is(err, unix.EAGAIN):
		return fd, unix.EINPROGRESS
	}
	unix.Close(fd)
	return -1, err
}

// ListenUnix binds a nonblocking Unix-domain stream socket to path and
// listens, as nginx's listen unix:PATH: a file left at path (a socket of
// an earlier run) is removed first. The caller owns the returned fd.
func ListenUnix(path string, backlog int) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, sysErr(err, "socket() unix:%s", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, sysErr(err, "bind() to unix:%s", path)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, sysErr(err, "listen() to unix:%s, backlog %d", path, backlog)
	}
	return fd, nil
}
