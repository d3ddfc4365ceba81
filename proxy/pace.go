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

// paceFor makes a session's pacers: with the rates and allowance an old
// process carried (moved; since is then now), or else with srv's rates
// evaluated for the session (rec), the allowance growing from since. wake[i] sets direction
// i's interest from its rest (nil: none to set). A direction without a
// rate has no pacer.
func paceFor(l *loop, srv *server, rec func() *record, moved [2]pacedState, since int64, wake [2]func()) (out [2]*pacer) {
	if moved[0].rate > 0 || moved[1].rate > 0 {
		for i, m := range moved {
			if m.rate > 0 {
				out[i] = newPacer(l, m.rate, since-m.age, wake[i])
				out[i].got = m.got
			}
		}
		return out
	}
	if srv.upRate == nil && srv.downRate == nil {
		return out
	}
	up, down := srv.rates(l, rec())
	for i, rate := range [2]int64{up, down} {
		if rate > 0 {
			out[i] = newPacer(l, rate, since, wake[i])
		}
	}
	return out
}

// pacedStates is what pacers carry to a new process at now.
func pacedStates(ps [2]*pacer, now int64) (out [2]pacedState) {
	for i, p := range ps {
		if p != nil {
			out[i] = pacedState{rate: p.rate, got: p.got, age: now - p.since}
		}
	}
	return out
}

// stopPacers takes pacers out of the timer heap, so that none rests; drop
// forgets them too (the session ends), else they keep their allowance (a
// quiesce, a park).
func stopPacers(ps *[2]*pacer, drop bool) {
	for i, p := range ps {
		if p != nil {
			p.stop()
			if drop {
				ps[i] = nil
			}
		}
	}
}

// startPacing gives the session its pacers, once connected: the rates are
// evaluated now (they may have variables), as nginx's
// ngx_stream_proxy_init_upstream; the allowance grows from since.
func (s *session) startPacing(since int64) { s.pace(since, [2]pacedState{}) }

// resumePacing paces a session moved from an old process, with the
// allowance it had there, or afresh from now if it carried none.
func (s *session) resumePacing(now int64) {
	var moved [2]pacedState
	if s.x != nil {
		moved, s.x.moved = s.x.moved, [2]pacedState{}
	}
	s.pace(now, moved)
}

func (s *session) pace(since int64, moved [2]pacedState) {
	wake := func() { s.updateInterest() }
	ps := paceFor(s.loop, s.srv, func() *record { return s.record(&s.loop.rec) }, moved, since, [2]func(){wake, wake})
	if ps[0] != nil || ps[1] != nil {
		s.ext().pace = ps
	}
}

// pausePacing takes the session's pacers out of the timer heap (a
// quiesce) and keeps them: no rest is under way, the allowance stays.
func (s *session) pausePacing() {
	if s.x != nil {
		stopPacers(&s.x.pace, false)
	}
}

// stopPacing takes the session's pacers out of the timer heap.
func (s *session) stopPacing() {
	if s.x != nil {
		stopPacers(&s.x.pace, true)
	}
}

// UDP: a download rate rests the upstream socket (out of the epoll
// interest; its datagrams wait in the socket, as nginx's); an upload rate
// drops the client's datagrams that come while it rests, as nginx's shared
// UDP receive, which offers each datagram once.

// startPacing gives a UDP session its pacers (loop).
func (u *udpListener) startPacing(s *udpSession, since int64) { u.pace(s, since, [2]pacedState{}) }

// resumePacing paces a UDP session moved from an old process with the
// allowance it had there, or afresh from now if it carried none.
func (u *udpListener) resumePacing(s *udpSession, now int64) {
	var moved [2]pacedState
	if s.x != nil {
		moved, s.x.moved = s.x.moved, [2]pacedState{}
	}
	u.pace(s, now, moved)
}

func (u *udpListener) pace(s *udpSession, since int64, moved [2]pacedState) {
	wake := [2]func(){nil, func() { u.paceInterest(s) }}
	ps := paceFor(u.l, s.srv, func() *record { return s.record(&u.l.rec) }, moved, since, wake)
	if ps[0] != nil || ps[1] != nil {
		s.ext().pace = ps
	}
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

// stopPacing stops a UDP session's pacers (its end, a park), keeping them
// for its state.
func (s *udpSession) stopPacing() {
	if s.x != nil {
		stopPacers(&s.x.pace, false)
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
