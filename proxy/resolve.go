package proxy

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/dnsres"
)

// Upstream servers resolved at run time ("server NAME resolve", nginx
// 1.27.3+): each name is looked up when its answer expires (TTL or valid=,
// plus a second, as nginx), and when its addresses change the upstream gets
// a new generation of its group (fill): an address that stays keeps its peer,
// one that leaves takes no new session while its sessions drain, one that
// appears is added. A failed lookup keeps the last good answer and is tried
// again after max(resolver_timeout, 1s); an empty answer (NXDOMAIN, no
// records) empties the name.

// firstResolveWait bounds how long Start waits for the first answers.
const firstResolveWait = 3 * time.Second

// resolving is the run-time DNS state of one upstream, shared by every
// generation of its group.
type resolving struct {
	r       *dnsres.Resolver
	timeout time.Duration

	mu    sync.Mutex // guards hosts' answers and serialises rebuilds
	hosts []*resolvedHost

	cancel context.CancelFunc // nil until started
	done   sync.WaitGroup
	first  chan struct{} // closed once every name had its first lookup after start
}

// resolvedHost is one "server NAME resolve" line and its last answer.
type resolvedHost struct {
	server  int // index of the line in the upstream
	host    string
	service string

	addrs     []dnsres.Addr // the last good answer, sorted
	answered  bool          // an answer, empty or not, has come
	refreshed time.Time     // when the last lookup ended, good or not
	err       string        // the last lookup's error; "" after a good one
	fails     uint64        // failed lookups
	changes   uint64        // answers that changed addrs
}

// newResolving returns u's run-time DNS state, nil when no server of u
// resolves at run time. prev (the same upstream's group before a reload)
// lends its answers to the names both have.
func newResolving(u *config.Upstream, prev *group) *resolving {
	var rs *resolving
	for si, s := range u.Servers {
		if !s.Resolve {
			continue
		}
		if rs == nil {
			rc := u.Resolver
			rs = &resolving{timeout: rc.Timeout, r: dnsres.New(dnsres.Config{
				Servers: rc.Addrs, Valid: rc.Valid, IPv4: rc.IPv4, IPv6: rc.IPv6, Timeout: rc.Timeout,
			})}
		}
		h := &resolvedHost{server: si, host: s.Host, service: s.Service}
		if prev != nil && prev.res != nil {
			prev.res.mu.Lock()
			for _, ph := range prev.res.hosts {
				if strings.EqualFold(ph.host, h.host) && ph.service == h.service && ph.answered {
					h.addrs, h.answered, h.refreshed = ph.addrs, true, ph.refreshed
					break
				}
			}
			prev.res.mu.Unlock()
		}
		rs.hosts = append(rs.hosts, h)
	}
	return rs
}

// resolvedPeer is one address a resolved server contributes to its group.
type resolvedPeer struct {
	name   string // hashed by the hash methods: the server as written, or an SRV target
	addr   netip.AddrPort
	weight int
	backup bool
}

// peersOf returns the peers server si (s) has from its last answer. For
// SRV (nginx's service=), the records of the highest priority are primary
// and the others backup, each with the record's port and, unless the
// server sets a weight, its weight; a "backup" server takes the highest
// priority ones as backup and ignores the rest.
func (rs *resolving) peersOf(si int, s *config.UpstreamServer) []resolvedPeer {
	if rs == nil {
		return nil
	}
	var h *resolvedHost
	for _, x := range rs.hosts {
		if x.server == si {
			h = x
		}
	}
	if h == nil {
		return nil
	}
	minPri := uint16(65535)
	for _, a := range h.addrs {
		minPri = min(minPri, a.Priority)
	}
	var out []resolvedPeer
	for _, a := range h.addrs {
		rp := resolvedPeer{name: s.Name, addr: netip.AddrPortFrom(a.Addr, s.Port), weight: s.Weight, backup: s.Backup}
		if s.Service != "" {
			if a.Priority != minPri {
				if s.Backup {
					continue
				}
				rp.backup = true
			}
			rp.name, rp.addr = a.Name, netip.AddrPortFrom(a.Addr, a.Port)
			if s.Weight == 1 {
				rp.weight = max(int(a.Weight), 1)
			}
		}
		out = append(out, rp)
	}
	return out
}

// sortAddrs puts an answer in baton's canonical order: priority, then SRV
// target, address and port. nginx keeps the order of arrival, so two nginx
// instances given the same records in other orders hash keys differently;
// baton's order depends on the records only.
func sortAddrs(a []dnsres.Addr) {
	slices.SortFunc(a, func(x, y dnsres.Addr) int {
		return cmp.Or(cmp.Compare(x.Priority, y.Priority), strings.Compare(x.Name, y.Name),
			x.Addr.Compare(y.Addr), cmp.Compare(x.Port, y.Port), cmp.Compare(x.Weight, y.Weight))
	})
}

// startResolving begins following g's names, each in a goroutine of its
// own until stopResolving.
func (p *Proxy) startResolving(g *group) {
	rs := g.res
	if rs == nil || rs.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs.cancel = cancel
	var first sync.WaitGroup
	for _, h := range rs.hosts {
		rs.mu.Lock()
		fresh := !h.answered
		rs.mu.Unlock()
		if fresh {
			first.Add(1)
		}
		rs.done.Add(1)
		go func() {
			defer rs.done.Done()
			p.follow(ctx, g, h, fresh, &first)
		}()
	}
	rs.first = make(chan struct{})
	go func() { first.Wait(); close(rs.first) }()
}

