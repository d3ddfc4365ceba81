package control

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
	"syscall"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/errlog"
	"golang.org/x/sys/unix"
)

// Request is one request on the control socket.
type Request struct {
	Cmd    string `json:"cmd"`              // "status", "reload", "plan" or "upgrade"
	Binary string `json:"binary,omitempty"` // upgrade: the new binary (default: this one)
}

// Reply is the answer to a Request.
type Reply struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	Report string `json:"report,omitempty"`
	// Status is what Handlers.Status returned, as JSON (baton's is a
	// proxy.Status): the client decodes it.
	Status  json.RawMessage `json:"status,omitempty"`
	Upgrade *fdpass.Report  `json:"upgrade,omitempty"`
}

// Handlers are what the control socket's commands do. A nil handler refuses
// its command.
type Handlers struct {
	// Status returns the state to report; the reply carries it as JSON.
	Status func() any

	// Reload re-reads the configuration and applies it, returning a report
	// of what changed.
	Reload func() (string, error)

	// Upgrade hands everything to a new process started from binary ("":
	// this one) and returns what moved.
	Upgrade func(binary string) (fdpass.Report, error)

	// Plan reads the configuration as Reload would, changes nothing, and
	// reports what the reload would do to live sessions.
	Plan func() (string, error)
}

// Server is a running control socket.
type Server struct {
	ln    *net.UnixListener
	path  string
	h     Handlers
	log   *errlog.Logger
	base  time.Time // the clock of the rate-limited lines (now)
	wg    sync.WaitGroup
	once  sync.Once
	slots chan struct{} // one per client being served; at most MaxConns

	// Owned by the accept loop (serve).
	acceptLog errlog.RateLog
	busyLog   errlog.RateLog
}

// MaxConns is how many clients the control socket serves at once; one more
// is answered "busy" and closed at once. Each holds a descriptor and a
// goroutine for up to 30 s, or for a whole upgrade. Clients are root or
// baton's own user (socket mode and SO_PEERCRED), so this bounds a runaway
// script, not a stranger; 16 leaves room for an upgrade and the status calls
// of scripts watching it.
const MaxConns = 16

const (
	maxRequest = 64 << 10

	// alertEvery is how often the accept loop logs a failure: at the file
	// limit accept fails on every back-off (100 ms), with the same error
	// each time (issue 12).
	alertEvery = int64(time.Second)
)

// Serve creates the control socket at path and serves it with h until
// Close, logging to log. A stale socket file (nothing answers on it) is
// replaced; a live one is an error: another baton owns it.
func Serve(path string, h Handlers, log *errlog.Logger) (*Server, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := checkDir(dir); err != nil {
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
	return serve(ln, path, h, log), nil
}

// ServeListener serves ln, the control socket at path that an old process
// handed over in an upgrade, as Serve does. The Server owns ln from then on,
// and Close removes path again.
func ServeListener(ln *net.UnixListener, path string, h Handlers, log *errlog.Logger) *Server {
	ln.SetUnlinkOnClose(true)
	return serve(ln, path, h, log)
}

// checkDir refuses a directory for the control socket that a user other
// than root and baton's own could change. In the review (issue 12) a
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
// The client's SO_PEERCRED check (Call) is the other half: it holds even
// where this check cannot, e.g. for a path baton never served.
func checkDir(dir string) error {
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

func serve(ln *net.UnixListener, path string, h Handlers, log *errlog.Logger) *Server {
	s := &Server{ln: ln, path: path, h: h, log: log, base: time.Now(), slots: make(chan struct{}, MaxConns),
		acceptLog: errlog.RateLog{Every: alertEvery}, busyLog: errlog.RateLog{Every: alertEvery}}
	s.wg.Add(1)
	go s.serve()
	return s
}

// HandOff marks the control socket as handed to a new process: closing it
// here must not remove the path the new process now serves (HANDOFF.md P5).
func (s *Server) HandOff() { s.ln.SetUnlinkOnClose(false) }

// Path is where the socket is.
func (s *Server) Path() string { return s.path }

// SyscallConn returns the listening socket's raw connection, so that
// fdpass.Dup can copy it for a new process in an upgrade. The socket stays
// the Server's.
func (s *Server) SyscallConn() (syscall.RawConn, error) { return s.ln.SyscallConn() }

// Close stops serving, removes the socket file and waits for requests in
// flight. It is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() { s.ln.Close() })
	s.wg.Wait()
	return nil
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if n := s.acceptLog.Hit(s.now()); n > 0 {
				s.log.Logf(errlog.LevelAlert, "control socket accept: %v%s", err, errlog.TimesText(n))
			}
			time.Sleep(100 * time.Millisecond) // back off: accept errors here are resource limits
			continue
		}
		if n := s.acceptLog.Due(s.now()); n > 0 {
			s.log.Logf(errlog.LevelNotice, "control socket accept works again; %d failures were not logged", n)
		}
		select {
		case s.slots <- struct{}{}:
		default:
			// Answer at once: a client left waiting would only time out.
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			json.NewEncoder(conn).Encode(Reply{Error: fmt.Sprintf("busy: baton serves %d control clients at once", MaxConns)})
			conn.Close()
			if n := s.busyLog.Hit(s.now()); n > 0 {
				s.log.Logf(errlog.LevelWarn, "control socket: refused a client: %d clients are being served%s", MaxConns, errlog.TimesText(n))
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			defer conn.Close()
			s.handle(conn)
		}()
	}
}

// now is the control socket's clock for its rate-limited lines (RateLog):
// monotonic nanoseconds since Serve.
func (s *Server) now() int64 { return int64(time.Since(s.base)) }

func (s *Server) handle(conn *net.UnixConn) {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	reply := func(r Reply) { json.NewEncoder(conn).Encode(r) }
	if uid, ok := peerAllowed(conn); !ok {
		s.log.Logf(errlog.LevelWarn, "control socket: refused a client with uid %d", uid)
		reply(Reply{Error: "permission denied"})
		return
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxRequest)).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		reply(Reply{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Cmd {
	case "status":
		if s.h.Status == nil {
			reply(Reply{Error: "status is not available here"})
			return
		}
		st, err := json.Marshal(s.h.Status())
		if err != nil {
			reply(Reply{Error: "status: " + err.Error()})
			return
		}
		reply(Reply{OK: true, Status: st})
	case "reload":
		if s.h.Reload == nil {
			reply(Reply{Error: "reload is not available: baton runs without a config file"})
			return
		}
		report, err := s.h.Reload()
		if err != nil {
			reply(Reply{Error: err.Error()})
			return
		}
		reply(Reply{OK: true, Report: report})
	case "plan":
		if s.h.Plan == nil {
			reply(Reply{Error: "reload --dry-run is not available: baton runs without a config file"})
			return
		}
		report, err := s.h.Plan()
		if err != nil {
			reply(Reply{Error: err.Error()})
			return
		}
		reply(Reply{OK: true, Report: report})
	case "upgrade":
		if s.h.Upgrade == nil {
			reply(Reply{Error: "upgrade is not available here"})
			return
		}
		conn.SetDeadline(time.Time{}) // an upgrade takes as long as its timeouts allow
		rep, err := s.h.Upgrade(req.Binary)
		conn.SetDeadline(time.Now().Add(30 * time.Second)) // but its answer does not
		if err != nil {
			reply(Reply{Error: err.Error(), Upgrade: &rep})
			return
		}
		reply(Reply{OK: true, Upgrade: &rep})
	default:
		reply(Reply{Error: fmt.Sprintf("unknown command %q", req.Cmd)})
	}
}
