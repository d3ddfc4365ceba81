package proxy

import (
	"golang.org/x/sys/unix"
)

// The preread phase (ssl_preread on), as nginx's
// ngx_stream_core_preread_phase: the client's first bytes are read into
// s.early (they go upstream first, once) until the TLS ClientHello is
// parsed, the client stops sending (EOF, an error) or preread_timeout
// passes; each of those goes on to the content phase with what was found.
// A buffer (preread_buffer_size) filled before the parser is done ends the
// session with 400 ("preread buffer full"), a parser error with 500. The
// session waits in the loop (statePreread) and holds nothing but its bytes.

// startPreread runs the phase from the bytes read so far (readEarly, or
// what came with a PROXY header).
func (s *session) startPreread() {
	if s.prereadStep() {
		return
	}
	l := s.loop
	s.state = statePreread
	s.cEvents = l.setInterest(s.cfd, s.cEvents, unix.EPOLLIN|unix.EPOLLRDHUP)
	s.lastActive, s.timeout = l.now, s.srv.prereadTimeout
	l.schedule(s)
}

// prereadStep parses what s.early holds. It reports whether the phase is
// over (the session went on to its content phase or ended).
func (s *session) prereadStep() bool {
	if s.sv.prereadDone {
		return s.prereadOver(200)
	}
	// The parser sees no more than the buffer nginx would have
	// (readEarly may have read further).
	done, err := parseHello(s.early[:min(len(s.early), s.srv.prereadMax)], s.sv)
	switch {
	case err != nil:
		return s.prereadOver(500)
	case done:
		s.sv.prereadDone = true
		s.chooseVhost()
		return s.prereadOver(200)
	case len(s.early) >= s.srv.prereadMax:
		s.srv.log.Logf(LevelError, "*%d preread buffer full while prereading client data, client: %s, server: %s",
			s.id, s.client.Addr(), s.srv.name)
		return s.prereadOver(400)
	}
	return false
}

// prereadOver ends the phase: on to the content phase (status 200), or the
// session ends with status.
func (s *session) prereadOver(status int) bool {
	if status != 200 {
		s.finish(status)
		return true
	}
	if s.state == statePreread {
		l := s.loop
		l.timers.remove(s)
		s.state = stateConnecting // as the content phase starts it (connectNext sets it again)
		// The client's bytes wait in the socket until the upstream is
		// connected; clientWhileConnecting watches for a reset meanwhile.
		s.cEvents = l.setInterest(s.cfd, s.cEvents, 0)
	}
	s.content()
	return true
}

// readPreread reads more of the client's first bytes (an event in
// statePreread).
func (s *session) readPreread() {
	l := s.loop
	for {
		room := s.srv.prereadMax - len(s.early)
		if room <= 0 {
			s.prereadStep()
			return
		}
		n, err := s.readClient(l.buf[:min(room, len(l.buf))])
		switch {
		case n > 0:
			// No s.lastActive: preread_timeout bounds the whole phase, as
			// nginx's timer, set once.
			s.early = append(s.early, l.buf[:n]...)
			if s.prereadStep() {
				return
			}
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
		default:
			// EOF or an error: nginx goes on with what it has; the
			// proxying that follows meets the EOF or the error itself.
			s.prereadOver(200)
			return
		}
	}
}

// prereadTimedOut is preread_timeout passing: on with what was found.
func (s *session) prereadTimedOut() {
	s.prereadOver(200)
}
