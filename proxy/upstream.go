package proxy

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/lb"
)

// peer is one upstream address. A server whose name resolves to several
// addresses is several peers with the same name, as in nginx.
type peer struct {
	name     string // as written in the config; hashed by the hash methods
	addr     netip.AddrPort
	unix     string // "server unix:PATH": the socket's path (addr is then invalid)
	down     bool
	backup   bool
	maxFails int
	maxConns int32
	server   int // index of its "server" line in the upstream
	weight   int
	active   atomic.Int32 // live connections, counted from the pick, as nginx's peer->conns

	// Counters for status and metrics.
	total    atomic.Uint64 // connections established
	fails    atomic.Uint64 // failed or timed-out connects
	sent     atomic.Uint64 // bytes sent to the peer, added when a session ends
	received atomic.Uint64 // bytes received from the peer, added when a session ends
}

// group is one upstream block with its balancer: the per-upstream state the
// balancer and the sessions share.
type group struct {
	name    string
	peers   []*peer
	bal     lb.Balancer
	health  *health.Group                  // passive health (max_fails, fail_timeout), one entry per peer
	monitor atomic.Pointer[health.Monitor] // active checks ("health_check"); nil when none
	method  lb.Method
	key     template // "hash KEY"; nil for other methods
	sig     string   // upstreamSig and healthSig of the config it was built from
	tries   int      // peers not "down": attempts a session may make (nginx's peers->tries)
	lt      lb.Timer // the least_time balancer, told each attempt's times; nil for other methods

	// Upstreams with servers resolved at run time: cfg builds each
	// generation; res (shared by the generations) holds the answers; next
	// is the latest generation, set on the first group only (current).
	cfg  *config.Upstream
	res  *resolving
	next atomic.Pointer[group]
	base *group // the first group, in a later generation

	rbStats *rebalanceStats     // "rebalance": its figures, shared by name across reloads
	hc      *config.HealthCheck // the monitor's check, to rebuild it for a new generation
}

// String is the peer's address as $upstream_addr and the logs print it:
// "10.0.0.1:5432", or "unix:/run/db.sock".
func (p *peer) String() string {
	if p.unix != "" {
		return "unix:" + p.unix
	}
	return p.addr.String()
}

// hasUnix reports whether a peer is a unix: socket.
func (g *group) hasUnix() bool {
	for i := range g.peers {
		if g.peers[i].unix != "" {
			return true
		}
	}
	return false
}

// Active implements lb.State.
func (g *group) Active(i int) int { return int(g.peers[i].active.Load()) }

// Checked implements lb.CheckedState, for least_time.
func (g *group) Checked(i int) (checked, failTimeout int64) { return g.health.Peer(i).Checked() }

// methodOf maps a config balancing method to lb's.
func methodOf(u *config.Upstream) (lb.Method, error) {
	switch u.Method {
	case "":
		return lb.RoundRobin, nil
	case "ip_hash":
		return lb.IPHash, nil
	case "hash":
		if u.Consistent {
			return lb.ConsistentHash, nil
		}
		return lb.Hash, nil
	case "least_conn":
		return lb.LeastConn, nil
	case "random":
		switch {
		case u.RandomLeastConn:
			return lb.RandomTwoLeastConn, nil
		case u.RandomTwo:
			return lb.RandomTwo, nil
		}
		return lb.Random, nil
	case "least_time":
		switch u.LeastTime {
		case "connect":
			return lb.LeastTimeConnect, nil
		case "first_byte":
			return lb.LeastTimeFirstByte, nil
		case "last_byte":
			return lb.LeastTimeLastByte, nil
		}
	}
	return 0, fmt.Errorf("balancing method %q is not supported", u.Method)
}

// usesBackup reports whether method m ever sends a flow to a backup server;
// nginx's hash, ip_hash and random methods do not.
func usesBackup(m lb.Method) bool {
	switch m {
	case lb.RoundRobin, lb.LeastConn, lb.LeastTimeConnect, lb.LeastTimeFirstByte, lb.LeastTimeLastByte:
		return true
	}
	return false
}

func newGroup(u *config.Upstream, vt *varTable) (*group, error) {
	return newGroupFrom(u, vt, nil)
}

// newGroupFrom builds u's group. prev, when not nil, is the group of an
// upstream of the same name before a reload: the names both resolve at run
// time start from prev's answers, as nginx's "preresolve" (the zone keeps
// them), rather than with no address until their first answer.
func newGroupFrom(u *config.Upstream, vt *varTable, prev *group) (*group, error) {
	g := &group{name: u.Name, sig: upstreamSig(u), cfg: u}
	m, err := methodOf(u)
	if err != nil {
		return nil, err
	}
	g.method = m
	if m == lb.Hash || m == lb.ConsistentHash {
		if g.key, err = vt.compile(u.HashKey); err != nil {
			return nil, err
		}
	}
	g.res = newResolving(u, prev)
	if err := g.fill(nil); err != nil {
		return nil, err
	}
	return g, nil
}

