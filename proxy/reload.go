package proxy

import (
	"fmt"
	"strings"
	"sync"

	"github.com/batonproxy/baton/config"
	"golang.org/x/sys/unix"
)

// Changes is what a Reload changed, for "baton reload" to report.
type Changes struct {
	ListenersAdded, ListenersRemoved, ListenersKept    []string
	UpstreamsAdded, UpstreamsRemoved, UpstreamsChanged []string
	UpstreamsKept                                      []string
}

func (c Changes) String() string {
	var b strings.Builder
	line := func(what string, names []string) {
		if len(names) > 0 {
			fmt.Fprintf(&b, "%s: %s\n", what, strings.Join(names, ", "))
		}
	}
	line("listeners added", c.ListenersAdded)
	line("listeners removed", c.ListenersRemoved)
	line("listeners kept", c.ListenersKept)
	line("upstreams added", c.UpstreamsAdded)
	line("upstreams changed", c.UpstreamsChanged)
	line("upstreams removed", c.UpstreamsRemoved)
	line("upstreams unchanged", c.UpstreamsKept)
	if b.Len() == 0 {
		return "nothing changed\n"
	}
	return b.String()
}

// Reload switches the running proxy to cfg in place, as nginx's SIGHUP:
//   - cfg is checked and prepared first; on any error nothing changes and the
//     running configuration stays;
//   - a listen address in both configs keeps its socket, so no connection
//     is refused; new addresses are bound, removed ones closed;
//   - live sessions are not touched: they keep the server and upstream they
//     started with, so connections to servers that cfg removed drain;
//   - an upstream whose definition is unchanged keeps its balancer state,
//     health state and live counts.
//
// UDP listeners follow the same rules: a kept address keeps its socket and
// serves the new server block for new sessions, while live sessions keep
// the server and upstream they started with; a new address is bound (a
// bind error refuses the reload before anything changed); a removed one
// stops reading at once and drains its sessions (proxy_timeout,
// proxy_responses). Until it has finished it stays in p.udp, retired, so
// that Close, Shutdown and Done see it; its socket stays bound meanwhile
// (replies leave from it), so datagrams sent to the removed address are
// queued there unread, not refused.
func (p *Proxy) Reload(cfg *config.Config) (Changes, error) {
	var ch Changes
	if cfg.Stream == nil || len(cfg.Stream.Servers) == 0 {
		return ch, ErrNoServers
	}
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	if !p.started || p.shuttingDown {
		return ch, ErrNotRunning
	}
	if p.paused.Load() {
		// Between PauseAccepting and the end of an upgrade: a listener added
		// now would not be paused, and the old process is on its way out.
		return ch, ErrUpgrading
	}
	servers, groups, zones, opened, err := p.build(cfg)
	if err != nil {
		return ch, err
	}
	if err := p.attachMonitors(servers); err != nil {
		for _, lf := range opened {
			lf.close()
		}
		stopMonitors(newOnly(groups, p.groups))
		return ch, err
	}
	var boundUDP []*udpListener // bound, not started
	fail := func(err error, bound []*listener) (Changes, error) {
		stopMonitors(newOnly(groups, p.groups))
		for _, ln := range bound {
			unix.Close(ln.fd)
		}
		for _, u := range boundUDP {
			u.discard()
		}
		for _, lf := range opened {
			lf.close()
		}
		return Changes{}, err
	}

	// Listeners: keep the socket of every address that stays.
	old := map[string]*listener{}
	for _, ln := range p.listeners {
		old[ln.key] = ln
	}
	oldUDP := map[string]*udpListener{}
	for _, u := range p.currentUDP() {
		oldUDP[u.key()] = u
	}
	var next, bound []*listener
	var nextUDP []*udpListener
	keep := map[*listener]*server{}
	keepUDP := map[*udpListener]*udpConf{}
	for _, srv := range servers {
		for _, cl := range srv.listens {
			if cl.Vhost {
				continue // another server's listen binds it (vhosts)
			}
			if cl.UDP {
				if u := oldUDP[udpKeyOf(cl.Addr, 0)]; u != nil && keepUDP[u] == nil {
					// Every shard stays, as many as there were: a changed
					// "reuseport" takes a restart or an upgrade.
					c := &udpConf{srv: srv, cl: cl}
					for i := 0; i < u.group; i++ {
						if s := oldUDP[udpKeyOf(cl.Addr, i)]; s != nil {
							keepUDP[s] = c
							nextUDP = append(nextUDP, s)
						}
					}
					continue
				}
				us, err := p.newUDPs(srv, cl)
				if err != nil {
					return fail(posError(cl.Pos, err), bound)
				}
				boundUDP = append(boundUDP, us...)
				nextUDP = append(nextUDP, us...)
				continue
			}
			key := listenKey(cl)
			if ln := old[key]; ln != nil {
				keep[ln] = srv
				next = append(next, ln)
				continue
			}
			ln, err := p.bindListener(srv, cl)
			if err != nil {
				return fail(err, bound)
			}
			bound = append(bound, ln)
			next = append(next, ln)
		}
	}

	// Swap with every loop held: none accepts, so none reads a listener's
	// srv, until setListeners gives it the new set. The kernel keeps
	// queueing connections on the kept sockets meanwhile.
	p.eachLoop(func(l *loop) { l.hold() })
	p.listenersMu.Lock()
	var removed []*listener
	for _, ln := range p.listeners {
		if srv, ok := keep[ln]; ok {
			applyListenOptions(ln, srv)
			ln.srv = srv
			ch.ListenersKept = append(ch.ListenersKept, ln.name)
		} else {
			removed = append(removed, ln)
			ch.ListenersRemoved = append(ch.ListenersRemoved, ln.name)
		}
	}
	for _, ln := range bound {
		ch.ListenersAdded = append(ch.ListenersAdded, ln.name)
	}
	p.listeners = next
	for _, ln := range removed {
		unix.Close(ln.fd)
		ln.fd = -1
	}
	p.listenersMu.Unlock()
	p.swapUDP(keepUDP, boundUDP, nextUDP, &ch)

	ch.UpstreamsAdded, ch.UpstreamsChanged, ch.UpstreamsRemoved, ch.UpstreamsKept = diffGroups(p.groups, groups)
	stopMonitors(newOnly(p.groups, groups)) // checks of upstreams no longer in use
	p.startMonitors(newOnly(groups, p.groups))
	p.servers, p.groups, p.zones = servers, groups, zones
	p.publishGroups()
	for _, lf := range opened {
		p.logFiles[lf.path] = lf
	}
	p.setBudget(cfg)
	if p.ownLog {
		if targets, err := errorTargets(topErrorLogs(cfg)); err == nil {
			if err := p.log.Retarget(targets...); err != nil {
				p.log.Logf(LevelAlert, "reload: error_log: %v; logging stays where it was", err)
			}
		}
	}
	p.eachLoop(func(l *loop) { l.setListeners(next) })
	return ch, nil
}

