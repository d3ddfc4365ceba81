package sock

import "golang.org/x/sys/unix"

// Pipe returns a new nonblocking close-on-exec pipe, read end r and write
// end w, asking for a capacity of size bytes (F_SETPIPE_SZ). A refused size
// (above /proc/sys/fs/pipe-max-size) leaves the default capacity, and the
// pipe is returned all the same. The caller owns both descriptors.
func Pipe(size int) (r, w int, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return -1, -1, err
	}
	unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, size)
	return fds[0], fds[1], nil
}

// Splice moves up to n bytes from fd in to fd out without blocking. It
// returns the count moved, 0 at EOF, and again when it would block. It
// goes through RawSyscall as Read does: with both ends nonblocking it
// cannot block, and a 256 KiB splice takes long enough that, through
// Syscall, the runtime would hand the loop's P to another thread.
func Splice(in, out, n int) (m int, again bool, err error) {
	for {
		k, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch e {
		case 0:
			return int(k), false, nil
		case unix.EAGAIN:
			return 0, true, nil
		case unix.EINTR:
			continue
		default:
			return 0, false, e
		}
	}
}
