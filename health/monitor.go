package health

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Target is one backend an active check watches.
type Target struct {
	// Addr is the peer's address, "host:port".
	Addr string
	// Peer, if non-nil, receives the verdicts: it is held down (unusable)
	// while the check says unhealthy, and pending until the first pass with
	// Mandatory.
	Peer *Peer
	// Known marks a Peer an earlier Monitor already checked (a name was
	// re-resolved and this address stayed): it keeps its verdict rather than
	// being marked pending with Mandatory.
	Known bool
}

// Change is a health verdict that changed, passed to MonitorConfig.OnChange.
type Change struct {
	Index int    // into MonitorConfig.Targets
	Addr  string // the address checked (after Port)
	Up    bool   // the new verdict
	Err   error  // the failed check's error when !Up
	At    time.Time
}

// MonitorConfig is a "health_check" directive applied to one upstream.
type MonitorConfig struct {
	// Checker runs each check: a *TCPChecker, a *UDPChecker ("udp"), or a
	// fake in tests. Required.
	Checker Checker
	// Targets are the backends, one goroutine each.
	Targets []Target
	// Interval is "interval=T", the time between the starts of two checks of
	// one target. If zero, 5s, nginx Plus's default.
	Interval time.Duration
	// Timeout is "health_check_timeout", the bound on one check. If zero,
	// DefaultTimeout.
	Timeout time.Duration
	// Fails is "fails=N": this many consecutive failed checks make a
	// healthy target unhealthy. If zero, 1.
	Fails int
	// Passes is "passes=N": this many consecutive passed checks make an
	// unhealthy target healthy. If zero, 1.
	Passes int
	// Port is "port=N": check this port instead of each target's. 0 means
	// the target's own.
	Port int
	// Mandatory is "mandatory": targets start unhealthy ("checking") until
	// their first check passes. Without it they start healthy.
	Mandatory bool
	// Now is the clock for verdict times. If nil, time.Now.
	Now func() time.Time
	// OnChange, if non-nil, is called after each verdict change, from the
	// target's goroutine (so calls for one target are in order). It must not
	// block for long: the target's next check waits for it.
	OnChange func(Change)
}

// Monitor runs a MonitorConfig's checks: one goroutine per target on a
// time.Ticker, with at most one check of a target in flight (a check that
// outlasts the interval delays the next, never overlaps it).
type Monitor struct {
	cfg    MonitorConfig
	addrs  []string
	start  sync.Once
	stop   sync.Once
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewMonitor checks cfg and returns a Monitor that has not started. With
// Mandatory, each target's Peer is marked pending at once, so that no flow
// reaches it before its first check passes.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if cfg.Checker == nil {
		return nil, errors.New("health: monitor needs a Checker")
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.Fails < 0 || cfg.Passes < 0 {
		return nil, errors.New("health: interval, timeout, fails and passes must not be negative")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, errors.New("health: port must be between 1 and 65535")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.Fails, cfg.Passes = max(cfg.Fails, 1), max(cfg.Passes, 1)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Monitor{cfg: cfg, addrs: make([]string, len(cfg.Targets))}
	for i, t := range cfg.Targets {
		m.addrs[i] = t.Addr
		if cfg.Port != 0 && !strings.HasPrefix(t.Addr, "unix:") { // a unix: socket has no port to change
			host, _, err := net.SplitHostPort(t.Addr)
			if err != nil {
				return nil, errors.New("health: target " + strconv.Quote(t.Addr) + " is not host:port")
			}
			m.addrs[i] = net.JoinHostPort(host, strconv.Itoa(cfg.Port))
		}
		if cfg.Mandatory && t.Peer != nil && !t.Known {
			t.Peer.setCheck(checkPending, cfg.Now(), nil)
		}
	}
	return m, nil
}

// Start begins checking, once: each target is checked at once and then every
// Interval, until ctx is done or Stop is called. Later calls do nothing.
func (m *Monitor) Start(ctx context.Context) {
	m.start.Do(func() {
		ctx, cancel := context.WithCancel(ctx)
		m.cancel = cancel
		for i := range m.cfg.Targets {
			m.wg.Add(1)
			go m.watch(ctx, i)
		}
	})
}

// Stop cancels every check in flight and returns once every goroutine of the
// Monitor has exited. It may be called more than once, and before Start
// (which then does nothing).
func (m *Monitor) Stop() {
	m.start.Do(func() { m.cancel = func() {} }) // a later Start starts nothing
	m.stop.Do(m.cancel)
	m.wg.Wait()
}

// Run is Start(ctx), then waits until ctx is done and every goroutine has
// exited.
func (m *Monitor) Run(ctx context.Context) {
	m.Start(ctx)
	<-ctx.Done()
	m.Stop()
}

// watch is target i's goroutine. It is a named method so goroutine dumps
// show what it is.
func (m *Monitor) watch(ctx context.Context, i int) {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	v := newVerdict(m.cfg.Mandatory, m.cfg.Fails, m.cfg.Passes)
	for {
		cctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		err := m.cfg.Checker.Check(cctx, m.addrs[i])
		cancel()
		if ctx.Err() != nil {
			return // stopped: a check cut short says nothing about the target
		}
		if LocalError(err) {
			// This process could not make a socket (EMFILE, ENOBUFS...):
			// that says nothing about the target either.
		} else if v.record(err == nil) {
			m.report(i, v.up, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// report applies a verdict change to the target's Peer and tells OnChange.
func (m *Monitor) report(i int, up bool, err error) {
	now := m.cfg.Now()
	if p := m.cfg.Targets[i].Peer; p != nil {
		s := checkDown
		if up {
			s = checkUp
		}
		p.setCheck(s, now, err)
	}
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(Change{Index: i, Addr: m.addrs[i], Up: up, Err: err, At: now})
	}
}

// verdict is nginx Plus's per-server check state: consecutive fails and
// passes against the thresholds.
type verdict struct {
	up             bool
	pending        bool // mandatory and no check passed yet
	fails, passes  int  // consecutive, since the last opposite result
	maxFails, need int
}

func newVerdict(mandatory bool, fails, passes int) verdict {
	return verdict{up: !mandatory, pending: mandatory, maxFails: fails, need: passes}
}

// record adds one check result and reports whether the verdict changed. A
// pending target turns up on its first pass (Plus's mandatory: "the first
// health check passes"), and a failure while pending reports down, so that
// a status shows why.
func (v *verdict) record(pass bool) (changed bool) {
	if pass {
		v.fails = 0
		v.passes++
		if v.pending {
			v.pending, v.up = false, true
			return true
		}
		if !v.up && v.passes >= v.need {
			v.up = true
			return true
		}
		return false
	}
	v.passes = 0
	v.fails++
	if v.pending {
		v.pending = false // now plainly down: passes are needed to come up
		return true
	}
	if v.up && v.fails >= v.maxFails {
		v.up = false
		return true
	}
	return false
}

// Targets returns the targets the Monitor checks, as given to NewMonitor.
func (m *Monitor) Targets() []Target { return m.cfg.Targets }
