package proxy

import (
	"errors"
	"io"

	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlsrec"
	"golang.org/x/sys/unix"
)

// The loop runs a TLS session's record layer itself, on the peer's own
// socket: a flow whose source speaks TLS opens its records (flow.in), one
// whose destination does seals them (flow.out), in the same pass that
// reads and writes the other side. There is no goroutine and no buffer
// between the two: an idle TLS session holds its keys and a small read
// buffer, and the bytes are copied once each way, as nginx's.
//
// What differs from a plain flow:
//   - a record layer may have read past what one read returns (several
//     records in one read, the peer's close_notify behind its data): epoll
//     will not report those bytes, so the loop reads on while the layer
//     has them (Buffered), and a flow that stops with some (its
//     destination full, its rate's rest) is kicked once it may read again;
//   - what is sealed and not yet written waits in the layer (OutPending),
//     counted as the flow's pending bytes;
//   - no splice: the bytes pass through user space anyway;
//   - the end of a direction is the peer's close_notify (or its FIN), and
//     baton's own end sends one (flowDone, finish).

// attachRec makes rec the record layer of the client's side (client) or
// the upstream's: the flow from that side opens with it, the flow to it
// seals.
func (s *session) attachRec(rec *tlsrec.Conn, client bool) {
	if client {
		s.c2u.in, s.u2c.out = rec, rec
	} else {
		s.u2c.in, s.c2u.out = rec, rec
	}
}

// wipeTLS forgets the keys of s's record layers, sending nothing: the
// session lives on in another process, or never started.
func (s *session) wipeTLS() {
	if s.x == nil {
		return
	}
	for _, t := range []*tlsInfo{s.x.tls, s.x.upTLS} {
		if t != nil {
			t.drop()
		}
	}
}

// kickRec has the loop read f's source again in its next pass when f's
// record layer holds what epoll will not report, and f may read now.
func (s *session) kickRec(f *flow, src int) {
	if f.in != nil && src >= 0 && !f.eof && !f.pending() && !s.resting(f) && f.in.Buffered() {
		s.loop.kick(s, src)
	}
}

// pumpRec is pump for a flow with a TLS side.
func (s *session) pumpRec(f *flow, src, dst int) {
	buf, p, capped, ok := s.readBuf(f)
	if !ok {
		return // resting: out of the interest until its timer
	}
	for round := 0; round < 4 || f.in != nil && f.in.Buffered(); round++ {
		var b []byte
		var err error
		eof := false
		switch {
		case f.in == nil:
			var n int
			n, err = sock.Read(src, buf)
			if n > 0 {
				b = buf[:n]
			} else if err == nil {
				eof = true
			}
		case p == nil && !capped:
			b, err = f.in.ReadPlain() // valid until the next read: written or held before it
		default:
			var n int
			n, err = f.in.Read(buf)
			b = buf[:n]
		}
		if f.in != nil && f.in.OutPending() {
			// Reading answered the peer (a KeyUpdate) and its socket is
			// full: the answer waits, as the flow towards it.
			s.updateInterest()
		}
		if len(b) > 0 {
			s.took(src, len(b), p)
			var w int
			var werr error
			if f.out != nil {
				if w, werr = f.out.Write(b); tlsrec.WouldBlock(werr) {
					werr = nil // sealed: the rest goes with the next flush
				}
			} else {
				w, werr = sock.SendAll(dst, b, 0)
			}
			f.n += int64(w)
			if werr != nil {
				s.ioError(writeOp(f), werr, dst)
				return
			}
			if w < len(b) || f.pending() {
				f.hold(b[w:])
				s.updateInterest()
				return
			}
			if p != nil || f.in == nil && len(b) < len(buf) {
				// Paced: a read a pass (the rest kicked if the layer has
				// it). Plain and drained: epoll says when there is more.
				s.kickRec(f, src)
				return
			}
			continue
		}
		switch {
		case eof, f.in != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
			f.eof = true
			s.flowDone(f, dst)
			return
		case tlsrec.WouldBlock(err):
			return
		case err == unix.EINTR:
			continue
		case err == nil:
			continue // a record without data (a KeyUpdate, a ticket)
		case f.in != nil && sock.Errno(err) == 0:
			// The peer broke TLS (an alert, a bad record): that direction
			// ends, as it would at its close.
			s.srv.log.Logf(LevelInfo, "*%d SSL_read() failed %s while proxying connection, %s side, client: %s, server: %s",
				s.id, sock.ErrnoText(err), s.sideOf(src), s.client.Addr(), s.srv.name)
			f.eof = true
			s.flowDone(f, dst)
			return
		default:
			s.ioError(readOp(f), err, src)
			return
		}
	}
}

// flushRec is flush for a flow whose destination speaks TLS: what its
// record layer holds sealed goes first, then the flow's pending bytes are
// sealed after it.
func (s *session) flushRec(f *flow, dst int) bool {
	err := f.out.Flush()
	if err == nil && f.pend != nil {
		var w int
		w, err = f.out.Write(f.pend)
		f.n += int64(w)
		putPend(f.base)
		f.pend, f.base = nil, nil
	}
	if err != nil && !tlsrec.WouldBlock(err) {
		s.ioError("SSL_write()", err, dst)
		return false
	}
	s.lastActive = s.loop.now
	if f.out.OutPending() {
		return true // the interest stays: EPOLLOUT
	}
	return s.flushed(f, dst)
}

// readClient reads the client's bytes as a plain read(2) reports them (0
// and no error at its end, EAGAIN when there are none now), opened when
// its side speaks TLS.
func (s *session) readClient(b []byte) (int, error) {
	rec := s.c2u.in
	if rec == nil {
		return sock.Read(s.cfd, b)
	}
	n, err := rec.Read(b)
	switch {
	case n > 0:
		return n, nil
	case errors.Is(err, io.EOF):
		return 0, nil
	case tlsrec.WouldBlock(err):
		return 0, unix.EAGAIN
	}
	return 0, err
}

// writeClient writes b to the client as sock.WriteAll (how much went, and
// no error when the socket is full), sealed when its side speaks TLS:
// then all of b counts as gone, and clientOutPending says whether it has
// left the record layer.
func (s *session) writeClient(b []byte) (int, error) {
	rec := s.u2c.out
	if rec == nil {
		return sock.WriteAll(s.cfd, b)
	}
	err := rec.Flush()
	n := 0
	if err == nil && len(b) > 0 {
		n, err = rec.Write(b)
	}
	if tlsrec.WouldBlock(err) {
		err = nil
	}
	return n, err
}

// clientOutPending reports whether sealed bytes wait for the client's
// socket.
func (s *session) clientOutPending() bool { return s.u2c.out != nil && s.u2c.out.OutPending() }

// readOp and writeOp name a flow's calls as nginx's log lines do.
func readOp(f *flow) string {
	if f.in != nil {
		return "SSL_read()"
	}
	return "recv()"
}

func writeOp(f *flow) string {
	if f.out != nil {
		return "SSL_write()"
	}
	return "send()"
}
