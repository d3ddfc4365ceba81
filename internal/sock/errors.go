package sock

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrnoText formats err as nginx does in its logs: "(111: Connection
// refused)" for an errno, "(" + err.Error() + ")" for anything else (see
// BareErrno).
func ErrnoText(err error) string {
	if e, ok := err.(unix.Errno); ok {
		return fmt.Sprintf("(%d: %s)", int(e), capitalize(e.Error()))
	}
	return "(" + err.Error() + ")"
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// Errno returns the errno inside err, or 0.
func Errno(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

// BareErrno returns the errno inside err if there is one, else err: for
// ErrnoText, on an error that wraps an errno (Dial's os.SyscallError).
func BareErrno(err error) error {
	if e := Errno(err); e != 0 {
		return e
	}
	return err
}

// sysError is a failed socket call, printed as nginx prints it ("bind() to
// 127.0.0.1:80 failed (98: Address already in use)"); it unwraps to the
// errno.
type sysError struct {
	call string // "bind() to 127.0.0.1:80"
	err  error
}

func (e *sysError) Error() string { return e.call + " failed " + ErrnoText(e.err) }
func (e *sysError) Unwrap() error { return e.err }

// sysErr returns a sysError for call (a format and its arguments).
func sysErr(err error, format string, args ...any) error {
	return &sysError{call: fmt.Sprintf(format, args...), err: err}
}
