package fdpass

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnvHandoffFD names the environment variable that tells a child which
// inherited descriptor is its end of the handoff channel ("3" for ExtraFiles[0]).
const EnvHandoffFD = "BATON_HANDOFF_FD"

// Socketpair returns a connected AF_UNIX SOCK_SEQPACKET pair, both ends
// close-on-exec: parent for this process, child to pass as exec.Cmd.ExtraFiles[0]
// (exec clears close-on-exec on the descriptors it hands over).
// The caller owns both. It must close child right after cmd.Start, or it will
// never see EOF when the child dies (HANDOFF.md P17).
func Socketpair() (parent *net.UnixConn, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("fdpass: socketpair: %w", err)
	}
	pf := os.NewFile(uintptr(fds[0]), "handoff-parent")
	defer pf.Close() // FileConn made its own dup
	c, err := net.FileConn(pf)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("fdpass: socketpair: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "handoff-child"), nil
}

// Adopt turns fd, a handoff channel end inherited through ExtraFiles, into a
// *net.UnixConn. It marks fd close-on-exec first, so a later upgrade cannot leak
// it to a grandchild (P10), checks it is an AF_UNIX SOCK_SEQPACKET socket, and
// closes fd: the returned conn holds its own duplicate, which the caller owns.
// If fd is not such a socket, Adopt returns ErrFDType and leaves fd alone (it
// may be anything, if the environment lied); otherwise fd is closed whether or
// not Adopt succeeds.
func Adopt(fd uintptr) (*net.UnixConn, error) {
	unix.CloseOnExec(int(fd))
	typ, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("%w: handoff fd %d: %v", ErrFDType, fd, err)
	}
	dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil || typ != unix.SOCK_SEQPACKET || dom != unix.AF_UNIX {
		return nil, fmt.Errorf("%w: handoff fd %d is not an AF_UNIX SOCK_SEQPACKET socket", ErrFDType, fd)
	}
	f := os.NewFile(fd, "handoff")
	defer f.Close() // FileConn made its own dup
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("fdpass: adopt handoff fd %d: %w", fd, err)
	}
	return c.(*net.UnixConn), nil
}

// AdoptEnv adopts the descriptor named by $BATON_HANDOFF_FD and unsets the
// variable, so that it does not reach a process this one starts. It returns
// nil, nil when the variable is not set: this process was not started by an upgrade.
func AdoptEnv() (*net.UnixConn, error) {
	v, ok := os.LookupEnv(EnvHandoffFD)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvHandoffFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("fdpass: %s=%q is not a descriptor number ≥ 3", EnvHandoffFD, v)
	}
	return Adopt(uintptr(fd))
}

// Dup returns a close-on-exec duplicate of sc's descriptor, named name (e.g.
// "listen/tcp/0.0.0.0:443"). sc is unchanged and stays open; the caller owns both.
// Dup works inside RawConn.Control with F_DUPFD_CLOEXEC, never through
// conn.File: Fd on a File from conn.File switches the shared open file
// description to blocking mode under the live conn (P3; tableflip fds.go).
// (Fd on Dup's result is harmless, as os.NewFile leaves a nonblocking
// descriptor nonblocking, but Send does not need it.)
func Dup(sc syscall.Conn, name string) (*os.File, error) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("fdpass: dup %s: %w", name, err)
	}
	dup := -1
	var duperr error
	if err := raw.Control(func(fd uintptr) {
		dup, duperr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("fdpass: dup %s: %w", name, err)
	}
	if duperr != nil {
		return nil, fmt.Errorf("fdpass: dup %s: %w", name, duperr)
	}
	return os.NewFile(uintptr(dup), name), nil
}

