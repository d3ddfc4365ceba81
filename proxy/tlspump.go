package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlsrec"
	"golang.org/x/sys/unix"
)

// recPump moves a terminated TLS session's decrypted stream between the
// client (rc, baton's record layer over the client's socket) and the
// loop's socketpair (pc), one goroutine a direction, as pumpTLS does for
// crypto/tls. Unlike crypto/tls's, its record state can be taken: stop
// interrupts both directions where nothing is lost, and the session moves
// in an upgrade (tlsmove.go) or goes on here (resume).
type recPump struct {
	rc        *tlsrec.Conn
	pc        *net.UnixConn
	link      *tlsLink
	halfClose bool
	give      func() // both directions ended: the session's TLS descriptors go back

	mu       sync.Mutex
	running  int
	ended    [2]bool // a direction ended for good: 0 towards the loop, 1 towards the client
	stopping bool
	stopped  chan struct{} // closed when the last direction stopped
	toLoop   []byte        // opened, not yet written to the loop (a write the stop cut)
	closed   bool
}

const (
	toLoop   = 0
	toClient = 1
)

// recLink is the link of a session whose pump (not started) carries rc
// to and from pc; the session's TLS descriptors go back when it ends.
func (p *Proxy) recLink(rc *tlsrec.Conn, pc *net.UnixConn, halfClose bool) *tlsLink {
	link := &tlsLink{}
	link.pump = &recPump{rc: rc, pc: pc, link: link, halfClose: halfClose, give: func() { p.fds.give(tlsFDs) }}
	return link
}

// start runs the directions that have not ended.
func (p *recPump) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for dir := range p.ended {
		if !p.ended[dir] {
			p.running++
			go p.run(dir)
		}
	}
}

func (p *recPump) run(dir int) {
	var ended bool
	if dir == toLoop {
		ended = p.toLoopDir()
	} else {
		ended = p.toClientDir()
	}
	p.mu.Lock()
	p.running--
	if ended {
		p.ended[dir] = true
	}
	all := p.ended[toLoop] && p.ended[toClient] && !p.closed
	if all {
		p.closed = true
	}
	if p.stopping && p.running == 0 {
		close(p.stopped)
	}
	p.mu.Unlock()
	if all {
		p.rc.Close()
		p.pc.Close()
		p.rc.Wipe()
		p.give()
	}
}

// interrupted reports whether err is stop's doing, not the end of a
// direction.
func (p *recPump) interrupted(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping && errors.Is(err, os.ErrDeadlineExceeded)
}

// toLoopDir moves the client's data to the loop; true when that direction
// ended (the client's close_notify or close, an error, the loop's end
// closed), false when stopped.
func (p *recPump) toLoopDir() bool {
	for {
		if len(p.toLoop) > 0 {
			k, err := p.pc.Write(p.toLoop)
			p.toLoop = p.toLoop[k:]
			if err != nil {
				return !p.interrupted(err)
			}
			p.toLoop = nil
		}
		b, err := p.rc.ReadPlain()
		if err != nil {
			if p.interrupted(err) {
				return false
			}
			p.pc.CloseWrite()
			return true
		}
		p.toLoop = b // valid until the next ReadPlain
	}
}

// toClientDir moves the loop's data to the client, sealed; true when that
// direction ended (the loop's FIN: close_notify and, with
// proxy_half_close, a FIN, else the client's socket closed).
func (p *recPump) toClientDir() bool {
	if err := p.rc.Flush(); err != nil {
		return !p.interrupted(err)
	}
	// A write Stop cut leaves nothing behind: what rc took is sealed.
	rerr, werr := pumpCopy(p.rc, p.pc)
	if werr != nil {
		return !p.interrupted(werr)
	}
	if p.interrupted(rerr) {
		return false
	}
	if p.halfClose && !p.link.finished.Load() {
		p.rc.CloseWrite()
	} else {
		p.rc.Close()
	}
	return true
}

// stop interrupts both directions and waits until they have returned.
func (p *recPump) stop() {
	p.mu.Lock()
	p.stopping = true
	p.stopped = make(chan struct{})
	if p.running == 0 {
		close(p.stopped)
	}
	p.mu.Unlock()
	p.rc.Stop()
	p.pc.SetDeadline(time.Unix(1, 0))
	<-p.stopped
}

// movable reports whether a stopped pump's session can move: both
// directions live, and no handshake message half read.
func (p *recPump) movable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.ended[toLoop] && !p.ended[toClient] && p.rc.Movable()
}

// resume goes on here after a stop.
func (p *recPump) resume() {
	p.mu.Lock()
	p.stopping = false
	p.mu.Unlock()
	p.rc.Resume()
	p.pc.SetDeadline(time.Time{})
	p.start()
}

// takeToPeer reads what the loop wrote that the stopped pump had not
// read yet (the socketpair's queue), and seals it into the record state.
func (p *recPump) takeToPeer() error {
	rc, err := p.pc.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	var got []byte
	err = rc.Control(func(fd uintptr) {
		var buf [16 << 10]byte
		for {
			n, err := unix.Read(int(fd), buf[:])
			if n > 0 {
				got = append(got, buf[:n]...)
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil && err != unix.EAGAIN {
				rerr = err
			}
			if n <= 0 || err != nil {
				return
			}
		}
	})
	if err == nil {
		err = rerr
	}
	p.rc.Seal(got)
	clear(got)
	return err
}

// dupPeer returns a duplicate of the peer's socket (named name), which a
// stopped pump's record state goes on over.
func (p *recPump) dupPeer(name string) (*os.File, error) {
	sc, ok := p.rc.NetConn().(syscall.Conn)
	if !ok {
		return nil, errors.New("the peer's socket has no descriptor")
	}
	fd, err := sock.DupConn(sc)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// discard ends a stopped pump whose session lives on in another process:
// its sockets are closed here with nothing sent (no close_notify), and the
// keys forgotten.
func (p *recPump) discard() {
	p.mu.Lock()
	done := p.closed
	p.closed = true
	p.mu.Unlock()
	if done {
		return
	}
	p.rc.NetConn().Close()
	p.pc.Close()
	p.rc.Wipe()
	clear(p.toLoop)
	p.give()
}