// eachLoop runs fn on every live loop's goroutine and waits for all.
func (p *Proxy) eachLoop(fn func(l *loop)) {
	var wg sync.WaitGroup
	for _, l := range p.loops {
		wg.Add(1)
		if !l.do(func() { fn(l); wg.Done() }) {
			wg.Done()
		}
	}
	wg.Wait()
}

// applyListenOptions re-applies what can change on a bound listening socket:
// the backlog (listen(2) again) and SO_KEEPALIVE. reuseport cannot change on
// a bound socket; a change is logged.
func applyListenOptions(ln *listener, srv *server) {
	for _, cl := range srv.listens {
		if listenKey(cl) != ln.key {
			continue
		}
		unix.Listen(ln.fd, cl.Backlog)
		if cl.Unix == "" {
			listenOpts(cl).Apply(ln.fd) // a failure leaves the old value: the socket serves on
		}
		ln.cfg = cl
		ln.name = cl.Text
	}
}

// diffGroups compares the upstreams before and after a reload by name.
func diffGroups(before, after []*group) (added, changed, removed, kept []string) {
	was := map[string]*group{}
	for _, g := range before {
		was[g.name] = g
	}
	now := map[string]bool{}
	for _, g := range after {
		now[g.name] = true
		switch o := was[g.name]; {
		case o == nil:
			added = append(added, g.name)
		case o == g:
			kept = append(kept, g.name)
		default:
			changed = append(changed, g.name)
		}
	}
	for _, g := range before {
		if !now[g.name] {
			removed = append(removed, g.name)
		}
	}
	return added, changed, removed, kept
}

// newOnly returns the groups of a that are not in b.
func newOnly(a, b []*group) []*group {
	in := map[*group]bool{}
	for _, g := range b {
		in[g] = true
	}
	var out []*group
	for _, g := range a {
		if !in[g] {
			out = append(out, g)
		}
	}
	return out
}

// swapUDP is Reload's UDP step, with p.reloadMu held and nothing left that
// can fail: kept listeners serve their new server block (for new sessions:
// live ones keep theirs), new ones start, removed ones retire and drain.
func (p *Proxy) swapUDP(keep map[*udpListener]*udpConf, bound, next []*udpListener, ch *Changes) {
	var retired []*udpListener
	for _, u := range p.udp {
		if u.retired.Load() {
			select {
			case <-u.finished:
				// drained: nothing refers to it any more
			default:
				retired = append(retired, u)
			}
			continue
		}
		if c := keep[u]; c != nil {
			u.conf.Store(c)
			if u.shard == 0 {
				ch.ListenersKept = append(ch.ListenersKept, c.cl.Text)
			}
			continue
		}
		if u.shard == 0 {
			ch.ListenersRemoved = append(ch.ListenersRemoved, u.text())
		}
		u.retire()
		retired = append(retired, u)
	}
	for _, u := range bound {
		u.start(p.loopFor(u))
		if u.shard == 0 {
			ch.ListenersAdded = append(ch.ListenersAdded, u.text())
		}
	}
	p.udp = append(next, retired...)
}