// fill builds g's peers, their health and its balancer from g.cfg's
// servers and, for those resolved at run time, their last answers. Peers
// that prev (the generation g replaces) has too, the same server and
// address (and SRV name and weight), are prev's own: they keep their live
// count, counters, health and round robin position. Resolved addresses sit
// at their server's place in config order, sorted, so that two instances
// with the same answers in another order build the same list.
func (g *group) fill(prev *group) error {
	u := g.cfg
	var peers []lb.Peer
	var params []health.Params
	var carried []*health.Peer
	var from []int
	was := map[peerKey][]int{}
	if prev != nil {
		for i, p := range prev.peers {
			k := p.key()
			was[k] = append(was[k], i)
		}
	}
	add := func(si int, s *config.UpstreamServer, name string, a netip.AddrPort, weight int, backup bool) {
		p := &peer{name: name, addr: a, unix: s.Unix, down: s.Down, backup: backup, maxFails: s.MaxFails, maxConns: int32(s.MaxConns), server: si, weight: weight}
		j := -1
		if prevs := was[p.key()]; len(prevs) > 0 {
			j, was[p.key()] = prevs[0], prevs[1:]
			p = prev.peers[j]
			carried = append(carried, prev.health.Peer(j))
		} else {
			carried = append(carried, nil)
		}
		from = append(from, j)
		g.peers = append(g.peers, p)
		ringName := name
		if u.HashRing == "address" && s.Unix == "" {
			ringName = a.String() // baton's hash_ring address: every address its own points
		}
		peers = append(peers, lb.Peer{Name: ringName, Weight: weight, Backup: backup})
		params = append(params, health.Params{Weight: weight, MaxFails: s.MaxFails, FailTimeout: s.FailTimeout, SlowStart: s.SlowStart, Backup: backup})
	}
	for si, s := range u.Servers {
		if s.Backup && !usesBackup(g.method) {
			// Accepted when written before the method (with a warning from
			// config); nginx then never uses it, so it is left out.
			continue
		}
		if s.Resolve {
			for _, r := range g.res.peersOf(si, s) {
				if !r.backup || usesBackup(g.method) {
					add(si, s, r.name, r.addr, r.weight, r.backup)
				}
			}
			continue
		}
		addrs := s.Addrs
		if s.Unix != "" {
			addrs = []netip.AddrPort{{}}
		}
		for _, a := range addrs {
			add(si, s, s.Name, a, s.Weight, s.Backup)
		}
	}
	if len(peers) == 0 && g.res == nil {
		return fmt.Errorf("no servers are inside upstream %q", u.Name)
	}
	for _, p := range g.peers {
		if !p.down {
			g.tries++
		}
	}
	g.health = health.NewGroupFrom(params, carried)
	if len(peers) == 0 {
		return nil // every name resolved to nothing (yet): no live upstreams
	}
	var err error
	g.bal, err = lb.New(g.method, peers, lb.Options{BalanceFactor: u.BalanceFactor, State: g, Inflight: u.Inflight})
	if err != nil {
		return err
	}
	if prev != nil && prev.bal != nil {
		if in, ok := g.bal.(lb.Inheritor); ok {
			in.Inherit(prev.bal, from)
		}
	}
	g.lt, _ = g.bal.(lb.Timer)
	return nil
}

// peerKey is what makes a peer the same across generations of its group.
type peerKey struct {
	server int
	name   string
	addr   netip.AddrPort
	weight int
	backup bool
}

func (p *peer) key() peerKey {
	return peerKey{server: p.server, name: p.name, addr: p.addr, weight: p.weight, backup: p.backup}
}

// current is the generation of g that new sessions use: g itself, or the
// latest group rebuilt from it when a resolved name changed. A session
// keeps the generation it began with, whose peer indexes it holds.
func (g *group) current() *group {
	if g == nil {
		return nil
	}
	if n := g.next.Load(); n != nil {
		return n
	}
	return g
}

// origin is the group whose generation g is: the one servers and routes
// name (g itself for a group never rebuilt).
func (g *group) origin() *group {
	if g != nil && g.base != nil {
		return g.base
	}
	return g
}

// usable reports whether peer i may take a new connection at now, apart
// from whether this session already tried it: not down, under max_conns,
// and not disabled by max_fails within fail_timeout.
func (g *group) usable(i int, now time.Time) bool {
	p := g.peers[i]
	h := g.health.Peer(i)
	return !p.down && (p.maxConns == 0 || p.active.Load() < p.maxConns) && h.Usable(now) && admitRamping(h.Ramp(now))
}

// upstreamSig is everything about u that shapes its group: two upstreams
// with the same name and signature can share one group across a reload.
func upstreamSig(u *config.Upstream) string {
	b := fmt.Appendf(nil, "%s|%s|%v|%v|%v|%d|%s %v|ring %s", u.Method, u.HashKey, u.Consistent, u.RandomTwo, u.RandomLeastConn, u.BalanceFactor, u.LeastTime, u.Inflight, u.HashRing)
	resolve := false
	for _, s := range u.Servers {
		b = fmt.Appendf(b, "|%s %v%s w%d f%d t%s c%d s%s b%v d%v r%v %q", s.Name, s.Addrs, s.Unix, s.Weight, s.MaxFails, s.FailTimeout, s.MaxConns, s.SlowStart, s.Backup, s.Down, s.Resolve, s.Service)
		resolve = resolve || s.Resolve
	}
	if r := u.Resolver; resolve && r != nil {
		b = fmt.Appendf(b, "|resolver %v %s %v %v %s", r.Addrs, r.Valid, r.IPv4, r.IPv6, r.Timeout)
	}
	return string(b)
}

// healthSig is the part of a group's signature its active health check
// makes (upstreamSig), "" without one.
func healthSig(hc *config.HealthCheck) string {
	if hc == nil {
		return ""
	}
	b := fmt.Appendf(nil, "|check i%s f%d p%d port%d u%v m%v t%s", hc.Interval, hc.Fails, hc.Passes, hc.Port, hc.UDP, hc.Mandatory, hc.Timeout)
	if m := hc.Match; m != nil {
		re := ""
		if m.Regexp != nil {
			re = m.Regexp.String()
		}
		b = fmt.Appendf(b, " match %q %q %q %q", m.Name, m.Send, m.Expect, re)
	}
	return string(b)
}
