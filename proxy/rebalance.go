package proxy

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/lb"
)

// baton's "rebalance [window=T] [idle=T]" (hash and ip_hash upstreams): a
// live session is misplaced when the server its key maps to now (current
// servers and health) is usable and is not the one it is connected to, the
// server's name for nginx's consistent ring, its address otherwise. Each
// loop looks at its sessions every rebalanceTick; a session found
// misplaced is given a turn, spread evenly with jitter over the window from
// that moment, and is closed at its first idle moment (nothing either way
// for idle) once its turn has come, at the latest at the window's end, and
// only with no byte of it in flight. A session that is no longer misplaced
// loses its turn; one that becomes misplaced later is planned over a window
// from then. Only TCP sessions are moved: a UDP session ends on its own.

// rebalanceTick is how often a loop looks at its sessions.
const rebalanceTick = 200 * time.Millisecond

// rebalanceGrace bounds how long past the window's end a session with
// bytes in flight is waited for.
const rebalanceGrace = 5 * time.Second

// rebalancePlan is a session's place in a rebalance.
type rebalancePlan struct {
	key   []byte // the balancing key it was picked with
	at    int64  // loop time its turn comes; 0: not misplaced
	end   int64  // loop time its window ends
	owner string // where it belongs now, for the log
}

// rebalanceStats are an upstream's rebalance figures, kept by name across
// reloads and the group's generations.
type rebalanceStats struct {
	misplaced []atomic.Int64 // per loop: sessions misplaced now
	closeIdle atomic.Uint64  // closed at an idle moment in their turn
	closeEnd  atomic.Uint64  // closed at their window's end
}

// publishGroups gives the loops the upstreams by name, for rebalancing
// (they read it without reloadMu). Called with reloadMu held, or before
// the loops start.
func (p *Proxy) publishGroups() {
	m := make(map[string]*group, len(p.groups))
	any := false
	for _, g := range p.groups {
		m[g.name] = g
		if g.cfg != nil && g.cfg.Rebalance != nil {
			any = true
			if p.rbStats == nil {
				p.rbStats = map[string]*rebalanceStats{}
			}
			if p.rbStats[g.name] == nil {
				p.rbStats[g.name] = &rebalanceStats{misplaced: make([]atomic.Int64, len(p.loops))}
			}
			g.rbStats = p.rbStats[g.name]
		}
	}
	p.byName.Store(&m)
	if any {
		for _, l := range p.loops {
			l.do(l.startRebalancing)
		}
	}
}

// rebalancer is a loop's periodic look at its sessions, in its timer heap.
// It walks the sessions only when something may have changed since the
// last walk (an upstream's generation, or which of its peers are usable) or
// when that walk found misplaced sessions: an upstream at rest costs a look
// at its peers, not at every session.
type rebalancer struct {
	timer
	l       *loop
	gens    map[*group]*group // each rebalance upstream's generation at the last walk
	usable  map[*group][]bool // and which of its peers were usable
	pending int               // misplaced sessions the last walk left
}

// changed reports whether any rebalance upstream's generation or usable
// peers differ from the last walk's, and records them.
func (r *rebalancer) changed(byName map[string]*group, wall time.Time) bool {
	if r.gens == nil {
		r.gens, r.usable = map[*group]*group{}, map[*group][]bool{}
	}
	changed := false
	seen := 0
	for _, root := range byName {
		if root.cfg == nil || root.cfg.Rebalance == nil {
			continue
		}
		seen++
		cur := root.current()
		u := r.usable[root]
		if r.gens[root] != cur || len(u) != len(cur.peers) {
			changed = true
			r.gens[root] = cur
			u = make([]bool, len(cur.peers))
			r.usable[root] = u
		}
		for i, p := range cur.peers {
			if ok := !p.down && cur.health.Peer(i).Usable(wall); ok != u[i] {
				u[i], changed = ok, true
			}
		}
	}
	if seen != len(r.gens) {
		changed = true
		for root := range r.gens {
			if byName[root.name] != root {
				delete(r.gens, root)
				delete(r.usable, root)
			}
		}
	}
	return changed
}

func (r *rebalancer) expire() { r.l.rebalanceScan() }

// startRebalancing schedules the loop's scans, if they are not running.
func (l *loop) startRebalancing() {
	if l.rb == nil {
		l.rb = &rebalancer{timer: timer{heapIdx: -1}, l: l}
	}
	if l.rb.heapIdx >= 0 || l.stopping {
		return
	}
	l.rb.lastActive, l.rb.timeout = l.now, int64(rebalanceTick)
	l.schedule(l.rb)
}

