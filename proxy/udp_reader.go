package proxy

import (
	"errors"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// readUpstream is s's upstream reader: it writes each reply to the client
// and keeps the idle deadline. A 64 KiB buffer is held only while replies
// keep coming: it goes back to the pool when the socket would block, so an
// idle session holds none.
//
// An upgrade parks it (udp_handoff.go): a read deadline in the past and
// s.paused make it return between two datagrams, the session still live;
// it is started again (startUpstreamReader) to resume.
func (u *udpListener) readUpstream(s *udpSession, done chan struct{}) {
	defer u.wg.Done()
	defer close(done)
	var buf *[]byte
	var n int
	var rerr error
	recv := func(fd uintptr) bool {
		if buf == nil {
			buf = getDgram(dgramBig)
		}
		for {
			n, rerr = unix.Read(int(fd), *buf)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			putDgram(buf)
			buf = nil
			return false
		}
		return true
	}
	defer func() {
		if buf != nil {
			putDgram(buf)
		}
	}()
	s.mu.Lock()
	if s.paused || s.ended {
		s.parkedRd = s.paused
		s.mu.Unlock()
		return
	}
	if t := u.idleTimeout(s); t > 0 {
		s.up.SetReadDeadline(u.deadline(s.lastActive + t))
	} else {
		s.up.SetReadDeadline(time.Time{})
	}
	s.mu.Unlock()
	for {
		err := s.raw.Read(recv)
		switch {
		case err == nil && rerr == nil && n >= dgramBig:
			u.drops.truncated.Add(1) // cannot happen: see dgramBig
		case err == nil && rerr == nil:
			if !u.reply(s, (*buf)[:n]) {
				return
			}
		case err == nil:
			u.upstreamFailed(s, bareErrno(rerr))
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			if u.expire(s) {
				return
			}
		default: // closed: the owner has ended s
			if s.claim(200, endUpstreamError) {
				u.ends <- s
			}
			return
		}
	}
}

// reply sends one upstream datagram to the client. It reports false when s
// has ended.
func (u *udpListener) reply(s *udpSession, b []byte) bool {
	_, done, ok := u.count(s, len(b), false)
	if !ok {
		return false
	}
	if _, _, err := u.conn.WriteMsgUDPAddrPort(b, s.oob, s.client); err != nil {
		if !done && !s.claim(200, endClientError) {
			return false
		}
		if !errors.Is(err, net.ErrClosed) {
			u.p.log.Logf(LevelError, "*%d sendmsg() failed %s while proxying and sending to client, udp client: %s, server: %s, upstream: \"%s\"",
				s.id, errnoText(bareErrno(err)), s.client.Addr(), s.srv.name, s.upstreamAddrs)
		}
		u.ends <- s
		return false
	}
	if done {
		u.ends <- s
		return false
	}
	return true
}

// expire handles the idle deadline: if nothing moved for proxy_timeout the
// session ends as nginx's timer does (200 when every expected response has
// come, else "upstream timed out", 502 and a peer failure); otherwise the
// deadline moves on. It reports whether the reader is done; a paused
// session's reader is done without ending it. The deadline is set under
// s.mu, where pause sets its own, so that it never overwrites the pause's.
func (u *udpListener) expire(s *udpSession) bool {
	now := u.now()
	s.mu.Lock()
	if s.ended || s.paused {
		s.parkedRd = s.paused
		s.mu.Unlock()
		return true
	}
	t := u.idleTimeout(s)
	if t <= 0 { // a deadline nobody asked for: none from here on
		s.up.SetReadDeadline(time.Time{})
		s.mu.Unlock()
		return false
	}
	if at := s.lastActive + t; at > now {
		s.up.SetReadDeadline(u.deadline(at))
		s.mu.Unlock()
		return false
	}
	s.ended = true
	if resp := s.srv.proxyResponses; resp < 0 || s.responses >= int64(resp)*s.requests {
		s.status, s.reason = 200, endTimedOut
	} else {
		s.status, s.reason, s.failed = 502, endUpstreamTimedOut, true
	}
	s.mu.Unlock()
	u.ends <- s
	return true
}

// idleTimeout is how long s may go without a datagram either way, with
// s.mu held: proxy_timeout, and while no reply has come, no longer than
// the unanswered bound (udpUnansweredTimeout), so that a flood of one
// datagram from each of many sources holds its descriptors briefly.
func (u *udpListener) idleTimeout(s *udpSession) int64 {
	t := s.timeout
	if un := int64(u.p.udpUnanswered); s.responses == 0 && un > 0 && (t <= 0 || un < t) {
		t = un
	}
	return t
}

// upstreamFailed ends s on a recv() error of its upstream socket, typically
// ECONNREFUSED after an ICMP port unreachable. nginx counts the error as a
// response, stops reading the upstream and frees the peer with
// NGX_PEER_FAILED when the session ends; baton ends the session at once
// (nothing more can come from that socket), with the status nginx's
// session would end with.
func (u *udpListener) upstreamFailed(s *udpSession, err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.failed, s.reason, s.status = true, true, endUpstreamError, 200
	if resp := s.srv.proxyResponses; resp >= 0 && s.responses+1 < int64(resp)*s.requests {
		s.status = 502
	}
	s.mu.Unlock()
	u.p.log.Logf(LevelError, "*%d recv() failed %s while proxying and reading from upstream, udp client: %s, server: %s, upstream: \"%s\"",
		s.id, errnoText(err), s.client.Addr(), s.srv.name, s.upstreamAddrs)
	u.ends <- s
}

// startUpstreamReader starts s's upstream reader (owner).
func (u *udpListener) startUpstreamReader(s *udpSession) {
	s.rdone = make(chan struct{})
	u.wg.Add(1)
	go u.readUpstream(s, s.rdone)
}