// awaitResolved waits until every name of groups that had no answer when
// it started has had its first lookup, good or not, or for at most bound:
// a process starting (or taking over from an old one in an upgrade) then
// has its upstreams' addresses before it takes a connection, unless DNS
// is slow to answer.
func awaitResolved(groups []*group, bound time.Duration) {
	t := time.NewTimer(bound)
	defer t.Stop()
	for _, g := range groups {
		if g.res == nil || g.res.first == nil {
			continue
		}
		select {
		case <-g.res.first:
		case <-t.C:
			return
		}
	}
}

// stopResolving stops following g's names and waits for lookups in flight.
func stopResolving(g *group) {
	if rs := g.res; rs != nil && rs.cancel != nil {
		rs.cancel()
		rs.done.Wait()
	}
}

// follow looks h up now (or, when a reload carried its answer, once that
// is due) and again each time the answer expires, until ctx ends.
func (p *Proxy) follow(ctx context.Context, g *group, h *resolvedHost, fresh bool, first *sync.WaitGroup) {
	delay := time.Duration(0)
	if !fresh {
		delay = time.Second // a carried answer: refresh soon, without a burst at reload
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if fresh {
				first.Done()
			}
			return
		case <-t.C:
		}
		next := p.lookup(ctx, g, h)
		if fresh {
			first.Done()
			fresh = false
		}
		t.Reset(next)
	}
}

// lookup resolves h once, applies a good answer to g, and returns when to
// look again: a second after the answer expires, as nginx
// (ngx_stream_upstream_zone_resolve_handler), or after max(resolver_timeout,
// 1s) when the lookup failed.
func (p *Proxy) lookup(ctx context.Context, g *group, h *resolvedHost) time.Duration {
	rs := g.res
	var ans dnsres.Answer
	var err error
	if h.service != "" {
		ans, err = rs.r.LookupService(ctx, h.service, h.host)
	} else {
		ans, err = rs.r.LookupHost(ctx, h.host)
	}
	if ctx.Err() != nil {
		return time.Hour
	}
	now := time.Now()
	if err != nil {
		rs.mu.Lock()
		h.refreshed, h.err = now, err.Error()
		h.fails++
		rs.mu.Unlock()
		if h.service != "" {
			p.log.Logf(LevelError, "upstream %q: service %s of %s: %v", g.name, h.service, h.host, err)
		} else {
			p.log.Logf(LevelError, "upstream %q: %v", g.name, err)
		}
		return max(rs.timeout, time.Second)
	}
	addrs := slices.Clone(ans.Addrs)
	sortAddrs(addrs)
	rs.mu.Lock()
	changed := !h.answered || !slices.Equal(addrs, h.addrs)
	if !changed {
		h.refreshed, h.err = now, ""
		rs.mu.Unlock()
		return max(ans.TTL, 0) + time.Second
	}
	added, removed := diffAddrs(h.addrs, addrs)
	h.addrs, h.answered, h.refreshed, h.err = addrs, true, now, ""
	h.changes++
	g.rebuild()
	p.rebuildMonitor(g)
	rs.mu.Unlock()
	msg := fmt.Sprintf("upstream %q: %s now resolves to [%s]", g.name, h.label(), strings.Join(addrStrings(addrs), ", "))
	if len(added) > 0 {
		msg += "; added " + strings.Join(added, ", ")
	}
	if len(removed) > 0 {
		msg += "; removed " + strings.Join(removed, ", ")
	}
	p.log.Logf(LevelNotice, "%s", msg)
	return max(ans.TTL, 0) + time.Second
}

// label names h in logs and status: "db.svc", or "_pg._tcp of db.svc".
func (h *resolvedHost) label() string {
	if h.service != "" {
		return "service " + h.service + " of " + h.host
	}
	return h.host
}

// rebuild makes g's next generation from the answers. Callers hold
// g.res.mu, which serialises rebuilds.
func (g *group) rebuild() {
	gen := &group{name: g.name, sig: g.sig, method: g.method, key: g.key, cfg: g.cfg, res: g.res, hc: g.hc, base: g}
	if err := gen.fill(g.current()); err != nil {
		return // fill fails only for a group without resolved names
	}
	g.next.Store(gen)
}

// diffAddrs returns the addresses (as addrString prints them) in b and not
// in a, and in a and not in b.
func diffAddrs(a, b []dnsres.Addr) (added, removed []string) {
	in := func(x dnsres.Addr, s []dnsres.Addr) bool { return slices.Contains(s, x) }
	for _, x := range b {
		if !in(x, a) {
			added = append(added, addrString(x))
		}
	}
	for _, x := range a {
		if !in(x, b) {
			removed = append(removed, addrString(x))
		}
	}
	return added, removed
}

// addrString prints an answer's address: "10.0.0.1", or for SRV
// "10.0.0.1:5432 (pg-0.svc, weight 5, priority 1)".
func addrString(a dnsres.Addr) string {
	if a.Name == "" {
		return a.Addr.String()
	}
	return fmt.Sprintf("%s (%s, weight %d, priority %d)", netip.AddrPortFrom(a.Addr, a.Port), a.Name, a.Weight, a.Priority)
}

func addrStrings(a []dnsres.Addr) []string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = addrString(x)
	}
	return s
}

// status reports each name rs follows; nil for an upstream without any.
func (rs *resolving) status() []ResolvedStatus {
	if rs == nil {
		return nil
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]ResolvedStatus, 0, len(rs.hosts))
	for _, h := range rs.hosts {
		out = append(out, ResolvedStatus{Name: h.host, Service: h.service, Addrs: addrStrings(h.addrs),
			Answered: h.answered, Refreshed: h.refreshed, Error: h.err, Failures: h.fails, Changes: h.changes})
	}
	return out
}