// rebalanceScan finds the loop's misplaced sessions, plans the new ones,
// and closes those whose turn has come at an idle moment.
func (l *loop) rebalanceScan() {
	byName := l.p.byName.Load()
	if byName == nil {
		return
	}
	now, wall := l.now, l.wall()
	if !l.rb.changed(*byName, wall) && l.rb.pending == 0 {
		l.rb.lastActive = l.now
		l.schedule(l.rb)
		return
	}
	counts := map[*rebalanceStats]int64{}
	var fresh []*session
	for k := 0; k < len(l.sessions); k++ {
		s := l.sessions[k]
		if s.state != stateProxying || s.x == nil || s.x.rb.key == nil || s.group == nil || s.peer < 0 {
			continue
		}
		root := (*byName)[s.group.name]
		if root == nil || root.cfg == nil || root.cfg.Rebalance == nil || root.rbStats == nil {
			s.x.rb.at = 0
			continue
		}
		cur := root.current()
		if cur.method != s.group.method || cur.cfg.HashKey != s.group.cfg.HashKey {
			s.x.rb.at = 0 // a reload changed the method or key: the session's key says nothing now
			continue
		}
		owner, misplaced := cur.misplaced(s.group.peers[s.peer], s.x.rb.key, wall)
		if !misplaced {
			s.x.rb.at = 0
			continue
		}
		counts[root.rbStats]++
		rb := &s.x.rb
		rb.owner = owner
		if rb.at == 0 {
			fresh = append(fresh, s)
			continue
		}
		if now < rb.at {
			continue
		}
		idle := int64(root.cfg.Rebalance.Idle)
		end := now >= rb.end
		if !end && now-s.lastActive < idle {
			continue
		}
		if !s.settled() && now < rb.end+int64(rebalanceGrace) {
			continue // bytes in flight: at the next look
		}
		if end {
			root.rbStats.closeEnd.Add(1)
		} else {
			root.rbStats.closeIdle.Add(1)
		}
		s.srv.log.Logf(LevelInfo, "*%d rebalance: closing the session of key %q on %s: the key belongs to %s now, client: %s, server: %s",
			s.id, keyText(s.group, rb.key), s.group.peers[s.peer], owner, s.client.Addr(), s.srv.name)
		s.finish(200)
		counts[root.rbStats]--
		k-- // finish swapped another session into place k
	}
	// Turns for the newly misplaced, spread evenly with jitter over the
	// window from now.
	rand.Shuffle(len(fresh), func(i, j int) { fresh[i], fresh[j] = fresh[j], fresh[i] })
	for k, s := range fresh {
		w := int64(l.p.byNameRebalance(s.group.name))
		s.x.rb.at = now + int64((float64(k)+rand.Float64())/float64(len(fresh))*float64(w))
		s.x.rb.end = now + w
	}
	l.rb.pending = 0
	for _, g := range *byName {
		if st := g.rbStats; st != nil && l.id < len(st.misplaced) {
			st.misplaced[l.id].Store(counts[st])
			l.rb.pending += int(counts[st])
		}
	}
	l.rb.lastActive = l.now
	l.schedule(l.rb)
}

// byNameRebalance is the window of the upstream called name now.
func (p *Proxy) byNameRebalance(name string) time.Duration {
	if m := p.byName.Load(); m != nil {
		if g := (*m)[name]; g != nil && g.cfg != nil && g.cfg.Rebalance != nil {
			return g.cfg.Rebalance.Window
		}
	}
	return 0
}

// settled reports whether no byte of the session is in flight: nothing
// read and not yet written either way.
func (s *session) settled() bool {
	return len(s.c2u.pend) == 0 && len(s.u2c.pend) == 0 && s.c2u.inPipe == 0 && s.u2c.inPipe == 0
}

// misplaced reports whether a session on peer p with key belongs elsewhere
// in g (the upstream's current generation) at now, and where: the owner is
// usable and is not p (by name for nginx's consistent ring, where a name's
// addresses share its points; by address otherwise).
func (g *group) misplaced(p *peer, key []byte, now time.Time) (string, bool) {
	o, ok := g.bal.(lb.Owner)
	if !ok {
		return "", false
	}
	i, ok := o.Owner(key, func(i int) bool { return !g.peers[i].down && g.health.Peer(i).Usable(now) })
	if !ok {
		return "", false
	}
	q := g.peers[i]
	if g.method == lb.ConsistentHash && g.cfg.HashRing != "address" {
		return q.name, q.name != p.name
	}
	return q.String(), q.String() != p.String()
}

