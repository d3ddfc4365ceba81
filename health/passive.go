package health

import (
	"sync"
	"sync/atomic"
	"time"
)

// Params are one peer's "server" parameters that health needs. NewGroup takes
// them as they are: config has already filled in nginx's defaults (weight=1,
// max_fails=1, fail_timeout=10s), so a zero MaxFails here means max_fails=0.
type Params struct {
	// Weight is "weight=N"; zero or negative means 1.
	Weight int
	// MaxFails is "max_fails=N". 0 turns passive accounting off, as nginx.
	MaxFails int
	// FailTimeout is "fail_timeout=T", both the window in which MaxFails
	// failures must fall and how long the peer then stays unusable. nginx
	// counts it in whole seconds (time_t arithmetic on ngx_time()), and so
	// does Peer: a sub-second value rounds down.
	FailTimeout time.Duration
	// SlowStart is nginx Plus's "slow_start=T": after the peer recovers, its
	// Weight climbs linearly from near 0 to full over T. 0 turns it off.
	SlowStart time.Duration
	// Backup is "backup". It matters only to decide whether the group is
	// single (see NewGroup).
	Backup bool
}

// Group is the health state of one upstream's peers, indexed as the
// balancer indexes them.
type Group struct {
	peers  []*Peer
	single bool
}

// NewGroup returns the state of an upstream whose peers have params, in
// order. Like nginx (peers->single), a group of exactly one primary peer and
// no backup is single: its peer is never marked failed, Failed and Succeeded
// change nothing, and slow_start is ignored ("If there is only a single
// server in a group, max_fails, fail_timeout and slow_start parameters are
// ignored, and such a server will never be considered unavailable"). Active
// checks still apply to it. NewGroup copies params.
func NewGroup(params []Params) *Group {
	return NewGroupFrom(params, nil)
}

// NewGroupFrom is NewGroup for an upstream whose peers changed at run time
// (a name re-resolved): where from[i] is not nil, peer i is that Peer, with
// its failures, check verdict and ramp, rather than a new one. Its
// parameters must be params[i]; only whether the group is single is updated
// (in every peer), as nginx's ngx_stream_upstream_zone_set_single. from may
// be shorter than params, or nil.
func NewGroupFrom(params []Params, from []*Peer) *Group {
	g := &Group{peers: make([]*Peer, len(params))}
	primaries, backups := 0, 0
	for _, p := range params {
		if p.Backup {
			backups++
		} else {
			primaries++
		}
	}
	g.single = primaries == 1 && backups == 0
	for i, p := range params {
		if i < len(from) && from[i] != nil {
			g.peers[i] = from[i]
			from[i].single.Store(g.single)
			continue
		}
		pe := &Peer{}
		pe.weight = max(p.Weight, 1)
		pe.maxFails = int64(max(p.MaxFails, 0))
		pe.failTimeout = int64(p.FailTimeout / time.Second)
		pe.slowStart = max(p.SlowStart, 0)
		pe.single.Store(g.single)
		g.peers[i] = pe
	}
	return g
}

// Len returns the number of peers.
func (g *Group) Len() int { return len(g.peers) }

// Single reports whether the group is nginx's "single": one primary peer and
// no backup, which passive accounting never disables.
func (g *Group) Single() bool { return g.single }

// Peer returns peer i's state. The pointer stays valid for the Group's life.
func (g *Group) Peer(i int) *Peer { return g.peers[i] }

// ResetFails clears the failure count of every peer, as nginx does when no
// peer of an upstream is usable ("all peers failed, mark them as live for
// quick recovery" in ngx_stream_upstream_get_round_robin_peer). Call it each
// time the balancer returns lb.ErrNoPeer. It does not touch active-check
// state: a peer held down by a check stays down.
func (g *Group) ResetFails() {
	for _, p := range g.peers {
		p.mu.Lock()
		p.fails.Store(0)
		p.mu.Unlock()
	}
}

// Peer is one upstream address's health: nginx's passive fields (fails,
// accessed, checked), the active-check verdict and the slow-start ramp. Its
// zero value is a peer with max_fails=0 that is up; use Group.Peer.
//
// Times are passed in by the caller (the event loop's cached clock, as
// nginx's ngx_time()); the passive rules compare them in whole Unix seconds,
// exactly as nginx does.
type Peer struct {
	// Inputs, fixed by NewGroup.
	weight      int
	maxFails    int64 // 0: accounting off
	failTimeout int64 // seconds
	slowStart   time.Duration
	single      atomic.Bool // one primary peer and no backup; changes when a name is re-resolved

	// mu serialises writers; Usable and Weight read the atomics without it.
	// Writers store checked before fails, so a reader that sees a new fails
	// also sees the checked that goes with it.
	mu        sync.Mutex
	fails     atomic.Int64
	accessed  atomic.Int64 // Unix seconds of the last failure
	checked   atomic.Int64 // Unix seconds, nginx's "checked"
	firstFail atomic.Int64 // Unix nanoseconds of the failure that made fails 1 (for State)

	check      atomic.Int32 // checkUp, checkPending or checkDown
	checkSince atomic.Int64 // Unix nanoseconds of the last check transition
	checkErr   string       // last failed check's error, under mu

	rampFrom atomic.Int64 // Unix nanoseconds the slow-start ramp began; 0: none
}

// Active-check verdicts, stored in Peer.check.
const (
	checkUp      int32 = iota // no checks, or the last threshold crossed was passes
	checkPending              // mandatory: no check has passed yet (Plus's "checking")
	checkDown                 // fails consecutive checks failed
)

