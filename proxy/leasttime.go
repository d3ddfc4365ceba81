package proxy

import (
	"time"

	"github.com/batonproxy/baton/lb"
)

// least_time's hooks. A session tells its group's least_time balancer
// (lb.Timer) what nginx's stream proxy tells the peer: the connect and the
// upstream's first byte (peer.notify with NGX_STREAM_UPSTREAM_NOTIFY_CONNECT
// from ngx_stream_proxy_init_upstream, _FIRST_BYTE from
// ngx_stream_proxy_process), and the end of each attempt (peer.free:
// NGX_PEER_FAILED from ngx_stream_proxy_next_upstream when a connect fails,
// and from ngx_stream_proxy_finalize when a session ends, failed only for a
// UDP socket error). Times are nanoseconds from the attempt's start, as
// $upstream_connect_time, $upstream_first_byte_time and
// $upstream_session_time; negative for what did not happen. For any other
// method each hook is one nil check.

// timeConnected reports that the attempt on peer i connected d after it
// began.
func (g *group) timeConnected(i int, d int64) {
	if g.lt != nil {
		g.lt.Connected(i, time.Duration(d))
	}
}

// timeFirstByte reports that the first byte from peer i came d after the
// attempt began.
func (g *group) timeFirstByte(i int, d int64) {
	if g.lt != nil {
		g.lt.FirstByte(i, time.Duration(d))
	}
}

// timeFailed reports an attempt on peer i that ended before it connected,
// freed with NGX_PEER_FAILED: nothing of it is averaged. baton also counts
// a socket it could not make (EMFILE...) so, where nginx averages the
// instant as a session: the peer did nothing, fast or slow.
func (g *group) timeFailed(i int) {
	if g.lt != nil {
		g.lt.Done(i, true, lb.Times{Connect: -1, FirstByte: -1, Total: -1})
	}
}

// timeDone reports the end of s's attempt, at s.endMono.
func (s *session) timeDone() {
	if s.group.lt == nil {
		return
	}
	fb := int64(-1)
	if s.firstByte > 0 {
		fb = s.firstByte - s.attemptStart
	}
	s.group.lt.Done(s.peer, false, lb.Times{
		Connect:   time.Duration(s.connectTime),
		FirstByte: time.Duration(fb),
		Total:     time.Duration(s.endMono - s.attemptStart),
	})
}

// timeDone reports the end of s's attempt on g at end (loop.clock), failed
// for a socket error. A UDP session's attempt is taken to start with the
// session.
func (s *udpSession) timeDone(g *group, failed bool, end int64) {
	if g.lt == nil {
		return
	}
	fb := int64(-1)
	if s.firstByte > 0 {
		fb = s.firstByte - s.startMono
	}
	g.lt.Done(s.peer, failed, lb.Times{
		Connect:   time.Duration(s.connectTime),
		FirstByte: time.Duration(fb),
		Total:     time.Duration(end - s.startMono),
	})
}
