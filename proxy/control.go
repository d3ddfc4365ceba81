package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/errlog"
	"golang.org/x/sys/unix"
)

// The control socket serves "baton status" and "baton reload" (and, later,
// "baton upgrade"): one JSON request line, one JSON reply, then close.
//
//	-> {"cmd":"status"}
//	<- {"ok":true,"status":{...}}
//	-> {"cmd":"reload"}
//	<- {"ok":true,"report":"listeners kept: ..."}   or   {"ok":false,"error":"..."}
//
// Only the owner of the process (or root) may talk to it: the socket is
// created 0600 in a 0700 directory, and every peer's uid is checked with
// SO_PEERCRED. Requests are read without an ancillary-data buffer, so file
// descriptors a client attaches are discarded by the kernel (HANDOFF.md P12).
//
// The trust goes both ways (issue 12): the server serves only from a
// directory no other user can change (checkControlDir), and CallControl
// checks the server's uid with SO_PEERCRED before it sends anything, so a
// socket another user put at the path hears nothing.

// ControlRequest is one request on the control socket.
type ControlRequest struct {
	Cmd    string `json:"cmd"`              // "status", "reload" or "upgrade"
	Binary string `json:"binary,omitempty"` // upgrade: the new binary (default: this one)
}

// ControlReply is the answer to a ControlRequest.
type ControlReply struct {
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Report  string         `json:"report,omitempty"`
	Status  *Status        `json:"status,omitempty"`
	Upgrade *fdpass.Report `json:"upgrade,omitempty"`
}

// ControlOptions are what the control socket can do beyond status.
type ControlOptions struct {
	// Reload re-reads the configuration and applies it, returning a report
	// of what changed. If nil, reload is refused.
	Reload func() (string, error)

	// Upgrade hands everything to a new process started from binary ("":
	// this one) and returns what moved. If nil, upgrade is refused.
	Upgrade func(binary string) (fdpass.Report, error)
}

// Control is a running control socket.
type Control struct {
	ln    *net.UnixListener
	path  string
	p     *Proxy
	opts  ControlOptions
	wg    sync.WaitGroup
	once  sync.Once
	slots chan struct{} // one per client being served; at most maxControlConns

	// Owned by the accept loop (serve).
	acceptLog errlog.RateLog
	busyLog   errlog.RateLog
}

const (
	maxControlRequest = 64 << 10

	// maxControlConns is how many clients the control socket serves at
	// once; one more is answered "busy" and closed at once. Each holds a
	// descriptor and a goroutine for up to 30 s, or for a whole upgrade.
	// Clients are root or baton's own user (socket mode and SO_PEERCRED),
	// so this bounds a runaway script, not a stranger; 16 leaves room for
	// an upgrade and the status calls of scripts watching it.
	maxControlConns = 16

	// controlAlertEvery is how often the accept loop logs a failure: at the
	// file limit accept fails on every back-off (100 ms), with the same
	// error each time (issue 12).
	controlAlertEvery = int64(time.Second)
)

// ServeControl creates the control socket at path and serves it until Close.
// A stale socket file (nothing answers on it) is replaced; a live one is an
// error: another baton owns it.
func (p *Proxy) ServeControl(path string, opts ControlOptions) (*Control, error) {
	if ln := p.inheritedControl; ln != nil {
		// Handed over by the old process: same socket, same path.
		p.inheritedControl = nil
		ln.SetUnlinkOnClose(true)
		return p.serveControl(ln, path, opts), nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := checkControlDir(dir); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use by another baton", path)
		}
		os.Remove(path) // stale: its process is gone
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return p.serveControl(ln, path, opts), nil
}

