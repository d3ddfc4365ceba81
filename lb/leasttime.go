package lb

import (
	"time"
)

// leastTime is "least_time connect | first_byte | last_byte [inflight]"
// (ngx_stream_upstream_least_time_module.c): the usable peer with the least
// estimated time to serve one more flow wins, ties settled by smooth
// weighted round robin among the tied peers, as least_conn settles its ties.
//
// Each peer keeps nginx's three averages in milliseconds, the time to
// connect, to the upstream's first byte and to the end of the session, each
// an exponential moving average that gives a new sample 5% (average), with
// nginx's rounding. They are updated when an attempt ends without failure
// (Done); with inflight, the average the method balances on is updated as
// soon as its time is known (Connected, FirstByte) instead. The estimate of
// a peer (eta) is
//
//	rt  = the average of the mode (connect, first_byte or last_byte)
//	rt >>= (now-checked)/(fail_timeout+1)  if now-checked > fail_timeout (seconds)
//	rt  = max(rt, inflight average)         if flows are in flight (inflight)
//	rt  = 5000 if rt > 5000, else rt rounded up to the next multiple of 20
//	eta = rt * (1 + live connections)
//
// and peer a beats peer b when eta_a·weight_b < eta_b·weight_a. The halving
// lets a peer that has not been chosen for a while be tried again, the
// 20 ms clusters let peers with close times share by round robin, and the
// 5000 ms cap turns peers slower than that into least_conn. A single peer
// is plain round robin; backup peers are a second set, used only when no
// primary peer is usable.
type leastTime struct {
	*rrState
	mode     int // ltConnect, ltFirstByte or ltLastByte
	inflight bool
	state    State
	checked  CheckedState // nil: state does not say; nothing decays
	now      func() time.Time
	base     time.Time // the origin of msec, nginx's ngx_current_msec

	// Under rrState.mu.
	times []ltPeer
	// Scratch under rrState.mu: one reading of usable and one estimate per
	// peer per pick, so both passes see the same numbers.
	ok  []bool
	eta []uint64
}

// The averages least_time balances on.
const (
	ltConnect = iota
	ltFirstByte
	ltLastByte
)

// ltPeer is one peer's timing, nginx's peer->connect_time, first_byte_time,
// response_time and inflight_*: milliseconds, unsigned as nginx's
// ngx_msec_t, whose wrapping arithmetic the inflight sums rely on.
type ltPeer struct {
	connect, firstByte, lastByte uint64 // averages; 0: no sample yet

	inflightTime    uint64 // average age of the flows in flight
	inflightLast    uint64 // their summed age at inflightChanged
	inflightChanged uint64 // msec of the last change of inflightReqs
	inflightReqs    uint64 // flows picked whose time is not known yet
}

func newLeastTime(rr *rrState, m Method, opts Options) *leastTime {
	lt := &leastTime{
		rrState:  rr,
		mode:     int(m - LeastTimeConnect),
		inflight: opts.Inflight,
		state:    stateOrNone(opts.State),
		now:      opts.Now,
		times:    make([]ltPeer, len(rr.peers)),
		ok:       make([]bool, len(rr.peers)),
		eta:      make([]uint64, len(rr.peers)),
	}
	lt.checked, _ = opts.State.(CheckedState)
	if lt.now == nil {
		lt.now = time.Now
	}
	lt.base = lt.now()
	return lt
}

// msec is nginx's ngx_current_msec at t: milliseconds since the balancer
// was made.
func (lt *leastTime) msec(t time.Time) uint64 {
	return uint64(max(t.Sub(lt.base), 0) / time.Millisecond)
}

// avg is ngx_stream_upstream_response_time_avg: the first sample as it is,
// then 95% of the average and 5% of the sample, rounded to the nearest
// millisecond (0.5 added, then truncated as C's conversion to ngx_msec_t).
// The explicit conversions keep Go from fusing a multiply and an add, which
// would round differently from nginx.
func avg(a *uint64, v uint64) {
	if *a == 0 {
		*a = v
		return
	}
	*a = uint64(0.5 + (float64(float64(v)*0.05) + float64(float64(*a)*0.95)))
}

