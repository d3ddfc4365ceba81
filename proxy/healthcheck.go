package proxy

import (
	"context"
	"math/rand/v2"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/health"
)

// newMonitor builds the active health check of g from a server's
// "health_check" (nginx Plus syntax). It marks g's peers itself; mandatory
// peers take no flow until their first check passes, which holds from now
// on, before anything is accepted.
func (p *Proxy) newMonitor(g *group, hc *config.HealthCheck, known map[*health.Peer]bool) (*health.Monitor, error) {
	var match *health.Match
	if hc.Match != nil {
		match = &health.Match{Name: hc.Match.Name, Send: []byte(hc.Match.Send), ExpectRegexp: hc.Match.Regexp}
		if hc.Match.Expect != "" {
			match.Expect = []byte(hc.Match.Expect)
		}
	}
	var checker health.Checker = &health.TCPChecker{Match: match, Timeout: hc.Timeout}
	if hc.UDP {
		checker = &health.UDPChecker{Match: match, Timeout: hc.Timeout}
	}
	targets := make([]health.Target, len(g.peers))
	for i := range g.peers {
		hp := g.health.Peer(i)
		targets[i] = health.Target{Addr: g.peers[i].String(), Peer: hp, Known: known[hp]}
	}
	return health.NewMonitor(health.MonitorConfig{
		Checker:   checker,
		Targets:   targets,
		Interval:  hc.Interval,
		Timeout:   hc.Timeout,
		Fails:     hc.Fails,
		Passes:    hc.Passes,
		Port:      hc.Port,
		Mandatory: hc.Mandatory,
		OnChange: func(c health.Change) {
			if c.Up {
				p.log.Logf(LevelNotice, "upstream %q server %s is up (health check passed)", g.name, c.Addr)
			} else {
				p.log.Logf(LevelWarn, "upstream %q server %s is down (health check failed: %v)", g.name, c.Addr, c.Err)
			}
		},
	})
}

// attachMonitors gives every new group used by a server with "health_check"
// its monitor. A group kept from before a reload keeps the monitor it has.
func (p *Proxy) attachMonitors(servers []*server) error {
	for _, srv := range servers {
		hc := srv.cfg.HealthCheck
		if hc == nil || srv.group == nil || srv.group.monitor.Load() != nil {
			continue
		}
		m, err := p.newMonitor(srv.group.current(), hc, nil)
		if err != nil {
			return posErrorf(hc.Pos, "health_check: %w", err)
		}
		srv.group.hc = hc
		srv.group.monitor.Store(m)
	}
	return nil
}

// startMonitors starts the checks of groups that are not running yet.
func (p *Proxy) startMonitors(groups []*group) {
	for _, g := range groups {
		if m := g.monitor.Load(); m != nil {
			m.Start(context.Background())
		}
		p.startResolving(g)
	}
}

// stopMonitors stops the checks of groups, waiting for checks in flight.
func stopMonitors(groups []*group) {
	for _, g := range groups {
		stopResolving(g)
		if m := g.monitor.Load(); m != nil {
			m.Stop()
		}
	}
}

// admitRamping decides whether a peer in slow start (ramp in (0,1)) takes
// this new flow: with probability ramp, so that its share of new flows
// grows linearly over slow_start whatever its weight.
func admitRamping(ramp float64) bool { return ramp >= 1 || rand.Float64() < ramp }

// rebuildMonitor gives g's current generation, after a resolved name
// changed, a monitor of its own peers: the peers that stayed keep their
// verdicts, new ones are checked at once (and, with mandatory, take no
// session before their first pass). Callers hold g.res.mu.
func (p *Proxy) rebuildMonitor(g *group) {
	old := g.monitor.Load()
	if old == nil || g.hc == nil {
		return
	}
	known := map[*health.Peer]bool{}
	for _, t := range old.Targets() {
		known[t.Peer] = true
	}
	m, err := p.newMonitor(g.current(), g.hc, known)
	if err != nil {
		p.log.Logf(LevelError, "upstream %q: health_check: %v", g.name, err)
		return
	}
	m.Start(context.Background())
	g.monitor.Store(m)
	old.Stop()
}
