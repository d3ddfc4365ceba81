// Package health decides whether a backend may take new flows. Passive checks
// count the failures that proxy reports (max_fails within fail_timeout, as
// nginx's ngx_stream_upstream_round_robin.c); active checks dial each backend
// on a timer (nginx Plus's health_check and match); slow_start ramps a
// recovered backend's weight back up.
//
// A Group holds one Peer per upstream address, in the balancer's order. Peer
// is plain state plus a clock that the caller passes in: no goroutine runs per
// failure, and Usable, the check made on every pick, is a few atomic loads
// with no lock and no allocation. Every method is safe for concurrent use.
//
// Typical usage (what proxy does):
//
//	g := health.NewGroup(params)                  // one Params per peer, in lb order
//	usable := func(i int) bool { return g.Peer(i).Usable(now) }
//	i, err := bal.Pick(key, usable)
//	if errors.Is(err, lb.ErrNoPeer) {
//		g.ResetFails() // nginx: "mark them as live for quick recovery"
//		return err
//	}
//	g.Peer(i).Picked(now)
//	... connect fails or times out: g.Peer(i).Failed(now)
//	... the session ends:           g.Peer(i).Succeeded(now)
//
//	m, err := health.NewMonitor(health.MonitorConfig{Checker: &health.TCPChecker{}, Targets: targets})
//	go m.Run(ctx)                                 // or m.Start(ctx) ... m.Stop()
//
// Invariants: a Peer is unusable while an active check holds it down (or,
// with mandatory, until its first check passes), and while max_fails failures
// are less than fail_timeout old by nginx's reckoning; nothing else makes it
// unusable. An upstream with a single peer is never made unusable by passive
// accounting, as in nginx. The Monitor runs one goroutine per target and at
// most one check per target at a time, and leaves none behind after Stop or
// the end of Run's context.
package health
