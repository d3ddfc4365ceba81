package proxy

import "github.com/batonproxy/baton/config"

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
	s       *session
	rate    int64 // bytes per second
	got     int64 // bytes read from the source since pacing began
	since   int64 // when pacing began (loop.now)
	resting bool
}

// expire ends a rest: the source is read again.
func (p *pacer) expire() {
	p.resting = false
	p.s.updateInterest()
}

// allow returns how many bytes the next read may take (at most max), or 0
// when the source must rest first (the rest has begun).
func (p *pacer) allow(max int) int {
	if p.resting {
		return 0
	}
	l := p.s.loop
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
	l := p.s.loop
	p.resting = true
	p.lastActive, p.timeout = l.now, d
	l.schedule(p)
	p.s.updateInterest()
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
	r := s.record(&s.loop.rec)
	for i, t := range []template{srv.upRate, srv.downRate} {
		if t == nil {
			continue
		}
		// A value that is no size is no limit, as nginx's
		// ngx_stream_complex_value_size with its default 0.
		rate, err := config.ParseSize(string(t.appendTo(s.loop.keyBuf[:0], r)))
		if err == nil && rate > 0 {
			s.ext().pace[i] = &pacer{timer: timer{heapIdx: -1}, s: s, rate: rate, since: since}
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
			s.loop.timers.remove(p)
			s.x.pace[i] = nil
		}
	}
}
