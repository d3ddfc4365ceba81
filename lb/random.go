package lb

import "math/rand/v2"

// randomBalancer is "random" and "random two [least_conn]"
// (ngx_stream_upstream_get_random_peer and get_random2_peer).
//
// "random" draws a peer with probability proportional to weight; an unusable
// draw costs a try. "random two" draws until it has two different usable
// peers and keeps the one with fewer live connections per unit of weight,
// the second on a tie; every draw costs a try, the first good one included,
// as in nginx. least_conn is the only method "two" has, so "random two" and
// "random two least_conn" are the same. After 20 tries, or with a single
// peer, it is round robin. Down peers keep their share of the draws.
//
// Draws come from math/rand/v2's runtime source: lock-free, per-thread, and
// allocation-free.
type randomBalancer struct {
	*rrState
	slots weightSlots
	state State
	two   bool
}

func newRandom(rr *rrState, state State, two bool) *randomBalancer {
	return &randomBalancer{rrState: rr, slots: newWeightSlots(rr), state: stateOrNone(state), two: two}
}

func (r *randomBalancer) draw() int {
	return r.slots.peer(rand.Uint64N(uint64(r.total)))
}

func (r *randomBalancer) Pick(_ []byte, usable func(i int) bool) (int, error) {
	if len(r.primary) < 2 {
		return r.pick(usable)
	}
	if !r.two {
		for tries := 1; tries <= maxTries+1; tries++ {
			if i := r.draw(); usable(i) {
				return i, nil
			}
		}
		return r.pick(usable)
	}
	prev := -1
	for tries := 1; tries <= maxTries+1; tries++ {
		i := r.draw()
		if i == prev || !usable(i) {
			continue
		}
		if prev < 0 {
			prev = i
			continue
		}
		// nginx keeps the second draw unless it is strictly busier.
		if r.state.Active(i)*r.peers[prev].weight > r.state.Active(prev)*r.peers[i].weight {
			return prev, nil
		}
		return i, nil
	}
	return r.pick(usable)
}
