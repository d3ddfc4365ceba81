package proxy

import (
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// Zero-copy forwarding: bytes go from the source socket into a pipe and
// from the pipe to the destination socket with splice(2), never through
// user space. A flow borrows a pipe from its loop's pool only while bytes
// are in flight; a pipe that still holds bytes when the destination would
// block stays with the flow (those bytes are its pending bytes, kept in the
// kernel). Quiesce for an upgrade drains a held pipe into the flow's
// pending buffer, so no byte is lost (HANDOFF.md §2.5, §6).

// pipeSize is the capacity each pipe is given (F_SETPIPE_SZ): the most one
// splice moves.
const pipeSize = 256 << 10

// maxSparePipes bounds the pipes a loop keeps for reuse.
const maxSparePipes = 64

type pipe struct{ r, w int }

// close closes both ends. Pipes are never in an epoll set, so they close
// at once.
func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// getPipe returns a pipe from the pool or a new one; nil when none can be
// made (the descriptor budget, fdbudget.go, has none left, or the file
// limit): the caller then copies through user space. A pipe's descriptors
// count against the budget as a session's do, in a flow or spare, so that
// sessions that splice never push the process past worker_connections or
// the file limit.
func (l *loop) getPipe() *pipe {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p
	}
	if l.p.fds.starved.Load() || !l.p.fds.take(pipeFDs) {
		return nil
	}
	r, w, err := sock.Pipe(pipeSize)
	if err != nil {
		l.p.fds.give(pipeFDs)
		return nil
	}
	return &pipe{r: r, w: w}
}

// putPipe returns an empty pipe to the pool, or closes it.
func (l *loop) putPipe(p *pipe) {
	if len(l.pipes) < maxSparePipes {
		l.pipes = append(l.pipes, p)
		return
	}
	l.closePipe(p)
}

// closePipe closes p and gives its descriptors back to the budget.
func (l *loop) closePipe(p *pipe) {
	p.close()
	l.p.fds.give(pipeFDs)
}

func (l *loop) closePipes() {
	for _, p := range l.pipes {
		l.closePipe(p)
	}
	l.pipes = nil
}

// makeRoom is called when the budget has no room for a session this loop
// is about to accept: sessions come before pipes. It gives back the
// pipes of every loop that hold no bytes or only bytes stalled behind a
// destination that would block (reclaimPipes), takes the session's
// descriptors if that made room, and reports whether it did. While it
// finds none, the budget is starved and no new pipe is made, so the pipes
// are reclaimed once when it starves, not again at each recheck while it
// stays so (every loop scans its sessions for them).
func (l *loop) makeRoom() bool {
	p := l.p
	if p.fds.starved.Load() {
		return false
	}
	l.reclaimPipes()
	if p.fds.take(tcpSessionFDs) {
		return true
	}
	p.fds.starved.Store(true)
	for _, o := range p.loops {
		if o != l {
			o.do(o.reclaimPipes)
		}
	}
	return false
}

// reclaimPipes closes this loop's spare pipes and moves what each stalled
// flow holds in its pipe to user space (drainPipe), closing the pipe: a
// stalled pipe's descriptors do nothing a buffer cannot do, and the budget
// needs them for a session.
func (l *loop) reclaimPipes() {
	for _, s := range l.sessions {
		if s.state != stateProxying {
			continue
		}
		for _, f := range []*flow{&s.c2u, &s.u2c} {
			if f.pipe != nil {
				s.drainPipe(f)
			}
		}
	}
	l.closePipes()
}

// flushPipe splices what f's pipe holds to dst until it is empty or dst
// would block.
func (f *flow) flushPipe(dst int) error {
	for f.inPipe > 0 {
		w, again, err := sock.Splice(f.pipe.r, dst, f.inPipe)
		if err != nil {
			return err
		}
		if again {
			return nil
		}
		f.inPipe -= w
		f.n += int64(w)
	}
	return nil
}

// pumpSplice is pump through a pipe. It returns false if no pipe could be
// had, and the caller copies instead.
func (s *session) pumpSplice(f *flow, src, dst int) bool {
	l := s.loop
	p := l.getPipe()
	if p == nil {
		return false
	}
	for round := 0; round < 4; round++ {
		m, again, err := sock.Splice(src, p.w, pipeSize)
		if err != nil {
			l.putPipe(p)
			s.ioError("splice()", err, src)
			return true
		}
		if again {
			break
		}
		if m == 0 { // EOF
			l.putPipe(p)
			f.eof = true
			s.flowDone(f, dst)
			return true
		}
		s.lastActive = l.now
		f.pipe, f.inPipe = p, m
		if err := f.flushPipe(dst); err != nil {
			s.ioError("splice()", err, dst)
			return true
		}
		if f.inPipe > 0 {
			// dst would block: the flow keeps the pipe and its bytes.
			s.updateInterest()
			return true
		}
		f.pipe = nil
		if m < pipeSize {
			break
		}
	}
	l.putPipe(p)
	return true
}

// drainPipe moves what f's pipe holds into f's pending buffer (user space)
// and gives the pipe back: before a quiesce, whose state carries pending
// bytes as bytes.
func (s *session) drainPipe(f *flow) {
	if f.pipe == nil {
		return
	}
	l := s.loop
	for f.inPipe > 0 {
		buf := l.buf[:min(len(l.buf), f.inPipe)]
		n, err := sock.Read(f.pipe.r, buf)
		if n <= 0 || err != nil {
			break // cannot happen: the bytes are there
		}
		f.hold(buf[:n])
		f.inPipe -= n
	}
	l.putPipe(f.pipe)
	f.pipe, f.inPipe = nil, 0
}
