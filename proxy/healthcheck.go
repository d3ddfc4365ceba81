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
func (p *Proxy) newMonitor(g *group, hc *config.HealthCheck) (*health.Monitor, error) {
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
		targets[i] = health.Target{Addr: g.peers[i].String(), Peer: g.health.Peer(i)}
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
		if hc == nil || srv.group == nil || srv.group.monitor != nil {
			continue
		}
		m, err := p.newMonitor(srv.group, hc)
		if err != nil {
			return posErrorf(hc.Pos, "health_check: %w", err)
		}
		srv.group.monitor = m
	}
	return nil
}

// startMonitors starts the checks of groups that are not running yet.
func (p *Proxy) startMonitors(groups []*group) {
	for _, g := range groups {
		if g.monitor != nil {
			g.monitor.Start(context.Background())
		}
	}
}

// stopMonitors stops the checks of groups, waiting for checks in flight.
func stopMonitors(groups []*group) {
	for _, g := range groups {
		if g.monitor != nil {
			g.monitor.Stop()
		}
	}
}

// admitRamping decides whether a peer in slow start (ramp in (0,1)) takes
// this new flow: with probability ramp, so that its share of new flows
// grows linearly over slow_start whatever its weight.
func admitRamping(ramp float64) bool { return ramp >= 1 || rand.Float64() < ramp }