func (lt *leastTime) Pick(_ []byte, usable func(i int) bool) (int, error) {
	if lt.single() {
		return lt.pick(usable)
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	now := lt.now()
	sec, ms := now.Unix(), lt.msec(now)
	if i := lt.leastLocked(lt.primary, usable, sec, ms); i >= 0 {
		return i, nil
	}
	if i := lt.leastLocked(lt.backup, usable, sec, ms); i >= 0 {
		return i, nil
	}
	return -1, ErrNoPeer
}

// leastLocked is ngx_stream_upstream_get_least_time_peer over the peers in
// set at sec (Unix seconds, ngx_time()) and ms (ngx_current_msec).
func (lt *leastTime) leastLocked(set []int, usable func(i int) bool, sec int64, ms uint64) int {
	best, first, many := -1, 0, false
	var bestEta uint64
	for k, i := range set {
		if lt.ok[i] = usable(i); !lt.ok[i] {
			continue
		}
		if t := &lt.times[i]; t.inflightReqs > 0 {
			// Every pick that looks at a peer with flows in flight ages
			// their average, as nginx's loop does.
			avg(&t.inflightTime, t.inflightLast/t.inflightReqs+(ms-t.inflightChanged))
		}
		eta := lt.etaLocked(i, sec)
		lt.eta[i] = eta
		if best < 0 {
			best, first, many, bestEta = i, k, false, eta
			continue
		}
		a, b := eta*uint64(lt.peers[best].weight), bestEta*uint64(lt.peers[i].weight)
		switch {
		case a < b:
			best, first, many, bestEta = i, k, false, eta
		case a == b:
			many = true
		}
	}
	if best < 0 {
		return -1
	}
	if many {
		total := 0
		for _, i := range set[first:] {
			// nginx compares with the estimate of the first best but the
			// weight of the current one; kept, for nginx's answers.
			if !lt.ok[i] || lt.eta[i]*uint64(lt.peers[best].weight) != bestEta*uint64(lt.peers[i].weight) {
				continue
			}
			p := &lt.peers[i]
			p.current += p.effective
			total += p.effective
			if p.effective < p.weight {
				p.effective++
			}
			if p.current > lt.peers[best].current {
				best = i
			}
		}
		lt.peers[best].current -= total
	}
	if lt.inflight {
		t := &lt.times[best]
		if t.inflightReqs > 0 {
			t.inflightLast += (ms - t.inflightChanged) * t.inflightReqs
		}
		t.inflightChanged = ms
		t.inflightReqs++
	}
	return best
}

// etaLocked is ngx_stream_upstream_least_time_eta for peer i at sec.
func (lt *leastTime) etaLocked(i int, sec int64) uint64 {
	t := &lt.times[i]
	var rt uint64
	switch lt.mode {
	case ltConnect:
		rt = t.connect
	case ltFirstByte:
		rt = t.firstByte
	default:
		rt = t.lastByte
	}
	if lt.checked != nil {
		// Once in fail_timeout without being chosen, a peer's time halves:
		// slow peers get another chance.
		checked, failTimeout := lt.checked.Checked(i)
		if d := sec - checked; d > failTimeout {
			// A shift of 64 or more (never checked) is UB in C; all gone.
			if s := d / (failTimeout + 1); s < 64 {
				rt >>= uint(s)
			} else {
				rt = 0
			}
		}
	}
	if t.inflightReqs > 0 {
		rt = max(rt, t.inflightTime)
	}
	if rt > 5000 {
		rt = 5000
	} else {
		rt += 20 - rt%20
	}
	return rt * uint64(1+max(lt.state.Active(i), 0))
}

// inflightDoneLocked is ngx_stream_upstream_least_time_inflight_done: a
// flow of peer i picked at some ms is no longer in flight, last
// milliseconds after its attempt began. last is nginx's (ngx_msec_t) -1
// for a connect that failed, whose wrapping subtraction nginx keeps.
// Nothing is in flight for a flow the balancer did not count (a single
// peer's, or one that came from another process), so a count at zero
// stays there.
func (lt *leastTime) inflightDoneLocked(i int, ms, last uint64) {
	t := &lt.times[i]
	if t.inflightReqs == 0 {
		return
	}
	if t.inflightReqs == 1 {
		t.inflightLast = 0
	} else {
		t.inflightLast += (ms-t.inflightChanged)*t.inflightReqs - last
		t.inflightChanged = ms
	}
	t.inflightReqs--
}

// millis converts a duration to nginx's milliseconds; a negative one (did
// not happen) is (ngx_msec_t) -1.
func millis(d time.Duration) uint64 {
	if d < 0 {
		return ^uint64(0)
	}
	return uint64(d / time.Millisecond)
}

// counted reports whether a flow of this balancer is counted in flight
// until its time is known: with inflight, in an upstream of several peers.
func (lt *leastTime) counted() bool { return lt.inflight && !lt.single() }

// Connected implements Timer (NGX_STREAM_UPSTREAM_NOTIFY_CONNECT).
func (lt *leastTime) Connected(i int, d time.Duration) {
	if !lt.inflight || lt.mode != ltConnect || i < 0 || i >= len(lt.times) || d < 0 {
		return // the averages wait for Done
	}
	lt.mu.Lock()
	ms := millis(d)
	avg(&lt.times[i].connect, ms)
	if lt.counted() {
		lt.inflightDoneLocked(i, lt.msec(lt.now()), ms)
	}
	lt.mu.Unlock()
}

// FirstByte implements Timer (NGX_STREAM_UPSTREAM_NOTIFY_FIRST_BYTE).
func (lt *leastTime) FirstByte(i int, d time.Duration) {
	if !lt.inflight || lt.mode != ltFirstByte || i < 0 || i >= len(lt.times) || d < 0 {
		return
	}
	lt.mu.Lock()
	ms := millis(d)
	avg(&lt.times[i].firstByte, ms)
	if lt.counted() {
		lt.inflightDoneLocked(i, lt.msec(lt.now()), ms)
	}
	lt.mu.Unlock()
}

// Done implements Timer (ngx_stream_upstream_free_least_time_peer).
func (lt *leastTime) Done(i int, failed bool, t Times) {
	if i < 0 || i >= len(lt.times) {
		return
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	p := &lt.times[i]
	// Still in flight unless Connected or FirstByte took it out.
	if lt.counted() && !(lt.mode == ltConnect && t.Connect >= 0) && !(lt.mode == ltFirstByte && t.FirstByte >= 0) {
		lt.inflightDoneLocked(i, lt.msec(lt.now()), millis(t.Total))
	}
	if failed {
		return // "only successful attempts are accounted"
	}
	if t.Total >= 0 {
		avg(&p.lastByte, millis(t.Total))
	}
	// nginx also averages the connect time of a session that never
	// connected (a client gone while connecting) as (ngx_msec_t) -1,
	// which makes the peer the slowest there is for hundreds of flows;
	// baton skips it, as nginx skips a missing first byte.
	if t.Connect >= 0 && (!lt.inflight || lt.mode != ltConnect) {
		avg(&p.connect, millis(t.Connect))
	}
	if t.FirstByte >= 0 && (!lt.inflight || lt.mode != ltFirstByte) {
		avg(&p.firstByte, millis(t.FirstByte))
	}
}