// checkControlDir refuses a directory for the control socket that a user
// other than root and baton's own could change. In the review (issue 12) a
// pre-existing 0777 directory let another user unlink baton's socket and
// listen in its place, and root's "baton reload" talked to the impostor:
// whoever may write a directory may unlink or rename the names in it. So:
//
//   - dir itself (Lstat) must be a directory, not a symbolic link, owned by
//     root or by baton's euid, and with no group or other write bit at all,
//     sticky or not: a sticky world-writable directory such as /tmp keeps
//     others from unlinking our socket, but not from leaving look-alikes
//     beside it, and the default /run/baton is made 0700 anyway.
//   - every directory above it, on the path as written and on the path with
//     its symbolic links resolved, must be owned by root or baton's euid and,
//     if group- or other-writable, sticky (as /tmp): otherwise another user
//     could rename dir away and put a directory of their own in its place.
//
// The client's SO_PEERCRED check (CallControl) is the other half: it holds
// even where this check cannot, e.g. for a path baton never served.
func checkControlDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	euid := uint32(os.Geteuid())
	var st unix.Stat_t
	if err := unix.Lstat(abs, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: abs, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("directory %s is a symbolic link; name the directory it points to", abs)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s is not a directory", abs)
	case st.Uid != 0 && st.Uid != euid:
		return fmt.Errorf("directory %s is owned by uid %d, not by root or baton's uid %d", abs, st.Uid, euid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("directory %s is writable by other users (mode %04o)", abs, st.Mode&0o7777)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return err
	}
	for _, p := range []string{abs, resolved} {
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			if err := unix.Stat(d, &st); err != nil {
				return &os.PathError{Op: "stat", Path: d, Err: err}
			}
			switch {
			case st.Uid != 0 && st.Uid != euid:
				return fmt.Errorf("directory %s is in %s, which is owned by uid %d, not by root or baton's uid %d", abs, d, st.Uid, euid)
			case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
				return fmt.Errorf("directory %s is in %s, which is writable by other users and not sticky (mode %04o)", abs, d, st.Mode&0o7777)
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return nil
}

func (p *Proxy) serveControl(ln *net.UnixListener, path string, opts ControlOptions) *Control {
	c := &Control{ln: ln, path: path, p: p, opts: opts, slots: make(chan struct{}, maxControlConns),
		acceptLog: errlog.RateLog{Every: controlAlertEvery}, busyLog: errlog.RateLog{Every: controlAlertEvery}}
	p.control = c
	c.wg.Add(1)
	go c.serve()
	return c
}

// HandOff marks the control socket as handed to a new process: closing it
// here must not remove the path the new process now serves (HANDOFF.md P5).
func (c *Control) HandOff() { c.ln.SetUnlinkOnClose(false) }

// Path is where the socket is.
func (c *Control) Path() string { return c.path }

// Close stops serving, removes the socket file and waits for requests in
// flight. It is idempotent.
func (c *Control) Close() error {
	c.once.Do(func() { c.ln.Close() })
	c.wg.Wait()
	return nil
}

func (c *Control) serve() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if n := c.acceptLog.Hit(c.now()); n > 0 {
				c.p.log.Logf(LevelAlert, "control socket accept: %v%s", err, errlog.TimesText(n))
			}
			time.Sleep(100 * time.Millisecond) // back off: accept errors here are resource limits
			continue
		}
		if n := c.acceptLog.Due(c.now()); n > 0 {
			c.p.log.Logf(LevelNotice, "control socket accept works again; %d failures were not logged", n)
		}
		select {
		case c.slots <- struct{}{}:
		default:
			// Answer at once: a client left waiting would only time out.
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			json.NewEncoder(conn).Encode(ControlReply{Error: fmt.Sprintf("busy: baton serves %d control clients at once", maxControlConns)})
			conn.Close()
			if n := c.busyLog.Hit(c.now()); n > 0 {
				c.p.log.Logf(LevelWarn, "control socket: refused a client: %d clients are being served%s", maxControlConns, errlog.TimesText(n))
			}
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() { <-c.slots }()
			defer conn.Close()
			c.handle(conn)
		}()
	}
}

// now is the control socket's clock for its rate-limited lines (errlog.RateLog).
func (c *Control) now() int64 { return int64(time.Since(c.p.base)) }

// peerAllowed reports whether the peer runs as root or as our own user.
func peerAllowed(conn *net.UnixConn) (uint32, bool) {
	uid, err := peerUID(conn)
	if err != nil {
		return 0, false
	}
	return uid, uidAllowed(uid)
}

// uidAllowed is the rule both ends apply to each other: root, or our euid.
func uidAllowed(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// peerUID returns the effective uid of conn's peer (SO_PEERCRED): for a
// server, the process that called listen; for a client, the one that
// connected.
func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

func (c *Control) handle(conn *net.UnixConn) {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	reply := func(r ControlReply) { json.NewEncoder(conn).Encode(r) }
	if uid, ok := peerAllowed(conn); !ok {
		c.p.log.Logf(LevelWarn, "control socket: refused a client with uid %d", uid)
		reply(ControlReply{Error: "permission denied"})
		return
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxControlRequest)).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		reply(ControlReply{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Cmd {
	case "status":
		st := c.p.Status()
		reply(ControlReply{OK: true, Status: &st})
	case "reload":
		if c.opts.Reload == nil {
			reply(ControlReply{Error: "reload is not available: baton runs without a config file"})
			return
		}
		report, err := c.opts.Reload()
		if err != nil {
			reply(ControlReply{Error: err.Error()})
			return
		}
		reply(ControlReply{OK: true, Report: report})
	case "upgrade":
		if c.opts.Upgrade == nil {
			reply(ControlReply{Error: "upgrade is not available here"})
			return
		}
		conn.SetDeadline(time.Time{}) // an upgrade takes as long as its timeouts allow
		rep, err := c.opts.Upgrade(req.Binary)
		conn.SetDeadline(time.Now().Add(30 * time.Second)) // but its answer does not
		if err != nil {
			reply(ControlReply{Error: err.Error(), Upgrade: &rep})
			return
		}
		reply(ControlReply{OK: true, Upgrade: &rep})
	default:
		reply(ControlReply{Error: fmt.Sprintf("unknown command %q", req.Cmd)})
	}
}

// CallControl sends req to the control socket at path and returns the reply.
// It is the client side, used by "baton status", "baton reload" and "baton
// upgrade". Before it sends anything it checks who serves the socket
// (SO_PEERCRED): root or the caller's own euid, the rule the server applies
// to its clients; a socket of any other user gets an error and no request.
func CallControl(path string, req ControlRequest, timeout time.Duration) (*ControlReply, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("no baton answers on %s: %w", path, err)
	}
	defer c.Close()
	conn := c.(*net.UnixConn)
	uid, err := peerUID(conn)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: who serves it: %w", path, err)
	}
	if !uidAllowed(uid) {
		return nil, fmt.Errorf("control socket %s is served by uid %d, not by root or uid %d: another user's socket; nothing sent", path, uid, os.Geteuid())
	}
	conn.SetDeadline(time.Now().Add(timeout))
	// A server that refuses us answers and closes without reading: a failed
	// write is then less telling than the answer, so read it first.
	werr := json.NewEncoder(conn).Encode(req)
	var r ControlReply
	if err := json.NewDecoder(conn).Decode(&r); err != nil {
		if werr != nil {
			return nil, werr
		}
		return nil, fmt.Errorf("reading the reply from %s: %w", path, err)
	}
	return &r, nil
}