// Usable reports whether the peer may take a new flow at now: not held down
// by an active check, and not disabled by nginx's passive rule
//
//	max_fails && fails >= max_fails && now - checked <= fail_timeout
//
// It takes no lock and does not allocate; when the peer has fewer than
// max_fails failures it does not even look at now.
func (p *Peer) Usable(now time.Time) bool {
	if p.check.Load() != checkUp {
		return false
	}
	if p.maxFails == 0 || p.single.Load() {
		return true
	}
	if p.fails.Load() < p.maxFails {
		return true
	}
	return now.Unix()-p.checked.Load() > p.failTimeout
}

// Picked records that the balancer chose the peer at now, as nginx's
// ngx_stream_upstream_get_peer: "if now - checked > fail_timeout, checked =
// now". That is what lets a disabled peer be tried again once fail_timeout
// has passed (and, being picked, hold off other flows for another
// fail_timeout unless it succeeds), and what lets a success clear fails.
func (p *Peer) Picked(now time.Time) {
	if p.single.Load() {
		return // nginx skips get_peer for a single peer
	}
	sec := now.Unix()
	if sec-p.checked.Load() <= p.failTimeout {
		return
	}
	p.mu.Lock()
	if sec-p.checked.Load() > p.failTimeout {
		p.checked.Store(sec)
	}
	p.mu.Unlock()
}

// Checked returns nginx's peer->checked, in Unix seconds (0: never), and
// the peer's fail_timeout in whole seconds: what least_time needs to let a
// peer's average time decay (lb.CheckedState). Picked and Failed set
// checked; in a single group it stays 0. It takes no lock.
func (p *Peer) Checked() (checked, failTimeout int64) {
	return p.checked.Load(), p.failTimeout
}

// Failed records a failed or timed-out connect at now, as nginx's free_peer
// with NGX_PEER_FAILED: fails++, accessed = checked = now. It reports whether
// the peer is now disabled (max_fails > 0 and fails >= max_fails), where
// nginx logs "upstream server temporarily disabled". In a single group it
// does nothing and reports false.
func (p *Peer) Failed(now time.Time) (disabled bool) {
	if p.single.Load() {
		return false
	}
	sec := now.Unix()
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fails.Load() + 1
	p.accessed.Store(sec)
	p.checked.Store(sec)
	if f == 1 {
		p.firstFail.Store(now.UnixNano())
	}
	p.fails.Store(f)
	return p.maxFails > 0 && f >= p.maxFails
}

// Succeeded records a flow that ended without a connect failure, as nginx's
// free_peer without NGX_PEER_FAILED, which the stream proxy calls when the
// session is finalized: "if accessed < checked, fails = 0", i.e. the peer has
// been picked again since its last failure. If that clears a peer that was
// disabled, its slow-start ramp begins at now. In a single group it does
// nothing.
func (p *Peer) Succeeded(now time.Time) {
	if p.single.Load() || p.fails.Load() == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.accessed.Load() < p.checked.Load() {
		if f := p.fails.Load(); p.maxFails > 0 && f >= p.maxFails {
			p.startRamp(now)
		}
		p.fails.Store(0)
	}
}

// Weight returns the weight the balancer should use at now: the configured
// weight, or during slow start weight*elapsed/slow_start rounded up (so at
// least 1: smooth round robin has integer weights, and a weight-1 peer
// therefore has no ramp). It takes no lock and does not allocate.
func (p *Peer) Weight(now time.Time) int {
	from := p.rampFrom.Load()
	if from == 0 {
		return p.weight
	}
	elapsed := now.UnixNano() - from
	if elapsed >= int64(p.slowStart) {
		p.rampFrom.CompareAndSwap(from, 0)
		return p.weight
	}
	if elapsed <= 0 {
		return 1
	}
	w := (int64(p.weight)*elapsed + int64(p.slowStart) - 1) / int64(p.slowStart)
	return int(max(w, 1))
}

// Ramp returns how far through slow start the peer is at now, in (0, 1]:
// 1 when it is not ramping. The proxy admits a ramping peer for a new flow
// with this probability, so its share of new flows grows linearly over
// slow_start whatever its weight (Weight cannot ramp a weight-1 peer).
func (p *Peer) Ramp(now time.Time) float64 {
	from := p.rampFrom.Load()
	if from == 0 {
		return 1
	}
	elapsed := now.UnixNano() - from
	if elapsed >= int64(p.slowStart) {
		p.rampFrom.CompareAndSwap(from, 0)
		return 1
	}
	if elapsed <= 0 {
		return 1 / float64(p.slowStart/time.Millisecond+1)
	}
	return float64(elapsed) / float64(p.slowStart)
}

// startRamp begins slow start at now, if the peer has one. Callers hold mu.
func (p *Peer) startRamp(now time.Time) {
	if p.slowStart > 0 && !p.single.Load() {
		p.rampFrom.Store(max(now.UnixNano(), 1))
	}
}

// setCheck records an active-check verdict at now. A move from down to up
// begins slow start; a move from pending (mandatory, first pass) does not,
// since the peer never took traffic.
func (p *Peer) setCheck(v int32, now time.Time, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.check.Swap(v)
	if old == v {
		return
	}
	p.checkSince.Store(now.UnixNano())
	p.checkErr = ""
	if err != nil {
		p.checkErr = err.Error()
	}
	if old == checkDown && v == checkUp {
		p.startRamp(now)
	}
}
