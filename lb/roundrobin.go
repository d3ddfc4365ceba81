package lb

import "sync"

// roundRobin is nginx's smooth weighted round robin
// (ngx_stream_upstream_get_peer): every pick adds each usable peer's
// effective weight to its current weight, takes the peer with the highest
// current weight and subtracts the total from it. Backup peers form a second
// set, used only when no primary peer is usable.
type roundRobin struct {
	mu      sync.Mutex
	primary []rrPeer
	backup  []rrPeer
}

type rrPeer struct {
	index     int // into the peers given to New
	weight    int
	effective int
	current   int
}

func newRoundRobin(peers []Peer) *roundRobin {
	rr := &roundRobin{}
	for i, p := range peers {
		w := p.Weight
		if w <= 0 {
			w = 1
		}
		e := rrPeer{index: i, weight: w, effective: w}
		if p.Backup {
			rr.backup = append(rr.backup, e)
		} else {
			rr.primary = append(rr.primary, e)
		}
	}
	return rr
}

func (rr *roundRobin) Pick(_ []byte, usable func(i int) bool) (int, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if i, ok := pickSmooth(rr.primary, usable); ok {
		return i, nil
	}
	if i, ok := pickSmooth(rr.backup, usable); ok {
		return i, nil
	}
	return -1, ErrNoPeer
}

func pickSmooth(peers []rrPeer, usable func(i int) bool) (int, bool) {
	var best *rrPeer
	total := 0
	for k := range peers {
		p := &peers[k]
		if !usable(p.index) {
			continue
		}
		p.current += p.effective
		total += p.effective
		if p.effective < p.weight {
			p.effective++
		}
		if best == nil || p.current > best.current {
			best = p
		}
	}
	if best == nil {
		return -1, false
	}
	best.current -= total
	return best.index, true
}
