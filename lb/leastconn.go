package lb

// leastConn is "least_conn" (ngx_stream_upstream_get_least_conn_peer): the
// usable peer with the fewest live connections per unit of weight wins,
// compared cross-multiplied (a·wb < b·wa) so no division rounds; peers tied
// with it are settled by smooth weighted round robin among them, starting
// from the first tied peer. Backup peers are a second set used only when no
// primary is usable; a single peer is plain round robin.
type leastConn struct {
	*rrState
	state State
	// Scratch under rrState.mu: one reading of usable and Active per peer
	// per pick, so both passes see the same numbers.
	ok     []bool
	active []int
}

func newLeastConn(rr *rrState, state State) *leastConn {
	return &leastConn{
		rrState: rr,
		state:   stateOrNone(state),
		ok:      make([]bool, len(rr.peers)),
		active:  make([]int, len(rr.peers)),
	}
}

func (lc *leastConn) Pick(_ []byte, usable func(i int) bool) (int, error) {
	if lc.single() {
		return lc.pick(usable)
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if i := lc.leastLocked(lc.primary, usable); i >= 0 {
		return i, nil
	}
	if i := lc.leastLocked(lc.backup, usable); i >= 0 {
		return i, nil
	}
	return -1, ErrNoPeer
}

func (lc *leastConn) leastLocked(set []int, usable func(i int) bool) int {
	best, first, many := -1, 0, false
	for k, i := range set {
		if lc.ok[i] = usable(i); !lc.ok[i] {
			continue
		}
		lc.active[i] = lc.state.Active(i)
		if best < 0 {
			best, first, many = i, k, false
			continue
		}
		a, b := lc.active[i]*lc.peers[best].weight, lc.active[best]*lc.peers[i].weight
		switch {
		case a < b:
			best, first, many = i, k, false
		case a == b:
			many = true
		}
	}
	if !many {
		return best // -1 if none; a lone winner's weights are not touched
	}
	total := 0
	for _, i := range set[first:] {
		if !lc.ok[i] || lc.active[i]*lc.peers[best].weight != lc.active[best]*lc.peers[i].weight {
			continue
		}
		p := &lc.peers[i]
		p.current += p.effective
		total += p.effective
		if p.effective < p.weight {
			p.effective++
		}
		if p.current > lc.peers[best].current {
			best = i
		}
	}
	lc.peers[best].current -= total
	return best
}