// Send writes rec with files as its descriptors, in one sendmsg, honouring c's
// write deadline. The header's nfds is len(files) and a body's descriptor
// index i refers to files[i]. Send does not close files or change them: the
// caller still owns them, and closes its copies once the peer has acknowledged
// the record (until then the kernel holds its own references in flight).
// Each Send is one sendmsg, so concurrent Sends on c do not interleave.
func Send(c *net.UnixConn, rec Record, files ...*os.File) error {
	buf, err := appendRecord(nil, rec, len(files))
	if err != nil {
		return fmt.Errorf("%w (sending %v)", err, rec.Type)
	}
	for i, f := range files {
		if f == nil {
			return fmt.Errorf("fdpass: send %v: file %d is nil", rec.Type, i)
		}
	}
	fds := make([]int, 0, len(files))
	err = withFDs(files, &fds, func() error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		n, oobn, err := c.WriteMsgUnix(buf, oob, nil)
		if err != nil {
			return err
		}
		if n != len(buf) || oobn != len(oob) {
			return fmt.Errorf("short write: %d/%d bytes, %d/%d control bytes", n, len(buf), oobn, len(oob))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fdpass: send %v: %w", rec.Type, err)
	}
	return nil
}

// withFDs calls fn with the descriptors of files appended to *fds, each held
// inside its RawConn.Control so that none can be closed and reused during fn
// (the descriptor is valid only inside the callback, go:src/syscall/net.go).
// Going through Control rather than Fd keeps the files' blocking mode, even
// for a File from conn.File, whose Fd would make the socket blocking (P3).
func withFDs(files []*os.File, fds *[]int, fn func() error) error {
	if len(files) == 0 {
		return fn()
	}
	raw, err := files[0].SyscallConn()
	if err != nil {
		return fmt.Errorf("%s: %w", files[0].Name(), err)
	}
	var fnErr error
	if err := raw.Control(func(fd uintptr) {
		*fds = append(*fds, int(fd))
		fnErr = withFDs(files[1:], fds, fn)
	}); err != nil {
		return fmt.Errorf("%s: %w", files[0].Name(), err)
	}
	return fnErr
}

// oobSpace holds the control data of SCM_MAX_FD (253) descriptors, one more
// than a valid record carries, so an oversized array is seen and refused
// rather than cut by the kernel.
var oobSpace = unix.CmsgSpace((MaxFDs + 1) * 4)

// Receive reads one record and its descriptors, honouring c's read deadline.
// The files are in SCM_RIGHTS order, so a body's index i refers to files[i],
// and are named "fdpass/<TYPE>/<i>" (the body carries the real names). The
// caller owns them; net.FileConn, FileListener and FilePacketConn make their own
// duplicate, so close each file after converting it. Receive returns io.EOF
// when the peer has closed the channel.
//
// On any error Receive has closed every descriptor that arrived. It checks, in
// order: the read error; MSG_TRUNC and MSG_CTRUNC (ErrTruncated); the header
// (ErrMalformed); the number of descriptors against nfds (ErrFDCount). The body
// is not parsed: decode it with NewDecoder(rec.Body, len(files)).
func Receive(c *net.UnixConn) (Record, []*os.File, error) {
	return receive(c, oobSpace)
}

// receive is Receive with a control buffer of oobLen bytes; tests shrink it to
// make the kernel truncate.
func receive(c *net.UnixConn, oobLen int) (rec Record, files []*os.File, err error) {
	buf := make([]byte, MaxRecord+1)
	oob := make([]byte, oobLen)
	n, oobn, flags, _, rerr := c.ReadMsgUnix(buf, oob)

	// First take ownership of every descriptor the kernel installed, whatever
	// else went wrong, so that each error below closes them all (P11).
	fds, perr := parseRights(oob[:oobn])
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()

	if errors.Is(rerr, io.EOF) {
		return Record{}, nil, io.EOF // the peer closed, or sent an empty record
	}
	if rerr != nil {
		return Record{}, nil, fmt.Errorf("fdpass: receive: %w", rerr) // a *net.OpError names c
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return Record{}, nil, fmt.Errorf("%w: msg_flags %#x, %d bytes, %d descriptors kept",
			ErrTruncated, flags, n, len(fds))
	}
	if perr != nil {
		return Record{}, nil, perr
	}
	rec, nfds, err := parseRecord(buf[:n])
	if err != nil {
		return Record{}, nil, err
	}
	if len(fds) != nfds {
		return Record{}, nil, fmt.Errorf("%w: header announces %d, received %d", ErrFDCount, nfds, len(fds))
	}
	rec.Body = bytes.Clone(rec.Body) // let the 64 KiB buffer go
	files = make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("fdpass/%v/%d", rec.Type, i))
	}
	return rec, files, nil
}

