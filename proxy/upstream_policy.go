package proxy

import (
	"github.com/batonproxy/baton/config"
	"net/netip"
	"time"

	"github.com/batonproxy/baton/lb"
)

// The upstream-selection policy TCP and UDP sessions share, as nginx's
// ngx_stream_proxy_connect, ngx_event_connect_peer and the round robin's
// free_peer share it between them: which key picks, when another attempt
// is allowed (proxy_next_upstream*), what an attempt records and what a
// peer's failure costs it. TCP connects asynchronously (session.go), UDP
// at once (udp_session.go); both go through these steps.

// recorder is a session, TCP or UDP, that fills a record of itself for the
// variables (vars.go).
type recorder interface {
	record(r *record) *record
}

// pickKey appends the balancing key for session src to b: the upstream's
// hash key evaluated on its record (filled into r only then), the client
// address for ip_hash, none otherwise.
func (g *group) pickKey(b []byte, src recorder, r *record, client netip.Addr) []byte {
	switch {
	case g.key != nil:
		return g.key.appendTo(b, src.record(r))
	case g.method == lb.IPHash:
		return appendAddrKey(b, client)
	}
	return nil // round robin, least_conn, random: no key
}

// mayTry reports whether attempt number tries+1 may be made, tries attempts
// having failed, the first elapsed nanoseconds ago: every peer may be tried
// once, and after a failure only as proxy_next_upstream,
// proxy_next_upstream_tries and proxy_next_upstream_timeout allow.
func (srv *server) mayTry(g *group, tries int, elapsed int64) bool {
	if tries == 0 {
		return true
	}
	if tries >= g.tries {
		return false // every peer not down was tried; nginx's tries counter is 0
	}
	return srv.nextUpstream &&
		(srv.nextTries <= 0 || tries < srv.nextTries) &&
		(srv.nextTimeout <= 0 || elapsed < srv.nextTimeout)
}

// pick asks the balancer for a usable peer. When none is, every peer's
// failures are forgotten, as nginx does so that they come back at once,
// and ok is false: the caller logs "no live upstreams" and ends with 502.
func (g *group) pick(key []byte, usable func(int) bool) (i int, ok bool) {
	if g.bal == nil {
		return -1, false // names resolved at run time have no address (yet)
	}
	i, err := g.bal.Pick(key, usable)
	if err != nil {
		g.health.ResetFails()
		return -1, false
	}
	return i, true
}

// attempt records that peer i is tried at now (one more active session
// on it) and appends its address to addrs ($upstream_addr lists every
// attempt).
func (g *group) attempt(i int, now time.Time, addrs []byte) []byte {
	g.health.Peer(i).Picked(now)
	g.peers[i].active.Add(1)
	if len(addrs) > 0 {
		addrs = append(addrs, ", "...)
	}
	if p := g.peers[i]; p.unix != "" {
		return append(append(addrs, "unix:"...), p.unix...)
	}
	return g.peers[i].addr.AppendTo(addrs)
}

// noLive appends the entry $upstream_addr gets when no peer is left to
// pick: the upstream's name (the host of a "proxy_pass ADDR"), as nginx's
// peers->name.
func (g *group) noLive(addrs []byte) []byte {
	if len(addrs) > 0 {
		addrs = append(addrs, ", "...)
	}
	if u, msg := config.ParseURL(g.name); msg == "" && !u.NoPort {
		return append(addrs, u.Host...) // an implicit upstream: nginx names it by its host
	}
	return append(addrs, g.name...)
}

// peerFailed counts a failure of peer i at now, a connect that failed or a
// session freed with NGX_PEER_FAILED: the smooth round robin lowers its
// effective weight, and passive health disables it for fail_timeout once
// max_fails is reached, which it reports.
func (g *group) peerFailed(i int, now time.Time) (disabled bool) {
	p := g.peers[i]
	p.fails.Add(1)
	if f, ok := g.bal.(lb.Failer); ok {
		f.Failed(i, p.maxFails)
	}
	return g.health.Peer(i).Failed(now)
}
