package lb

import "sync"

// rrState is nginx's per-upstream round robin state: the current and
// effective weight of each peer, shared by every method because each of them
// falls back to round robin (and least_conn and the consistent hash break
// ties with it), as nginx's methods share ngx_stream_upstream_rr_peers_t.
type rrState struct {
	mu      sync.Mutex
	peers   []rrPeer // by index into the peers given to New
	primary []int    // indexes of the primary peers, in config order
	backup  []int    // indexes of the backup peers, in config order
	total   int      // sum of the primary peers' weights (nginx's total_weight)
}

type rrPeer struct {
	weight    int // as configured
	effective int // lowered by failures, climbs back by one a pick
	current   int
}

func newRRState(peers []Peer) *rrState {
	s := &rrState{peers: make([]rrPeer, len(peers))}
	for i, p := range peers {
		w := p.Weight
		if w <= 0 {
			w = 1
		}
		s.peers[i] = rrPeer{weight: w, effective: w}
		if p.Backup {
			s.backup = append(s.backup, i)
		} else {
			s.primary = append(s.primary, i)
			s.total += w
		}
	}
	return s
}

// single is nginx's peers->single: one primary peer and no backup. Such an
// upstream skips the weights entirely, and failures do not touch it.
func (s *rrState) single() bool {
	return len(s.primary) == 1 && len(s.backup) == 0
}

// Failed implements Failer (ngx_stream_upstream_free_round_robin_peer).
func (s *rrState) Failed(i, maxFails int) {
	if maxFails <= 0 || s.single() || i < 0 || i >= len(s.peers) {
		return
	}
	s.mu.Lock()
	p := &s.peers[i]
	p.effective -= p.weight / maxFails
	if p.effective < 0 {
		p.effective = 0
	}
	s.mu.Unlock()
}

// pick is ngx_stream_upstream_get_round_robin_peer.
func (s *rrState) pick(usable func(i int) bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pickLocked(usable)
}

func (s *rrState) pickLocked(usable func(i int) bool) (int, error) {
	if s.single() {
		// nginx checks only "down" (and max_conns) here: a lone server is
		// never given up for failures, and it gets a single try.
		if i := s.primary[0]; usable(i) {
			return i, nil
		}
		return -1, ErrNoPeer
	}
	if i := s.smoothLocked(s.primary, usable); i >= 0 {
		return i, nil
	}
	if i := s.smoothLocked(s.backup, usable); i >= 0 {
		return i, nil
	}
	return -1, ErrNoPeer
}

// smoothLocked is ngx_stream_upstream_get_peer over the peers in set: each
// usable peer's current weight grows by its effective weight, the highest
// current weight wins (the first listed among equals), and the winner's
// current weight drops by the total. It returns -1 if no peer is usable.
func (s *rrState) smoothLocked(set []int, usable func(i int) bool) int {
	best, total := -1, 0
	for _, i := range set {
		if !usable(i) {
			continue
		}
		p := &s.peers[i]
		p.current += p.effective
		total += p.effective
		if p.effective < p.weight {
			p.effective++
		}
		if best < 0 || p.current > s.peers[best].current {
			best = i
		}
	}
	if best >= 0 {
		s.peers[best].current -= total
	}
	return best
}

// roundRobin is nginx's default method, smooth weighted round robin: with
// weights 5, 1, 1 it picks a a b a c a a, and repeats. Backup peers form a
// second set, used only when no primary peer is usable. The key is ignored.
type roundRobin struct {
	*rrState
}

func (rr *roundRobin) Pick(_ []byte, usable func(i int) bool) (int, error) {
	return rr.pick(usable)
}

// Inheritor is implemented by every Balancer that New returns. When an
// upstream's peers change at run time (a name re-resolved), the caller
// builds a new Balancer for the new list and has it inherit, for each peer
// that stayed, its round robin position (current and effective weight), as
// nginx keeps the peer structure of an address that stays in DNS.
type Inheritor interface {
	// Inherit copies the state of old's peer from[i] into peer i, for each
	// i with from[i] >= 0 (from may be shorter than the peer list). Call it
	// before the Balancer is used; old may still be in use.
	Inherit(old Balancer, from []int)
}

// rrOf returns the round robin state a Balancer of this package shares.
func (s *rrState) rrOf() *rrState { return s }

// Inherit implements Inheritor.
func (s *rrState) Inherit(old Balancer, from []int) {
	o, ok := old.(interface{ rrOf() *rrState })
	if !ok || o.rrOf() == s {
		return
	}
	os := o.rrOf()
	os.mu.Lock()
	defer os.mu.Unlock()
	for i, j := range from {
		if j < 0 || i >= len(s.peers) || j >= len(os.peers) || os.peers[j].weight != s.peers[i].weight {
			continue
		}
		s.peers[i].current = os.peers[j].current
		s.peers[i].effective = os.peers[j].effective
	}
}

// Owner is implemented by the Balancers of the key methods: Hash,
// ConsistentHash and IPHash. It answers where a key belongs now, without
// changing any state, for moving sessions that are on another peer.
type Owner interface {
	// Owner returns the peer a flow with key would be sent to by the hash
	// alone, with usable saying which peers are usable: for
	// ConsistentHash, the first usable peer of the key's server (the
	// peers that share a server name share its points and take turns, so
	// any of them is the owner: compare names). ok is false when the key
	// belongs to no peer in particular: the method would fall back to
	// round robin (an empty key, 20 unusable tries).
	Owner(key []byte, usable func(i int) bool) (i int, ok bool)
}

// soleOwner is the owner in an upstream of one primary peer: that peer,
// when usable.
func soleOwner(s *rrState, usable func(i int) bool) (int, bool) {
	if len(s.primary) == 1 && usable(s.primary[0]) {
		return s.primary[0], true
	}
	return -1, false
}