// parseRights returns every descriptor in every SCM_RIGHTS message of oob.
// Any other control message is an error, but its descriptors are still
// returned so the caller can close them.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		// The kernel writes the control data, so this is not expected; nothing
		// can be recovered from a buffer that does not parse.
		return nil, fmt.Errorf("%w: control data: %v", ErrMalformed, err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			bad = fmt.Errorf("%w: unexpected control message level %d type %d",
				ErrMalformed, m.Header.Level, m.Header.Type)
			continue
		}
		r, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("%w: SCM_RIGHTS: %v", ErrMalformed, err)
			continue
		}
		fds = append(fds, r...)
	}
	return fds, bad
}

// Inspect asks the kernel what f is: SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN,
// getsockname and getpeername. It returns ErrFDType if f is not a socket.
// f is not changed (the descriptor is used inside RawConn.Control).
func Inspect(f *os.File) (SocketInfo, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return SocketInfo{}, fmt.Errorf("fdpass: inspect %s: %w", f.Name(), err)
	}
	var info SocketInfo
	var serr error
	if err := raw.Control(func(fd uintptr) {
		s := int(fd)
		if info.Type, serr = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_TYPE); serr != nil {
			return
		}
		if info.Family, serr = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN); serr != nil {
			return
		}
		var acc int
		if acc, serr = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); serr != nil {
			return
		}
		info.Listening = acc != 0
		var sa unix.Sockaddr
		if sa, serr = unix.Getsockname(s); serr != nil {
			return
		}
		info.Addr = sockaddrString(sa)
		_, perr := unix.Getpeername(s) // ENOTCONN when unconnected or reset (P21)
		info.Connected = perr == nil
	}); err != nil {
		return SocketInfo{}, fmt.Errorf("fdpass: inspect %s: %w", f.Name(), err)
	}
	if serr != nil {
		return SocketInfo{}, fmt.Errorf("%w: %s: %v", ErrFDType, f.Name(), serr)
	}
	return info, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrUnix:
		return sa.Name
	}
	return ""
}

// Check returns nil if f is a socket of kind k whose own address equals addr,
// and an error wrapping ErrFDType otherwise. addr is the address as the sender
// saw it (net.Listener.Addr().String(), or a Unix socket path); "" skips that
// comparison. Receivers check every descriptor before converting it: a pipe,
// a UDP socket where TCP was expected, or a listener where a connection was
// expected must be refused, not adopted (HANDOFF.md F6c).
func Check(f *os.File, k Kind, addr string) error {
	info, err := Inspect(f)
	if err != nil {
		return err
	}
	inet := info.Family == unix.AF_INET || info.Family == unix.AF_INET6
	var ok bool
	switch k {
	case TCPListener:
		ok = inet && info.Type == unix.SOCK_STREAM && info.Listening
	case TCPConn:
		ok = inet && info.Type == unix.SOCK_STREAM && !info.Listening
	case UDPListener:
		ok = inet && info.Type == unix.SOCK_DGRAM && !info.Connected
	case UDPConn:
		ok = inet && info.Type == unix.SOCK_DGRAM && info.Connected
	case UnixListener:
		ok = info.Family == unix.AF_UNIX && info.Type == unix.SOCK_STREAM && info.Listening
	default:
		return fmt.Errorf("fdpass: check %s: unknown kind %v", f.Name(), k)
	}
	if !ok {
		return fmt.Errorf("%w: %s: want %v, got family %d type %d listening %v connected %v",
			ErrFDType, f.Name(), k, info.Family, info.Type, info.Listening, info.Connected)
	}
	if addr != "" && !sameAddr(info.Addr, addr) {
		return fmt.Errorf("%w: %s: bound to %q, claimed %q", ErrFDType, f.Name(), info.Addr, addr)
	}
	return nil
}