// keyText is a session's key as logs print it: the client address for
// ip_hash, the evaluated key otherwise.
func keyText(g *group, key []byte) string {
	if g.method == lb.IPHash {
		if a, ok := netip.AddrFromSlice(key); ok {
			return a.String()
		}
	}
	return string(key)
}

// ReloadPlan is what a reload to another config would do to the live
// sessions of the upstreams with "rebalance" (the only ones whose sessions'
// keys are kept): how many would be misplaced, from which server to which.
type ReloadPlan struct {
	Upstreams []UpstreamPlan
}

// UpstreamPlan is one upstream's part of a ReloadPlan.
type UpstreamPlan struct {
	Name  string
	Live  int    // live sessions with a key
	Moves []Move // by server, then owner
	Note  string // why nothing can be said, when so
}

// Move is how many sessions on From would belong to To.
type Move struct {
	From, To string
	N        int
}

// String prints the plan for "baton reload --dry-run".
func (rp *ReloadPlan) String() string {
	if len(rp.Upstreams) == 0 {
		return "no upstream has \"rebalance\": live sessions are not followed by key, and a reload moves none of them\n"
	}
	var b strings.Builder
	for _, u := range rp.Upstreams {
		moved := 0
		for _, m := range u.Moves {
			moved += m.N
		}
		fmt.Fprintf(&b, "upstream %q: %d live sessions, %d would be misplaced", u.Name, u.Live, moved)
		if u.Note != "" {
			fmt.Fprintf(&b, " (%s)", u.Note)
		}
		b.WriteString("\n")
		for _, m := range u.Moves {
			fmt.Fprintf(&b, "  %s: %d to %s\n", m.From, m.N, m.To)
		}
	}
	return b.String()
}

// PlanReload reports what a reload to cfg would do to the live sessions of
// the upstreams with "rebalance", changing nothing: each session's key is
// looked up in the upstream cfg gives it (its names resolved at run time
// as they are now), with the servers' health as it is now.
func (p *Proxy) PlanReload(cfg *config.Config) (*ReloadPlan, error) {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	vt, err := buildVars(cfg)
	if err != nil {
		return nil, err
	}
	next := map[string]*group{}
	if cfg.Stream != nil {
		for _, u := range cfg.Stream.Upstreams {
			var prev *group
			for _, o := range p.groups {
				if o.name == u.Name {
					prev = o.current()
				}
			}
			g, err := newGroupFrom(u, vt, prev)
			if err != nil {
				return nil, posError(u.Pos, err)
			}
			next[u.Name] = g
		}
	}
	plan := &ReloadPlan{}
	at := map[string]int{}
	for _, g := range p.groups {
		if g.cfg != nil && g.cfg.Rebalance != nil {
			at[g.name] = len(plan.Upstreams)
			up := UpstreamPlan{Name: g.name}
			switch n := next[g.name]; {
			case n == nil:
				up.Note = "the new config has no such upstream: its sessions stay, as nginx's"
			case n.method != g.method || n.cfg.HashKey != g.cfg.HashKey:
				up.Note = "its method or hash key changes: the sessions' keys cannot be judged against it"
			}
			plan.Upstreams = append(plan.Upstreams, up)
		}
	}
	var mu sync.Mutex
	moves := map[Move]int{}
	p.eachLoop(func(l *loop) {
		wall := l.wall()
		for _, s := range l.sessions {
			if s.state != stateProxying || s.x == nil || s.x.rb.key == nil || s.peer < 0 || s.group == nil {
				continue
			}
			k, ok := at[s.group.name]
			if !ok {
				continue
			}
			mu.Lock()
			up := &plan.Upstreams[k]
			up.Live++
			mu.Unlock()
			n := next[s.group.name]
			if up.Note != "" {
				continue
			}
			from := s.group.peers[s.peer]
			if owner, mis := n.misplaced(from, s.x.rb.key, wall); mis {
				mu.Lock()
				moves[Move{From: s.group.name + "\x00" + from.String(), To: owner}]++
				mu.Unlock()
			}
		}
	})
	for m, n := range moves {
		name, from, _ := strings.Cut(m.From, "\x00")
		up := &plan.Upstreams[at[name]]
		up.Moves = append(up.Moves, Move{From: from, To: m.To, N: n})
	}
	for i := range plan.Upstreams {
		slices.SortFunc(plan.Upstreams[i].Moves, func(a, b Move) int {
			return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
		})
	}
	return plan, nil
}
