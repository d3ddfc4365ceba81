package proxy

import (
	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// Pacing (proxy_upload_rate, proxy_download_rate), as nginx's
// ngx_stream_proxy_process: a direction may have read rate*(seconds since
// the session began + 1) bytes so far; a read takes no more than that,
// and after it the source rests n*1000/rate milliseconds. A resting source
// is out of the epoll interest, its pacer in the loop's timer heap: no
// goroutine, no timer of its own. Sessions without a rate have no pacer
// and pay one nil check per read.

// pacer paces reads from one direction's source.
type pacer struct {
	timer
	l       *loop
	wake    func() // sets the source's interest from resting (nil: none to set)
	rate    int64  // bytes per second
	got     int64  // bytes read from the source since pacing began
	since   int64  // when pacing began (loop.now)
	resting bool
}

// expire ends a rest: the source is read again.
func (p *pacer) expire() {
	p.resting = false
	if p.wake != nil {
		p.wake()
	}
}

// newPacer paces a source at rate, allowing from since.
func newPacer(l *loop, rate, since int64, wake func()) *pacer {
	return &pacer{timer: timer{heapIdx: -1}, l: l, wake: wake, rate: rate, since: since}
}

// stop takes p out of the timer heap; it rests no more.
func (p *pacer) stop() {
	p.l.timers.remove(p)
	p.resting = false
}

// rates evaluates srv's proxy_upload_rate and proxy_download_rate for the
// session r describes: 0 for none, and for a value that is no size, as
// nginx's ngx_stream_complex_value_size with its default 0.
func (srv *server) rates(l *loop, r *record) (up, down int64) {
	for i, t := range []template{srv.upRate, srv.downRate} {
		if t == nil {
			continue
		}
		rate, err := config.ParseSize(string(t.appendTo(l.keyBuf[:0], r)))
		if err != nil || rate <= 0 {
			continue
		}
		if i == 0 {
			up = rate
		} else {
			down = rate
		}
	}
	return up, down
}

// allow returns how many bytes the next read may take (at most max), or 0
// when the source must rest first (the rest has begun).
func (p *pacer) allow(max int) int {
	if p.resting {
		return 0
	}
	l := p.l
	limit := p.rate*((l.now-p.since)/1e9+1) - p.got
	if limit <= 0 {
		p.rest((-limit*1000/p.rate + 1) * 1e6)
		return 0
	}
	return int(min(int64(max), limit))
}

// took counts n bytes read and rests the source for the time they take.
func (p *pacer) took(n int) {
	p.got += int64(n)
	if ms := int64(n) * 1000 / p.rate; ms > 0 {
		p.rest(ms * 1e6)
	}
}

// rest keeps the source unread for d nanoseconds.
func (p *pacer) rest(d int64) {
	l := p.l
	p.resting = true
	p.lastActive, p.timeout = l.now, d
	l.schedule(p)
	if p.wake != nil {
		p.wake()
	}
}

// pacerOf returns the pacer of flow f, or nil.
func (s *session) pacerOf(f *flow) *pacer {
	if s.x == nil {
		return nil
	}
	if f == &s.c2u {
		return s.x.pace[0]
	}
	return s.x.pace[1]
}

// resting reports whether f's source rests (pacing).
func (s *session) resting(f *flow) bool {
	p := s.pacerOf(f)
	return p != nil && p.resting
}

// startPacing gives the session its pacers, once connected: the rates are
// evaluated now (they may have variables), as nginx's
// ngx_stream_proxy_init_upstream; the allowance grows from since (the
// session's start; for a session moved in an upgrade, its arrival, so that
// the time it spent in the old process is no credit).
func (s *session) startPacing(since int64) {
	srv := s.srv
	if srv.upRate == nil && srv.downRate == nil {
		return
	}
	up, down := srv.rates(s.loop, s.record(&s.loop.rec))
	for i, rate := range []int64{up, down} {
		if rate > 0 {
			s.ext().pace[i] = newPacer(s.loop, rate, since, s.updateInterest)
		}
	}
}

// resumePacing paces a session moved from an old process: with the rates
// and allowance it had there (the bytes read, the time since pacing began),
// or, from a baton that did not carry them, afresh from now.
func (s *session) resumePacing(now int64) {
	if s.x == nil || s.x.moved[0].rate == 0 && s.x.moved[1].rate == 0 {
		s.startPacing(now)
		return
	}
	for i, m := range s.x.moved {
		if m.rate > 0 {
			p := newPacer(s.loop, m.rate, now-m.age, s.updateInterest)
			p.got = m.got
			s.x.pace[i] = p
		}
	}
	s.x.moved = [2]pacedState{}
}

// pausePacing takes the session's pacers out of the timer heap (a
// quiesce) and keeps them: no rest is under way, the allowance stays.
func (s *session) pausePacing() {
	if s.x == nil {
		return
	}
	for _, p := range s.x.pace {
		if p != nil {
			p.stop()
		}
	}
}

// stopPacing takes the session's pacers out of the timer heap.
func (s *session) stopPacing() {
	if s.x == nil {
		return
	}
	for i, p := range s.x.pace {
		if p != nil {
			p.stop()
			s.x.pace[i] = nil
		}
	}
}

// UDP: a download rate rests the upstream socket (out of the epoll
// interest; its datagrams wait in the socket, as nginx's); an upload rate
// drops the client's datagrams that come while it rests, as nginx's shared
// UDP receive, which offers each datagram once.

// startPacing gives a UDP session its pacers (loop).
func (u *udpListener) startPacing(s *udpSession, since int64) {
	srv := s.srv
	if srv.upRate == nil && srv.downRate == nil {
		return
	}
	up, down := srv.rates(u.l, s.record(&u.l.rec))
	if up > 0 {
		s.ext().pace[0] = newPacer(u.l, up, since, nil)
	}
	if down > 0 {
		s.ext().pace[1] = newPacer(u.l, down, since, func() { u.paceInterest(s) })
	}
}

// resumePacing paces a UDP session moved from an old process with the
// allowance it had there, or afresh from a baton that did not carry it.
func (u *udpListener) resumePacing(s *udpSession, now int64) {
	if s.x == nil || s.x.moved[0].rate == 0 && s.x.moved[1].rate == 0 {
		u.startPacing(s, now)
		return
	}
	for i, m := range s.x.moved {
		if m.rate == 0 {
			continue
		}
		var wake func()
		if i == 1 {
			wake = func() { u.paceInterest(s) }
		}
		p := newPacer(u.l, m.rate, now-m.age, wake)
		p.got = m.got
		s.x.pace[i] = p
	}
	s.x.moved = [2]pacedState{}
}

// paceInterest sets s's upstream socket's interest: none while its
// download rests.
func (u *udpListener) paceInterest(s *udpSession) {
	if s.fd < 0 || s.paused {
		return
	}
	var events uint32 = unix.EPOLLIN
	if s.x != nil && s.x.pace[1] != nil && s.x.pace[1].resting {
		events = 0
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(s.fd), Pad: tagUDPSession}
	sock.EpollCtl(u.l.epfd, unix.EPOLL_CTL_MOD, s.fd, &ev)
}

// stopPacing stops a UDP session's pacers (its end, a park).
func (s *udpSession) stopPacing() {
	if s.x == nil {
		return
	}
	for _, p := range s.x.pace {
		if p != nil {
			p.stop()
		}
	}
}

// pacer returns a UDP session's pacer of a direction (0 upload, 1
// download), or nil.
func (s *udpSession) pacer(dir int) *pacer {
	if s.x == nil {
		return nil
	}
	return s.x.pace[dir]
}
